"""CloudEvents 1.0 over Kafka (protocol binding 1.0), JSON data only.

Binary mode carries the attributes in `ce_<attr>` headers and the data as the body; structured
mode carries the whole event as a JSON envelope (`content-type: application/cloudevents+json`).
Either way the payload is the event's data and every attribute is exposed as a `ce_<attr>`
header, so flows match `$headers.ce_type` whichever mode the producer chose.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Literal

from bridge.codecs.base import Decoded, decode_headers, dump_json, json_type, parse_json_object
from bridge.errors import DecodeError, EncodeError

Mode = Literal["binary", "structured", "auto"]

_REQUIRED = ("specversion", "id", "source", "type")
_STRUCTURED_JSON = "application/cloudevents+json"
_SOURCE = "sagabridge"


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(content_type: str | None) -> bool:
    # Absent datacontenttype means JSON in the JSON event format, and we assume the same in binary.
    if content_type is None:
        return True
    media = _media_type(content_type)
    return media in ("application/json", "text/json") or media.endswith("+json")


def _content_type(headers: Mapping[str, str]) -> str | None:
    for name, value in headers.items():
        if name.lower() == "content-type":
            return value
    return None


def _checked(attrs: Mapping[str, str]) -> None:
    missing = [name for name in _REQUIRED if not attrs.get(name)]
    if missing:
        raise DecodeError(f"CloudEvent is missing required attributes: {', '.join(missing)}")
    if attrs["specversion"] != "1.0":
        raise DecodeError(f"CloudEvents specversion {attrs['specversion']!r} is not supported")


def _text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _attribute_text(name: str, value: Any) -> str:
    # The canonical string forms of the CloudEvents attribute types (boolean, integer, string...).
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise DecodeError(f"CloudEvents attribute {name!r} is a {json_type(value)}, not a scalar")


class CloudEventsCodec:
    """CloudEvents with JSON data; `mode` "auto" picks binary or structured per message."""

    def __init__(self, mode: Mode = "auto") -> None:
        self.mode = mode

    def decode(self, value: bytes | None, headers: Mapping[str, bytes | str]) -> Decoded:
        plain = decode_headers(headers)
        content_type = _content_type(plain)
        structured = self.mode == "structured" or (
            self.mode == "auto"
            and content_type is not None
            and _media_type(content_type).startswith("application/cloudevents")
        )
        if structured:
            return _decode_structured(value, plain, content_type)
        return _decode_binary(value, plain, content_type)

    def encode(
        self, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[bytes, dict[str, str]]:
        """Write a command envelope as an event whose data is the whole envelope."""
        missing = [name for name in ("command_id", "name") if not _text(payload.get(name))]
        if missing:
            raise EncodeError(f"a CloudEvent needs {', '.join(missing)} (non-empty string)")
        attrs = {
            "specversion": "1.0",
            "id": payload["command_id"],
            "type": payload["name"],
            "source": _SOURCE,
        }
        if isinstance(payload.get("issued_at"), str):
            attrs["time"] = payload["issued_at"]
        if isinstance(payload.get("key"), str):
            attrs["subject"] = payload["key"]
        if self.mode == "structured":
            envelope = {**attrs, "datacontenttype": "application/json", "data": payload}
            body = dump_json(envelope, "CloudEvent")
            return body, {**headers, "content-type": _STRUCTURED_JSON}
        out = dict(headers)
        out.update({f"ce_{name}": text for name, text in attrs.items()})
        out["content-type"] = "application/json"
        return dump_json(payload, "CloudEvents data"), out


def _decode_binary(
    value: bytes | None, headers: dict[str, str], content_type: str | None
) -> Decoded:
    attrs = {name[3:]: text for name, text in headers.items() if name.startswith("ce_")}
    _checked(attrs)
    if content_type is not None:
        # The binding maps datacontenttype to content-type; expose it like the other attributes.
        headers["ce_datacontenttype"] = content_type
    if not value:  # an event without data is valid; flows can still match on its attributes
        payload: dict[str, Any] = {}
    elif _is_json(content_type):
        payload = parse_json_object(value, "CloudEvents data")
    else:
        raise DecodeError(f"CloudEvents data has content-type {content_type!r}; only JSON is read")
    return Decoded(payload, headers, attrs["id"], attrs.get("time"))


def _decode_structured(
    value: bytes | None, headers: dict[str, str], content_type: str | None
) -> Decoded:
    if content_type is not None:
        media = _media_type(content_type)
        if media.startswith("application/cloudevents") and media != _STRUCTURED_JSON:
            raise DecodeError(f"CloudEvents format {content_type!r} is not supported")
    if not value:
        raise DecodeError("structured CloudEvent has no body")
    envelope = parse_json_object(value, "CloudEvents envelope")
    attrs = {
        name: _attribute_text(name, item)
        for name, item in envelope.items()
        if name not in ("data", "data_base64") and item is not None  # null means absent
    }
    _checked(attrs)
    headers.update({f"ce_{name}": text for name, text in attrs.items()})
    return Decoded(_structured_data(envelope, attrs), headers, attrs["id"], attrs.get("time"))


def _structured_data(envelope: dict[str, Any], attrs: dict[str, str]) -> dict[str, Any]:
    content_type = attrs.get("datacontenttype")
    if "data" in envelope and "data_base64" in envelope:
        raise DecodeError("CloudEvent has both data and data_base64")
    if "data" not in envelope and "data_base64" not in envelope:
        return {}
    if not _is_json(content_type):
        raise DecodeError(f"CloudEvents data has content-type {content_type!r}; only JSON is read")
    if "data" in envelope:
        data = envelope["data"]
        if type(data) is not dict:
            raise DecodeError(f"CloudEvents data is not a JSON object (got {json_type(data)})")
        return data
    encoded = envelope["data_base64"]
    if not isinstance(encoded, str):
        raise DecodeError(f"CloudEvents data_base64 is a {json_type(encoded)}, not a string")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise DecodeError(f"CloudEvents data_base64 is not valid base64: {exc}") from exc
    return parse_json_object(raw, "CloudEvents data")
