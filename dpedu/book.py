"""The course as a website: the executed notebooks rendered as a book, readable offline.

``dpedu book notebooks/*.ipynb --out book/_build`` writes ``<out>/html/index.html`` (open it from
disk or serve the folder) with Jupyter Book 1 (Sphinx, MyST-NB and the Sphinx Book Theme; pure
Python, no Node.js): an introduction page, then one page per notebook with its outputs and
figures, math typeset by the MathJax shipped in dpedu (``dpedu/_vendor/``, so no CDN), and a
launch button (the rocket, top right) opening that notebook in Colab or on Binder, with the
addresses of :mod:`dpedu.course`. The generated Jupyter Book project is kept in ``<out>/source/``
(``jupyter-book build <out>/source`` rebuilds it).

Notebooks are taken as for slide decks (:mod:`dpedu.slides`): one with outputs (the executed
copies ``python -m pytest`` writes to ``artifacts/executed/``) is used as it is, one without is
executed first (quick mode when ``DPEDU_QUICK=1``); remote badge images become plain links,
widgets become a note saying where to move their sliders (a static page has no kernel), stderr
warnings and the Colab setup cell are left out. The book needs the ``book`` extra:
``pip install -e ".[book]"``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dpedu import _vendor, course

TITLE = "dpedu: differentially private deep learning, hands on"
SOURCE_DIR, HTML_DIR, DOCTREE_DIR = "source", "html", ".doctrees"
# The vendored MathJax goes to <source>/_assets/mathjax/, which Sphinx copies to <html>/_static/
# (not <source>/_static/: Jupyter Book would add every .js file there to every page).
ASSETS_DIR = "_assets"
MATHJAX_PATH = "mathjax/es5/tex-svg-full.js"  # relative to _static (Sphinx's mathjax_path)
# Marks the launch-button group (the theme's own label, so its styles apply).
LAUNCH_LABEL = "launch-buttons"


class BookError(RuntimeError):
    """The book could not be built; the message says why."""


def for_book(nb):
    """A copy of executed ``nb`` for a static page: as for a slide deck, and without the Colab
    setup cell (tag ``setup``), which only installs the library on Colab."""
    from dpedu import slides

    nb = slides.for_presentation(nb, hide_inputs=False)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "setup" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    return nb


def book_config() -> dict:
    """The Jupyter Book ``_config.yml`` (as a dict): no execution, local MathJax, no CDN script."""
    return {
        "title": TITLE,
        "author": "The dpedu authors",
        "copyright": "the dpedu authors",
        "only_build_toc_files": True,
        "exclude_patterns": ["_build", ASSETS_DIR, "**.ipynb_checkpoints"],
        "execute": {"execute_notebooks": "off"},  # dpedu executes what has no outputs (slides.execute)
        "parse": {"myst_enable_extensions": ["amsmath", "colon_fence", "dollarmath", "linkify"]},
        "html": {
            "use_repository_button": True,
            "use_multitoc_numbering": False,
            "home_page_in_navbar": True,
        },
        # Only the repository button uses this; the launch buttons come from dpedu.course (see setup).
        "repository": {"url": course.GITHUB_URL},
        "sphinx": {
            "extra_extensions": ["dpedu.book"],
            "config": {
                "html_static_path": [ASSETS_DIR],
                # Math as Jupyter shows it: $$...$$ also inside a paragraph, as the notebooks write
                # it. (Jupyter Book's parse.myst_dmath_double_inline never reaches Sphinx.)
                "myst_dmath_double_inline": True,
                "mathjax_path": MATHJAX_PATH,
                # MyST-NB would load require.js and the widget manager from a CDN on pages with
                # widget state; the widgets are replaced by a note (for_book), so load nothing.
                "nb_ipywidgets_js": {},
                "html_show_sphinx": False,
                # The theme's colour mode; left empty, its script logs an error on every page.
                # Light: the figures are drawn on white.
                "html_context": {"default_mode": "light"},
            },
        },
    }


def _intro(pages: list[str]) -> str:
    described = dict(course.NOTEBOOKS)
    rows = "\n".join(
        f"| {{doc}}`{page}` | {described.get(page + '.ipynb', '')} | "
        f"[Colab]({course.colab_url(page + '.ipynb')}) |" for page in pages
    )
    return f"""# {TITLE}

An interactive course on differentially private deep learning, on JAX, Flax, Optax and
dp-accounting. These pages show the course's notebooks with the outputs of the run that built
them (CI runs them in quick mode: smaller models and fewer steps than the papers). To run a
notebook and move its sliders, open it in Colab or on Binder: the rocket button at the top of
each page, or the links below.

| Notebook | What you learn | Run it |
|---|---|---|
{rows}

All notebooks in JupyterLab on Binder: [{course.binder_url()}]({course.binder_url()})
"""


def _toc(pages: list[str]) -> str:
    chapters = "\n".join(f"  - file: {page}" for page in pages)
    return f"format: jb-book\nroot: intro\nchapters:\n{chapters}\n"


def write_source(notebooks, source_dir: str | os.PathLike, cell_timeout: int = 600) -> list[str]:
    """Writes the Jupyter Book project for ``notebooks`` into ``source_dir`` (emptied first).

    Returns the page names (the notebooks' stems), in the order given.
    """
    import nbformat
    import yaml

    from dpedu import slides

    paths = slides.notebook_paths(notebooks)
    pages = [path.name.removesuffix(".ipynb") for path in paths]
    if len(set(pages)) != len(pages):
        raise ValueError(f"notebooks must have distinct file names, got {[str(p) for p in paths]}")
    source = Path(source_dir)
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    for path, page in zip(paths, pages):
        nb = slides.read_executed(path, cell_timeout)
        nbformat.write(for_book(nb), source / f"{page}.ipynb")
    _vendor.copy_package("mathjax", source / ASSETS_DIR / "mathjax")
    (source / "_config.yml").write_text(yaml.safe_dump(book_config(), sort_keys=False, allow_unicode=True),
                                        encoding="utf-8")
    (source / "_toc.yml").write_text(_toc(pages), encoding="utf-8")
    (source / "intro.md").write_text(_intro(pages), encoding="utf-8")
    return pages


def build_book(notebooks, out_dir: str | os.PathLike = "book/_build", cell_timeout: int = 600) -> Path:
    """Builds the book of ``notebooks`` (paths) into ``out_dir`` and returns its ``html/index.html``.

    ``out_dir/source/`` (the Jupyter Book project), ``out_dir/html/`` and ``out_dir/.doctrees/``
    are replaced; nothing else in ``out_dir`` is touched.

    Raises:
      ValueError: ``notebooks`` is empty, names a missing or non-``.ipynb`` file, or repeats a name.
      BookError: Jupyter Book is not installed, or Sphinx failed.
      dpedu.slides.SlidesError: a notebook without outputs failed while executing.
    """
    try:
        from jupyter_book.sphinx import build_sphinx
    except ImportError as err:
        raise BookError(f"Jupyter Book is missing ({err}): pip install -e \".[book]\"") from err
    out = Path(out_dir).resolve()  # Sphinx resolves relative paths from the source folder
    source, html, doctrees = out / SOURCE_DIR, out / HTML_DIR, out / DOCTREE_DIR
    write_source(notebooks, source, cell_timeout)
    for stale in (html, doctrees):
        if stale.exists():
            shutil.rmtree(stale)
    # What `jupyter-book build <source>` passes, with the output folders of this layout.
    result = build_sphinx(
        source, html, noconfig=True, path_config=str(source / "_config.yml"), doctreedir=doctrees,
        confoverrides={"external_toc_path": (source / "_toc.yml").as_posix(), "latex_individualpages": False},
        freshenv=True, quiet=True,
    )
    if result != 0:
        raise BookError(f"Sphinx failed building {source} ({result}); see the messages above")
    return Path(out_dir) / HTML_DIR / "index.html"


# --- Sphinx extension (loaded by the book's _config.yml) -----------------------------------------


def launch_links(notebook: str) -> dict[str, str]:
    """The launch-button addresses of ``notebook`` (a file name): Colab and Binder, from dpedu.course."""
    return {"Colab": course.colab_url(notebook), "Binder": course.binder_url()}


def _add_launch_buttons(app, pagename, templatename, context, doctree):
    """Puts the launch dropdown (Colab, Binder) first among a notebook page's header buttons."""
    if doctree is None or "header_buttons" not in context:
        return
    source = Path(app.env.doc2path(pagename))
    if source.suffix != ".ipynb":
        return
    icons = {"Colab": "_static/images/logo_colab.png", "Binder": "_static/images/logo_binder.svg"}
    buttons = [
        {"type": "link", "text": name, "tooltip": f"Run this notebook on {name}", "icon": icons[name], "url": url}
        for name, url in launch_links(source.name).items()
    ]
    context["header_buttons"].insert(0, {
        "type": "group", "tooltip": "Run this notebook", "icon": "fas fa-rocket", "buttons": buttons,
        "label": LAUNCH_LABEL,
    })


def _offline_scripts(app, pagename, templatename, context, doctree):
    """Leaves out sphinx-thebe's scripts and each repeated inline script of a page.

    The book has no live-code button: thebe would load its library from unpkg.com and need a
    Binder kernel (the launch buttons open Binder instead). Sphinx 7.4 adds inline scripts that
    extensions register while reading twice (once as filename None, once as ""), and sphinx-thebe's
    ``const THEBE_JS_URL`` declared twice is a JavaScript error.
    """
    scripts = context.get("script_files")
    if scripts is None:
        return
    kept, seen = [], set()
    for script in scripts:
        filename = getattr(script, "filename", script) or ""
        attributes = dict(getattr(script, "attributes", {}))
        if filename.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in attributes.get("body", ""):
            continue
        key = (filename, tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


def setup(app):
    # After sphinx-book-theme's own header buttons (priority 501), whose launch buttons are off.
    app.connect("html-page-context", _add_launch_buttons, priority=502)
    app.connect("html-page-context", _offline_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
