"""Runs the CIFAR-10 ablation ladder of De et al. 2022 and stores one record with provenance.

    python -m dpedu.experiments.ladder --scale quick|cpu|colab|paper [--rungs 0-5] --out dpedu/results/ladder_<scale>.json

The record holds every rung's training record (accuracy, ε, history, wall time, device, ...), the
change each rung makes, the paper's validation accuracies labelled as the paper's, the machine's
load averages at the start (``load_average_at_start``) and at the end, and the provenance of the
whole run (:func:`dpedu.provenance.record`).

``--checkpoint-dir DIR`` makes the ladder resumable rung by rung: rung ``i`` trains with
checkpoints in ``DIR/rung<i>/`` (:mod:`dpedu.checkpoint`, resumed from the newest valid one when
the command is run again) and its finished record is stored as ``DIR/rung<i>/record.json``
(written atomically); a rung whose record is complete is not run again. Run the same command
again after an interruption. The checkpoints hold the sampling and noise randomness: keep ``DIR``
as private as the data.

Taught in notebooks/04_cifar10_ladder.ipynb.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from dpedu import ladder, provenance
from dpedu.data import DataError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dpedu.experiments.ladder", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=ladder.SCALES, required=True,
                        help="quick: CI on 2 CPU cores; cpu: the whole ladder in ~20-25 min on 2 CPU cores; "
                             "colab: a free Colab GPU; paper: De et al.'s setting (an accelerator)")
    parser.add_argument("--rungs", default=f"0-{ladder.NUM_RUNGS - 1}", help="e.g. 0-5, 3 or 0,2,4 (default: all)")
    parser.add_argument("--out", required=True, help="JSON file to write, e.g. dpedu/results/ladder_quick.json")
    parser.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                        help="resume rung by rung: checkpoints and each finished rung's record in DIR/rung<i>/ "
                             "(run the same command again after an interruption). PRIVATE: checkpoints hold "
                             "the sampling and noise randomness; keep DIR as private as the data")
    parser.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                        help="also checkpoint every N steps (default: each epoch)")
    return parser


def _complete_record(path: Path) -> dict | None:
    """A rung's stored record, or None if it is missing or incomplete (cut off mid-write)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "rung" in record and "epsilon" in record else None


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def run_resumable(scale: str, rungs: list[int], checkpoint_dir, checkpoint_every=None) -> list[dict]:
    """:func:`dpedu.ladder.run_ladder` one rung at a time, resumable: rung ``i`` checkpoints in
    ``checkpoint_dir/rung<i>/`` and stores its record there; a rung with a complete record is skipped."""
    from dpedu import data

    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1 (steps), got {checkpoint_every!r}")
    folder = Path(checkpoint_dir)
    records, dataset = [], None
    for index in rungs:
        rung_dir = folder / f"rung{index}"
        record = _complete_record(rung_dir / "record.json")
        if record is None:
            if dataset is None:  # loaded once, and only if a rung still has to run
                first = ladder.ladder_configs(scale)[0]
                dataset = data.load_cifar10(source=first.source or "auto", quick=first.quick)
            rung_dir.mkdir(parents=True, exist_ok=True)
            [record] = ladder.run_ladder(scale, [index], dataset=dataset, checkpoint_dir=rung_dir,
                                         checkpoint_every=checkpoint_every, resume=True)
            _write_atomically(rung_dir / "record.json", json.dumps(record, indent=1, default=provenance.jsonable) + "\n")
        records.append(record)
    return records


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        rungs = ladder.parse_rungs(args.rungs)
        # The machine's load when the run starts (the record adds it at the end): wall times on a
        # shared CPU depend on it.
        load_start = provenance.load_average()
        start = time.perf_counter()
        if args.checkpoint_dir is not None:
            records = run_resumable(args.scale, rungs, args.checkpoint_dir, args.checkpoint_every)
        elif args.checkpoint_every is not None:
            raise ValueError("--checkpoint-every needs --checkpoint-dir")
        else:
            records = ladder.run_ladder(args.scale, rungs)
    except (ValueError, DataError) as err:
        print(f"python -m dpedu.experiments.ladder: error: {err}", file=sys.stderr)
        return 2
    result = provenance.record(
        # As it is run (sys.argv[0] of `python -m` is this file's path on the machine that ran it).
        command=shlex.join(["python", "-m", "dpedu.experiments.ladder", *argv]),
        experiment="cifar10-ablation-ladder",
        scale=args.scale,
        dataset=records[0]["dataset"]["name"],
        paper_label=ladder.PAPER_LABEL,
        paper_validation_accuracy=list(ladder.PAPER_VALIDATION_ACCURACY),
        rungs=records,
        wall_seconds=time.perf_counter() - start,
        load_average_at_start=load_start,
        seed=ladder.ladder_configs(args.scale)[0].seed,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=provenance.jsonable) + "\n")
    for record in records:
        print(f"rung {record['rung']} {record['title']:<34} test accuracy {100 * record['test_accuracy']:5.1f} %  "
              f"ε = {record['epsilon']:.3f} (σ = {record['noise_multiplier']:.3g}, {record['steps']} steps)  "
              f"{record['wall_seconds']:6.1f} s")
    print(f"data: {result['dataset']}; device: {result['device']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
