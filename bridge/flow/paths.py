"""Path expressions, compiled once: `$.a.b[0]`, `$headers.name`, `$key`, `$events.NAME.a.b`.

A compiled path is a tuple of keys and indices; reading one is a short loop, never a parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

MISSING: Final = object()

_SEGMENT = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\[(?:'([^']*)'|\"([^\"]*)\")\]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

PathKind = Literal["payload", "header", "key", "event"]


@dataclass(frozen=True, slots=True)
class Path:
    """A compiled path. `event` is set for `$events.NAME...` paths."""

    text: str
    kind: PathKind
    segments: tuple[str | int, ...] = ()
    event: str | None = None

    def read(self, payload: Any) -> Any:
        """The value at this path in `payload`, or MISSING."""
        value = payload
        for seg in self.segments:
            if isinstance(seg, int):
                if isinstance(value, list) and -len(value) <= seg < len(value):
                    value = value[seg]
                else:
                    return MISSING
            elif isinstance(value, dict):
                value = value.get(seg, MISSING)
                if value is MISSING:
                    return MISSING
            else:
                return MISSING
        return value

    def read_message(self, payload: Any, headers: dict[str, str]) -> Any:
        """The value in a message: payload paths read the payload, header paths the headers."""
        if self.kind == "header":
            return headers.get(str(self.segments[0]), MISSING)
        return self.read(payload)


def _segments(rest: str, text: str) -> tuple[str | int, ...]:
    segs: list[str | int] = []
    pos = 0
    for m in _SEGMENT.finditer(rest):
        if m.start() != pos:
            break
        name, index, quoted1, quoted2 = m.groups()
        if index is not None:
            segs.append(int(index))
        else:
            segs.append(name if name is not None else (quoted1 if quoted1 is not None else quoted2))
        pos = m.end()
    if pos != len(rest):
        raise ValueError(f"'{text}' is not a path: cannot read '{rest[pos:]}'")
    return tuple(segs)


def compile_path(text: object) -> Path:
    """Compile one path expression; ValueError with the author's mistake otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"a path is text such as '$.order.id', not {type(text).__name__}")
    if text == "$key":
        return Path(text, "key")
    if text.startswith("$headers."):
        name = text[len("$headers.") :]
        if not name:
            raise ValueError(f"'{text}' names no header")
        return Path(text, "header", (name,))
    if text.startswith("$events."):
        rest = text[len("$events.") :]
        m = _NAME.match(rest)
        if m is None:
            raise ValueError(f"'{text}' names no event: use $events.NAME.path")
        segs = _segments(rest[m.end() :], text)
        if not segs:
            raise ValueError(
                f"'{text}' must name a field of the event ($events.{m.group()}.field): "
                "sagabridge keeps fields, never whole payloads"
            )
        return Path(text, "event", segs, event=m.group())
    if text == "$":
        raise ValueError("'$' is the whole payload: name a field, e.g. '$.order.id'")
    if text.startswith(("$.", "$[")):
        return Path(text, "payload", _segments(text[1:], text))
    raise ValueError(
        f"'{text}' is not a path: use $.field, $headers.name, $key or $events.NAME.field"
    )


def compile_match_key(text: str) -> Path:
    """A `match:` key: a dotted payload path (`type`, `order.kind`), `$.x` or `$headers.x`."""
    if text.startswith("$"):
        path = compile_path(text)
        if path.kind not in ("payload", "header"):
            raise ValueError(f"'{text}': match on payload fields or $headers.name only")
        return path
    return Path(text, "payload", _segments("." + text, text))
