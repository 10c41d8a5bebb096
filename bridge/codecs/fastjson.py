"""Compact JSON for the records sagabridge writes itself (inputs, states, lifecycle, commands).

orjson writes them several times faster than the standard library, and its output reads back
the same through `json.loads`. What it refuses (keys that are not strings, integers beyond 64
bits) goes through the standard library instead. Reading stays with `json`: orjson would turn
integers beyond 64 bits into floats.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value, separators=(",", ":")).encode()
