"""Provenance for every stored result: command, git commit, device, wall time, date, seed.

Stored results ship inside the package (``dpedu/results/*.json``, package data), so a notebook
reads them the same way from a clone, a pip install, Colab or Binder: :func:`load_record`.
"""

from __future__ import annotations

import datetime as _dt
import importlib.resources
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path


# The folder of the stored records inside the installed package (a real folder: setuptools installs
# package data as files, also for editable installs).
RESULTS_DIR = Path(str(importlib.resources.files("dpedu") / "results"))


def load_record(name: str, results_dir: str | os.PathLike | None = None) -> dict | None:
    """The stored record ``name`` (e.g. ``"ladder_cpu.json"``), or None if no such run is stored.

    Args:
      name: the record's file name inside the results folder.
      results_dir: where to look (default: :data:`RESULTS_DIR`, the records shipped with dpedu).

    Raises:
      ValueError: the file exists but is not valid JSON (a damaged install: reinstall dpedu).

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    path = Path(RESULTS_DIR if results_dir is None else results_dir) / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"stored record {path} is not valid JSON ({err}); reinstall dpedu") from err


def jsonable(value):
    """``json.dumps(..., default=jsonable)``: NumPy scalars and NumPy/JAX arrays inside a record
    become plain Python numbers and lists; anything else raises ``TypeError``."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def git_commit(path: str | None = None) -> str:
    """The commit of the checkout holding ``path`` (default: this package), with ``-dirty`` when
    tracked files differ from it; ``"unknown"`` outside a git checkout (e.g. a pip install)."""
    where = path or os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def device_description() -> str:
    """The accelerator JAX runs on, or the CPU model and core count."""
    import jax

    dev = jax.devices()[0]
    if dev.platform != "cpu":
        return f"{dev.platform.upper()}: {dev.device_kind} (x{jax.device_count()})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU: {cpu} ({cores} cores)"


def command_line() -> str:
    """The command that started this process, as a shell would run it.

    ``dpedu ...`` for the console script and ``python -m dpedu ...``; ``python -m pkg.mod ...``
    for other modules run with ``-m`` (whose ``sys.argv[0]`` is a file path, not a command);
    otherwise ``sys.argv`` as it is.
    """
    argv = list(sys.argv)
    module = _run_module()
    if module is not None and module != "dpedu":
        argv = ["python", "-m", module, *argv[1:]]
    elif argv and (module == "dpedu" or os.path.basename(argv[0]) in ("dpedu", "dpedu.exe")):
        argv[0] = "dpedu"
    return " ".join(shlex.quote(a) for a in argv)


def _run_module() -> str | None:
    """The ``pkg.mod`` of ``python [options] -m pkg.mod args``, or None for any other start."""
    orig = list(getattr(sys, "orig_argv", []))
    args = sys.argv[1:]
    for i, arg in enumerate(orig[:-1]):
        # the -m that the script's own arguments follow (a later "-m" may be a script argument)
        if arg == "-m" and orig[i + 2:] == args:
            return orig[i + 1]
    return None


def load_average() -> dict:
    """The system's 1-, 5- and 15-minute load averages (None where the OS has none), so that a
    recorded wall time can be judged: on 2 cores, a load well above 2 means shared CPUs."""
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        return {"load_average_1min": None, "load_average_5min": None, "load_average_15min": None}
    return {"load_average_1min": round(one, 2), "load_average_5min": round(five, 2),
            "load_average_15min": round(fifteen, 2)}


def record(**fields) -> dict:
    """A result record: ``fields`` plus command, git_commit, device, date, the load averages at
    the time of the record (:func:`load_average`), python and jax versions.

    ``wall_seconds`` and ``seed`` must be passed by the caller, who measured / chose them.
    """
    import jax

    rec = dict(fields)
    rec.setdefault("command", command_line())
    rec.setdefault("git_commit", git_commit())
    rec.setdefault("device", device_description())
    rec.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    for key, value in load_average().items():
        rec.setdefault(key, value)
    rec.setdefault("python", platform.python_version())
    rec.setdefault("jax", jax.__version__)
    return rec
