"""Every deck stays presentable: per slide at most ~120 words of prose and 15 visible lines of
code, and every ``## `` section carries speaker notes.

Cells are grouped into slides the way nbconvert's reveal.js exporter does: a ``slide`` or
``subslide`` cell starts a new slide, ``fragment`` and ``-`` (or no slide type) continue the
current one, ``skip`` cells are left out and ``notes`` cells become speaker notes (not shown).
Prose is the text of markdown cells without math (``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]``),
code spans, fenced code, HTML tags and link targets. Code lines are the non-blank lines of shown
code cells; a cell whose input the decks hide (a tag in ``dpedu.slides.HIDE_INPUT_TAGS``, once
slides.py defines it) counts only its output, i.e. no lines.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from dpedu import course, slides

ROOT = Path(__file__).resolve().parents[1]
MAX_WORDS = 120
MAX_CODE_LINES = 15
# Tags whose cells the decks show without their input.
HIDDEN_INPUT_TAGS = frozenset(slides.HIDE_INPUT_TAGS)

_MATH_AND_CODE = re.compile(
    r"```.*?```|\$\$.*?\$\$|\\\[.*?\\\]|\\\(.*?\\\)|(?<!\\)\$.+?(?<!\\)\$|`[^`]*`|<[^>]+>", re.DOTALL)
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def slide_type(cell) -> str:
    return cell.metadata.get("slideshow", {}).get("slide_type", "-") or "-"


def prose_words(markdown: str) -> int:
    """Words of prose in ``markdown`` (math, code, HTML and link targets removed)."""
    text = _LINK.sub(r"\1", _MATH_AND_CODE.sub(" ", markdown))
    return sum(1 for token in text.split() if re.search(r"\w", token))


def code_lines(cell) -> int:
    if HIDDEN_INPUT_TAGS & set(cell.metadata.get("tags", [])):
        return 0
    return sum(1 for line in cell.source.splitlines() if line.strip())


def group_slides(nb) -> list[list[tuple[int, object]]]:
    """The shown cells of ``nb`` as slides: lists of (cell index, cell)."""
    decks: list[list[tuple[int, object]]] = []
    for index, cell in enumerate(nb.cells):
        kind = slide_type(cell)
        if kind in ("skip", "notes"):
            continue
        if kind in ("slide", "subslide") or not decks:
            decks.append([])
        decks[-1].append((index, cell))
    return decks


def sections(nb) -> list[tuple[str, list]]:
    """(heading, cells) of each ``## `` section: from its heading to the next one."""
    found: list[tuple[str, list]] = []
    for cell in nb.cells:
        heading = None
        if cell.cell_type == "markdown":
            heading = next((line for line in cell.source.splitlines() if line.startswith("## ")), None)
        if heading:
            found.append((heading, []))
        if found:
            found[-1][1].append(cell)
    return found


@pytest.fixture(params=[name for name, _ in course.NOTEBOOKS], ids=lambda name: name.split("_")[0])
def notebook(request):
    path = ROOT / "notebooks" / request.param
    return request.param, nbformat.read(path, as_version=4)


def test_every_slide_is_short(notebook):
    name, nb = notebook
    too_long = []
    for cells in group_slides(nb):
        words = sum(prose_words(c.source) for _, c in cells if c.cell_type == "markdown")
        lines = sum(code_lines(c) for _, c in cells if c.cell_type == "code")
        if words > MAX_WORDS or lines > MAX_CODE_LINES:
            first = cells[0][1].source.strip().splitlines()[0][:50] if cells[0][1].source.strip() else ""
            too_long.append(f"cells {cells[0][0]}–{cells[-1][0]} ({first!r}): {words} words, {lines} code lines")
    assert not too_long, (f"{name}: slides over {MAX_WORDS} words of prose or {MAX_CODE_LINES} visible code "
                          "lines (split them with a subslide, or move code into the library):\n" + "\n".join(too_long))


def test_every_section_has_speaker_notes(notebook):
    name, nb = notebook
    missing = [heading for heading, cells in sections(nb)
               if not any(slide_type(c) == "notes" and c.cell_type == "markdown" and c.source.strip() for c in cells)]
    assert not missing, f"{name}: sections without a speaker-notes cell (slide_type 'notes'): {missing}"


def test_counting_rules():
    assert prose_words("Two words $x + y = \\frac{a}{b}$ and `code here` [a link](https://x.y/z)") == 5
    assert prose_words("$$\\sum_k a_k$$\n\n```python\nprint(1)\n```\nend") == 1
    cells = [nbformat.v4.new_markdown_cell("a", metadata={"slideshow": {"slide_type": t}})
             for t in ("slide", "-", "fragment", "skip", "notes", "subslide", "-")]
    assert [[i for i, _ in s] for s in group_slides(nbformat.v4.new_notebook(cells=cells))] == [[0, 1, 2], [5, 6]]
