"""Checkers for the exercises of notebooks/06_auditing.ipynb.

Each checker raises :class:`dpedu.exercises.ExerciseError` with a message that names the mistake
(it recognises the typical wrong answers and says what they compute instead); reference solutions
are in ``dpedu/exercises/solutions/nb06.py`` (``dpedu.exercises.show_solution("06", name)``).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from dpedu.exercises import ExerciseError, answered, check_statements, as_number

__all__ = ["check_tpr_at_fpr", "check_trials_needed", "check_audit_statements", "check_one_run_ceiling",
           "STATEMENTS", "TRIALS_TARGET", "ONE_RUN_SETTING", "tpr_at_fpr", "trials_needed", "trial_bound",
           "one_run_ceiling"]


def _fail(message: str):
    raise ExerciseError(message)


def _near(a, b, tol):
    return abs(a - b) <= tol * abs(b)


# ---------------------------------------------------------------------------------------------
# Exercise 1: TPR at a low FPR, from scratch
# ---------------------------------------------------------------------------------------------


def tpr_at_fpr(in_scores, out_scores, fpr) -> float:
    """The reference: the highest TPR of a test "in when score ≥ t" whose FPR is at most ``fpr``.

    TPR only changes at in-scores, so the best ``t`` is the smallest in-score whose FPR is allowed;
    ``t = ∞`` (guess nothing in: TPR 0, FPR 0) is always allowed.
    """
    in_scores, out_scores = np.asarray(in_scores, float), np.asarray(out_scores, float)
    thresholds = np.append(np.unique(in_scores), np.inf)
    fprs = np.mean(out_scores[None, :] >= thresholds[:, None], axis=1)
    tprs = np.mean(in_scores[None, :] >= thresholds[:, None], axis=1)
    return float(np.max(tprs[fprs <= fpr]))


def _best_threshold_fpr(in_scores, out_scores, fpr) -> float:
    """The FPR of the reference's threshold (what a student returns who mixes the two rates up)."""
    in_scores, out_scores = np.asarray(in_scores, float), np.asarray(out_scores, float)
    allowed = [t for t in np.append(np.unique(in_scores), np.inf) if np.mean(out_scores >= t) <= fpr]
    return float(np.mean(out_scores >= min(allowed)))


def _out_thresholds_only(in_scores, out_scores, fpr) -> float:
    """Mistake: thresholds taken from the out-scores (and ∞) only."""
    in_scores, out_scores = np.asarray(in_scores, float), np.asarray(out_scores, float)
    thresholds = np.append(np.unique(out_scores), np.inf)
    return max(float(np.mean(in_scores >= t)) for t in thresholds if np.mean(out_scores >= t) <= fpr)


def _strict_for_out(in_scores, out_scores, fpr) -> float:
    """Mistake: an out-score equal to t is not counted as a false positive (FPR by >, TPR by ≥)."""
    in_scores, out_scores = np.asarray(in_scores, float), np.asarray(out_scores, float)
    thresholds = np.append(np.unique(np.concatenate([in_scores, out_scores])), np.inf)
    return max(float(np.mean(in_scores >= t)) for t in thresholds if np.mean(out_scores > t) <= fpr)


def _strict_both(in_scores, out_scores, fpr) -> float:
    """Mistake: the test "in when score > t" with t among the scores: no t guesses every score in."""
    in_scores, out_scores = np.asarray(in_scores, float), np.asarray(out_scores, float)
    thresholds = np.unique(np.concatenate([in_scores, out_scores]))
    return max(float(np.mean(in_scores > t)) for t in thresholds if np.mean(out_scores > t) <= fpr)


def _quantile_thresholds(in_scores, out_scores, fpr) -> set:
    """Mistake: t = np.quantile(out_scores, 1 − fpr) (any interpolation method)."""
    in_scores, out_scores = np.asarray(in_scores, float), np.asarray(out_scores, float)
    values = set()
    for method in ("linear", "higher", "lower", "nearest", "midpoint"):
        t = np.quantile(out_scores, 1 - fpr, method=method)
        values.add(round(float(np.mean(in_scores >= t)), 12))
    return values


def _tpr_cases():
    rng = np.random.default_rng(6)
    return [
        # Ties between in and out at 7; a linear quantile of the out-scores puts t at 6.75 (FPR 0.3).
        (np.array([6.8, 7.0, 7.5, 8.0, 9.0, 9.0, 10.0, 11.0, 3.0, 5.0, 12.0, 2.0]), np.arange(10.0), 0.25),
        # FPR 0, Python lists, ties at the largest out-score.
        ([0.9, 0.9, 1.3, 0.4, 2.0], [0.1, 0.4, 0.4, 0.9], 0.0),
        # FPR 1: guessing every trial "in" is allowed.
        ([-1.0, 0.0, 2.0], [0.0, 1.0], 1.0),
        # Unequal sizes, continuous scores.
        (rng.normal(1.0, 1.0, 37), rng.normal(0.0, 1.0, 53), 0.1),
        # Many ties (integer scores), an FPR that 16 out-scores meet exactly (2 of 16).
        (rng.integers(0, 6, 25).tolist(), rng.integers(0, 4, 16).tolist(), 0.125),
        # Every in-score below every out-score: no threshold with FPR ≤ 0.5 catches any.
        (np.array([0.0, 1.0]), np.array([5.0, 6.0]), 0.5),
    ]


def _describe_case(in_scores, out_scores, fpr) -> str:
    def short(x):
        x = np.round(np.asarray(x, float), 3)
        return np.array2string(x, separator=", ", threshold=12, edgeitems=3)
    kind = "lists" if isinstance(in_scores, list) else "arrays"
    return f"in_scores = {short(in_scores)}, out_scores = {short(out_scores)} ({kind}), fpr = {fpr:g}"


def check_tpr_at_fpr(fn) -> None:
    """``fn(in_scores, out_scores, fpr) -> TPR``: the best deterministic test "in when score ≥ t"."""
    for in_scores, out_scores, fpr in _tpr_cases():
        where = _describe_case(in_scores, out_scores, fpr)
        try:
            result = fn(in_scores, out_scores, fpr)
        except Exception as err:  # the student's code: say where it failed, keep the traceback
            raise ExerciseError(f"your function raised {type(err).__name__}: {err} on {where}. Scores may come as "
                                "lists (np.asarray them), and when no threshold is allowed the answer is 0 (guess "
                                "nothing in)") from err
        got = answered(result)
        got = as_number(np.asarray(got).item() if np.size(got) == 1 else got, "a true-positive rate")
        want = tpr_at_fpr(in_scores, out_scores, fpr)
        if abs(got - want) <= 1e-9:
            continue
        if not 0 <= got <= 1:
            _fail(f"{where}: {got:.4g} is not a rate; return the fraction of in_scores guessed in, in [0, 1]")
        if abs(got - _strict_for_out(in_scores, out_scores, fpr)) <= 1e-9 and got > want:
            _fail(f"{where}: you got {got:.4g}, expected {want:.4g}. With ties your test counts an in-score equal "
                  "to t as a guess \"in\" but an out-score equal to t as no false positive. The test guesses "
                  "\"in\" when score ≥ t for both: count out_scores >= t in the FPR")
        if abs(got - _strict_both(in_scores, out_scores, fpr)) <= 1e-9 and got < want:
            _fail(f"{where}: you got {got:.4g}, expected {want:.4g}. With the test score > t and t among the "
                  "scores, no threshold guesses the lowest score in (at fpr = 1 every trial may be guessed in: "
                  "TPR 1). Use score >= t, or add a threshold below every score")
        if abs(got - _out_thresholds_only(in_scores, out_scores, fpr)) <= 1e-9 and got < want:
            _fail(f"{where}: you got {got:.4g}, expected {want:.4g}: you tried only out-scores as thresholds. TPR "
                  "changes at in-scores: the best threshold is the smallest IN-score whose FPR is allowed, "
                  "which can lie between two out-scores")
        if round(got, 12) in _quantile_thresholds(in_scores, out_scores, fpr):
            _fail(f"{where}: you got {got:.4g}, expected {want:.4g}. A threshold from np.quantile(out_scores, 1 − fpr) "
                  "interpolates between out-scores: the fraction of out-scores ≥ it can exceed fpr (at fpr = 1 "
                  "it also misses in-scores below every out-score). Try the scores themselves as thresholds")
        if abs(got - _best_threshold_fpr(in_scores, out_scores, fpr)) <= 1e-9 or abs(got - fpr) <= 1e-9:
            _fail(f"{where}: you returned {got:.4g}, the false-positive rate (the fraction of OUT-scores ≥ t); "
                  f"the answer is the true-positive rate, the fraction of IN-scores ≥ t (here {want:.4g})")
        if got > want:
            _fail(f"{where}: you got {got:.4g}, but no test \"in when score ≥ t\" with FPR ≤ {fpr:g} reaches more "
                  f"than {want:.4g}: your threshold's FPR exceeds the target (count out_scores >= t, ties "
                  "included, and use the scores themselves as thresholds, not an interpolated quantile)")
        _fail(f"{where}: you got {got:.4g}, expected {want:.4g}: a better allowed threshold exists. Try every "
              "in-score as t (and ∞: guess nothing, TPR 0), keep those with FPR ≤ fpr, take the largest TPR")


# ---------------------------------------------------------------------------------------------
# Exercise 2: how many trials does an audit need?
# ---------------------------------------------------------------------------------------------

TRIALS_TARGET = dict(target_epsilon=4.0, delta=1e-5)


def trial_bound(n, *, delta: float = 1e-5, confidence: float = 0.95, log=np.log, observed_fnr: bool = False,
                one_sided: bool = False, rule_of_three: bool = False):
    """The audit's lower bound on ε with n trials a side, 0 false positives and n/2 false negatives.

    Both rates at the upper end of their 95 % Clopper–Pearson interval (as
    ``auditing.clopper_pearson(k, n)[1]``) in ``auditing.epsilon_from_error_rates``; vectorised over
    even ``n``. The keywords other than ``delta`` reproduce the typical mistakes.
    """
    from scipy import stats

    n = np.asarray(n, dtype=float)
    k = np.floor(n / 2)
    level = confidence if one_sided else 1 - (1 - confidence) / 2
    fpr_upper = stats.beta.ppf(level, 1, n)  # k = 0: 1 − (1 − level)^(1/n)
    fnr_upper = k / n if observed_fnr else stats.beta.ppf(level, k + 1, n - k)
    if rule_of_three:
        fpr_upper = np.minimum(3 / n, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = [np.where(1 - delta - fpr_upper > 0, log((1 - delta - fpr_upper) / fnr_upper), 0.0),
                 np.where(1 - delta - fnr_upper > 0, log((1 - delta - fnr_upper) / fpr_upper), 0.0)]
    return np.maximum(np.maximum(*terms), 0.0)


@functools.lru_cache(maxsize=None)
def _smallest_even(target: float, **mistake) -> int:
    """The smallest even n whose :func:`trial_bound` (with ``mistake``) reaches ``target``; -1 if none below 2²⁰."""
    start = 2
    for stop in (2 ** 11, 2 ** 14, 2 ** 17, 2 ** 20):
        n = np.arange(start, stop + 1, 2)
        reached = np.flatnonzero(trial_bound(n, delta=TRIALS_TARGET["delta"], **mistake) >= target)
        if reached.size:
            return int(n[reached[0]])
        start = stop + 2
    return -1


_TRIAL_MISTAKES = {
    "one_sided": dict(one_sided=True),
    "observed_fnr": dict(observed_fnr=True),
    "rule_of_three": dict(rule_of_three=True),
    "rule_of_three_observed": dict(rule_of_three=True, observed_fnr=True),
    "log2": dict(log=np.log2),
    "log10": dict(log=np.log10),
    "confidence_99": dict(confidence=0.99),
}


def _trial_answer(key: str = "reference") -> int:
    return _smallest_even(TRIALS_TARGET["target_epsilon"], **_TRIAL_MISTAKES.get(key, {}))


def trials_needed() -> int:
    """The reference answer of exercise 2: the smallest even n whose bound reaches ε ≥ 4."""
    return _trial_answer()


def check_trials_needed(answer) -> None:
    """``answer``: the smallest even number of trials a side for a lower bound ε ≥ 4 (exact)."""
    target, delta = TRIALS_TARGET["target_epsilon"], TRIALS_TARGET["delta"]
    if isinstance(answer, (bool, np.bool_)):
        _fail(f"answer with a number of trials (an int), got {answer!r}")
    value = as_number(answer, "a number of trials per side")
    if value != int(value) or value < 1:
        _fail(f"the answer is a number of trials: a positive whole number, got {answer!r}")
    n = int(value)
    want = _trial_answer()
    if n == want:
        return
    if n % 2:
        _fail(f"n = {n} is odd: the scenario has n/2 false negatives, so n must be even")
    bound = float(trial_bound(n, delta=delta))
    if bound == 0 or n <= 20:
        _fail(f"n = {n} is far too small: its bound is ε ≥ {bound:.3g}. With the observed rates, 0 false positives "
              "gives an infinite bound at ANY n; that is why the audit uses confidence bounds: with n trials, "
              "0 false positives only shows FPR ≤ 1 − 0.025^(1/n) ≈ 3.7/n")
    if n == 2 * want:
        _fail(f"n = {n} counts the trials of both sides; n is the number of trials WITH the canary (and as many "
              "without)")
    mistakes = [
        ("one_sided", "you took one-sided 95 % limits (the beta quantile at 0.95); auditing.clopper_pearson's "
                      "default is the two-sided 95 % interval, whose upper end is the 0.975 quantile"),
        ("rule_of_three", "FPR ≤ 3/n is the \"rule of three\", a one-sided 95 % limit; use the upper end of "
                          "auditing.clopper_pearson(0, n) (≈ 3.7/n)"),
        ("rule_of_three_observed", "FPR ≤ 3/n (one-sided rule of three) and the observed FNR ½: use the upper "
                                   "ends of auditing.clopper_pearson for BOTH rates"),
        ("observed_fnr", "you widened the FPR but kept the observed FNR = ½; the FNR is an estimate too: use the "
                         "upper end of auditing.clopper_pearson(n/2, n)"),
        ("log2", "you measured ε in bits (log2); ε is in natural-log units (e^ε)"),
        ("log10", "you used log10; ε is in natural-log units (e^ε): math.log"),
        ("confidence_99", "that is the answer at 99 % confidence; the audit (and the question) uses 95 %"),
    ]
    for key, why in mistakes:
        if n == _trial_answer(key):
            _fail(f"n = {n}: {why}")
    if bound >= target:
        _fail(f"n = {n} reaches ε ≥ {bound:.3g} ≥ {target:g}, but fewer trials do too: search for the SMALLEST even n "
              f"(the bound grows with n)")
    _fail(f"n = {n} is too few: its bound is ε ≥ {bound:.3g} < {target:g}. Compute epsilon_from_error_rates of the "
          "two rates' upper confidence bounds for growing even n")


# ---------------------------------------------------------------------------------------------
# Exercise 3: which statements are true?
# ---------------------------------------------------------------------------------------------

STATEMENTS = {
    "A": "A gradient canary on a kernel weight catches `bugs.make_step_clipping_kernels_only`.",
    "B": "With full-batch steps and only the final model released, a Dirac gradient canary (on a coordinate "
         "that no data gradient reaches) cannot catch `bugs.make_step_reusing_noise_key`.",
    "C": "Clipping each of K augmented copies to C and summing the copies lets one example move the sum by K·C.",
    "D": "If an audit's lower bound stays below the claimed ε, the implementation is correct.",
    "E": "An audit's lower bound above the claimed ε, at 95 % confidence, refutes the claim for the audited "
         "mechanism and neighbouring relation (unless the trials were a 1-in-20 unlucky draw).",
    "F": "The GDP bound of Nasr et al. 2023 is valid for DP-SGD with Poisson sampling at rate 0.01.",
}

_VERDICTS = {
    "A": (False, "A is false: that step does clip the kernels, and a kernel canary's whole gradient lies in a "
                 "kernel, so it is clipped to C as it should be; the bug only shows with a canary in a bias"),
    "B": (True, "B is true: the canary's coordinate ends at θ₀ − lr·T·(C + σC·z)/n with ONE z: a shift T·C against "
                "noise T·σC, μ = 1/σ, below the √T/σ the accountant assumes; the bug only shows when intermediate "
                "models are released or sampling makes the steps differ"),
    "C": (True, "C is true: each copy's clipped gradient can have norm C, and K of them pointing the same way add "
                "up to K·C (average the copies, then clip once)"),
    "D": (False, "D is false: an audit can only refute a claim; a weak attack, a poor canary or too few trials "
                 "finds nothing even in a broken implementation"),
    "E": (True, "E is true: with 95 % confidence the bound is below the true ε of the audited mechanism, so a bound "
                "above the claimed ε refutes the claim (for that mechanism and neighbouring relation), unless this "
                "was the 1-in-20 unlucky draw"),
    "F": (False, "F is false: a Poisson-subsampled Gaussian is not μ-GDP (its trade-off curve is not Gaussian); "
                 "only the assumption-free (ε, δ) bound applies there"),
}


def check_audit_statements(answer) -> None:
    """``answer``: the letters of the true statements (a set, list or string such as ``"BCE"``)."""
    check_statements(answer, _VERDICTS)


# ---------------------------------------------------------------------------------------------
# Exercise 4: the ceiling of a one-run audit
# ---------------------------------------------------------------------------------------------

ONE_RUN_SETTING = dict(canaries=1000, delta=1e-5, confidence=0.95)


@functools.lru_cache(maxsize=64)
def one_run_ceiling(canaries: int, delta: float = 1e-5, confidence: float = 0.95) -> float:
    """The largest ε a one-run audit (Steinke, Nasr & Jagielski 2023) can certify with ``canaries``
    canaries, half in: a perfect attack (in-canaries score 1, out-canaries 0), ``auditing.one_run_epsilon``."""
    from dpedu import auditing

    canaries = int(canaries)
    in_scores, out_scores = np.ones(canaries // 2), np.zeros(canaries - canaries // 2)
    return auditing.one_run_epsilon(in_scores, out_scores, delta=delta, confidence=confidence)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def check_one_run_ceiling(answer) -> None:
    """``answer``: the one-run audit's largest lower bound on ε with 1,000 canaries (within 2 %)."""
    s = ONE_RUN_SETTING
    m, delta, confidence = s["canaries"], s["delta"], s["confidence"]
    r = m // 2
    try:
        raw = float(answered(answer))
    except (TypeError, ValueError):
        raw = None
    if raw is not None and (math.isinf(raw) or raw > 50):
        _fail(f"{raw:g}: even a perfect attack certifies only a finite ε. The number of correct guesses of an "
              f"ε-DP algorithm is dominated by Binomial(r, e^ε/(1 + e^ε)); r = {r} correct out of {r} then has "
              f"probability (e^ε/(1 + e^ε))^{r}, which beyond a finite ε is no longer small enough to rule ε out")
    x = as_number(answer, "a lower bound on ε")
    want = one_run_ceiling(m, delta, confidence)
    no_delta = one_run_ceiling(m, 1e-300, confidence)
    if _near(x, no_delta, 0.003) and abs(x - no_delta) < abs(x - want):
        _fail(f"{x:.4g} is the ceiling with δ = 0 (or a tiny δ): at δ = {delta:g} the δ term of the bound makes it "
              "slightly smaller (if you rounded, keep two decimals)")
    if _near(x, want, 0.02):
        return
    alpha = 1 - confidence
    if x <= 0:
        _fail(f"{x:.4g}: a perfect attack's guesses are all right, which an ε-DP algorithm with small ε makes "
              "very unlikely: the bound is well above 0")
    if x > 6.5:
        _fail(f"{x:.4g} is more than {r} correct guesses can certify (is it the accountant's ε?). The ceiling does "
              f"not depend on the true ε: (e^ε/(1 + e^ε))^{r}, the chance of {r} right out of {r}, stops being "
              "small enough to rule ε out at a finite ε")
    if any(_near(x, _logit(a ** (1 / (2 * r))), 0.01) for a in (alpha, alpha / 2, alpha / 3)) or (
            5.2 < x < 6.5):
        _fail(f"{x:.4g}: you counted r = {2 * r} correct guesses (or audited {2 * r} in-canaries). With {m} canaries "
              f"half in, only the {r} in-canaries can be guessed right; guessing an out-canary \"in\" is a mistake")
    if any(_near(x, _logit(a ** (1 / r)), 0.01) for a in (alpha, alpha / 2)):
        _fail(f"{x:.4g}: you solved (e^ε/(1 + e^ε))^{r} = p by hand: the right idea, but without the δ term and "
              "the correction over thresholds of the audit; use auditing.one_run_epsilon on the perfect scores")
    if _near(x, one_run_ceiling(m, delta, 1 - alpha / 2), 0.01):
        _fail(f"{x:.4g} is the bound at 97.5 % confidence (a two-sided split of α); the one-run bound is one-sided: "
              "confidence 0.95")
    if _near(x, one_run_ceiling(m, delta, 0.99), 0.01):
        _fail(f"{x:.4g} is the bound at 99 % confidence; the question asks for 95 %")
    for other in (100, 200, 500, 2000):
        if _near(x, one_run_ceiling(other, delta, confidence), 0.01):
            _fail(f"{x:.4g} is the ceiling with {other} canaries ({other // 2} in); the audit has {m} canaries, "
                  f"{r} in and {m - r} out")
    if x < want:
        _fail(f"{x:.4g} is below what a perfect attack certifies (is it an imperfect attack's bound?): with every "
              f"in-canary scoring 1 and every out-canary 0, compute auditing.one_run_epsilon(np.ones({r}), "
              f"np.zeros({m - r}), delta={delta:g})")
    _fail(f"{x:.4g} is above what a perfect attack certifies with {m} canaries at δ = {delta:g}: compute "
          "auditing.one_run_epsilon on the perfect scores")
