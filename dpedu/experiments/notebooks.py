"""How long each notebook takes and how much memory its kernel needs, from real runs.

    python -m dpedu.experiments.notebooks --mode quick --out dpedu/results/notebooks_quick.json
    python -m dpedu.experiments.notebooks --mode full --notebooks 01 02 --out dpedu/results/notebooks_full.json
    python -m dpedu.experiments.notebooks --readme    # the README's table, from the stored records

Executes the course notebooks one after another with nbclient (a fresh kernel each, in the
notebooks' folder, ``DPEDU_QUICK`` set by ``--mode``) and records, per notebook, the wall time,
the kernel's peak resident memory in MiB (``peak_memory_mb``: ``getrusage``'s ``ru_maxrss``, read after the
last cell) and the data sets the notebook printed it loaded. The README's table of run times is
made from these records (:func:`readme_table`), and Binder's memory limit is checked against them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from dpedu import course, provenance

MODES = ("quick", "full")
NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
BINDER_MEMORY_LIMIT_MB = 1536  # Binder gives 2 GB; the kernel must leave room for the server
_MARKER = "DPEDU_PEAK_RSS_KB="
# Lines the notebooks print when they load data ("<name> | <shapes> | <source>").
_DATA_LINE = re.compile(r"^((?:MNIST|CIFAR-10)[^|\n]*?)\s*\|", re.M)


def run_notebook(path: Path, quick: bool, cell_timeout: int = 1800) -> dict:
    """Executes ``path`` in a fresh kernel; returns its wall time, peak memory and data used.

    Raises:
      nbclient.exceptions.CellExecutionError: a cell failed (the message names it).
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        f"import resource\nprint('{_MARKER}' + str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))"))
    saved = os.environ.get("DPEDU_QUICK")
    os.environ["DPEDU_QUICK"] = "1" if quick else "0"  # the kernel inherits this process's environment
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        wall = time.perf_counter() - start
    finally:
        if saved is None:
            os.environ.pop("DPEDU_QUICK", None)
        else:
            os.environ["DPEDU_QUICK"] = saved
    text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs if out.get("output_type") == "stream")
    peak_kb = int(re.search(rf"{_MARKER}(\d+)", text).group(1))
    return {"notebook": path.name, "wall_seconds": round(wall, 1),
            "peak_memory_mb": round(peak_kb / 1024, 1),
            "data": sorted(set(m.strip() for m in _DATA_LINE.findall(text)))}


def readme_table(quick: dict | None, full: dict | None) -> str:
    """The README's Markdown table of each notebook's run time (and quick-mode peak memory), from
    the records; a notebook without a record says so."""
    def by_name(record):
        return {r["notebook"]: r for r in record["notebooks"]} if record else {}

    quick_runs, full_runs = by_name(quick), by_name(full)
    lines = ["| notebook | quick mode | peak memory (quick) | full mode |", "|---|---|---|---|"]
    for name, _ in course.NOTEBOOKS:
        q, f = quick_runs.get(name), full_runs.get(name)
        quick_time = _minutes(q["wall_seconds"]) if q else "not measured"
        memory = f"{q['peak_memory_mb']:,.0f} MiB" if q else "—"
        full_time = _minutes(f["wall_seconds"]) if f else "not measured yet"
        lines.append(f"| {name[:2]} | {quick_time} | {memory} | {full_time} |")
    sources = [f"{mode}: {rec['device']}, commit {rec['git_commit'][:7]}, {rec['date'][:10]}"
               for mode, rec in (("quick", quick), ("full", full)) if rec]
    return "\n".join(lines) + ("\n\nMeasured by `python -m dpedu.experiments.notebooks` (" + "; ".join(sources) + ")."
                               if sources else "")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dpedu.experiments.notebooks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES)
    parser.add_argument("--readme", action="store_true",
                        help="print the README's run-time table from the stored records and exit")
    parser.add_argument("--notebooks", nargs="*", default=None,
                        help="notebook numbers to run, e.g. 01 03 (default: all)")
    parser.add_argument("--out", help="JSON file to write, e.g. dpedu/results/notebooks_quick.json")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.readme:
        print(readme_table(provenance.load_record("notebooks_quick.json"),
                           provenance.load_record("notebooks_full.json")))
        return 0
    if args.mode is None or args.out is None:
        parser.error("--mode and --out are required to run the notebooks")
    names = [name for name, _ in course.NOTEBOOKS
             if args.notebooks is None or name[:2] in args.notebooks]
    if not names:
        print(f"error: no notebook numbered {args.notebooks}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    runs = []
    for name in names:
        runs.append(run_notebook(NOTEBOOK_DIR / name, quick=args.mode == "quick"))
        print(json.dumps(runs[-1]), flush=True)
    record = provenance.record(
        mode=args.mode, notebooks=runs, seed=None, wall_seconds=round(time.perf_counter() - start, 1),
        environment={"DPEDU_DATA_DIR": os.environ.get("DPEDU_DATA_DIR"), "HOME": os.environ.get("HOME")},
        binder_memory_limit_mb=BINDER_MEMORY_LIMIT_MB)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
