"""Provenance for every stored result: command, git commit, device, wall time, date, seed."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys


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
    """The command that started this process, as a shell would run it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("dpedu", "__main__.py")):
        argv[0] = "dpedu"
    return " ".join(shlex.quote(a) for a in argv)


def record(**fields) -> dict:
    """A result record: ``fields`` plus command, git_commit, device, date, python and jax versions.

    ``wall_seconds`` and ``seed`` must be passed by the caller, who measured / chose them.
    """
    import jax

    rec = dict(fields)
    rec.setdefault("command", command_line())
    rec.setdefault("git_commit", git_commit())
    rec.setdefault("device", device_description())
    rec.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    rec.setdefault("python", platform.python_version())
    rec.setdefault("jax", jax.__version__)
    return rec
