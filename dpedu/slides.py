"""Reveal.js slide decks from the course notebooks, presentable offline.

One deck per notebook, ``<out>/NN_name.slides.html``, built by nbconvert's reveal.js exporter
with a template that loads nothing from the network: reveal.js and MathJax are copied into
``<out>/_static/`` from the copies shipped inside dpedu (``dpedu/_vendor/``: no Node.js/npm and no
network needed, exact versions, see its README), figures are embedded as data URIs,
remote badge images become plain links, ``skip`` cells (the setup and parameters cells) are left
out and ``notes`` cells become speaker notes (press ``s`` in the deck). Copy the whole ``<out>``
folder to present from another machine.

A notebook that already carries outputs (the executed copies ``python -m pytest`` writes to
``artifacts/executed/``, or one saved after running it) is converted as it is; one without
outputs (as committed) is executed first with nbclient, in quick mode when ``DPEDU_QUICK=1``.

Command line: ``dpedu slides notebooks/*.ipynb --out slides``.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

from dpedu import _vendor

# Browser packages the decks load (name -> (version, npm integrity)), copied into _static/<name>/.
# reveal.js 5 keeps the dist/ + plugin/ layout nbconvert's reveal template was written for;
# MathJax 3's "full" SVG build is one file that loads no font or extension files at run time, so
# a deck opened from disk is complete.
WEB_PACKAGES = _vendor.PACKAGES
STATIC_DIR = "_static"
DECK_SUFFIX = ".slides.html"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE_HTML = (
    '<p class="dpedu-widget-note"><em>Interactive widget: run the notebook (Colab, Binder or '
    "Jupyter) to move its sliders.</em></p>"
)

# Extends nbconvert's reveal template: no jQuery, require.js, Mermaid or widget-manager scripts
# from CDNs; local MathJax 3 and reveal.js as plain scripts.
_DECK_TEMPLATE = r"""
{%- extends 'index.html.j2' -%}
{%- block html_head_js_jquery -%}{%- endblock html_head_js_jquery -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}
<script>
window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']],
        processEscapes: true, processEnvironments: true, tags: 'ams'},
  svg: {fontCache: 'global'}
};
</script>
<script src="{{ resources.dpedu_static }}/mathjax/es5/tex-svg-full.js"></script>
{%- endblock html_head_js_mathjax -%}
{%- block html_head_css -%}
<style>
/* Long code lines wrap instead of running off the slide. */
.jp-InputArea .highlight pre { white-space: pre-wrap; overflow-wrap: anywhere; }
</style>
{%- endblock html_head_css -%}
{%- block footer_js -%}
<script src="{{ resources.reveal.url_prefix }}/dist/reveal.js"></script>
<script src="{{ resources.reveal.url_prefix }}/plugin/notes/notes.js"></script>
<script>
Reveal.initialize({
  controls: true, progress: true, history: true,
  transition: "{{ resources.reveal.transition }}", slideNumber: "{{ resources.reveal.number }}",
  width: {{ resources.reveal.width }}, height: {{ resources.reveal.height }},
  plugins: [RevealNotes]
});
// Long code cells scroll inside their slide instead of running off it.
function dpeduScrollTallSlide() {
  var limit = Reveal.getConfig().height * 0.95;
  var slide = Reveal.getCurrentSlide();
  if (slide && slide.scrollHeight > limit) {
    slide.style.height = limit + 'px';
    slide.style.overflowY = 'auto';
    slide.style.top = '0';
  }
}
Reveal.on('ready', dpeduScrollTallSlide);
Reveal.on('slidechanged', dpeduScrollTallSlide);
</script>
{%- endblock footer_js -%}
"""

# A Markdown image with a remote address, e.g. a Colab badge: [![Open In Colab](https://…svg)](url).
_REMOTE_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*https?://[^)\s]+(?:\s+\"[^\"]*\")?\s*\)")


class SlidesError(RuntimeError):
    """A deck could not be built; the message says which file and what to do."""


def vendor_web_assets(out_dir: str | os.PathLike) -> Path:
    """Copies reveal.js and MathJax from dpedu's package data into ``out_dir/_static/``.

    Returns:
      The ``_static`` folder; decks in ``out_dir`` refer to it by a relative path.
    """
    static = Path(out_dir) / STATIC_DIR
    for name in WEB_PACKAGES:
        _vendor.copy_package(name, static / name)
    return static


def has_outputs(nb) -> bool:
    """Whether any code cell of ``nb`` was executed (has outputs or an execution count)."""
    return any(
        c.cell_type == "code" and (c.outputs or c.execution_count is not None) for c in nb.cells
    )


def execute(nb, working_dir: str | os.PathLike, cell_timeout: int = 600):
    """Runs every cell of a copy of ``nb`` in a fresh ``python3`` kernel started in ``working_dir``.

    Raises:
      SlidesError: a cell raised (the message names the exception).
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = copy.deepcopy(nb)
    try:
        NotebookClient(
            nb, timeout=cell_timeout, kernel_name="python3",
            resources={"metadata": {"path": str(working_dir)}},
        ).execute()
    except CellExecutionError as err:
        raise SlidesError(f"a cell failed while executing the notebook: {err.ename}: {err.evalue}") from err
    return nb


# Cell tags whose INPUT decks hide (the output, e.g. a figure, stays): plotting and plumbing code.
HIDE_INPUT_TAGS = ("hide-input",)


def for_presentation(nb, hide_inputs: bool = True):
    """A copy of executed ``nb`` ready for an offline deck.

    With ``hide_inputs``, cells tagged with one of :data:`HIDE_INPUT_TAGS` keep their outputs but
    lose their code (the book keeps it: Jupyter Book folds such inputs behind a toggle itself).

    Remote Markdown images (the Colab/Binder badges) become their alt text, so their links stay
    but nothing is fetched. A widget needs a kernel, so its output becomes a note saying where
    to use it (the static figure drawn before it stays) and the saved widget state is dropped.
    stderr streams (library warnings, not course content) are dropped too.
    """
    import nbformat.v4 as nbf

    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _REMOTE_IMAGE.sub(lambda m: m.group(1), cell.source)
        elif cell.cell_type == "code":
            if hide_inputs and set(cell.metadata.get("tags", [])) & set(HIDE_INPUT_TAGS):
                cell.metadata["transient"] = {"remove_source": True}  # nbconvert's templates honour it
            outputs = []
            for out in cell.outputs:
                if out.output_type == "stream" and out.get("name") == "stderr":
                    continue
                if WIDGET_VIEW_MIME in out.get("data", {}):
                    out = nbf.new_output("display_data", data={"text/html": WIDGET_NOTE_HTML})
                outputs.append(out)
            cell.outputs = outputs
    return nb


def deck_html(nb, name: str) -> str:
    """The reveal.js HTML of executed ``nb``; assets are expected in ``./_static/``."""
    from nbconvert import SlidesExporter

    exporter = SlidesExporter(
        reveal_url_prefix=f"{STATIC_DIR}/reveal.js",
        reveal_theme="white",
        reveal_number="c/t",
        reveal_width="960",
        reveal_height="700",
        embed_images=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    exporter.raw_template = _DECK_TEMPLATE
    html, _ = exporter.from_notebook_node(
        for_presentation(nb), resources={"metadata": {"name": name}, "dpedu_static": STATIC_DIR}
    )
    return html


def notebook_paths(notebooks) -> list[Path]:
    """``notebooks`` as paths, checked: at least one, each an existing ``.ipynb`` file.

    Raises:
      ValueError: ``notebooks`` is empty or names a missing or non-``.ipynb`` file.
    """
    paths = [Path(p) for p in notebooks]
    if not paths:
        raise ValueError("notebooks must name at least one .ipynb file, got none")
    for path in paths:
        if path.suffix != ".ipynb" or not path.is_file():
            raise ValueError(f"notebooks must be existing .ipynb files, got {str(path)!r}")
    return paths


def read_executed(path: Path, cell_timeout: int = 600):
    """The notebook at ``path`` with outputs: as saved if it has any, else executed in its folder.

    Raises:
      SlidesError: a notebook without outputs failed while executing (the message names it).
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if has_outputs(nb):
        return nb
    try:
        return execute(nb, Path(path).resolve().parent, cell_timeout)
    except SlidesError as err:
        raise SlidesError(f"{path}: {err}") from err


def build_decks(notebooks, out_dir: str | os.PathLike = "slides", cell_timeout: int = 600) -> list[Path]:
    """Writes ``out_dir/<stem>.slides.html`` for each notebook path, plus ``out_dir/_static/``.

    Notebooks without outputs are executed first (see ``execute``); executed ones are not.

    Raises:
      ValueError: ``notebooks`` is empty or names a missing or non-``.ipynb`` file.
      SlidesError: a notebook without outputs failed while executing.
    """
    paths = notebook_paths(notebooks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vendor_web_assets(out)
    decks = []
    for path in paths:
        nb = read_executed(path, cell_timeout)
        stem = path.name.removesuffix(".ipynb")
        deck = out / f"{stem}{DECK_SUFFIX}"
        deck.write_text(deck_html(nb, stem), encoding="utf-8")
        decks.append(deck)
    return decks
