"""Durations as flows write them: `500ms`, `30s`, `5m`, `2h`, `3d`, `1h30m`, `PT30S`."""

from __future__ import annotations

import re

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_SHORT = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_ISO = re.compile(
    r"P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)
_ISO_MS = {"w": 7 * 86_400_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000}


def parse_duration(text: object) -> int:
    """Milliseconds in `text`; ValueError with a message meant for the flow author otherwise."""
    if isinstance(text, bool) or not isinstance(text, str):
        if isinstance(text, int | float):
            raise ValueError(f"duration {text!r} needs a unit, e.g. '{text}s' or '{text}ms'")
        raise ValueError(f"a duration is text such as '30s', not {type(text).__name__}")
    s = text.strip()
    if s.upper().startswith("P"):
        m = _ISO.fullmatch(s.upper())
        if m is None or s.upper() in ("P", "PT") or s.upper().endswith("T"):
            raise ValueError(f"'{text}' is not an ISO 8601 duration such as 'PT30S'")
        total = sum(float(v) * _ISO_MS[k] for k, v in m.groupdict().items() if v)
    else:
        pos, total = 0, 0.0
        for part in _SHORT.finditer(s):
            if part.start() != pos:
                break
            total += float(part.group(1)) * _UNIT_MS[part.group(2)]
            pos = part.end()
        if pos != len(s) or not s:
            raise ValueError(
                f"'{text}' is not a duration: use a number and a unit (ms, s, m, h, d), "
                "e.g. '500ms', '30s', '1h30m', or ISO 8601 such as 'PT30S'"
            )
    if total <= 0:
        raise ValueError(f"duration '{text}' must be longer than zero")
    return int(total)


def format_duration(ms: int) -> str:
    """The shortest exact short form of `ms`: 90000 -> '1m30s'."""
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    if ms or not parts:
        parts.append(f"{ms}ms")
    return "".join(parts)
