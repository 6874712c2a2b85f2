"""Small notebooks for the slide and browser tests: a synthetic executed one, and the part of a
course notebook that its widget needs."""

from __future__ import annotations

import base64
import io

import nbformat
import nbformat.v4 as nbf

from dpedu import course

WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
NOTES_TEXT = "Speaker note: ask the room which sigma they would pick."


def _figure_png() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.plot([1, 10, 100, 1000], [0.1, 0.4, 1.2, 3.5])
    ax.set_xscale("log")
    ax.set_xlabel("steps T")
    ax.set_ylabel("ε")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _slide(cell, slide_type):
    cell.metadata["slideshow"] = {"slide_type": slide_type}
    return cell


def tiny_executed_notebook(name: str = "01_gaussian_mechanism.ipynb"):
    """An executed notebook shaped like the course's: header cells (badges, skip setup and
    parameters cells), math, a figure, speaker notes, a widget output and a stderr warning."""
    header = course.header_cells(name, "The Gaussian mechanism", "Calibrate $\\sigma$ for $(\\varepsilon, \\delta)$.")
    for n, cell in enumerate(header[1:], start=1):
        cell.execution_count = n
    figure = _slide(nbf.new_code_cell("plot_epsilon_against_steps()", execution_count=3), "subslide")
    figure.outputs = [
        nbf.new_output("stream", name="stderr", text="UserWarning: a library warning\n"),
        nbf.new_output("display_data", data={"image/png": _figure_png(), "text/plain": "<Figure>"}),
        nbf.new_output("stream", name="stdout", text="ε = 3.50 at δ = 1e-05\n"),
    ]
    widget = _slide(nbf.new_code_cell("ui", execution_count=4), "subslide")
    widget.outputs = [nbf.new_output("display_data", data={
        WIDGET_VIEW_MIME: {"version_major": 2, "version_minor": 0, "model_id": "0" * 32},
        "text/plain": "VBox(children=(FloatSlider(value=1.0, description='σ'),))",
    })]
    cells = header + [
        _slide(nbf.new_markdown_cell(
            "## Calibration\n\n$$\\sigma = \\frac{\\sqrt{2\\ln(1.25/\\delta)}}{\\varepsilon}$$"), "slide"),
        _slide(nbf.new_markdown_cell(NOTES_TEXT), "notes"),
        figure,
        widget,
    ]
    nb = nbf.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.validate(nb)
    return nb


def through_widget(nb, symbol: str):
    """The cells of ``nb`` through the one that shows the widget with a ``symbol`` slider.

    That is the first code cell calling ``interactive_output`` (docs/NOTEBOOKS.md) at or after
    the first one building a slider whose source mentions ``symbol``; later cells are left out
    (running them is nbval's job). All of ``nb`` when no such cells are found.
    """
    code = [(n, c.source) for n, c in enumerate(nb.cells) if c.cell_type == "code"]
    first = next((n for n, src in code if "Slider(" in src and symbol in src), None)
    if first is None:
        return nb
    last = next((n for n, src in code if n >= first and "interactive_output(" in src), None)
    if last is None:
        return nb
    trimmed = nbformat.from_dict(nb)
    trimmed.cells = nb.cells[: last + 1]
    return trimmed
