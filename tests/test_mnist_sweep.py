"""The MNIST sweep: its plan, the σ it asks the trainer for, the widget's look-up, the table's records."""

from __future__ import annotations

import json

import pytest

from dpedu import accounting, cli, configs, pca
from dpedu.experiments import mnist_sweep as sweep


def test_plans_have_the_documented_runs():
    quick, full = sweep.plan("quick"), sweep.plan("full")
    assert len(quick) == 12 and len(full) == 22
    assert {r.part for r in full} == set(sweep.PARTS)
    assert not [r for r in quick if r.part == "lr-schedule"]
    # Grid runs differ by construction; among lesson runs, "constant lr" IS the clip-norm baseline:
    # 21 distinct full runs, 46 CNN epochs and 6 MLP epochs (the budget in the module docstring).
    grid = [r for r in full if r.part in sweep.GRID_PARTS]
    lessons = {sweep.run_config(r, "full", 60_000) for r in full if r.part in sweep.LESSON_PARTS}
    assert len(grid) + len(lessons) == 21
    epochs = {"mnist-cnn": sum(c.epochs for c in lessons), "mnist-abadi": 0.0}
    for run in grid:
        epochs[run.config] += dict(run.changes)["epochs"]
    assert epochs == {"mnist-cnn": 46.0, "mnist-abadi": 6.0}


def test_clip_norm_lesson_keeps_lr_times_clip_norm_except_the_control():
    for mode in sweep.MODES:
        runs = [dict(r.changes) for r in sweep.plan(mode, ("clip-norm",))]
        products = [round(c["lr"] * c["l2_clip_norm"], 12) for c in runs]
        assert products.count(0.05) == len(runs) - 1 and 0.5 in products


def test_bad_mode_or_part_is_a_value_error():
    with pytest.raises(ValueError, match="mode must be one of"):
        sweep.plan("medium")
    with pytest.raises(ValueError, match="parts must be among"):
        sweep.plan("quick", ("grid-cnn", "nope"))


def test_grid_run_asks_for_the_epsilon_of_its_sigma():
    run = sweep.Run("grid-cnn", "mnist-cnn", (("batch_size", 256), ("epochs", 3.0), ("accountant", "rdp")), 1.0)
    config = sweep.run_config(run, "full", 60_000)
    q, steps = 256 / 60_000, round(3.0 / (256 / 60_000))
    assert steps == 703
    assert config.target_epsilon == pytest.approx(accounting.epsilon(1.0, q, steps, 1e-5, "rdp"), rel=1e-12)
    # The trainer's calibration gives back σ (within its 1 % tolerance, never below).
    sigma = accounting.calibrate_noise_multiplier(config.target_epsilon, q, steps, 1e-5, "rdp")
    assert 1.0 <= sigma <= 1.0 / 0.99
    assert config.microbatch_size == 128  # full mode keeps the config's micro-batch bound (memory)


def test_grid_target_uses_the_calibration_accountant():
    run = sweep.Run("grid-cnn", "mnist-cnn", (("batch_size", 200), ("calibration_accountant", "rdp")), 0.8)
    config = sweep.run_config(run, "quick", 60_000)
    assert config.accountant == "pld"  # ε is reported with PLD, σ calibrated with RDP
    assert config.target_epsilon == pytest.approx(accounting.epsilon_for_event(
        accounting.dp_event(0.8, 0.05, 40), 1e-5, "rdp"), rel=1e-12)


def test_mlp_grid_run_pays_for_the_dp_pca():
    run = sweep.Run("grid-mlp", "mnist-abadi", (("batch_size", 600), ("epochs", 1.0), ("accountant", "rdp")), 4.0)
    config = sweep.run_config(run, "full", 60_000)
    event = pca.composed_dp_event(7.0, accounting.dp_event(4.0, 0.01, 100))
    assert config.target_epsilon == pytest.approx(accounting.epsilon_for_event(event, 1e-5, "rdp"), rel=1e-12)
    assert config.target_epsilon > accounting.epsilon(4.0, 0.01, 100, 1e-5, "rdp") + 0.3


def test_quick_runs_use_one_microbatch_and_the_subset():
    for run in sweep.plan("quick", sweep.LESSON_PARTS):  # (grid runs share the logic; their ε targets are slow)
        config = sweep.run_config(run, "quick", 60_000)
        assert config.quick and config.train_examples == 4000
        assert config.microbatch_size >= config.batch_size  # a typical Poisson batch fits in one


def _fake_sweep():
    def record(config, sigma, q, history, part="grid-cnn"):
        return {"part": part, "label": "", "record": {
            "config": {"name": config}, "model": {"name": config}, "noise_multiplier": sigma, "sampling_rate": q,
            "delta": 1e-5, "dataset": {"train_examples": 60_000},
            "history": [{"step": t, "epoch": t * q, "test_accuracy": a, "epsilon": e} for t, a, e in history]}}

    return {"runs": [record("mnist-cnn", 1.0, 0.01, [(100, 0.9, 1.0), (200, 0.93, 1.5)]),
                     record("mnist-cnn", 2.0, 0.01, [(100, 0.85, 0.4)]),
                     record("mnist-abadi", 4.0, 0.01, [(100, 0.8, 0.9)], part="grid-mlp"),
                     record("mnist-cnn", 0.5, 0.01, [(100, 0.5, 9.0)], part="clip-norm")]}


def test_grid_points_and_nearest_lookup():
    points = sweep.grid_points(_fake_sweep(), "mnist-cnn")
    assert [(p["noise_multiplier"], p["steps"]) for p in points] == [(1.0, 100), (1.0, 200), (2.0, 100)]
    assert len(sweep.grid_points(_fake_sweep())) == 4  # lesson runs are not grid points
    point, distance = sweep.nearest_point(points, 1.0, 0.01, 200)
    assert point["test_accuracy"] == 0.93 and distance == 0.0
    point, distance = sweep.nearest_point(points, 1.6, 0.01, 110)  # ln 1.6 is nearer ln 2 than ln 1
    assert point["noise_multiplier"] == 2.0 and distance > 0
    with pytest.raises(ValueError, match="points must not be empty"):
        sweep.nearest_point([], 1.0, 0.01, 100)


def test_table_commands_are_valid_dpedu_train_commands():
    commands = sweep.table_commands()
    assert len(commands) == len(sweep.TABLE_ROWS) == 14
    parser = cli.build_parser()
    outs = set()
    for row, command in zip(sweep.TABLE_ROWS, commands):
        assert command[:2] == ["dpedu", "train"]
        args = parser.parse_args(command[1:])
        assert (args.config, args.target_epsilon, args.epochs, args.delta) == (row.config, row.target_epsilon, row.epochs, 1e-5)
        outs.add(args.out)
    assert float(sweep.DELTA_ARGUMENT) == sweep.DELTA
    assert len(outs) == 14 and "dpedu/results/mnist-abadi-small-noise-ema-eps8-950ep.json" in outs and "dpedu/results/mnist-abadi-small-noise-eps8-950ep.json" in outs and "dpedu/results/mnist-cnn-eps3-40ep.json" in outs and "dpedu/results/mnist-cnn-eps3.json" in outs
    # The paper's numbers are labelled as the papers'.
    assert all("(paper" in row.paper for row in sweep.TABLE_ROWS if row.paper_accuracy is not None)


def test_abadi_rows_use_the_papers_pca_noise_per_noise_level():
    # Abadi et al. 2016 §5.2: σ_p = 4, 7, 16 for their small, medium and large noise (ε = 8, 2, 0.5).
    abadi = {row.target_epsilon: configs.get_config(row.config) for row in sweep.TABLE_ROWS if row.paper == sweep.ABADI_PAPER}
    assert sum(row.paper == sweep.ABADI_PAPER for row in sweep.TABLE_ROWS) == 8  # 30 epochs, long runs, + EMA
    assert {eps: c.pca_noise_multiplier for eps, c in abadi.items()} == {8.0: 4.0, 2.0: 7.0, 0.5: 16.0}
    for eps, config in abadi.items():
        assert config.target_epsilon == eps and (config.batch_size, config.l2_clip_norm, config.pca_dims) == (600, 4.0, 60)
        # The DP-PCA leaves some of the budget to DP-SGD (with σ_p = 7 it alone spends ε ≈ 0.50).
        assert accounting.epsilon_for_event(pca.pca_dp_event(config.pca_noise_multiplier), 1e-5, "pld") < 0.5 * eps


@pytest.mark.parametrize("target_epsilon,paper_sigma", [(8.0, 2.0), (2.0, 4.0), (0.5, 8.0)])
def test_long_abadi_rows_train_about_as_long_as_the_papers_sigma_allows(target_epsilon, paper_sigma):
    # The long rows' epochs make the calibrated σ about the paper's: with the paper's σ, ε after that
    # many epochs (DP-PCA composed in, PLD) is within 10 % of the row's target.
    row = next(r for r in sweep.TABLE_ROWS if r.target_epsilon == target_epsilon and r.epochs and r.paper)
    config = configs.get_config(row.config)
    q = config.batch_size / 60_000
    event = pca.composed_dp_event(config.pca_noise_multiplier,
                                  accounting.dp_event(paper_sigma, q, round(row.epochs / q)))
    assert accounting.epsilon_for_event(event, 1e-5, "pld") == pytest.approx(target_epsilon, rel=0.1)


def test_table_records_accept_only_the_rows_own_full_mnist_runs(tmp_path):
    def record(row, **changes):
        rec = {"private": True, "quick": False, "target_epsilon": row.target_epsilon, "epsilon": row.target_epsilon * 0.99,
               "epochs": row.epochs or configs.get_config(row.config).epochs, "config": {"name": row.config},
               "dataset": {"train_examples": 60_000}, "command": " ".join(sweep.table_command(row))}
        sweep.table_record_path(row, tmp_path).write_text(json.dumps(dict(rec, **changes)))

    medium, small, large, *_, cnn8, cnn3, cnn3_40, cnn2, cnn1, cnn05 = sweep.TABLE_ROWS
    record(medium)
    record(cnn3_40)
    record(small, quick=True)
    record(large, epsilon=0.51)  # over its target
    record(cnn3, dataset={"train_examples": 4000})
    record(cnn1, command="python my_script.py")
    record(cnn2, epochs=10.0)
    record(cnn8, config={"name": "mnist-abadi"})
    assert list(sweep.table_records(tmp_path)) == [medium, cnn3_40]
    assert sweep.table_record_path(cnn3_40, tmp_path).name == "mnist-cnn-eps3-40ep.json"


def test_committed_table_records_are_the_rows_own():
    # Every record under results/ named like a table row must be accepted by table_records (else the
    # notebook would silently show "not run yet" for it), and made at a clean commit.
    stored = sweep.table_records()
    for row in sweep.TABLE_ROWS:
        if sweep.table_record_path(row).is_file():
            assert row in stored, row
            assert not stored[row]["git_commit"].endswith("-dirty")


def test_cli_table_dry_run_and_errors(capsys, tmp_path):
    assert sweep.main(["--table", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("dpedu train --config") == 14
    assert sweep.main(["--quick"]) == 2
    assert "--out is required" in capsys.readouterr().err
    assert sweep.main(["--quick", "--parts", "nope", "--out", str(tmp_path / "x.json")]) == 2
    assert "parts must be among" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_stored_quick_sweep_matches_its_plan():
    stored = sweep.load_sweep("quick")
    if stored is None:
        pytest.skip("results/mnist_sweep_quick.json not made yet")
    assert stored["mode"] == "quick" and stored["command"].startswith("python -m dpedu.experiments.mnist_sweep --quick")
    planned = sweep.plan("quick")
    assert [(e["part"], e["label"]) for e in stored["runs"]] == [(r.part, r.label) for r in planned]
    for entry, run in zip(stored["runs"], planned):
        rec = entry["record"]
        assert rec["quick"] and rec["dataset"]["train_examples"] == 4000 and rec["epsilon"] <= rec["target_epsilon"]
        if run.noise_multiplier is not None:  # grid: σ calibrated back to the planned value
            assert run.noise_multiplier * (1 - 1e-9) <= rec["noise_multiplier"] <= run.noise_multiplier / 0.99
        else:
            assert rec["target_epsilon"] == sweep.LESSON_EPSILON
    for point in sweep.grid_points(stored):
        assert 0 <= point["test_accuracy"] <= 1 and point["epsilon"] > 0


@pytest.mark.slow
def test_one_tiny_real_run(shared_data_dir):
    from dpedu import data

    mnist = data.load_mnist(data_dir=shared_data_dir)
    run = sweep.Run("grid-cnn", "mnist-cnn", (("train_examples", 400), ("test_examples", 200), ("batch_size", 100),
                                              ("epochs", 1.0), ("accountant", "rdp")), 2.0, "tiny")
    entries = sweep.run_sweep([run, run], "quick", dataset=mnist, progress=False)
    assert entries[0]["record"] is entries[1]["record"]  # identical runs are trained once
    (point,) = sweep.grid_points({"runs": entries})
    assert point["steps"] == 4 and 2.0 <= point["noise_multiplier"] <= 2.0 / 0.99
    assert point["epsilon"] == pytest.approx(accounting.epsilon(point["noise_multiplier"], 0.25, 4, 1e-5, "rdp"), rel=1e-2)
