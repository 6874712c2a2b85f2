"""dpedu.parallel: the sharded DP-SGD step equals the one-device step, on 8 simulated CPU devices."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpedu import dpsgd, parallel
from dpedu.sampling import pad_to_microbatches

# Runs in a fresh interpreter: XLA_FLAGS must be set before JAX initialises its CPU backend.
_CHILD = textwrap.dedent('''
    import flax.linen as nn, jax, numpy as np, optax
    assert jax.device_count() == 8, jax.devices()
    from dpedu import dpsgd, ghost, parallel
    from dpedu.sampling import pad_to_microbatches, poisson_batch_indices

    # A conv net small enough to compile fast; Conv + Dense, so every clipping method applies.
    module = nn.Sequential([nn.Conv(4, (3, 3), strides=2), nn.tanh, lambda x: x.reshape(x.shape[0], -1),
                            nn.Dense(10)])
    rng = np.random.default_rng(0)
    N = 64
    images = rng.normal(size=(N, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, size=N).astype(np.int32)
    params = module.init(jax.random.key(0), images[:1])
    loss_fn = ghost.GhostLoss(module, optax.softmax_cross_entropy_with_integer_labels)
    optimizer = optax.sgd(1.0)
    MICRO = 12  # not a multiple of 8 (padded to 16) nor of 5 (padded to 15)

    # Realised sizes 0 (empty: noise only), 1, 7, 8, 13 (two micro-batches), 64 (six), and Poisson draws.
    batches = [np.sort(rng.choice(N, n, replace=False)) for n in (0, 1, 7, 8, 13, 64)]
    batches += [poisson_batch_indices(rng, N, 0.2) for _ in range(3)]

    def check(one, sharded, indices, key, what):
        idx, mask = pad_to_microbatches(indices, MICRO)
        args = (params, optimizer.init(params), key, images[idx], labels[idx], mask)
        want, _, want_stats = one(*args)
        got, _, got_stats = sharded(*args)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree_util.tree_leaves(got)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6,
                                       err_msg=f"{what}, batch of {len(indices)}, {jax.tree_util.keystr(path)}")
        for name in want_stats:
            np.testing.assert_allclose(float(got_stats[name]), float(want_stats[name]), rtol=1e-5,
                                       err_msg=f"{what}, batch of {len(indices)}, {name}")
        assert len(jax.tree_util.tree_leaves(got)[0].sharding.device_set) == sharded.num_devices

    dp = dict(l2_clip_norm=1.0, noise_multiplier=1.0, expected_batch_size=N * 0.2)
    for method in ("two_pass", "ghost", "per_example"):
        one = dpsgd.make_dp_step(loss_fn, optimizer, clipping_method=method, **dp)
        sharded = parallel.shard_step(one)  # all 8 devices
        assert sharded.num_devices == 8
        for n, indices in enumerate(batches):
            check(one, sharded, indices, jax.random.key(100 + n), method)
    # (one: the per-example step of the last loop.) A mesh of 5 pads 12 slots to 15; one micro-batch each.
    five = parallel.shard_step(one, 5)
    for n, indices in enumerate(batches[1:4]):
        check(one, five, indices, jax.random.key(n), "5 devices")
    nonprivate = dpsgd.make_nonprivate_step(loss_fn, optimizer)
    sharded = parallel.shard_step(nonprivate)
    for n, indices in enumerate(batches[1:4]):
        check(nonprivate, sharded, indices, jax.random.key(n), "non-private")
    print("OK")
''')


def test_sharded_step_equals_one_device_step_on_8_simulated_devices():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip())
    result = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout[-3000:] + result.stderr[-5000:]


# --- In this process (however many devices it has): a mesh of one, and bad arguments ---------

def _loss(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(jnp.tanh(x @ params["w1"]) @ params["w2"], y)


def test_one_device_mesh_equals_the_step_it_wraps():
    rng = np.random.default_rng(1)
    params = {"w1": rng.normal(size=(4, 6)).astype(np.float32), "w2": rng.normal(size=(6, 3)).astype(np.float32)}
    inputs, labels = rng.normal(size=(20, 4)).astype(np.float32), rng.integers(0, 3, 20).astype(np.int32)
    optimizer = optax.adam(0.1)
    one = dpsgd.make_dp_step(_loss, optimizer, l2_clip_norm=0.5, noise_multiplier=1.1, expected_batch_size=6.0)
    sharded = parallel.make_sharded_dp_step(_loss, optimizer, devices=1, l2_clip_norm=0.5, noise_multiplier=1.1,
                                            expected_batch_size=6.0)
    assert sharded.num_devices == 1
    for n, indices in enumerate([np.array([], int), np.array([3]), np.arange(5), np.arange(0, 20, 2)]):
        idx, mask = pad_to_microbatches(indices, 4)
        args = (params, optimizer.init(params), jax.random.key(n), inputs[idx], labels[idx], mask)
        want, want_state, _ = one(*args)
        got, got_state, stats = sharded(*args)
        for a, b in zip(jax.tree_util.tree_leaves((want, want_state)), jax.tree_util.tree_leaves((got, got_state))):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6)
        assert int(stats["batch_size"]) == len(indices)


def test_bad_devices_and_steps_are_refused():
    count = len(jax.local_devices())
    for bad in (0, count + 1, -1, "all", [], True, [jax.local_devices()[0]] * 2, [object()]):
        with pytest.raises(ValueError, match="devices"):
            parallel.resolve_devices(bad)
    assert parallel.resolve_devices(None) == jax.local_devices()
    with pytest.raises(ValueError, match="TrainStep"):
        parallel.shard_step(lambda *args: args)


def test_dpedu_train_on_two_simulated_devices_accounts_and_learns_as_on_one(tmp_path):
    """`dpedu train --devices all` runs the sharded step end to end: same σ, steps and ε as one device."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               DPEDU_QUICK="1", TQDM_DISABLE="1")
    records = {}
    for devices in ("1", "all"):
        out = tmp_path / f"{devices}.json"
        subprocess.run([sys.executable, "-m", "dpedu", "train", "--config", "mnist-cnn", "--quick", "--noise-seed", "0",
                        "--devices", devices, "--out", str(out)], env=env, check=True, timeout=600,
                       capture_output=True)
        records[devices] = json.loads(out.read_text())
    one, two = records["1"], records["all"]
    assert (one["devices"], two["devices"]) == (1, 2)
    for key in ("noise_multiplier", "steps", "epsilon", "sampling_rate"):
        assert one[key] == two[key], key
    # The same batches and noise; the sums differ only in float32 order, so the runs end close.
    assert abs(one["test_accuracy"] - two["test_accuracy"]) <= 0.02
