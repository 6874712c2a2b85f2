"""dpedu.provenance: the recorded command line (console script, python -m) and load averages."""

import subprocess
import sys

import pytest

from dpedu import provenance


@pytest.mark.parametrize("orig_argv, argv, expected", [
    (["/venv/bin/python", "/venv/bin/dpedu", "train", "--quick"], ["/venv/bin/dpedu", "train", "--quick"],
     "dpedu train --quick"),
    (["python3", "-m", "dpedu", "bench", "--model", "x y"], ["/repo/dpedu/__main__.py", "bench", "--model", "x y"],
     "dpedu bench --model 'x y'"),
    (["/venv/bin/python", "-u", "-m", "dpedu.experiments.mnist_sweep", "--quick", "-m", "z"],
     ["/repo/dpedu/experiments/mnist_sweep.py", "--quick", "-m", "z"],
     "python -m dpedu.experiments.mnist_sweep --quick -m z"),
    (["python", "script.py", "-m", "pkg"], ["script.py", "-m", "pkg"], "script.py -m pkg"),
])
def test_command_line(monkeypatch, orig_argv, argv, expected):
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    monkeypatch.setattr(sys, "argv", argv)
    assert provenance.command_line() == expected


def test_command_line_of_a_real_python_m_run(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("from dpedu.provenance import command_line\nprint(command_line())\n")
    out = subprocess.run([sys.executable, "-m", "pkg.mod", "--n", "3"], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "python -m pkg.mod --n 3"


def test_record_has_load_averages_and_provenance():
    rec = provenance.record(wall_seconds=1.0, seed=0)
    assert {"command", "git_commit", "device", "date", "python", "jax"} <= set(rec)
    for key in ("load_average_1min", "load_average_5min", "load_average_15min"):
        assert rec[key] is None or rec[key] >= 0
    assert rec["load_average_1min"] is not None  # Linux CI has getloadavg


def test_load_average_without_os_support(monkeypatch):
    def unsupported():
        raise OSError("no load average")

    monkeypatch.setattr(provenance.os, "getloadavg", unsupported)
    assert provenance.load_average() == {"load_average_1min": None, "load_average_5min": None,
                                         "load_average_15min": None}


def test_jsonable_turns_numpy_and_jax_values_into_plain_json():
    import json

    import jax.numpy as jnp
    import numpy as np

    record = {"scalar": np.float32(1.5), "count": np.int64(3), "array": np.arange(3), "device": jnp.ones(2)}
    assert json.loads(json.dumps(record, default=provenance.jsonable)) == {
        "scalar": 1.5, "count": 3, "array": [0, 1, 2], "device": [1.0, 1.0]}
    with pytest.raises(TypeError, match="cannot store object in JSON"):
        json.dumps({"x": object()}, default=provenance.jsonable)


def test_stored_records_ship_with_the_package_and_carry_provenance():
    names = sorted(p.name for p in provenance.RESULTS_DIR.glob("*.json"))
    assert "ladder_cpu.json" in names and "attack_full.json" in names and "mnist_sweep_full.json" in names
    for name in names:
        rec = provenance.load_record(name)
        for r in rec if isinstance(rec, list) else [rec]:
            assert {"command", "git_commit", "device", "wall_seconds"} <= r.keys(), name
            assert not r["git_commit"].endswith("-dirty"), name  # made by committed code


def test_load_record_absent_and_damaged(tmp_path):
    assert provenance.load_record("nothing.json", tmp_path) is None
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="reinstall dpedu"):
        provenance.load_record("bad.json", tmp_path)


def test_built_wheel_holds_the_stored_records(tmp_path):
    # What Colab installs is a wheel built from the pinned commit: the records must be inside it.
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(root)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("dpedu-*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    for path in provenance.RESULTS_DIR.glob("*.json"):
        assert f"dpedu/results/{path.name}" in inside
