"""Slide decks: offline reveal.js, figures embedded, setup cells skipped, speaker notes kept.

Unit tests build decks from a synthetic executed notebook; ``test_decks_of_this_run`` builds the
real decks from the notebooks nbval executed earlier in this session (never a second execution).
"""

from __future__ import annotations

import os
import re
import shutil
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
def tiny_deck(tmp_path_factory):
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


def test_static_assets_are_the_vendored_files(tiny_deck):
    """_static/ holds exactly dpedu/_vendor's reveal.js and MathJax, byte for byte, licences included."""
    static = tiny_deck.parent / slides.STATIC_DIR
    vendored = ROOT / "dpedu" / "_vendor"
    for name in slides.WEB_PACKAGES:
        assert (static / name / "LICENSE").is_file()
        copied = {p.relative_to(static / name): p for p in (static / name).rglob("*") if p.is_file()}
        shipped = {p.relative_to(vendored / name): p for p in (vendored / name).rglob("*") if p.is_file()}
        assert copied.keys() == shipped.keys()
        for rel, path in copied.items():
            assert path.read_bytes() == shipped[rel].read_bytes(), rel
    # What the deck loads (the browser test checks Reveal.VERSION); no source maps or ESM copies.
    assert (static / "reveal.js" / "dist" / "reveal.js").is_file()
    assert (static / "reveal.js" / "plugin" / "notes" / "notes.js").is_file()
    assert (static / "mathjax" / "es5" / "tex-svg-full.js").is_file()
    assert not list(static.rglob("*.map")) and not list(static.rglob("*.esm.js"))


def test_decks_build_without_node_npm_or_network(tmp_path, monkeypatch):
    """No npm on PATH, no cache, no network: the decks still get reveal.js and MathJax."""
    monkeypatch.setenv("PATH", os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep) if not (Path(d) / "npm").exists()))
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd in ("npm", "node") else real_which(cmd, *a, **k))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    assert shutil.which("npm") is None
    source = tmp_path / "01_gaussian_mechanism.ipynb"
    nbformat.write(tiny_executed_notebook(), source)
    (deck,) = slides.build_decks([source], tmp_path / "slides")
    assert_loads_nothing_remote(deck)
    static = deck.parent / slides.STATIC_DIR
    assert (static / "reveal.js" / "dist" / "theme" / "white.css").is_file()
    assert not (tmp_path / "empty-cache").exists()


def test_bad_notebook_paths_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        slides.build_decks([], tmp_path)
    with pytest.raises(ValueError, match="existing .ipynb"):
        slides.build_decks([tmp_path / "missing.ipynb"], tmp_path)


def test_unexecuted_notebook_is_executed_once_then_converted(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.cells[0].metadata["slideshow"] = {"slide_type": "slide"}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "answer.ipynb"
    nbformat.write(nb, source)
    assert not slides.has_outputs(nb)
    (deck,) = slides.build_decks([source], tmp_path / "out")
    assert "42" in deck.read_text(encoding="utf-8")
    assert not slides.has_outputs(nbformat.read(source, as_version=4)), "the source is left as it was"


def test_cli_builds_decks_and_reports_bad_input_in_one_line(tmp_path, capsys):
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


def test_hide_input_cells_keep_their_figure_but_not_their_code(tmp_path):
    nb = tiny_executed_notebook()
    figure = next(c for c in nb.cells if c.source == "plot_epsilon_against_steps()")
    figure.metadata["tags"] = ["hide-input"]
    path = tmp_path / "01_gaussian_mechanism.ipynb"
    nbformat.write(nb, path)
    (deck,) = slides.build_decks([path], tmp_path / "decks")
    html = deck.read_text()
    assert "plot_epsilon_against_steps" not in html  # the plotting code is hidden ...
    assert "data:image/png;base64," in html and "ε = 3.50" in html  # ... its figure and text stay
    # The book keeps the input (Jupyter Book folds hide-input cells behind a toggle itself).
    kept = slides.for_presentation(nb, hide_inputs=False)
    assert not any("transient" in c.metadata for c in kept.cells)
