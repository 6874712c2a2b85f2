"""Notebook 06's exercise checkers accept the reference solutions and name typical mistakes."""

import math

import numpy as np
import pytest

from dpedu import auditing, exercises
from dpedu.exercises import nb06


@pytest.fixture(scope="module")
def solutions():
    return exercises.load_solutions("06")


def test_solutions_pass_and_stubs_are_not_done(solutions, capsys):
    assert exercises.check("1", solutions.tpr_at_fpr, nb06.check_tpr_at_fpr)
    assert exercises.check("2", solutions.trials_needed, nb06.check_trials_needed)
    assert exercises.check("3", solutions.audit_statements, nb06.check_audit_statements)
    assert exercises.check("3", "b, c, e", nb06.check_audit_statements)
    assert exercises.check("4", solutions.one_run_ceiling, nb06.check_one_run_ceiling)
    # Within 2 %, except near the δ = 0 value (1 % above), which the checker names.
    for factor in (0.985, 1.004):
        assert exercises.check("4", factor * solutions.one_run_ceiling, nb06.check_one_run_ceiling)

    def tpr_at_fpr(in_scores, out_scores, fpr):
        ...

    assert not exercises.check("1", tpr_at_fpr, nb06.check_tpr_at_fpr)
    for checker in (nb06.check_trials_needed, nb06.check_audit_statements, nb06.check_one_run_ceiling):
        assert not exercises.check("x", ..., checker)
    assert capsys.readouterr().out.count("not done yet") == 4


def test_checkers_are_reexported_from_dpedu_exercises():
    for name in ("check_tpr_at_fpr", "check_trials_needed", "check_audit_statements", "check_one_run_ceiling"):
        assert getattr(exercises, name) is getattr(nb06, name)
        assert name in exercises.__all__


def test_solutions_print(capsys):
    for name, text in (("tpr_at_fpr", "def tpr_at_fpr"), ("trials_needed", "trials_needed ="),
                       ("audit_statements", "audit_statements ="), ("one_run_ceiling", "one_run_ceiling =")):
        exercises.show_solution("06", name)
        assert text in capsys.readouterr().out


# --- Exercise 1 --------------------------------------------------------------------------------


def test_reference_tpr_at_fpr_is_the_best_threshold_test():
    rng = np.random.default_rng(0)
    in_scores, out_scores = rng.integers(0, 8, 40), rng.integers(0, 6, 30)
    for fpr in (0.0, 0.1, 0.3, 1.0):
        # Brute force over every threshold between and beyond the scores.
        best = max(np.mean(in_scores >= t) for t in np.arange(-1, 10, 0.5) if np.mean(out_scores >= t) <= fpr)
        assert nb06.tpr_at_fpr(in_scores, out_scores, fpr) == best
    assert nb06.tpr_at_fpr([0, 1], [2, 3], 0.0) == 0.0
    assert nb06.tpr_at_fpr([0, 1], [2, 3], 1.0) == 1.0


def _arrays(i, o):
    return np.asarray(i, float), np.asarray(o, float)


def _returns_fpr(in_scores, out_scores, fpr):
    i, o = _arrays(in_scores, out_scores)
    best = min(t for t in np.append(np.unique(i), np.inf) if np.mean(o >= t) <= fpr)
    return np.mean(o >= best)


def _quantile(in_scores, out_scores, fpr):
    return np.mean(np.asarray(in_scores) >= np.quantile(out_scores, 1 - fpr))


def _ties_not_counted(in_scores, out_scores, fpr):
    i, o = _arrays(in_scores, out_scores)
    return max(np.mean(i >= t) for t in np.unique(np.concatenate([i, o, [np.inf]])) if np.mean(o > t) <= fpr)


def _strict(in_scores, out_scores, fpr):
    i, o = _arrays(in_scores, out_scores)
    return max(np.mean(i > t) for t in np.unique(np.concatenate([i, o])) if np.mean(o > t) <= fpr)


def _out_thresholds(in_scores, out_scores, fpr):
    i, o = _arrays(in_scores, out_scores)
    return max(np.mean(i >= t) for t in np.append(np.unique(o), np.inf) if np.mean(o >= t) <= fpr)


def _no_asarray(in_scores, out_scores, fpr):
    return max((in_scores >= t).mean() for t in sorted(set(in_scores)) + [math.inf]
               if (out_scores >= t).mean() <= fpr)


def _no_infinite_threshold(in_scores, out_scores, fpr):
    i, o = _arrays(in_scores, out_scores)
    return max(np.mean(i >= t) for t in np.unique(i) if np.mean(o >= t) <= fpr)


def _percent(in_scores, out_scores, fpr):
    return 100 * nb06.tpr_at_fpr(in_scores, out_scores, fpr)


@pytest.mark.parametrize("wrong, message", [
    (_returns_fpr, "false-positive rate"), (_quantile, "np.quantile"), (_ties_not_counted, "ties"),
    (_strict, "score > t"), (_out_thresholds, "only out-scores"), (_no_asarray, "lists"),
    (_no_infinite_threshold, "guess nothing"), (_percent, "not a rate"),
])
def test_tpr_at_fpr_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseError, match=message):
        exercises.check("1", wrong, nb06.check_tpr_at_fpr)


# --- Exercise 2 --------------------------------------------------------------------------------


def test_trial_bound_is_the_library_composition():
    for n in (20, 100, 444, 1000):
        upper = [auditing.clopper_pearson(k, n)[1] for k in (0, n // 2)]
        assert float(nb06.trial_bound(n)) == pytest.approx(auditing.epsilon_from_error_rates(*upper, 1e-5),
                                                           rel=1e-12)
    n = nb06.trials_needed()
    assert n % 2 == 0 and nb06.trial_bound(n) >= 4 > nb06.trial_bound(n - 2)


@pytest.mark.parametrize("answer, message", [
    (443, "odd"), (2, "infinite bound"), (888, "both sides"), (358, "one-sided"), (366, "rule of three"),
    (328, "rule of three"), (402, "observed FNR"), (142, "log2"), (74314, "log10"), (644, "99 %"),
    (446, "SMALLEST"), (300, "too few"), (444.5, "whole number"), (True, "an int"), ("many", "number"),
])
def test_trials_needed_names_the_mistake(answer, message):
    with pytest.raises(exercises.ExerciseError, match=message):
        exercises.check("2", answer, nb06.check_trials_needed)


def test_trials_needed_accepts_the_number_in_any_form(solutions):
    for answer in (solutions.trials_needed, float(solutions.trials_needed), np.int64(solutions.trials_needed)):
        nb06.check_trials_needed(answer)


# --- Exercise 3 --------------------------------------------------------------------------------


def test_statements_have_text_and_a_verdict_each():
    assert set(nb06.STATEMENTS) == set("ABCDEF") == set(nb06._VERDICTS)
    assert {k for k, (true, _) in nb06._VERDICTS.items() if true} == {"B", "C", "E"}


@pytest.mark.parametrize("answer, message", [
    ({"A", "B", "C", "E"}, "A is false"), ({"C", "E"}, "B is true"), ({"B", "E"}, "C is true"),
    ("BCDE", "D is false"), ({"B", "C"}, "E is true"), ("bcef", "F is false"), ({"G"}, "unknown statement"),
    (3, "letters"),
])
def test_audit_statements_name_the_mistake(answer, message):
    with pytest.raises(exercises.ExerciseError, match=message):
        exercises.check("3", answer, nb06.check_audit_statements)


# --- Exercise 4 --------------------------------------------------------------------------------


def test_one_run_ceiling_is_finite_and_grows_like_log_m():
    ceilings = [nb06.one_run_ceiling(m) for m in (100, 1000, 10_000)]
    assert 4.6 < ceilings[1] < 4.9 and ceilings[0] < ceilings[1] < ceilings[2] < 7
    assert nb06.one_run_ceiling(1000, 1e-300) > ceilings[1]  # the δ term costs a little


def _logit(p):
    return math.log(p / (1 - p))


@pytest.mark.parametrize("answer, message", [
    (math.inf, "finite"), (8.0, "accountant"),
    (lambda: nb06.one_run_ceiling(1000, 1e-300), "δ = 0"), (4.8, "δ = 0"),
    (lambda: _logit(0.05 ** (1 / 500)), "by hand"), (lambda: _logit(0.05 ** (1 / 1000)), "r = 1000"),
    (lambda: nb06.one_run_ceiling(2000), "r = 1000"), (lambda: nb06.one_run_ceiling(1000, 1e-5, 0.975), "97.5 %"),
    (lambda: nb06.one_run_ceiling(1000, 1e-5, 0.99), "99 %"), (lambda: nb06.one_run_ceiling(100), "100 canaries"),
    (lambda: nb06.one_run_ceiling(500), "500 canaries"), (1.8, "below what a perfect attack"),
    (0.0, "above 0"), (5.0, "above what a perfect attack"), ("big", "number"),
])
def test_one_run_ceiling_names_the_mistake(answer, message):
    answer = answer() if callable(answer) else answer
    with pytest.raises(exercises.ExerciseError, match=message):
        exercises.check("4", answer, nb06.check_one_run_ceiling)
