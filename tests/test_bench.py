"""The step-time benchmark: both steps timed, a ratio, Opacus when installed, CLI output."""

import json

import pytest

from dpedu import bench, cli


def test_bench_times_both_steps_and_every_clipping_method():
    result = bench.bench("mnist-mlp-pca", 8, steps=20)
    for kind in ("nonprivate", "dpsgd"):
        timing = result[kind]
        assert timing["compile_seconds"] > 0 and timing["median_step_seconds"] > 0
        assert timing["examples_per_second"] == pytest.approx(8 / timing["median_step_seconds"])
    # The ratio is the median of per-round ratios (drift-robust), close to the ratio of medians.
    assert result["ratio"] == result["dpsgd"]["ratio_to_nonprivate"] > 0
    ratio_of_medians = result["dpsgd"]["median_step_seconds"] / result["nonprivate"]["median_step_seconds"]
    assert 0.5 < result["ratio"] / ratio_of_medians < 2
    # The MLP's configs use ghost clipping; the other methods are timed for comparison.
    assert result["clipping"] == {"method": "ghost", "norm_chunk_size": None}
    assert list(result["dpsgd_by_method"]) == ["ghost", "per_example", "two_pass"]
    assert result["dpsgd_by_method"]["ghost"] == result["dpsgd"] and result["dpsgd_skipped"] == {}
    assert result["dpsgd_by_method"]["per_example"]["norm_chunk_size"] is None
    assert result["parameters"] == 71_010 and result["steps"] == 20
    assert result["opacus"] == {"skipped": "not requested (--opacus)"}
    assert {"device", "git_commit", "date", "command", "load_average_1min"} <= set(result)
    # The whole benchmark's wall time, at least the timed steps' (a record states its wall time).
    timed = sum(result[k]["median_step_seconds"] for k in ("nonprivate", "dpsgd")) * 20
    assert result["wall_seconds"] >= 0.5 * timed and result["seed"] == 0
    assert "DP-SGD ghost (used)" in bench._describe(result)


def test_bench_clipping_method_override_without_comparison():
    result = bench.bench("mnist-mlp-pca", 4, steps=20, clipping_method="per_example", compare_methods=False)
    assert result["clipping"] == {"method": "per_example", "norm_chunk_size": None}
    assert list(result["dpsgd_by_method"]) == ["per_example"]


def test_describe_says_why_a_method_was_not_timed():
    timing = {"median_step_seconds": 0.01, "examples_per_second": 200.0, "compile_seconds": 1.0}
    result = {"model": "wrn-tiny", "parameters": 1, "batch_size": 2, "steps": 20, "device": "cpu",
              "nonprivate": timing, "dpsgd": timing, "dpsgd_by_method": {"per_example": timing},
              "dpsgd_skipped": {"ghost": "a reason"}, "clipping": {"method": "per_example"}, "ratio": 1.0,
              "load_average_1min": 0.5, "opacus": {"skipped": "not requested (--opacus)"}}
    assert "  DP-SGD ghost: not timed (a reason)" in bench._describe(result)


def test_opacus_skip_says_why(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name in ("torch", "opacus"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    result = bench._opacus("mnist-cnn", None, None, 20)
    assert result == {"skipped": "torch and opacus are not installed (pip install 'dpedu[bench]')"}


@pytest.mark.slow
def test_opacus_is_timed_when_installed():
    pytest.importorskip("opacus")
    result = bench.bench("mnist-mlp-pca", 8, steps=20, opacus=True)["opacus"]
    assert result["opacus"]["median_step_seconds"] > 0 and result["nonprivate"]["median_step_seconds"] > 0
    ratio_of_medians = result["opacus"]["median_step_seconds"] / result["nonprivate"]["median_step_seconds"]
    assert 0.5 < result["ratio"] / ratio_of_medians < 2
    assert "not installed" not in str(bench._opacus("wrn-tiny", None, None, 20))  # skipped: no twin


def test_steps_are_timed_in_interleaved_rounds():
    order = []
    calls = {kind: (lambda kind=kind: order.append(kind)) for kind in ("a", "b")}
    timed = bench._time_interleaved(calls, 3)
    # First call and warm-up of each kind, then rounds of one call of each kind.
    assert order == ["a"] * (1 + bench._WARMUP) + ["b"] * (1 + bench._WARMUP) + ["a", "b"] * 3
    assert set(timed) == {"a", "b"} and all(len(times) == 3 for _, times in timed.values())
    # A machine that slows down mid-run: per-round ratios stay 2, the ratio of medians does not.
    assert bench._round_ratio([2, 2, 20, 20, 20], [1, 1, 10, 10, 10]) == 2
    assert bench._round_ratio([2, 2, 2, 20, 20], [1, 1, 10, 10, 10]) == 2


def test_torch_twin_has_the_same_parameter_count():
    torch = pytest.importorskip("torch")
    del torch
    for name, count in (("mnist-cnn", 26_010), ("cifar10-cnn", 550_570), ("mnist-mlp-pca", 71_010)):
        assert sum(p.numel() for p in bench._torch_model(name).parameters()) == count
    assert bench._torch_model("wrn-tiny") is None


def test_cli_json_is_one_object(capsys):
    assert cli.main(["bench", "--model", "mnist-mlp-pca", "--batch-size", "4", "--json", "--no-compare",
                     "--clipping-method", "two_pass"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "mnist-mlp-pca" and result["batch_size"] == 4 and result["ratio"] > 0
    assert list(result["dpsgd_by_method"]) == ["two_pass"]


def test_cli_clipping_choices_are_the_library_methods():
    from dpedu.clipping import CLIPPING_METHODS

    bench_parser = cli.build_parser()._subparsers._group_actions[0].choices["bench"]
    action = next(a for a in bench_parser._actions if a.dest == "clipping_method")
    assert tuple(action.choices) == CLIPPING_METHODS


@pytest.mark.parametrize("argv, message", [
    (["bench", "--model", "nope", "--batch-size", "4"], "model must be one of"),
    (["bench", "--model", "mnist-cnn", "--batch-size", "4", "--steps", "5"], "steps must be an integer >= 20"),
    (["bench", "--model", "mnist-cnn", "--batch-size", "0"], "batch_size"),
])
def test_cli_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
