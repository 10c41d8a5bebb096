from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.codecs import CloudEventsCodec, CodecConfig, Decoded, build_codec
from bridge.codecs.cloudevents import Mode
from bridge.errors import DecodeError, EncodeError

COMMAND = {
    "command_id": "c0ffee",
    "name": "ReserveInventory",
    "flow": "order-fulfilment",
    "key": "o-42",
    "step": "reserve",
    "action": "invoke",
    "attempt": 1,
    "issued_at": "2024-05-01T12:00:00Z",
    "payload": {"order_id": "o-42"},
}
BINARY_HEADERS = {
    "ce_specversion": b"1.0",
    "ce_id": b"evt-1",
    "ce_source": b"/orders",
    "ce_type": b"OrderPlaced",
    "ce_time": b"2024-05-01T12:00:00Z",
    "content-type": b"application/json",
}
ENVELOPE: dict[str, Any] = {
    "specversion": "1.0",
    "id": "evt-1",
    "source": "/orders",
    "type": "OrderPlaced",
    "time": "2024-05-01T12:00:00Z",
    "datacontenttype": "application/json",
    "data": {"order": {"id": "o-42"}},
}
STRUCTURED_HEADERS = {"content-type": b"application/cloudevents+json; charset=utf-8"}

auto = CloudEventsCodec()


def wire(headers: dict[str, str]) -> dict[str, bytes]:
    return {name: text.encode() for name, text in headers.items()}


def test_build_codec_passes_the_mode(tmp_path: Path) -> None:
    codec = build_codec(CodecConfig(format="cloudevents", cloudevents_mode="binary"), tmp_path)
    assert isinstance(codec, CloudEventsCodec)
    assert codec.mode == "binary"


def test_binary_decode_exposes_attributes_as_headers() -> None:
    decoded = auto.decode(b'{"order": {"id": "o-42"}}', BINARY_HEADERS)
    assert decoded == Decoded(
        payload={"order": {"id": "o-42"}},
        headers={
            "ce_specversion": "1.0",
            "ce_id": "evt-1",
            "ce_source": "/orders",
            "ce_type": "OrderPlaced",
            "ce_time": "2024-05-01T12:00:00Z",
            "content-type": "application/json",
            "ce_datacontenttype": "application/json",
        },
        event_id="evt-1",
        event_time="2024-05-01T12:00:00Z",
    )


def test_structured_decode_gives_the_same_payload_and_attributes() -> None:
    decoded = auto.decode(json.dumps(ENVELOPE).encode(), STRUCTURED_HEADERS)
    binary = auto.decode(b'{"order": {"id": "o-42"}}', BINARY_HEADERS)
    assert decoded.payload == binary.payload
    assert (decoded.event_id, decoded.event_time) == (binary.event_id, binary.event_time)
    ce_headers = {name: text for name, text in decoded.headers.items() if name.startswith("ce_")}
    assert ce_headers == {name: text for name, text in binary.headers.items() if "ce_" in name}


def test_structured_mode_needs_no_content_type() -> None:
    decoded = CloudEventsCodec("structured").decode(json.dumps(ENVELOPE).encode(), {})
    assert decoded.headers["ce_type"] == "OrderPlaced"


def test_structured_data_base64_is_decoded_as_json() -> None:
    envelope = {k: v for k, v in ENVELOPE.items() if k != "data"}
    envelope["data_base64"] = base64.b64encode(b'{"a": 1}').decode()
    assert auto.decode(json.dumps(envelope).encode(), STRUCTURED_HEADERS).payload == {"a": 1}


def test_extension_attributes_become_canonical_strings() -> None:
    envelope = {**ENVELOPE, "retries": 3, "replayed": True, "traceparent": "00-ab", "dataref": None}
    headers = auto.decode(json.dumps(envelope).encode(), STRUCTURED_HEADERS).headers
    assert (headers["ce_retries"], headers["ce_replayed"]) == ("3", "true")
    assert headers["ce_traceparent"] == "00-ab"
    assert "ce_dataref" not in headers  # a null attribute is an absent one


@pytest.mark.parametrize("value", [None, b""])
def test_event_without_data_has_an_empty_payload(value: bytes | None) -> None:
    assert auto.decode(value, BINARY_HEADERS).payload == {}
    envelope = {k: v for k, v in ENVELOPE.items() if k != "data"}
    assert auto.decode(json.dumps(envelope).encode(), STRUCTURED_HEADERS).payload == {}


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_encode_then_decode_round_trips_a_command(mode: Mode) -> None:
    codec = CloudEventsCodec(mode)
    value, headers = codec.encode(COMMAND, {"trace": "t-1"})
    decoded = CloudEventsCodec().decode(value, wire(headers))
    assert decoded.payload == COMMAND
    assert (decoded.event_id, decoded.event_time) == ("c0ffee", "2024-05-01T12:00:00Z")
    assert decoded.headers["ce_type"] == "ReserveInventory"
    assert decoded.headers["ce_source"] == "sagabridge"
    assert decoded.headers["ce_subject"] == "o-42"
    assert decoded.headers["trace"] == "t-1"


def test_binary_encode_headers() -> None:
    _, headers = CloudEventsCodec().encode(COMMAND, {})
    assert headers == {
        "ce_specversion": "1.0",
        "ce_id": "c0ffee",
        "ce_type": "ReserveInventory",
        "ce_source": "sagabridge",
        "ce_time": "2024-05-01T12:00:00Z",
        "ce_subject": "o-42",
        "content-type": "application/json",
    }


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (["command_id"], "a CloudEvent needs command_id (non-empty string)"),
        (["command_id", "name"], "a CloudEvent needs command_id, name (non-empty string)"),
    ],
)
def test_encode_without_id_or_name_is_an_encode_error(drop: list[str], message: str) -> None:
    command = {k: v for k, v in COMMAND.items() if k not in drop}
    with pytest.raises(EncodeError) as caught:
        auto.encode(command, {})
    assert str(caught.value) == message


def test_binary_missing_attributes_are_named() -> None:
    headers = {k: v for k, v in BINARY_HEADERS.items() if k not in ("ce_id", "ce_source")}
    with pytest.raises(DecodeError) as caught:
        auto.decode(b"{}", headers)
    assert str(caught.value) == "CloudEvent is missing required attributes: id, source"


def test_structured_missing_attributes_are_named() -> None:
    envelope = {k: v for k, v in ENVELOPE.items() if k not in ("specversion", "type")}
    envelope["source"] = ""  # must be non-empty
    with pytest.raises(DecodeError) as caught:
        auto.decode(json.dumps(envelope).encode(), STRUCTURED_HEADERS)
    assert str(caught.value) == (
        "CloudEvent is missing required attributes: specversion, source, type"
    )


@pytest.mark.parametrize(
    ("value", "headers", "message"),
    [
        (b"[1]", BINARY_HEADERS, "CloudEvents data is not a JSON object (got list)"),
        (b"\xff", BINARY_HEADERS, "CloudEvents data is not valid UTF-8"),
        (
            b"<a/>",
            {**BINARY_HEADERS, "content-type": b"application/xml"},
            "CloudEvents data has content-type 'application/xml'; only JSON is read",
        ),
        (
            b"{}",
            {**BINARY_HEADERS, "ce_specversion": b"0.3"},
            "CloudEvents specversion '0.3' is not supported",
        ),
        (
            b"{}",
            {**BINARY_HEADERS, "ce_type": b"\xff"},
            "header 'ce_type' is not valid UTF-8",
        ),
        (b"[]", STRUCTURED_HEADERS, "CloudEvents envelope is not a JSON object (got list)"),
        (None, STRUCTURED_HEADERS, "structured CloudEvent has no body"),
        (
            json.dumps(ENVELOPE).encode(),
            {"content-type": b"application/cloudevents+avro"},
            "CloudEvents format 'application/cloudevents+avro' is not supported",
        ),
        (
            json.dumps({**ENVELOPE, "data": [1, 2]}).encode(),
            STRUCTURED_HEADERS,
            "CloudEvents data is not a JSON object (got list)",
        ),
        (
            json.dumps({**ENVELOPE, "data_base64": "e30="}).encode(),
            STRUCTURED_HEADERS,
            "CloudEvent has both data and data_base64",
        ),
        (
            json.dumps({**ENVELOPE, "data": None, "data_base64": "!!"}).encode(),
            STRUCTURED_HEADERS,
            "CloudEvent has both data and data_base64",
        ),
        (
            json.dumps(
                {**{k: v for k, v in ENVELOPE.items() if k != "data"}, "data_base64": "!!"}
            ).encode(),
            STRUCTURED_HEADERS,
            "CloudEvents data_base64 is not valid base64",
        ),
        (
            json.dumps({**ENVELOPE, "subject": {"a": 1}}).encode(),
            STRUCTURED_HEADERS,
            "CloudEvents attribute 'subject' is a dict, not a scalar",
        ),
    ],
)
def test_bad_events_say_what_is_wrong(
    value: bytes | None, headers: dict[str, bytes], message: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        auto.decode(value, headers)
    assert str(caught.value).startswith(message)
