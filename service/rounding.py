"""How figures are rounded where people read them (JSON answers, log lines), written once."""

from __future__ import annotations

import math


def rounded(value: float | None, digits: int = 2) -> float | None:
    """``value`` to ``digits`` decimals; None (and NaN, which JSON cannot carry) stay None."""
    return None if value is None or math.isnan(value) else round(value, digits)


def ms(seconds: float) -> float:
    """Seconds as milliseconds with two decimals, for log lines."""
    return round(seconds * 1000, 2)
