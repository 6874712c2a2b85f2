"""Solutions to the exercises of notebooks/06_auditing.ipynb.

Try them yourself first. ``tests/test_exercises_nb06.py`` checks each solution with the notebook's
checker (``dpedu.exercises.nb06``).
"""

import numpy as np

from dpedu import auditing


# Exercise 1: the test guesses "in" when score ≥ t. Its TPR only changes at in-scores, so the best t
# is the smallest in-score whose FPR (the fraction of out-scores ≥ t, ties included) is allowed;
# t = ∞ guesses nothing in (TPR 0, FPR 0) and is always allowed.
def tpr_at_fpr(in_scores, out_scores, fpr):
    in_scores = np.asarray(in_scores, dtype=float)
    out_scores = np.asarray(out_scores, dtype=float)
    thresholds = np.append(np.unique(in_scores), np.inf)
    fprs = np.mean(out_scores[None, :] >= thresholds[:, None], axis=1)
    tprs = np.mean(in_scores[None, :] >= thresholds[:, None], axis=1)
    return float(np.max(tprs[fprs <= fpr]))


# Exercise 2: 0 false positives out of n only shows FPR ≤ 1 − 0.025^(1/n) ≈ 3.7/n (95 % interval),
# and n/2 false negatives shows FNR ≤ ½ + a little; the bound ln((1 − δ − FNR)/FPR) ≈ ln(n/7.4)
# grows like ln n, so ε ≥ 4 needs n ≈ 7.4·e⁴ ≈ 400 trials a side, and every extra unit of ε
# multiplies the trials by e ≈ 2.7: auditing a large ε is expensive.
trials_needed = next(
    n for n in range(2, 1_000_000, 2)
    if auditing.epsilon_from_error_rates(auditing.clopper_pearson(0, n)[1],  # upper end: FPR
                                         auditing.clopper_pearson(n // 2, n)[1],  # upper end: FNR
                                         delta=1e-5) >= 4.0)


# Exercise 3: the true statements. B: the reused noise adds up to T·z, the canary's shift to T·C, so
# the final model alone leaks μ = 1/σ, less than the accountant's √T/σ. C: K clipped copies can add
# up to K·C. E: a 95 % lower bound above the claim refutes it. A is false (a kernel canary is clipped
# correctly by that step: the bug needs a bias canary), D is false (an audit can only refute), F is
# false (a subsampled Gaussian is not GDP).
audit_statements = {"B", "C", "E"}


# Exercise 4: a perfect attack on 1,000 canaries (500 in, 500 out) guesses the 500 in-canaries
# right. An ε-DP algorithm gets r right out of r with probability at most (e^ε/(1 + e^ε))^r (plus a
# δ term); that is below α = 5 % only while e^ε ≲ r/ln(1/α), so the ceiling is finite, about
# ln(r/ln(1/α)) ≈ 4.8 (a little less with δ and the correction over thresholds), and grows only
# like ln r: a one-run audit with m canaries cannot certify a large ε.
one_run_ceiling = auditing.one_run_epsilon(np.ones(500), np.zeros(500), delta=1e-5)
