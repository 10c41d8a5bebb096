from __future__ import annotations

import json
import math
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codecs import Codec, Decoded, JsonCodec
from bridge.codecs.fastjson import dumps, loads
from bridge.errors import DecodeError, EncodeError

codec = JsonCodec()

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=8)


def test_json_codec_satisfies_the_protocol() -> None:
    assert isinstance(codec, Codec)


def test_round_trip_keeps_payload_and_headers() -> None:
    payload = {"type": "OrderPlaced", "order": {"id": "o-42", "items": [1, 2]}, "note": "grüße"}
    value, headers = codec.encode(payload, {"trace": "t-1"})
    decoded = codec.decode(value, {name: text.encode() for name, text in headers.items()})
    assert decoded == Decoded(payload, {"trace": "t-1"})


def test_encode_writes_compact_utf8() -> None:
    value, _ = codec.encode({"a": "é", "b": [1, 2]}, {})
    assert value == '{"a":"é","b":[1,2]}'.encode()


@settings(database=None)
@given(payload=json_objects, headers=st.dictionaries(st.text(), st.text(), max_size=4))
def test_encode_then_decode_round_trips_any_json_object(
    payload: dict[str, Any], headers: dict[str, str]
) -> None:
    value, out_headers = codec.encode(payload, headers)
    wire_headers = {name: text.encode("utf-8") for name, text in out_headers.items()}
    decoded = codec.decode(value, wire_headers)
    assert decoded.payload == payload
    assert decoded.headers == headers


def test_headers_given_as_str_pass_through() -> None:
    # SQS message attributes arrive decoded already.
    assert codec.decode(b"{}", {"eventType": "x"}).headers == {"eventType": "x"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"[1, 2]", "payload is not a JSON object (got list)"),
        (b'"text"', "payload is not a JSON object (got str)"),
        (b"42", "payload is not a JSON object (got int)"),
        (b"null", "payload is not a JSON object (got null)"),
        (b'{"a": "\xff"}', "payload is not valid UTF-8: invalid start byte at byte 7"),
        (b"{", "payload is not valid JSON: Expecting property name enclosed in double quotes"),
        (b"", "payload is not valid JSON: Expecting value at line 1 column 1 (char 0)"),
    ],
)
def test_bad_payloads_say_what_is_wrong(value: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(value, {})
    assert str(caught.value).startswith(message)


def test_json_error_gives_the_position() -> None:
    with pytest.raises(
        DecodeError, match=r"^payload is not valid JSON: .* at line 2 column 7 \(char 15\)$"
    ):
        codec.decode(b'{"a": 1,\n "b": x}', {})


def test_utf16_json_is_refused() -> None:
    # json.loads(bytes) would detect UTF-16 and accept it; the contract says UTF-8.
    with pytest.raises(DecodeError, match="not valid UTF-8"):
        codec.decode('{"a": 1}'.encode("utf-16"), {})


def test_deeply_nested_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="nested too deeply"):
        codec.decode(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {})


def test_tombstone_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="no value"):
        codec.decode(None, {})


def test_undecodable_header_is_named() -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(b"{}", {"ok": b"fine", "trace-id": b"\xc3\x28"})
    assert str(caught.value) == (
        "header 'trace-id' is not valid UTF-8: invalid continuation byte at byte 0"
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"x": float("nan")}, "Out of range float values are not JSON compliant"),
        ({"x": object()}, "Object of type object is not JSON serializable"),
        ({"x": "\ud800"}, "surrogates not allowed"),
    ],
)
def test_unwritable_payloads_raise_encode_error(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        codec.encode(payload, {})


def test_read_only_mappings_are_written_as_objects() -> None:
    payload = MappingProxyType({"inner": MappingProxyType({"a": 1})})
    value, _ = codec.encode(payload, {})
    assert json.loads(value) == {"inner": {"a": 1}}


@pytest.mark.parametrize("n", [2**64 - 1, 2**64, -(2**63) - 1, 10**30, -(10**40)])
def test_integers_beyond_64_bits_are_read_exactly(n: int) -> None:
    # A faster reader would turn them into floats; the standard library keeps them.
    assert codec.decode(f'{{"n":{n},"m":[{n}]}}'.encode(), {}).payload == {"n": n, "m": [n]}
    assert loads(dumps({"n": n})) == {"n": n}


@settings(database=None)
@given(value=json_values)
def test_fast_reads_give_what_json_gives(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert loads(text.encode()) == json.loads(text)


def test_fast_reads_take_what_only_json_takes() -> None:
    # NaN and lone surrogates: orjson refuses them, json reads them, so loads does too.
    assert math.isnan(loads(b'{"a":NaN}')["a"])
    assert loads(b'["\\ud800"]') == ["\ud800"]
