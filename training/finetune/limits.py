"""The caps of a teaching run: its time budget and step count (one-line ``ConfigError`` each).

:func:`parse_budget` is the one check of a budget in seconds; the studio's "Teach both models"
uses it too (with its own wording of *what* is wrong), then applies its own, lower cap.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from metaseg.errors import ConfigError

#: Upper bound of ``--budget-s`` (operators lower it with METASEG_TEACH_MAX_BUDGET_S).
DEFAULT_MAX_BUDGET_S = 3600.0
#: Shortest budget that leaves time for at least a few steps after loading the model.
MIN_BUDGET_S = 5.0
MAX_STEPS = 1_000_000


def max_budget_s() -> float:
    """The cap on ``budget_s``: ``METASEG_TEACH_MAX_BUDGET_S`` or :data:`DEFAULT_MAX_BUDGET_S`."""
    raw = os.environ.get("METASEG_TEACH_MAX_BUDGET_S", "").strip()
    if not raw:
        return DEFAULT_MAX_BUDGET_S
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"METASEG_TEACH_MAX_BUDGET_S must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value < MIN_BUDGET_S:
        raise ConfigError(f"METASEG_TEACH_MAX_BUDGET_S must be at least {MIN_BUDGET_S:g} s, got {raw!r}")
    return value


def parse_budget(value: Any, *, what: str = "--budget-s", per: str = "") -> float:
    """A budget in seconds: a finite number of at least :data:`MIN_BUDGET_S` (booleans refused).

    Args:
        value: what the caller was given (number or text).
        what: how the message names it (``--budget-s`` on the command line).
        per: appended to the minimum in the message (the studio says `` per model``).

    Raises:
        ConfigError: not a number, not finite, or under the minimum.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a number of seconds, got {value!r}")
    try:
        budget = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(budget) or budget < MIN_BUDGET_S:
        raise ConfigError(f"{what} must be at least {MIN_BUDGET_S:g} s{per}, got {budget:g}")
    return budget


def check_limits(budget_s: float | None, steps: int | None, cap_s: float | None = None) -> tuple[float | None, int | None]:
    """Validate the budget / step count (one-line ``ConfigError``)."""
    cap = max_budget_s() if cap_s is None else float(cap_s)
    if budget_s is None and steps is None:
        raise ConfigError("give a time budget (--budget-s S) or a step count (--steps N)")
    if budget_s is not None:
        budget_s = parse_budget(budget_s)
        if budget_s > cap:
            raise ConfigError(f"--budget-s {budget_s:g} is over the cap of {cap:g} s (METASEG_TEACH_MAX_BUDGET_S)")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= int(steps) <= MAX_STEPS:
            raise ConfigError(f"--steps must be a whole number from 1 to {MAX_STEPS}, got {steps!r}")
        steps = int(steps)
    return budget_s, steps
