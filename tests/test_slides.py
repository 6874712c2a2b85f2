"""Slide decks: offline reveal.js, figures embedded, setup cells skipped, speaker notes kept.

Unit tests build decks from a synthetic executed notebook; ``test_decks_of_this_run`` builds the
real decks from the notebooks nbval executed earlier in this session (never a second execution).
"""

from __future__ import annotations

import re
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from browser.notebooks import NOTES_TEXT, tiny_executed_notebook

from dpedu import cli, course, slides

ROOT = Path(__file__).resolve().parents[1]


class _Resources(HTMLParser):
    """Every address the page would load (script/img src, stylesheet href), and the notes."""

    def __init__(self):
        super().__init__()
        self.loads: list[str] = []
        self.images: list[str] = []
        self._in_notes = 0
        self.notes_text = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe", "source") and attrs.get("src"):
            self.loads.append(attrs["src"])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "link" and "stylesheet" in (attrs.get("rel") or ""):
            self.loads.append(attrs["href"])
        if tag == "aside" and "notes" in (attrs.get("class") or ""):
            self._in_notes += 1

    def handle_endtag(self, tag):
        if tag == "aside" and self._in_notes:
            self._in_notes -= 1

    def handle_data(self, data):
        if self._in_notes:
            self.notes_text += data


def parse(html: str) -> _Resources:
    parser = _Resources()
    parser.feed(html)
    return parser


def assert_loads_nothing_remote(deck: Path):
    page = parse(deck.read_text(encoding="utf-8"))
    remote = [u for u in page.loads if re.match(r"^(https?:)?//", u)]
    assert not remote, f"{deck.name} loads {remote}"
    for address in page.loads:
        if not address.startswith("data:"):
            assert (deck.parent / address).is_file(), f"{deck.name} needs missing {address}"
    return page


@pytest.fixture(scope="module")
def asset_cache():
    """The npm tarball cache, filled once (npm pack); skips where neither npm nor a cache exists."""
    try:
        for name in slides.WEB_PACKAGES:
            slides.fetch_web_package(name)
    except slides.AssetError as err:
        pytest.skip(f"cannot fetch reveal.js/MathJax: {err}")
    return slides.cache_dir()


@pytest.fixture(scope="module")
def tiny_deck(tmp_path_factory, asset_cache):
    folder = tmp_path_factory.mktemp("deck")
    source = folder / "01_gaussian_mechanism.ipynb"
    nbformat.write(tiny_executed_notebook(), source)
    (deck,) = slides.build_decks([source], folder / "slides")
    return deck


def test_deck_is_offline_with_embedded_figure_notes_and_no_setup_cells(tiny_deck):
    html = tiny_deck.read_text(encoding="utf-8")
    page = assert_loads_nothing_remote(tiny_deck)
    assert any(src.startswith("data:image/png;base64,") for src in page.images)
    assert NOTES_TEXT in page.notes_text
    # The skip cells (Colab setup, quick-mode parameters) are not on any slide.
    assert "google.colab" not in html and "DPEDU_QUICK" not in html
    # Badges become links: Colab and Binder stay one click away, no badge image is fetched.
    assert course.colab_url("01_gaussian_mechanism.ipynb") in html and course.binder_url() in html
    assert "badge" not in " ".join(page.images)
    # Library warnings are not course content; a widget becomes a pointer to the notebook.
    assert "a library warning" not in html
    assert slides.WIDGET_NOTE_HTML in html and slides.WIDGET_VIEW_MIME not in html
    assert "ε = 3.50" in html and "\\varepsilon" in html  # printed results and math (MathJax) kept


def test_static_assets_are_the_pinned_versions(tiny_deck):
    static = tiny_deck.parent / slides.STATIC_DIR
    for name, (version, _, _) in slides.WEB_PACKAGES.items():
        assert (static / name / ".version").read_text() == version
        assert (static / name / "LICENSE").is_file()
    # What the deck loads (the browser test checks Reveal.VERSION); no source maps or ESM copies.
    assert (static / "reveal.js" / "dist" / "reveal.js").is_file()
    assert (static / "reveal.js" / "plugin" / "notes" / "notes.js").is_file()
    assert (static / "mathjax" / "es5" / "tex-svg-full.js").is_file()
    assert not list(static.rglob("*.map")) and not list(static.rglob("*.esm.js"))


def test_tampered_tarball_is_refused(tmp_path, monkeypatch):
    version = slides.WEB_PACKAGES["mathjax"][0]
    bad = tmp_path / f"mathjax-{version}.tgz"
    with tarfile.open(bad, "w:gz"):
        pass
    with pytest.raises(slides.AssetError, match="integrity"):
        slides.fetch_web_package("mathjax", cache=tmp_path)
    monkeypatch.setattr(slides.shutil, "which", lambda name: None)
    with pytest.raises(slides.AssetError, match="npm"):
        slides.fetch_web_package("reveal.js", cache=tmp_path / "empty")
    with pytest.raises(ValueError, match="name must be one of"):
        slides.fetch_web_package("jquery", cache=tmp_path)


def test_bad_notebook_paths_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        slides.build_decks([], tmp_path)
    with pytest.raises(ValueError, match="existing .ipynb"):
        slides.build_decks([tmp_path / "missing.ipynb"], tmp_path)


def test_unexecuted_notebook_is_executed_once_then_converted(tmp_path, asset_cache):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.cells[0].metadata["slideshow"] = {"slide_type": "slide"}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "answer.ipynb"
    nbformat.write(nb, source)
    assert not slides.has_outputs(nb)
    (deck,) = slides.build_decks([source], tmp_path / "out")
    assert "42" in deck.read_text(encoding="utf-8")
    assert not slides.has_outputs(nbformat.read(source, as_version=4)), "the source is left as it was"


def test_cli_builds_decks_and_reports_bad_input_in_one_line(tmp_path, asset_cache, capsys):
    source = tmp_path / "01_gaussian_mechanism.ipynb"
    nbformat.write(tiny_executed_notebook(), source)
    assert cli.main(["slides", str(source), "--out", str(tmp_path / "s")]) == 0
    deck = tmp_path / "s" / "01_gaussian_mechanism.slides.html"
    assert deck.is_file() and str(deck) in capsys.readouterr().out
    assert cli.main(["slides", str(tmp_path / "nope.ipynb")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dpedu slides: error: notebooks must be existing .ipynb files") and err.count("\n") == 1


@pytest.mark.after_notebooks
def test_decks_of_this_run(session_decks):
    """Every notebook nbval executed in this session has an offline deck with its figures."""
    for executed, deck in session_decks.items():
        nb = nbformat.read(executed, as_version=4)
        page = assert_loads_nothing_remote(deck)
        shown = [c for c in nb.cells if c.metadata.get("slideshow", {}).get("slide_type") != "skip"]
        figures = sum(
            "image/png" in out.get("data", {}) for c in shown if c.cell_type == "code" for out in c.outputs
        )
        embedded = [src for src in page.images if src.startswith("data:image/png;base64,")]
        assert len(embedded) >= figures, f"{deck.name}: {len(embedded)} of {figures} figures"
        notes = [c for c in nb.cells if c.metadata.get("slideshow", {}).get("slide_type") == "notes"]
        if notes:
            assert page.notes_text.strip(), f"{deck.name} lost its speaker notes"
        html = deck.read_text(encoding="utf-8")
        assert course.colab_setup_cell().splitlines()[0] not in html, "the setup cell is skipped"
