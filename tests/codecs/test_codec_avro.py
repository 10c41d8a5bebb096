from __future__ import annotations

import base64
import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import fastavro
import pytest

from bridge.codecs import AvroCodec, CodecConfig, build_codec
from bridge.codecs.avro import parse_avro_schema
from bridge.errors import DecodeError, EncodeError

SCHEMAS = Path(__file__).parent / "schemas"

ORDER: dict[str, Any] = {
    "order_id": "o-42",
    "amount": Decimal("0.05"),
    "placed_at": datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC),
    "ship_by": date(2024, 5, 3),
    "request_id": UUID("12345678-1234-5678-1234-567812345678"),
    "signature": b"\x00\xffsig",
    "status": "PAID",
    "items": [{"sku": "sku-1", "qty": 2}, {"sku": "sku-2", "qty": 1}],
    "tags": {"channel": "web"},
    "note": None,
}
ORDER_AS_JSON = {
    "order_id": "o-42",
    "amount": "0.05",
    "placed_at": "2024-05-01T12:30:15.250000+00:00",
    "ship_by": "2024-05-03",
    "request_id": "12345678-1234-5678-1234-567812345678",
    "signature": base64.b64encode(b"\x00\xffsig").decode(),
    "status": "PAID",
    "items": [{"sku": "sku-1", "qty": 2}, {"sku": "sku-2", "qty": 1}],
    "tags": {"channel": "web"},
    "note": None,
}


@pytest.fixture
def order_codec() -> AvroCodec:
    codec = build_codec(CodecConfig(format="avro", schema_file="order.avsc"), SCHEMAS)
    assert isinstance(codec, AvroCodec)
    return codec


@pytest.fixture
def order_bytes(order_codec: AvroCodec) -> bytes:
    value, _ = order_codec.encode(ORDER, {})
    return value


def test_round_trip_gives_json_safe_payload(order_codec: AvroCodec, order_bytes: bytes) -> None:
    decoded = order_codec.decode(order_bytes, {"trace": b"t-1"})
    assert decoded.payload == ORDER_AS_JSON
    assert decoded.headers == {"trace": "t-1"}
    assert json.loads(json.dumps(decoded.payload)) == ORDER_AS_JSON


def test_reads_what_fastavro_wrote(order_codec: AvroCodec) -> None:
    # Our encoder must not be the only thing that can produce bytes our decoder accepts.
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, order_codec.schema, ORDER)
    assert order_codec.decode(buffer.getvalue(), {}).payload == ORDER_AS_JSON


def test_tiny_decimals_are_written_without_exponent() -> None:
    codec = AvroCodec(
        parse_avro_schema(
            json.dumps(
                {
                    "type": "record",
                    "name": "Fee",
                    "fields": [
                        {
                            "name": "rate",
                            "type": {
                                "type": "bytes",
                                "logicalType": "decimal",
                                "precision": 20,
                                "scale": 10,
                            },
                        }
                    ],
                }
            )
        )
    )
    value, _ = codec.encode({"rate": Decimal("0.0000000100")}, {})
    assert codec.decode(value, {}).payload == {"rate": "0.0000000100"}


def test_named_fixed_type_referenced_by_name_is_converted() -> None:
    # The second field names the type defined in the first; both values must become base64.
    schema = {
        "type": "record",
        "name": "Hashes",
        "fields": [
            {"name": "a", "type": {"type": "fixed", "name": "Hash", "size": 2}},
            {"name": "b", "type": ["null", "Hash"]},
        ],
    }
    codec = AvroCodec(parse_avro_schema(json.dumps(schema)))
    value, _ = codec.encode({"a": b"\x01\x02", "b": b"\x03\x04"}, {})
    assert codec.decode(value, {}).payload == {"a": "AQI=", "b": "AwQ="}


def test_every_truncation_is_a_decode_error(order_codec: AvroCodec, order_bytes: bytes) -> None:
    for cut in range(len(order_bytes)):
        with pytest.raises(DecodeError, match="OrderPlaced"):
            order_codec.decode(order_bytes[:cut], {})


def test_trailing_bytes_are_a_decode_error(order_codec: AvroCodec, order_bytes: bytes) -> None:
    with pytest.raises(DecodeError, match=r"2 bytes after the demo\.orders\.OrderPlaced record"):
        order_codec.decode(order_bytes + b"\x00\x00", {})


@pytest.mark.parametrize(
    "value",
    [b"\xff" * 20, b"\x01\xff", b"\x04\xff\xfe", b"{}"],
    ids=["endless-varint", "negative-length", "bad-utf8-string", "json-body"],
)
def test_garbage_is_a_decode_error(order_codec: AvroCodec, value: bytes) -> None:
    with pytest.raises(DecodeError, match="Avro data"):
        order_codec.decode(value, {})


def test_tombstone_is_a_decode_error(order_codec: AvroCodec) -> None:
    with pytest.raises(DecodeError, match="no value"):
        order_codec.decode(None, {})


def test_undecodable_header_is_named(order_codec: AvroCodec, order_bytes: bytes) -> None:
    with pytest.raises(DecodeError, match="header 'h' is not valid UTF-8"):
        order_codec.decode(order_bytes, {"h": b"\xff"})


def test_encode_names_the_field_that_does_not_fit(order_codec: AvroCodec) -> None:
    with pytest.raises(EncodeError, match=r"OrderPlaced\.order_id .* expected string"):
        order_codec.encode({**ORDER, "order_id": 42}, {})


def test_encode_with_missing_field_is_an_encode_error(order_codec: AvroCodec) -> None:
    payload = {name: value for name, value in ORDER.items() if name != "status"}
    with pytest.raises(EncodeError, match="status"):
        order_codec.encode(payload, {})
