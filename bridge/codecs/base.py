"""The codec contract, and the JSON and header helpers every codec shares."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from bridge.codecs.fastjson import loads
from bridge.errors import DecodeError, EncodeError


@dataclass(frozen=True, slots=True)
class Decoded:
    """One decoded message: what flows match on, plus the id and time if the format carries them."""

    payload: dict[str, Any]
    headers: dict[str, str]
    event_id: str | None = None
    event_time: str | None = None


@runtime_checkable
class Codec(Protocol):
    """Turns a message's bytes and headers into a payload, and a command into bytes and headers."""

    def decode(self, value: bytes | None, headers: Mapping[str, bytes | str]) -> Decoded:
        """Raise `DecodeError` (never a vendor exception) when the message cannot be read."""
        ...

    def encode(
        self, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[bytes, dict[str, str]]:
        """Raise `EncodeError` when the payload cannot be written in this format."""
        ...


def decode_headers(headers: Mapping[str, bytes | str]) -> dict[str, str]:
    """Kafka header values are bytes; SQS attributes arrive as str already."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if isinstance(value, str):
            out[name] = value
            continue
        try:
            out[name] = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"header {name!r} is not valid UTF-8: {exc.reason} at byte {exc.start}"
            ) from exc
    return out


def json_type(value: object) -> str:
    """The name used in messages about an unexpected JSON value."""
    return "null" if value is None else type(value).__name__


def parse_json_object(data: bytes, what: str = "payload") -> dict[str, Any]:
    """Parse UTF-8 JSON that must hold an object; `what` names the thing in error messages."""
    try:
        value = loads(data)  # UTF-8 only: json.loads(bytes) would also accept UTF-16/32
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} is not valid UTF-8: {exc.reason} at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise DecodeError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            f" (char {exc.pos})"
        ) from exc
    except RecursionError as exc:
        raise DecodeError(f"{what} is not usable JSON: nested too deeply") from exc
    if type(value) is not dict:
        raise DecodeError(f"{what} is not a JSON object (got {json_type(value)})")
    return value


def _plain(value: object) -> dict[Any, Any]:
    # Command payloads may be read-only mappings (MappingProxyType); json only knows dict.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dump_json(payload: Mapping[str, Any], what: str = "payload") -> bytes:
    """Strict, compact UTF-8 JSON: NaN and Infinity are refused, since they are not JSON."""
    try:
        text = json.dumps(
            payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_plain
        )
        return text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError(f"{what} cannot be written as JSON: {exc}") from exc


def require_value(value: bytes | None) -> bytes:
    """A null Kafka value is a tombstone: there is nothing to decode."""
    if value is None:
        raise DecodeError("message has no value (a tombstone)")
    return value
