"""What every experiment driver's command line shares: the --quick/--full/--out/--data-dir parser, the
command as typed (for the record), clear errors for bad input or missing data, and writing the record.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Callable

from dpedu import data, provenance


def build_parser(module: str, description: str, *, quick_help: str, full_help: str,
                 out_example: str) -> argparse.ArgumentParser:
    """``python -m dpedu.experiments.<module>``'s parser: ``--quick|--full``, ``--out``, ``--data-dir``."""
    parser = argparse.ArgumentParser(prog=f"python -m dpedu.experiments.{module}", description=description)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode", help=quick_help)
    mode.add_argument("--full", action="store_const", const="full", dest="mode", help=full_help)
    parser.add_argument("--out", required=True, help=f"write the JSON record here, e.g. {out_example}")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $DPEDU_DATA_DIR)")
    return parser


def main(module: str, parser: argparse.ArgumentParser, argv, run: Callable[[argparse.Namespace, str], dict],
         report: Callable[[dict], str]) -> int:
    """Parses ``argv``, runs ``run(args, command)``, writes its record to ``--out`` and prints ``report``.

    ``command`` is the command as typed (``python -m`` puts the module's file path in ``sys.argv[0]``).
    A ``ValueError`` or :class:`dpedu.data.DataError` (bad input, missing data) ends with exit code 2
    and the message, without a record.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    command = " ".join([f"python -m dpedu.experiments.{module}", *map(shlex.quote, argv)])
    try:
        record = run(args, command)
    except (ValueError, data.DataError) as err:
        print(f"python -m dpedu.experiments.{module}: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=provenance.jsonable) + "\n")
    print(f"{report(record)}\nwrote {out} in {record['wall_seconds']:.0f} s")
    return 0


def load_results(experiment: str, key, configs: dict, results_dir=None) -> dict | None:
    """The stored record ``<experiment>_<key>.json`` (``key`` a mode, or a tuple such as
    ``(dataset, mode)`` joined by ``_``), or None if it was not run yet; ``key`` must name a config."""
    if key not in configs:
        raise ValueError(f"must be one of {sorted(configs)}, got {key!r}")
    suffix = "_".join(key) if isinstance(key, tuple) else key
    return provenance.load_record(f"{experiment}_{suffix}.json", results_dir)
