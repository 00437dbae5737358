"""How numbers read in the docks: counts as integers with thousands separators, never ``1.579e+09``."""

from __future__ import annotations

from typing import Any


def count(value: Any) -> str:
    """An integer count as ``1,579,000,000`` (numpy integers and integral floats included)."""
    return f"{round(float(value)):,}"


def percent(fraction: float, digits: int = 2) -> str:
    """A fraction in [0, 1] as a percentage: ``0.0123`` → ``1.23%``."""
    return f"{100 * float(fraction):.{digits}f}%"


def seconds(value: float) -> str:
    """A duration: ``12.3 s``, ``4:05`` (min:s), ``1:02:03`` (h:min:s)."""
    total = float(value)
    if total < 60:
        return f"{total:.1f} s"
    whole = round(total)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
