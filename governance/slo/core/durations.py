"""Durations as people and OpenSLO write them: "5m", "1h", "28d", "4w"."""

from __future__ import annotations

import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SHORTHAND = re.compile(r"^(\d+)([smhdw])$")


def parse_duration(text: str | float, *, what: str = "duration") -> int:
    """Seconds in a duration shorthand ("30s", "5m", "6h", "28d", "4w"). A bare number is seconds.

    OpenSLO also allows M, Q and Y; months differ in length, so a rolling window is given in
    days or weeks instead (the error says so)."""
    if isinstance(text, bool):
        raise ValueError(f"{what} must be a duration such as 5m, 6h or 28d, not {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"{what} must not be negative")
        return int(text)
    raw = str(text).strip()
    match = _SHORTHAND.match(raw)
    if match is None:
        if raw[-1:] in ("M", "Q", "Y") and raw[:-1].isdigit():
            raise ValueError(f"{what} {raw!r}: months, quarters and years differ in length; give days or weeks (e.g. 28d, 4w)")
        raise ValueError(f"{what} {raw!r} is not a duration: write a whole number and one of s, m, h, d, w (e.g. 5m, 28d)")
    return int(match.group(1)) * UNITS[match.group(2)]


def format_duration(seconds: int) -> str:
    """The largest exact unit up to days: 2419200 -> "28d", 3360 -> "56m"."""
    seconds = int(seconds)
    if seconds == 0:
        return "0m"
    for unit in ("d", "h", "m", "s"):
        if seconds % UNITS[unit] == 0:
            return f"{seconds // UNITS[unit]}{unit}"
    return f"{seconds}s"
