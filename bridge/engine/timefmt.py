"""Timestamps: integer milliseconds inside, ISO 8601 (UTC, `Z`) outside."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(ms: int) -> str:
    """`1700000000000` -> `2023-11-14T22:13:20.000Z`."""
    seconds, millis = divmod(int(ms), 1000)
    return f"{_iso_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    # Cached: every lifecycle record and command carries a time, mostly of the last few seconds.
    return (_EPOCH + timedelta(seconds=seconds)).isoformat()[:-6]


def parse_time(value: object) -> int | None:
    """Milliseconds for an ISO 8601 string or an epoch number (seconds or milliseconds)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        # Epoch seconds are below 1e11 until the year 5138; larger numbers are milliseconds.
        return int(value * 1000) if abs(value) < 1e11 else int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return (parsed - _EPOCH) // timedelta(milliseconds=1)
    return None
