"""Argument checks shared by every public function.

Each check raises ``ValueError`` whose message names the argument, the allowed range and the
value received, so a student knows what to change.
"""

from __future__ import annotations

import math
import numbers


def _as_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN")
    return value


def check_positive(name: str, value, *, allow_inf: bool = False) -> float:
    """Returns ``value`` as a float if it is > 0 (and finite unless ``allow_inf``)."""
    value = _as_float(name, value)
    if not value > 0 or (math.isinf(value) and not allow_inf):
        bound = "(0, inf]" if allow_inf else "(0, inf)"
        raise ValueError(f"{name} must be in {bound}, got {value!r}")
    return value


def check_noise_multiplier(noise_multiplier) -> float:
    """σ > 0: the Gaussian noise standard deviation in units of the sensitivity."""
    return check_positive("noise_multiplier", noise_multiplier)


def check_sampling_rate(sampling_rate) -> float:
    """q in (0, 1]: the probability that an example is in a batch."""
    value = _as_float("sampling_rate", sampling_rate)
    if not 0 < value <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {value!r}")
    return value


def check_delta(delta) -> float:
    """δ in (0, 1)."""
    value = _as_float("delta", delta)
    if not 0 < value < 1:
        raise ValueError(f"delta must be in (0, 1), got {value!r}")
    return value


def check_epsilon(epsilon, name: str = "epsilon") -> float:
    """ε > 0 and finite."""
    return check_positive(name, epsilon)


def check_steps(steps, name: str = "steps") -> int:
    """T ≥ 1, an integer."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        if isinstance(steps, numbers.Real) and float(steps).is_integer():
            steps = int(steps)
        else:
            raise ValueError(f"{name} must be an integer >= 1, got {steps!r}")
    if steps < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {steps!r}")
    return int(steps)


def check_non_negative(name: str, value, *, allow_inf: bool = False) -> float:
    """Returns ``value`` as a float if it is >= 0 (and finite unless ``allow_inf``)."""
    value = _as_float(name, value)
    if not value >= 0 or (math.isinf(value) and not allow_inf):
        bound = "[0, inf]" if allow_inf else "[0, inf)"
        raise ValueError(f"{name} must be in {bound}, got {value!r}")
    return value
