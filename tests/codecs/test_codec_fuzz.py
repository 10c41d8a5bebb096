"""Whatever bytes arrive, a codec returns a payload or raises DecodeError: nothing else escapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codecs import CodecConfig, build_codec
from bridge.codecs.base import Codec
from bridge.errors import DecodeError

SCHEMAS = Path(__file__).parent / "schemas"

CODECS: dict[str, Codec] = {
    "json": build_codec(CodecConfig(), SCHEMAS),
    "avro": build_codec(CodecConfig(format="avro", schema_file="order.avsc"), SCHEMAS),
    "confluent": build_codec(CodecConfig(format="confluent", schemas={1: "order.avsc"}), SCHEMAS),
    "cloudevents": build_codec(CodecConfig(format="cloudevents"), SCHEMAS),
}
CE_HEADERS = {"ce_specversion": b"1.0", "ce_id": b"1", "ce_source": b"s", "ce_type": b"t"}

headers = st.dictionaries(st.text(max_size=12), st.binary(max_size=12), max_size=3)


@pytest.mark.parametrize("name", sorted(CODECS))
@settings(database=None, max_examples=300)
@given(body=st.binary(max_size=64), extra=headers, framed=st.booleans())
def test_any_bytes_decode_or_raise_decode_error(
    name: str, body: bytes, extra: dict[str, bytes], framed: bool
) -> None:
    # Framing and valid CloudEvents headers get the random bytes past the first checks.
    value = b"\x00\x00\x00\x00\x01" + body if framed and name == "confluent" else body
    message_headers = {**CE_HEADERS, **extra} if framed and name == "cloudevents" else extra
    try:
        decoded = CODECS[name].decode(value, message_headers)
    except DecodeError:
        return
    assert isinstance(decoded.payload, dict)
    json.dumps(decoded.payload)  # payloads must be JSON-serialisable downstream


def _order_bytes() -> bytes:
    from decimal import Decimal
    from uuid import UUID

    order = {
        "order_id": "o-42",
        "amount": Decimal("12.50"),
        "placed_at": 1_714_566_615_000,
        "ship_by": 19_846,
        "request_id": UUID(int=7),
        "signature": b"sig",
        "status": "NEW",
        "items": [{"sku": "a", "qty": 1}],
        "tags": {"k": "v"},
        "note": "n",
    }
    value, _ = CODECS["avro"].encode(order, {})
    return value


ORDER_BYTES = _order_bytes()


@settings(database=None, max_examples=500)
@given(
    edits=st.lists(st.tuples(st.integers(0, len(ORDER_BYTES) - 1), st.integers(0, 255)), max_size=4)
)
def test_corrupted_avro_records_decode_or_raise_decode_error(
    edits: list[tuple[int, int]],
) -> None:
    # Random bytes rarely get past the first field; a corrupted real record reaches every type.
    value = bytearray(ORDER_BYTES)
    for position, byte in edits:
        value[position] = byte
    try:
        decoded = CODECS["avro"].decode(bytes(value), {})
    except DecodeError:
        return
    json.dumps(decoded.payload)
