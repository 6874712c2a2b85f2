"""Headless Debian Chromium driven by Selenium through /usr/bin/chromedriver (never a download)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

# As root on a machine whose network reaches only package registries: no sandbox, no GPU, and
# none of Chromium's background connections (they are refused here and slow every start).
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1000",
)
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def find_chromium() -> tuple[str, str] | None:
    """(browser, chromedriver) paths from Debian's chromium and chromium-driver, or None."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_chromium(browser: str, driver: str, page_load_timeout: float = 120):
    """A Selenium driver for a fresh headless Chromium profile that records the console log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser  # with the driver path too, Selenium Manager never runs
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='dpedu-chromium-')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    session.set_page_load_timeout(page_load_timeout)
    session.set_script_timeout(30)
    return session


def wait_for(condition, timeout: float, interval: float = 0.25, message: str = "condition"):
    """Polls ``condition()`` until it returns a truthy value (returned) or ``timeout`` seconds pass."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not met within {timeout:.0f} s")
        time.sleep(interval)


def console_errors(session) -> list[dict]:
    """SEVERE entries of the browser console since the last call (JS errors, failed loads)."""
    return [entry for entry in session.get_log("browser") if entry["level"] == "SEVERE"]
