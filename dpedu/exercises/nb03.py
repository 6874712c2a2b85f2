"""Checkers for the exercises of notebooks/03_dpsgd_mnist.ipynb (re-exported by :mod:`dpedu.exercises`).

Each checker raises :class:`dpedu.exercises.ExerciseError` with a message naming the mistake, and
:class:`dpedu.exercises.NotDone` (via :func:`dpedu.exercises.answered`) for a stub. Reference
solutions: ``dpedu/exercises/solutions/nb03.py``; ``tests/test_exercises.py`` and
``tests/test_exercises_nb03.py`` check that the checkers accept them and reject typical mistakes.

Taught in notebooks/03_dpsgd_mnist.ipynb.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from dpedu.exercises import ExerciseError, answered

__all__ = ["check_clipping", "check_poisson_sampler", "check_noise_multiplier", "check_mixing_test",
           "candidate_layers", "check_mixing_layers", "check_replace_one_epsilon", "REPLACE_ONE_SETTING"]


def _fail(message: str):
    raise ExerciseError(message)


# --- Exercise 1: clipping ------------------------------------------------------------------------


def check_clipping(clip) -> None:
    """``clip(tree, l2_clip_norm) -> tree`` must equal :func:`dpedu.clipping.clip_to_norm`.

    Tried on a two-leaf pytree whose global norm is above C, below C, and zero (no NaN allowed).
    """
    from dpedu.clipping import clip_to_norm

    rng = np.random.default_rng(0)
    base = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
    norm = float(np.sqrt(sum(np.sum(leaf ** 2) for leaf in base.values())))
    cases = (("norm above C", base, norm / 3), ("norm below C", base, norm * 2),
             ("zero gradient", jax.tree_util.tree_map(np.zeros_like, base), 1.0))
    for name, tree, l2_clip_norm in cases:
        got = answered(clip(tree, l2_clip_norm))
        want, _ = clip_to_norm(tree, l2_clip_norm)
        if jax.tree_util.tree_structure(got) != jax.tree_util.tree_structure(want):
            _fail(f"{name}: return a pytree shaped like the gradient (got {jax.tree_util.tree_structure(got)})")
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            if np.shape(g) != np.shape(w) or not np.allclose(g, w, rtol=1e-5, atol=1e-7):
                _fail(f"{name} (C = {l2_clip_norm:.3g}): the result differs from g * min(1, C / ||g||), with ||g|| the norm of ALL leaves "
                      "together (and no division by zero)")


# --- Exercise 2: Poisson sampling ---------------------------------------------------------------


def check_poisson_sampler(sample) -> None:
    """``sample(rng, num_examples, sampling_rate) -> indices`` must be Poisson sampling.

    Checked over 2,000 seeded batches of N = 500 at q = 0.1: indices are distinct and in range;
    the batch size has the Binomial(N, q) mean and variance (a fixed-size sampler fails here);
    every example is picked with frequency q (a sampler favouring some examples fails). The
    tolerances are 6 standard errors, so a correct sampler essentially never fails.
    """
    num_examples, q, draws = 500, 0.1, 2000
    rng = np.random.default_rng(1234)
    counts = np.zeros(num_examples)
    sizes = np.empty(draws)
    for i in range(draws):
        idx = np.asarray(answered(sample(rng, num_examples, q)))
        if idx.ndim != 1 or (idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0
                                            or idx.max() >= num_examples)):
            _fail("return a 1-D array of integer indices in [0, num_examples)")
        if np.unique(idx).size != idx.size:
            _fail("an example appears twice in one batch: Poisson sampling includes each at most once")
        counts[idx] += 1
        sizes[i] = idx.size
    mean, var = num_examples * q, num_examples * q * (1 - q)
    if abs(sizes.mean() - mean) > 6 * np.sqrt(var / draws):
        _fail(f"mean batch size {sizes.mean():.2f}, expected q*N = {mean:g}")
    if abs(sizes.var() / var - 1) > 6 * np.sqrt(2 / draws):
        _fail(f"batch-size variance {sizes.var():.2f}, expected N*q*(1-q) = {var:g}: batch sizes must vary "
              "as Binomial(N, q) (a fixed-size batch is not Poisson sampling)")
    # 6 standard errors: the largest of 500 correct frequencies exceeds it with probability ~1e-6.
    worst = np.max(np.abs(counts / draws - q))
    if worst > 6 * np.sqrt(q * (1 - q) / draws):
        _fail(f"some example is picked with frequency {q + worst:.3f} or {q - worst:.3f}, expected {q}: each "
              "example must be kept independently with probability q")


# --- σ for a target ε (used by notebook 02's exercise) ----------------------------------------------


def check_noise_multiplier(noise_multiplier, *, target_epsilon: float, sampling_rate: float, steps: int,
                           delta: float, slack: float = 0.05, accountant: str = "pld") -> None:
    """σ must meet ``target_epsilon`` under ``accountant`` (default PLD) and ``σ / (1 + slack)`` must
    not (no wasted noise). A σ that is right for another accountant (RDP, Abadi et al.'s moments
    accountant, PLD when RDP was asked) is rejected with a message naming that accountant."""
    from dpedu.accounting import epsilon, moments_epsilon

    sigma = float(noise_multiplier)
    if not sigma > 0:
        _fail(f"the noise multiplier must be > 0, got {sigma!r}")
    smaller = sigma / (1 + slack)

    def calibrated_for(name: str) -> bool:  # σ meets the target under `name`, σ / (1 + slack) does not
        def eps(s):
            if name == "moments":
                return moments_epsilon(s, sampling_rate, steps, delta)
            return epsilon(s, sampling_rate, steps, delta, accountant=name)
        return eps(sigma) <= target_epsilon < eps(smaller)

    eps = epsilon(sigma, sampling_rate, steps, delta, accountant=accountant)
    others = [name for name in ("rdp", "moments", "pld") if name != accountant]
    names = {"rdp": "RDP", "moments": "moments-accountant (Abadi et al., λ ≤ 32)", "pld": "PLD"}
    if eps > target_epsilon:
        hint = next((f": this is the {names[n]}-calibrated σ, but the exercise asks for {names[accountant]}, "
                     f"which is {'tighter' if accountant == 'pld' else 'looser'}" for n in others if calibrated_for(n)), "")
        _fail(f"σ = {sigma:.4g} gives ε = {eps:.4g} > {target_epsilon:g} under {names[accountant]}: "
              f"not enough noise{hint}")
    if epsilon(smaller, sampling_rate, steps, delta, accountant=accountant) <= target_epsilon:
        wrong = next((n for n in others if calibrated_for(n)), None)
        if wrong is not None:
            _fail(f"σ = {sigma:.4g} is the {names[wrong]}-calibrated σ (the smallest that meets ε ≤ {target_epsilon:g} "
                  f"under {names[wrong]}); the exercise asks for {names[accountant]}, a tighter bound, under which "
                  f"σ = {smaller:.4g} already suffices: you add more noise than needed")
        _fail(f"σ = {sigma:.4g} meets ε ≤ {target_epsilon:g} (ε = {eps:.3g}, {names[accountant]}), but so does "
              f"σ = {smaller:.4g}: you add more noise than needed (and lose accuracy)")


# --- Exercise 3: which layer mixes examples? -----------------------------------------------------


def _cross_entropy(logits, label):
    return -jax.nn.log_softmax(logits)[label]


def _mlp(mixing: str | None):
    """A tiny MLP, 6 inputs -> 8 hidden -> 4 classes, with an optional normalisation after the hidden layer."""
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(8)(x)
            if mixing == "batch norm":
                h = nn.BatchNorm(use_running_average=False)(h)
            elif mixing == "layer norm":
                h = nn.LayerNorm()(h)
            elif mixing == "group norm":
                h = nn.GroupNorm(num_groups=2)(h)
            elif mixing == "batch centering":  # subtracts the batch's mean activation: mixes, too
                h = h - jnp.mean(h, axis=0, keepdims=True)
            elif mixing == "dropout":  # a fixed mask, one per example slot: does not mix
                h = h * (jnp.arange(h.shape[-1]) % 3 != 0)
            return nn.Dense(4)(jnp.tanh(h))

    module = Net()
    variables = module.init(jax.random.key(0), jnp.zeros((4, 6)))

    def apply_fn(params, images):
        if "batch_stats" in variables:  # training mode: normalise with this batch's statistics
            logits, _ = module.apply({**params, "batch_stats": variables["batch_stats"]}, images,
                                     mutable=["batch_stats"])
            return logits
        return module.apply(params, images)

    params = {"params": variables["params"]}
    return apply_fn, params


def _batch(seed: int, size: int = 6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(size, 6)).astype(np.float32), rng.integers(0, 4, size=size).astype(np.int32)


def candidate_layers() -> dict:
    """Five small models, name -> ``(apply_fn, params, images, labels)``, each with a different layer
    after its hidden layer: plain (tanh only), layer norm, group norm, batch norm (training mode),
    and a fixed dropout mask. ``apply_fn(params, images)`` runs the model on a whole batch."""
    images, labels = _batch(7)
    return {name: (*_mlp(None if name == "plain" else name), images, labels)
            for name in ("plain", "layer norm", "group norm", "batch norm", "dropout")}


def check_mixing_test(mixes) -> None:
    """``mixes(apply_fn, params, images, labels) -> bool``: True iff example 0's gradient (of ITS
    loss, in a forward pass on the whole batch) changes when the other examples change.

    Tried on models whose truth is known: plain MLP and layer norm (no mixing), batch norm and
    batch centering (mixing), each on two random batches.
    """
    truth = {"plain": False, "layer norm": False, "batch norm": True, "batch centering": True}
    answers = {}
    for name, expected in truth.items():
        apply_fn, params = _mlp(None if name == "plain" else name)
        for seed in (1, 2):
            images, labels = _batch(seed)
            got = answered(mixes(apply_fn, params, images, labels))
            if not isinstance(got, (bool, np.bool_)) and not (hasattr(got, "shape") and np.shape(got) == ()):
                _fail(f"return True or False (got {type(got).__name__})")
            answers[name, seed] = bool(got)
    said = {name: {answers[name, s] for s in (1, 2)} for name in truth}
    if all(said[name] == {True} for name in truth):
        _fail("your test says every model mixes examples, even a plain MLP that treats each example on its "
              "own: did you compare the gradient of the whole batch's loss (it always changes when other "
              "examples change), or change example 0 itself? Compare example 0's OWN gradient, the "
              "gradient of its loss alone, before and after changing only examples 1, 2, ...")
    if all(said[name] == {False} for name in truth):
        _fail("your test says no model mixes examples, not even batch norm: did you compute example 0's "
              "gradient on a batch of one example (or with jax.vmap over single examples)? Then batch norm "
              "sees a batch of one, and its statistics never involve the others. Run the forward pass on "
              "the whole batch, take example 0's loss, and differentiate that. (Also: change the others' "
              "VALUES; merely reordering them leaves the batch statistics unchanged)")
    for name, expected in truth.items():
        if said[name] != {expected}:
            what = "mixes" if expected else "does not mix"
            _fail(f"your test gets the {name!r} model wrong (it {what} examples): compare example 0's gradient "
                  "before and after replacing ONLY the other examples, with a tolerance for rounding (e.g. "
                  "np.allclose), in a forward pass over the whole batch")


def check_mixing_layers(names) -> None:
    """``names``: the candidates of :func:`candidate_layers` whose example-0 gradient depends on the others."""
    chosen = {str(name) for name in answered(names)}
    known = set(candidate_layers())
    if not chosen <= known:
        _fail(f"unknown candidate(s) {sorted(chosen - known)}; the candidates are {sorted(known)}")
    independent = {"layer norm": "layer norm normalises each example over its OWN features",
                   "group norm": "group norm normalises each example over groups of its OWN channels",
                   "dropout": "dropout masks each example on its own",
                   "plain": "the plain MLP treats every example on its own"}
    for name in sorted(chosen & set(independent)):
        _fail(f"{name!r} does not mix examples: {independent[name]}, so example 0's gradient does not move "
              "when the others change (check your test on it)")
    if "batch norm" not in chosen:
        _fail("one candidate mixes examples and you left it out: which layer computes statistics ACROSS the "
              "batch in training mode? (Run your test on every candidate.)")


# --- Exercise 4: shuffled batches under replace-one ------------------------------------------------

# σ = 1, 15 epochs of fixed-size shuffled batches of 256 out of 60,000 (cell "Two shortcuts").
REPLACE_ONE_SETTING = dict(noise_multiplier=1.0, epochs=15, delta=1e-5, sampling_rate=256 / 60_000,
                           steps=15 * 234)


def check_replace_one_epsilon(answer, *, noise_multiplier: float, epochs: int, delta: float,
                              sampling_rate: float, steps: int) -> None:
    """ε of ``epochs`` epochs of shuffled fixed-size batches under REPLACE-ONE neighbours.

    Replacing one example changes the one batch it sits in by up to 2C (its old clipped gradient
    out, the new one in, ‖g − g'‖ ≤ 2C), and the noise is σC: each epoch is a Gaussian mechanism
    with noise multiplier σ/2, and ``epochs`` of them compose to one with σ / (2√E). The answer
    must be within 2 % of that Gaussian's exact ε (PLD of the composed event agrees).
    """
    from dpedu.accounting import epsilon, epsilon_for_event
    from dpedu.mechanisms import analytic_epsilon

    got = float(answered(answer))
    sigma, e = noise_multiplier, epochs
    want = analytic_epsilon(sigma / (2 * math.sqrt(e)), delta)
    if math.isclose(got, want, rel_tol=0.02):
        return

    def near(value):
        return math.isclose(got, value, rel_tol=0.02)

    import dp_accounting

    replace_rdp = epsilon_for_event(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma / 2), e),
                                    delta, "rdp")
    mistakes = (
        (analytic_epsilon(sigma / math.sqrt(e), delta),
         "that is the ε under the zero-out relation (sensitivity C), the one printed above; under replace-one "
         "the replaced example's old clipped gradient leaves the batch and the new one enters, so the batch's "
         "sum moves by up to 2C: account each epoch as a Gaussian with noise multiplier σ/2"),
        (epsilon(sigma, sampling_rate, steps, delta),
         "that is the Poisson-sampling ε (with amplification by sampling): shuffled fixed-size batches get no "
         "proven amplification; each epoch is one full Gaussian mechanism"),
        (epsilon(sigma / 2, sampling_rate, steps, delta),
         "right sensitivity (σ/2), but accounted as Poisson sampling with amplification: shuffled fixed-size "
         "batches get none; each epoch is one full Gaussian mechanism"),
        (analytic_epsilon(sigma / 2, delta),
         "that is ONE epoch: the epochs compose (E Gaussians with μ each compose to one with √E·μ)"),
        (replace_rdp,
         "right mechanism, but that is RDP's bound, looser than the exact value: E Gaussians with sensitivity "
         "2C compose EXACTLY to one Gaussian (noise multiplier σ/(2√E)); use PLD or the analytic Gaussian ε"),
        (analytic_epsilon(2 * sigma / math.sqrt(e), delta),
         "you halved the sensitivity (or doubled the noise): under replace-one the sensitivity is 2C, so the "
         "effective noise multiplier is σ/2, not 2σ"),
        (analytic_epsilon(sigma / (2 * e), delta),
         "you composed the epochs by adding sensitivities (μ·E): Gaussians compose in quadrature, μ·√E"),
    )
    for value, message in mistakes:
        if near(value):
            _fail(f"ε = {got:.4g}: {message}")
    if not math.isfinite(got) or got <= 0:
        _fail(f"ε must be a positive number, got {got!r}")
    _fail(f"ε = {got:.4g} is not the ε of {e} composed Gaussian mechanisms with sensitivity 2C and noise σC "
          f"(σ = {sigma:g}) at δ = {delta:g}")
