"""The course in a real browser: headless Chromium (Debian's) driven by Selenium.

1. Notebook 02's widget, served by Voilà on 127.0.0.1: moving the σ slider changes the printed ε
   and the plot.
2. Every slide deck of this run opened from disk (as an instructor would, offline) renders its figures and math
   with no JavaScript error or failed load in the console.

Screenshots go to artifacts/screenshots/. Skipped, saying why, only where Chromium or its driver
is not installed (.ci/run installs Debian's chromium and chromium-driver when it can).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
import pytest
from browser.chromium import SCREENSHOT_DIR, console_errors, wait_for
from browser.notebooks import through_widget, tiny_executed_notebook
from browser.voila import serve_voila

from dpedu import slides

ROOT = Path(__file__).resolve().parents[1]
WIDGET_NOTEBOOK = ROOT / "notebooks" / "02_composition_accounting.ipynb"
SIGMA = "σ"

# After the notebooks: the deck test uses this session's decks, and Chromium is not competing
# with nbval's kernels for the two cores.
pytestmark = pytest.mark.after_notebooks


@pytest.fixture(scope="module")
def screenshots():
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT_DIR


# The slider described σ, the output area of its cell (the widget's printed ε and plot), and a
# summary of what that area shows: its text and the bytes of its images.
_WIDGET_STATE_JS = """
const label = Array.from(document.querySelectorAll('.widget-slider .widget-label'))
    .find(el => el.textContent.includes(arguments[0]));
if (!label) return null;
const slider = label.closest('.widget-slider');
const area = slider.closest('.jp-OutputArea') || slider.parentElement;
const outputs = Array.from(area.querySelectorAll('.widget-output, .jupyter-widgets-output-area'));
const scope = outputs.length ? outputs : [area];
return {
  value: slider.querySelector('[role=slider]').getAttribute('aria-valuenow'),
  text: scope.map(el => el.innerText).join('\\n'),
  // Only decoded images: the plot is redrawn (cleared, then a new PNG) after each move.
  images: scope.flatMap(el => Array.from(el.querySelectorAll('img'))
      .filter(img => img.complete && img.naturalWidth > 0).map(img => img.src)),
};
"""


def _widget_state(session):
    state = session.execute_script(_WIDGET_STATE_JS, SIGMA)
    if state and "ε" in state["text"] and state["images"]:
        return state
    return None


def _printed_epsilon(text: str) -> float | None:
    match = re.search(r"ε\s*[=≈]\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)", text)
    return float(match.group(1)) if match else None


def test_sigma_slider_changes_printed_epsilon_and_plot(browser, screenshots, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    if not WIDGET_NOTEBOOK.exists():
        pytest.skip(f"{WIDGET_NOTEBOOK.name} is not written yet")
    start = time.perf_counter()
    # Only the cells the widget needs run (the rest of the notebook is nbval's job).
    served = tmp_path / WIDGET_NOTEBOOK.name
    nbformat.write(through_widget(nbformat.read(WIDGET_NOTEBOOK, as_version=4), SIGMA), served)
    log = tmp_path / "voila.log"
    with serve_voila(served, log) as url:
        browser.get(url)  # returns once Voilà has run the cells (page load timeout: 120 s)
        before = wait_for(lambda: _widget_state(browser), 60, message="widget with σ slider, ε and plot")
        handle = browser.execute_script(
            "return Array.from(document.querySelectorAll('.widget-slider')).find(s => "
            "s.querySelector('.widget-label').textContent.includes(arguments[0]))", SIGMA)
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", handle)
        area = browser.execute_script(
            "return arguments[0].closest('.jp-OutputArea') || arguments[0].parentElement", handle)
        area.screenshot(str(screenshots / "02_widget_before.png"))

        # One committed move (continuous_update=False sliders update on release): σ to its maximum.
        knob = handle.find_element(By.CSS_SELECTOR, "[role=slider]")
        knob.click()
        knob.send_keys(Keys.END)

        def changed():
            now = _widget_state(browser)
            moved = now and now["value"] != before["value"]
            return now if moved and now["text"] != before["text"] and now["images"] != before["images"] else None

        after = wait_for(changed, 60, message="ε text and plot changing after moving σ")
        time.sleep(0.5)  # let the page lay out the new plot before the picture
        # Redrawing the plot moved the page's inner scroller: bring the widget back into view.
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", handle)
        area.screenshot(str(screenshots / "02_widget_after.png"))
        browser.get("about:blank")  # leave the page before its server (and websocket) goes away
    assert float(after["value"]) > float(before["value"])
    assert after["text"] != before["text"] and after["images"] != before["images"]
    # More noise, less privacy loss: the printed ε must fall when σ rises.
    eps_before, eps_after = _printed_epsilon(before["text"]), _printed_epsilon(after["text"])
    if eps_before is not None and eps_after is not None:
        assert eps_after < eps_before, (before["text"], after["text"])
    print(f"\nσ {before['value']} -> {after['value']}; widget test {time.perf_counter() - start:.1f} s")


@pytest.fixture
def decks(request, tmp_path):
    """Every deck built from this session's notebooks, else (notebooks not run) a synthetic one."""
    try:
        built = sorted(request.getfixturevalue("session_decks").values())
    except pytest.skip.Exception:
        built = []
    if built:
        return built
    source = tmp_path / "01_gaussian_mechanism.ipynb"
    nbformat.write(tiny_executed_notebook(), source)
    return slides.build_decks([source], tmp_path / "slides")


def test_every_slide_deck_renders_offline_with_figures_and_no_js_errors(browser, screenshots, decks):
    for deck in decks:
        _check_deck(browser, screenshots, deck)


def _check_deck(browser, screenshots, deck):
    """Opens ``deck`` from disk as an instructor would: reveal.js, figures, math, notes, no errors."""
    start = time.perf_counter()
    browser.get("about:blank")
    console_errors(browser)  # start from an empty log: only this deck's messages count
    browser.get(deck.resolve().as_uri())
    wait_for(lambda: browser.execute_script("return !!(window.Reveal && Reveal.isReady && Reveal.isReady())"),
             30, message=f"reveal.js ready in {deck.name}")
    version = browser.execute_script("return Reveal.VERSION")
    assert version == slides.WEB_PACKAGES["reveal.js"][0]
    figures = browser.execute_script(
        "return Array.from(document.querySelectorAll('.slides img'))"
        ".filter(img => img.src.startsWith('data:image/') && img.naturalWidth > 0).length")
    assert figures > 0, f"no rendered figure in {deck.name}"
    math_in_source = "$" in deck.read_text(encoding="utf-8")
    if math_in_source:
        wait_for(lambda: browser.execute_script("return document.querySelectorAll('mjx-container').length"),
                 30, message="MathJax typeset")
    # Speaker notes reach reveal.js's notes API (what its speaker view, key `s`, shows).
    notes = browser.execute_script(
        "return Reveal.getSlides().map(s => Reveal.getSlideNotes(s) || '').join('\\n')")
    if "<aside class=\"notes\">" in deck.read_text(encoding="utf-8"):
        assert notes.strip(), "speaker notes in the HTML but not in reveal.js"
    browser.save_screenshot(str(screenshots / f"{deck.name}-title.png"))
    # Go to the first slide with a figure, as a presenter would, and show it.
    browser.execute_script("""
        const img = document.querySelector('.slides img[src^="data:image/"]');
        const sections = [];
        for (let el = img.closest('section'); el; el = el.parentElement.closest('section')) sections.unshift(el);
        const h = Array.from(document.querySelectorAll('.slides > section')).indexOf(sections[0]);
        const v = sections.length > 1 ? Array.from(sections[0].children).filter(e => e.tagName === 'SECTION')
            .indexOf(sections[1]) : 0;
        Reveal.slide(h, Math.max(v, 0));
    """)
    wait_for(lambda: browser.execute_script(
        "return Reveal.getCurrentSlide().querySelector('img[src^=\"data:image/\"]') !== null"), 10,
        message="figure slide shown")
    time.sleep(1)  # the slide transition
    # A tall slide scrolls (see dpedu/slides.py): bring the figure itself into the picture.
    browser.execute_script(
        "Reveal.getCurrentSlide().querySelector('img[src^=\"data:image/\"]').scrollIntoView({block: 'center'})")
    time.sleep(0.3)
    browser.save_screenshot(str(screenshots / f"{deck.name}-figure.png"))
    errors = console_errors(browser)
    assert not errors, f"console errors in {deck.name}: {errors}"
    print(f"\n{deck.name}: {figures} figures, math={math_in_source}; deck test {time.perf_counter() - start:.1f} s")
