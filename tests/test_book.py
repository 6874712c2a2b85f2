"""The course book (``dpedu book``): Jupyter Book 1 HTML, opened page by page in headless Chromium.

Every page must load from disk with no JavaScript error and nothing fetched from the network (the
test machine is offline, so a CDN script or font would show up as an error), every image must be
decoded (the notebooks' figures), all math typeset by the vendored MathJax (no raw TeX left),
and each notebook page's launch buttons must open dpedu.course's Colab and Binder addresses.

``test_tiny_book_*`` build a book from one small synthetic executed notebook (seconds, no course
notebook run needed); ``test_book_of_this_run`` builds ``book/_build`` from the notebooks nbval
executed earlier in this session. Screenshots go to artifacts/screenshots/. The browser checks
skip, saying why, where Chromium or its driver is missing.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from browser.chromium import SCREENSHOT_DIR, console_errors, wait_for
from browser.notebooks import NOTES_TEXT, tiny_executed_notebook

from dpedu import cli, course

pytest.importorskip("jupyter_book", reason="the book needs the book extra: pip install -e '.[book]'")
from dpedu import book  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BOOK_DIR = ROOT / "book" / "_build"

# After the notebooks, like tests/test_browser.py: Chromium and Sphinx do not compete with nbval.
pytestmark = pytest.mark.after_notebooks


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory):
    folder = tmp_path_factory.mktemp("book")
    source = folder / "01_gaussian_mechanism.ipynb"
    nb = tiny_executed_notebook()
    # Display math inside a paragraph, as the course's notebooks write it (Jupyter renders it).
    nb.cells.append(nbformat.v4.new_markdown_cell(
        "With the improved conversion\n$$\\varepsilon = \\rho + \\frac{\\log(1/\\delta)}{\\alpha-1},$$\n"
        "minimised over $\\alpha$. For $T$ steps, $\\rho(\\alpha) = T\\rho_1(\\alpha)$."))
    nbformat.write(nb, source)
    start = time.perf_counter()
    index = book.build_book([source], folder / "_build")
    print(f"\ntiny book built in {time.perf_counter() - start:.1f} s")
    return index


def test_tiny_book_source_is_a_jupyter_book_without_setup_cell_or_cdn(tiny_book):
    source = tiny_book.parent.parent / book.SOURCE_DIR
    config = yaml.safe_load((source / "_config.yml").read_text(encoding="utf-8"))
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["sphinx"]["config"]["mathjax_path"] == book.MATHJAX_PATH
    assert (source / book.ASSETS_DIR / book.MATHJAX_PATH).is_file()
    assert yaml.safe_load((source / "_toc.yml").read_text())["chapters"] == [{"file": "01_gaussian_mechanism"}]
    nb = nbformat.read(source / "01_gaussian_mechanism.ipynb", as_version=4)
    setup = [c for c in nb.cells if "setup" in c.metadata.get("tags", [])]
    assert setup and all("remove-cell" in c.metadata.tags for c in setup)
    page = (tiny_book.parent / "01_gaussian_mechanism.html").read_text(encoding="utf-8")
    assert "google.colab" not in page and "a library warning" not in page
    assert NOTES_TEXT in page  # a reader gets the instructor's notes as text
    assert "unpkg.com" not in page and "cdn.jsdelivr" not in page and "THEBE_JS_URL" not in page


def test_tiny_book_pages_render_offline_in_chromium(browser, tiny_book):
    pages = check_book(browser, tiny_book.parent, "book-tiny")
    assert {"intro.html", "01_gaussian_mechanism.html"} <= set(pages)


def test_cli_executes_a_notebook_without_outputs_and_reports_bad_input(tmp_path, capsys, monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Answer\n\nThe answer is $6 \\times 7$."),
        nbformat.v4.new_code_cell("print(6 * 7)"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "answer.ipynb"
    nbformat.write(nb, source)
    monkeypatch.chdir(tmp_path)  # a relative --out, as in the README
    assert cli.main(["book", str(source), "--out", "out"]) == 0
    index = Path("out") / "html" / "index.html"
    assert capsys.readouterr().out.strip() == str(index) and index.is_file()
    assert "42" in (tmp_path / "out" / "html" / "answer.html").read_text(encoding="utf-8")
    assert cli.main(["book", str(tmp_path / "nope.ipynb")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dpedu book: error: notebooks must be existing .ipynb files") and err.count("\n") == 1


def test_book_of_this_run(browser, executed_notebooks):
    """The book of every notebook nbval executed in this session, written to book/_build/."""
    start = time.perf_counter()
    index = book.build_book(executed_notebooks, BOOK_DIR)
    print(f"\nbuilt the book of {len(executed_notebooks)} notebooks in {time.perf_counter() - start:.1f} s")
    pages = check_book(browser, index.parent, "book")
    assert {f"{Path(p).stem}.html" for p in executed_notebooks} <= set(pages)


# --- The page checks --------------------------------------------------------------------------

# What a page shows and loaded, once the browser is done with it.
_PAGE_STATE_JS = r"""
const article = document.querySelector('article') || document.body;
const prose = article.cloneNode(true);
prose.querySelectorAll('pre, code, .highlight, mjx-container, script, style').forEach(e => e.remove());
return {
  url: location.href,
  resources: performance.getEntriesByType('resource').map(e => e.name),
  images: Array.from(document.images).map(img => ({src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0})),
  figures: Array.from(article.querySelectorAll('img')).filter(img => img.getAttribute('src').includes('_images/')).length,
  math: document.querySelectorAll('.math').length,
  typeset: Array.from(document.querySelectorAll('.math')).filter(e => e.querySelector('mjx-container svg')).length,
  mathErrors: document.querySelectorAll('mjx-merror').length,
  prose: prose.innerText,
  launch: Array.from(document.querySelectorAll('.dropdown-launch-buttons a')).map(a => a.href),
};
"""
_MATH_READY_JS = r"""
const maths = Array.from(document.querySelectorAll('.math'));
return maths.every(e => e.querySelector('mjx-container'));
"""
# TeX that MathJax did not typeset: $$, \( or \[ delimiters, or $...$ around a command.
_RAW_TEX = re.compile(r"\$\$|\\\(|\\\[|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$")


def _image_outputs(nb) -> int:
    return sum(
        any(k.startswith("image/") for k in out.get("data", {}))
        for cell in nb.cells if cell.cell_type == "code" and "remove-cell" not in cell.metadata.get("tags", [])
        for out in cell.outputs
    )


def check_book(browser, html_dir: Path, shot_prefix: str) -> list[str]:
    """Opens every page of the book in ``html_dir`` from disk and checks it; returns the page names."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    source = html_dir.parent / book.SOURCE_DIR
    notebooks = {p.stem: nbformat.read(p, as_version=4) for p in source.glob("*.ipynb")}
    pages = sorted(p.name for p in html_dir.glob("*.html"))
    assert {f"{stem}.html" for stem in notebooks} <= set(pages), pages
    # No page refers to anything on the network but plain links (the launch buttons, GitHub).
    for name in pages:
        html = (html_dir / name).read_text(encoding="utf-8")
        loads = re.findall(r"<(?:script|img|iframe|source)\b[^>]*\bsrc=\"([^\"]+)\"", html) + \
            re.findall(r"<link\b[^>]*\bhref=\"([^\"]+)\"", html)
        remote = [u for u in loads if re.match(r"^(https?:)?//", u)]
        assert not remote, f"{name} loads {remote}"
    for name in pages:
        start = time.perf_counter()
        browser.get("about:blank")
        console_errors(browser)  # only this page's messages count
        browser.get((html_dir / name).resolve().as_uri())
        if name == "index.html":  # Jupyter Book's redirect to the first page
            wait_for(lambda: browser.current_url.endswith("/intro.html"), 10, message="index.html redirect")
        wait_for(lambda: browser.execute_script("return document.readyState") == "complete", 30,
                 message=f"{name} loaded")
        wait_for(lambda: browser.execute_script(_MATH_READY_JS), 30, message=f"MathJax typeset {name}")
        state = browser.execute_script(_PAGE_STATE_JS)
        offline = [url for url in state["resources"] if not url.startswith("file:")]
        assert not offline, f"{name} fetched {offline}"
        broken = [img["src"] for img in state["images"] if not img["ok"]]
        assert not broken, f"{name}: images not loaded {broken}"
        assert state["typeset"] == state["math"] and state["mathErrors"] == 0, (name, state)
        raw = _RAW_TEX.findall(state["prose"])
        assert not raw, f"{name}: TeX left untypeset {raw}"
        stem = name.removesuffix(".html")
        if stem in notebooks:
            wanted = _image_outputs(notebooks[stem])
            assert state["figures"] >= wanted, f"{name}: {state['figures']} of {wanted} figures shown"
            assert state["launch"] == [course.colab_url(f"{stem}.ipynb"), course.binder_url()], state["launch"]
        if stem == "intro" or stem in notebooks:
            browser.save_screenshot(str(SCREENSHOT_DIR / f"{shot_prefix}-{stem}.png"))
        errors = console_errors(browser)
        assert not errors, f"console errors on {name}: {errors}"
        print(f"\n{name}: {state['figures']} figures, {state['math']} math, {time.perf_counter() - start:.1f} s")
    return pages


def test_missing_jupyter_book_is_one_clear_error(tmp_path, monkeypatch, capsys):
    source = tmp_path / "01_gaussian_mechanism.ipynb"
    nbformat.write(tiny_executed_notebook(), source)
    monkeypatch.setitem(sys.modules, "jupyter_book.sphinx", None)  # as if not installed
    assert cli.main(["book", str(source), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dpedu book: error: Jupyter Book is missing") and '".[book]"' in err
