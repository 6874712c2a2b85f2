"""Automatic checkers for the notebooks' exercises: "not done yet", "wrong, because ...", or "correct".

Every exercise cell in a notebook is committed unsolved, its answer left as ``...``. Calling
:func:`check` on it then prints a "not done yet" line and returns False, so the notebook still
runs from top to bottom (CI executes it under nbval). A wrong answer raises :class:`ExerciseError`
(an ``AssertionError``) whose message says what is wrong; a right one prints a tick. Function
answers count as not done while they return ``...`` or ``None`` (the body of a stub).

A notebook's checkers are small functions ``checker(answer)`` that raise :class:`ExerciseError`
(notebook NN's own checkers may live in ``dpedu/exercises/nbNN.py``); every notebook shares
:func:`check`. Reference solutions ship with the package, ``dpedu/exercises/solutions/nbNN.py``, so
that they are reachable on Colab too: :func:`show_solution` prints one. The tests check that the
checkers accept them and reject typical mistakes with a message naming the mistake.

Taught in notebooks/03_dpsgd_mnist.ipynb.
"""

from __future__ import annotations


__all__ = ["ExerciseError", "NotDone", "check", "check_statements", "answered", "as_number", "show_solution",
           "load_solutions",
           "check_clipping", "check_poisson_sampler", "check_noise_multiplier"]


class ExerciseError(AssertionError):
    """The answer is wrong; the message says how."""


class NotDone(Exception):
    """The answer is still the ``...`` placeholder."""


def answered(value):
    """``value`` if it is an answer; raises :class:`NotDone` for the placeholders ``...`` and None."""
    if value is Ellipsis or value is None:
        raise NotDone
    return value


def as_number(answer, what: str) -> float:
    """``answer`` as a finite float; raises :class:`ExerciseError` naming ``what`` was expected."""
    import math

    try:
        value = float(answer)
    except (TypeError, ValueError):
        raise ExerciseError(f"the answer must be a number ({what}), got {answer!r}") from None
    if not math.isfinite(value):
        raise ExerciseError(f"the answer must be a finite number ({what}), got {value!r}")
    return value


def check_statements(answer, verdicts: dict) -> None:
    """Checks a set of letters against ``verdicts`` (``{letter: (is_true, why)}``), explaining each mistake.

    ``answer`` is a set, list or string of letters (``"BC"``, ``{"b", "c"}``); raises
    :class:`ExerciseError` naming unknown letters, or giving the reason for (at most two) letters
    wrongly in or out of the answer.
    """
    answered(answer)
    if isinstance(answer, str):
        letters = {ch for ch in answer.upper() if ch.isalpha()}
    else:
        try:
            letters = {str(x).strip().upper() for x in answer}
        except TypeError:
            raise ExerciseError('answer with the letters of the true statements, e.g. {"A", "D"}') from None
    unknown = letters - set(verdicts)
    if unknown:
        raise ExerciseError(f"unknown statement(s) {', '.join(sorted(unknown))}: the statements are "
                            f"{min(verdicts)} to {max(verdicts)}")
    wrong = [why for letter, (true, why) in verdicts.items() if (letter in letters) != true]
    if wrong:
        raise ExerciseError("; ".join(wrong[:2]) + (f" (and {len(wrong) - 2} more)" if len(wrong) > 2 else ""))


def check(title: str, answer, checker) -> bool:
    """Runs ``checker(answer)`` and prints the verdict.

    Args:
      title: the exercise, as the notebook names it.
      answer: the student's value or function (``...`` while not done).
      checker: raises :class:`ExerciseError` for a wrong answer, :class:`NotDone` for a stub.

    Returns:
      True if correct, False if not done yet.

    Raises:
      ExerciseError: the answer is wrong (the message says why).
    """
    try:
        checker(answered(answer))
    except NotDone:
        print(f"[ ] {title}: not done yet. Replace the `...` with your code and run the cell again "
              "(stuck? dpedu.exercises.show_solution(notebook, name) prints a solution).")
        return False
    print(f"[x] {title}: correct.")
    return True


def load_solutions(notebook: str):
    """The module of reference solutions for notebook ``notebook`` (e.g. ``"03"``).

    Raises:
      ValueError: no solutions are shipped for that notebook.
    """
    import importlib

    try:
        return importlib.import_module(f"dpedu.exercises.solutions.nb{notebook}")
    except ModuleNotFoundError:
        raise ValueError(f"no solutions for notebook {notebook!r}; notebooks with solutions: "
                         f"{', '.join(_solution_notebooks())}") from None


def show_solution(notebook: str, name: str) -> None:
    """Prints the source of the reference solution ``name`` of notebook ``notebook`` (try first!).

    Raises:
      ValueError: unknown notebook or name (the message lists the names there are).
    """
    import inspect

    module = load_solutions(notebook)
    source = inspect.getsource(module)
    if name not in vars(module):
        names = sorted(n for n in vars(module) if not n.startswith("_") and n not in ("math", "np", "jax", "jnp"))
        raise ValueError(f"notebook {notebook}'s solutions define no {name!r}; they define: {', '.join(names)}")
    obj = vars(module)[name]
    print(inspect.getsource(obj) if inspect.isfunction(obj) else _assignment_source(source, name, obj))


def _assignment_source(source: str, name: str, value) -> str:
    """The comment block and statement that assign ``name`` at the top level of ``source``."""
    import ast

    tree = ast.parse(source)
    lines = source.splitlines()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            start = node.lineno - 1
            while start > 0 and lines[start - 1].startswith("#"):
                start -= 1
            return "\n".join(lines[start:node.end_lineno])
    return f"{name} = {value!r}"


def _solution_notebooks() -> list[str]:
    import importlib.resources

    folder = importlib.resources.files("dpedu.exercises.solutions")
    return sorted(p.name[2:4] for p in folder.iterdir() if p.name.startswith("nb") and p.name.endswith(".py"))


# ---------------------------------------------------------------------------------------------
# notebooks/03_dpsgd_mnist.ipynb: its checkers live in dpedu/exercises/nb03.py (re-exported here)
# ---------------------------------------------------------------------------------------------


def _fail(message: str):
    raise ExerciseError(message)


from dpedu.exercises.nb03 import check_clipping, check_noise_multiplier, check_poisson_sampler  # noqa: E402


# ---------------------------------------------------------------------------------------------
# notebooks/05_reconstruction_attack.ipynb: checkers in dpedu/exercises/nb05.py, re-exported here
# ---------------------------------------------------------------------------------------------

from dpedu.exercises.nb05 import (  # noqa: E402
    check_epsilon_lower_bound, check_noise_for_target, check_prior_aware_statements)

__all__ += ["check_noise_for_target", "check_epsilon_lower_bound", "check_prior_aware_statements"]


# ---------------------------------------------------------------------------------------------
# notebooks/06_auditing.ipynb: checkers in dpedu/exercises/nb06.py, re-exported here
# ---------------------------------------------------------------------------------------------

from dpedu.exercises.nb06 import (  # noqa: E402
    check_audit_statements, check_one_run_ceiling, check_tpr_at_fpr, check_trials_needed)

__all__ += ["check_tpr_at_fpr", "check_trials_needed", "check_audit_statements", "check_one_run_ceiling"]
