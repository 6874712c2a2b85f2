"""How much slower is DP-SGD than ordinary SGD? One jitted step of each, timed on one model and batch.

Both steps come from :mod:`dpedu.dpsgd` (:func:`~dpedu.dpsgd.make_nonprivate_step`: batched
back-propagation; :func:`~dpedu.dpsgd.make_dp_step`: clipped per-example gradients, noise) with
the whole batch as one micro-batch, so each step is ONE compiled call. The DP-SGD step uses the
clipping method the model's configs use (:func:`dpedu.configs.clipping_for`); the other methods of
:data:`dpedu.clipping.CLIPPING_METHODS` are timed too unless ``compare_methods=False`` (ghost
clipping only where :class:`dpedu.ghost.GhostLoss` supports the model; the record says why not
otherwise). The loss is a :class:`~dpedu.ghost.GhostLoss`, the usual one-example loss for the
other methods.
Each is compiled (timed separately) and warmed up; then all are timed in ``steps`` interleaved
rounds, one step of each per round (with ``block_until_ready``). Each step's median is reported,
and each ratio is the median over rounds of the two steps' times in the same round: interleaving
keeps the ratios honest when the machine's speed drifts. Optionally the same model and batch are
timed with Opacus (PyTorch), when ``torch`` and ``opacus`` are installed (``pip install 'dpedu[bench]'``).

The inputs are random: step time does not depend on pixel values.

Taught in notebooks/03_dpsgd_mnist.ipynb.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import warnings

import jax
import numpy as np
import optax

from dpedu import clipping, dpsgd, ghost, models
from dpedu._validation import check_steps
from dpedu.configs import clipping_for

MIN_STEPS = 20
_WARMUP = 2


def _time_interleaved(calls: dict, steps: int) -> dict:
    """``{kind: (first call's seconds (compilation), [seconds of each of ``steps`` calls after warm-up])}``.

    The calls are timed in ``steps`` interleaved rounds, one call of each kind per round, so a
    drift in the machine's speed (other jobs, clock changes: on the shared 2-core machine
    back-to-back blocks of the same step differed by up to 1.7x) affects every kind alike.
    """
    compile_seconds = {}
    for kind, call in calls.items():
        start = time.perf_counter()
        call()
        compile_seconds[kind] = time.perf_counter() - start
        for _ in range(_WARMUP):
            call()
    times = {kind: [] for kind in calls}
    for _ in range(steps):
        for kind, call in calls.items():
            start = time.perf_counter()
            call()
            times[kind].append(time.perf_counter() - start)
    return {kind: (compile_seconds[kind], times[kind]) for kind in calls}


def _round_ratio(times: list, baseline: list) -> float:
    """Median over rounds of ``time / baseline time`` in the same round: robust to drift."""
    return statistics.median(t / b for t, b in zip(times, baseline))


def _jax_step_timer(step, params, optimizer, batch):
    state = {"params": params, "opt_state": optimizer.init(params)}
    key = jax.random.key(0)

    def call():
        state["params"], state["opt_state"], stats = step(state["params"], state["opt_state"], key, *batch)
        jax.block_until_ready((state["params"], stats))

    return call


def _torch_model(name: str):
    """The PyTorch twin of a registered model, built from the same layer table; None if none."""
    import torch.nn as tnn

    spec = models.get_model(name)
    if spec.module is models.AbadiMLP:
        return tnn.Sequential(tnn.Linear(spec.input_shape[0], 1000), tnn.ReLU(), tnn.Linear(1000, 10))
    if spec.module is not models.TanhCNN:
        return None
    variant = spec.kwargs["variant"]
    layers, channels, size = [], spec.input_shape[-1], spec.input_shape[0]
    for layer in models.TANH_CNN_LAYERS[variant]:
        if layer[0] == "M":
            layers.append(tnn.MaxPool2d(2, stride=layer[1]))
            size = (size - 2) // layer[1] + 1
        else:
            features, kernel, stride, pad = layer
            layers += [tnn.Conv2d(channels, features, kernel, stride=stride, padding=pad), tnn.Tanh()]
            channels, size = features, (size + 2 * pad - kernel) // stride + 1
    hidden = models.TANH_CNN_HIDDEN[variant]
    layers += [tnn.Flatten(), tnn.Linear(channels * size * size, hidden), tnn.Tanh(), tnn.Linear(hidden, 10)]
    return tnn.Sequential(*layers)


def _opacus(name: str, inputs: np.ndarray, labels: np.ndarray, steps: int) -> dict:
    """Opacus's DP-SGD step (and plain PyTorch SGD) on the twin model, or why it was skipped."""
    try:
        import opacus
        import torch
    except ImportError:
        return {"skipped": "torch and opacus are not installed (pip install 'dpedu[bench]')"}
    model = _torch_model(name)
    if model is None:
        return {"skipped": f"no PyTorch twin of {name!r} here (Opacus timing covers the MLP and the CNNs)"}
    x = torch.from_numpy(np.ascontiguousarray(inputs if inputs.ndim == 2 else inputs.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(labels.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()
    result = {"torch_version": torch.__version__, "opacus_version": opacus.__version__,
              "threads": torch.get_num_threads()}
    calls = {}
    for kind in ("nonprivate", "opacus"):
        net = _torch_model(name)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        if kind == "opacus":
            with warnings.catch_warnings():
                # Opacus warns that its default (non-cryptographic) RNG is for experiments: irrelevant to a timing.
                warnings.filterwarnings("ignore", message="Secure RNG turned off")
                loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(y))
                net, optimizer, _ = opacus.PrivacyEngine().make_private(
                    module=net, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0)

        def call(net=net, optimizer=optimizer):
            optimizer.zero_grad()
            loss_fn(net(x), y).backward()
            optimizer.step()

        calls[kind] = call
    with warnings.catch_warnings():
        # Opacus's per-sample hooks see inputs that need no gradient: irrelevant to a timing.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        timed = _time_interleaved(calls, steps)
    for kind, (first_seconds, times) in timed.items():
        median = statistics.median(times)
        result[kind] = {"first_step_seconds": first_seconds, "median_step_seconds": median,
                        "examples_per_second": len(y) / median}
    result["ratio"] = _round_ratio(timed["opacus"][1], timed["nonprivate"][1])
    return result


def bench(model: str, batch_size: int, steps: int = MIN_STEPS, opacus: bool = False, seed: int = 0,
          clipping_method: str | None = None, norm_chunk_size: int | None = None,
          compare_methods: bool = True) -> dict:
    """Times a non-private and a DP-SGD step of ``model`` on a batch of ``batch_size``.

    Args:
        model: a name in :data:`dpedu.models.MODELS`.
        batch_size: examples per step (one micro-batch).
        steps: timed steps after compilation and warm-up, ``>= 20``.
        opacus: also time Opacus (PyTorch) on the same model and batch when installed.
        seed: seed of the parameters and random inputs.
        clipping_method, norm_chunk_size: the DP-SGD step's clipping (:func:`dpedu.dpsgd.make_dp_step`);
            None: what the model's configs use (:func:`dpedu.configs.clipping_for`).
        compare_methods: also time the other clipping methods (``dpsgd_by_method``); ``"ghost"``
            only if the model supports it (else ``dpsgd_skipped`` says why).

    Returns:
        A record: ``nonprivate`` and ``dpsgd`` (each ``compile_seconds``,
        ``median_step_seconds``, ``examples_per_second``; DP-SGD also ``ratio_to_nonprivate``),
        ``clipping`` (method and norm chunk of ``dpsgd``), ``ratio`` (DP-SGD / non-private, the
        median of per-round ratios), ``dpsgd_by_method`` (every timed method),
        ``dpsgd_skipped`` (method -> why it was not timed),
        ``opacus`` (timings, or ``skipped`` with the reason), ``load_average_1min`` and
        provenance.

    Raises:
        ValueError: unknown model or clipping method, ``batch_size < 1`` or ``steps < 20``, or
            ``clipping_method="ghost"`` for a model ghost clipping does not support.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    started = time.perf_counter()
    spec = models.get_model(model)
    method, norm_chunk_size = clipping_for(model, clipping_method, norm_chunk_size)
    batch_size = check_steps(batch_size, "batch_size")
    steps = check_steps(steps, "steps")
    if steps < MIN_STEPS:
        raise ValueError(f"steps must be an integer >= {MIN_STEPS} (a median of fewer is noise), got {steps}")
    from dpedu.provenance import record

    rng = np.random.default_rng(seed)
    inputs = rng.random((batch_size, *spec.input_shape), dtype=np.float32)
    labels = rng.integers(0, spec.num_classes, batch_size).astype(np.int32)
    module, params = models.init_params(model, seed)

    loss_fn = ghost.GhostLoss(module, optax.softmax_cross_entropy_with_integer_labels)
    optimizer = optax.sgd(0.1)
    batch = (inputs[None], labels[None], np.ones((1, batch_size), bool))  # one micro-batch
    methods = [method] + [m for m in clipping.CLIPPING_METHODS if compare_methods and m != method]
    skipped = {}
    if "ghost" in methods:
        try:
            loss_fn.layer_plan(params, inputs)
        except ValueError as error:
            if method == "ghost":
                raise
            skipped["ghost"] = str(error)
            methods.remove("ghost")
    # The other method with the chunk size the model's table gives it (None outside two-pass).
    chunks = {m: norm_chunk_size if m == method else clipping_for(model, m)[1] for m in methods}
    steps_by_kind = {"nonprivate": dpsgd.make_nonprivate_step(loss_fn, optimizer)}
    for m in methods:
        steps_by_kind[m] = dpsgd.make_dp_step(loss_fn, optimizer, l2_clip_norm=1.0, noise_multiplier=1.0,
                                              expected_batch_size=batch_size, clipping_method=m,
                                              norm_chunk_size=chunks[m])
    timings = {}
    calls = {kind: _jax_step_timer(step, params, optimizer, batch) for kind, step in steps_by_kind.items()}
    timed = _time_interleaved(calls, steps)
    for kind, (compile_seconds, times) in timed.items():
        median = statistics.median(times)
        timings[kind] = {"compile_seconds": compile_seconds, "median_step_seconds": median,
                         "examples_per_second": batch_size / median}
        if kind in chunks:  # a DP-SGD step
            timings[kind].update(norm_chunk_size=chunks[kind],
                                 ratio_to_nonprivate=_round_ratio(times, timed["nonprivate"][1]))
    return record(
        model=model, parameters=models.count_params(params), batch_size=batch_size, steps=steps, seed=seed,
        nonprivate=timings["nonprivate"], dpsgd=timings[method],
        clipping={"method": method, "norm_chunk_size": norm_chunk_size},
        ratio=timings[method]["ratio_to_nonprivate"],
        dpsgd_by_method={m: timings[m] for m in methods}, dpsgd_skipped=skipped,
        opacus=_opacus(model, inputs, labels, steps) if opacus else {"skipped": "not requested (--opacus)"},
        wall_seconds=time.perf_counter() - started,
    )


def _describe(result: dict) -> str:
    lines = [f"{result['model']} ({result['parameters']:,} parameters), batch {result['batch_size']}, "
             f"median of {result['steps']} steps, {result['device']}"]
    rows = [("non-private SGD", result["nonprivate"])]
    rows += [(f"DP-SGD {m}" + (" (used)" if m == result["clipping"]["method"] else ""), t)
             for m, t in result["dpsgd_by_method"].items()]
    for label, t in rows:
        lines.append(f"  {label:<24} {1e3 * t['median_step_seconds']:9.2f} ms/step  "
                     f"{t['examples_per_second']:9.0f} examples/s  (compile {t['compile_seconds']:.2f} s)")
    for m, reason in result.get("dpsgd_skipped", {}).items():
        lines.append(f"  DP-SGD {m}: not timed ({reason})")
    lines.append(f"  DP-SGD ({result['clipping']['method']}) / non-private: {result['ratio']:.2f}x "
                 f"(median of per-round ratios); 1-min load average {result['load_average_1min']}")
    opacus = result["opacus"]
    if "skipped" in opacus:
        lines.append(f"  Opacus: skipped ({opacus['skipped']})")
    else:
        for kind, label in (("nonprivate", "PyTorch SGD"), ("opacus", "Opacus DP-SGD")):
            t = opacus[kind]
            lines.append(f"  {label:<24} {1e3 * t['median_step_seconds']:9.2f} ms/step  "
                         f"{t['examples_per_second']:9.0f} examples/s")
        versus_dpedu = opacus["opacus"]["median_step_seconds"] / result["dpsgd"]["median_step_seconds"]
        lines.append(f"  Opacus / PyTorch: {opacus['ratio']:.2f}x; Opacus / dpedu DP-SGD: {versus_dpedu:.2f}x "
                     f"(torch {opacus['torch_version']}, opacus {opacus['opacus_version']}, "
                     f"{opacus['threads']} threads)")
    return "\n".join(lines)


def main(args) -> int:
    """``dpedu bench``: prints the timings (one JSON object with ``--json``), writes ``--out``.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    result = bench(args.model, args.batch_size, steps=args.steps, opacus=args.opacus,
                   clipping_method=args.clipping_method, compare_methods=not args.no_compare)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    print(json.dumps(result) if args.json else _describe(result))
    return 0
