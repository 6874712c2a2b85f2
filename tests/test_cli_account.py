"""`dpedu account` and `dpedu calibrate` as a user runs them: a subprocess, JSON out, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dpedu import accounting

ABADI_ARGS = ["--noise-multiplier", "4", "--sampling-rate", "0.01", "--steps", "10000", "--delta", "1e-5"]


def dpedu(*args):
    return subprocess.run([sys.executable, "-m", "dpedu", *args], capture_output=True, text=True, timeout=120)


def test_account_json_single_accountant():
    out = dpedu("account", *ABADI_ARGS, "--accountant", "rdp", "--json")
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert set(row) == {"accountant", "epsilon", "delta", "noise_multiplier", "sampling_rate", "steps"}
    assert row["accountant"] == "rdp" and row["steps"] == 10_000 and row["delta"] == 1e-5
    assert row["epsilon"] == pytest.approx(1.03549, rel=1e-5)


def test_account_all_lists_every_accountant_with_its_total_delta():
    out = dpedu("account", *ABADI_ARGS, "--accountant", "all", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["accountant"] for r in rows] == list(accounting.ACCOUNTANTS)
    by_name = {r["accountant"]: r for r in rows}
    assert by_name["naive"]["delta"] == pytest.approx(0.1) and by_name["strong"]["delta"] == pytest.approx(1.01e-3)
    assert by_name["moments"]["epsilon"] == pytest.approx(1.25857, rel=1e-5)
    assert by_name["pld"]["epsilon"] == pytest.approx(0.94700, rel=1e-5)


def test_calibrate_json():
    out = dpedu("calibrate", "--target-epsilon", "1.0", "--sampling-rate", "0.01", "--steps", "10000",
                "--delta", "1e-5", "--accountant", "rdp", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) == {"noise_multiplier", "epsilon", "target_epsilon", "delta", "sampling_rate", "steps",
                           "accountant"}
    assert result["epsilon"] <= 1.0
    assert accounting.epsilon(0.99 * result["noise_multiplier"], 0.01, 10_000, 1e-5, "rdp") > 1.0


def test_bad_input_exits_2_with_one_line():
    out = dpedu("account", "--noise-multiplier", "-1", "--sampling-rate", "0.01", "--steps", "10", "--delta", "1e-5")
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dpedu account: error: noise_multiplier must be in")
    assert "Traceback" not in out.stderr


def test_calibrate_bad_input_in_process(capsys):
    # Same handler as above, without another interpreter start-up.
    from dpedu import cli

    code = cli.main(["calibrate", "--target-epsilon", "1", "--sampling-rate", "0.01", "--steps", "10", "--delta", "2"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.strip().splitlines() == ["dpedu calibrate: error: delta must be in (0, 1), got 2.0"]


def test_parser_is_built_without_numerical_imports_and_its_choices_match_the_library():
    code = ("import sys, dpedu.cli; dpedu.cli.build_parser(); "
            "print(sorted(m for m in ('jax', 'dp_accounting', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"  # `dpedu --help` stays instant
    from dpedu import cli, clipping

    assert cli.ACCOUNTANTS == accounting.ACCOUNTANTS
    assert cli.CLIPPING_METHODS == clipping.CLIPPING_METHODS


@pytest.mark.parametrize("args, message", [
    (["train", "--config", "nope"], "dpedu train: error: config must be one of"),
    (["train", "--config", "mnist-cnn", "--target-epsilon", "-1"], "dpedu train: error: target_epsilon must be in (0, inf)"),
    (["calibrate", "--target-epsilon", "0", "--sampling-rate", "0.01", "--steps", "10", "--delta", "1e-5"],
     "dpedu calibrate: error: target_epsilon must be in (0, inf)"),
    (["train", "--config", "mnist-cnn", "--source", "official", "--data-dir", "/nonexistent/data"],
     "dpedu train: error: "),
])
def test_user_errors_are_one_line_with_exit_status_2(args, message):
    out = dpedu(*args)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), out.stderr
    assert "Traceback" not in out.stderr
