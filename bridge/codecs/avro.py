"""Avro: schemaless records written with one known writer schema.

fastavro is called only here; its exceptions become `DecodeError`/`EncodeError` at this boundary.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import fastavro
from fastavro.validation import ValidationError, validate

from bridge.codecs.base import Decoded, decode_headers, json_type, require_value
from bridge.errors import DecodeError, EncodeError

# Types whose fastavro values (bytes, datetime, Decimal, UUID...) are not JSON-serialisable.
_RAW_TYPES = frozenset({"bytes", "fixed"})


def parse_avro_schema(text: str) -> dict[str, Any]:
    """Parse the JSON text of a record schema; the ValueError reads "... is <what is wrong>"."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from exc
    try:
        parsed = fastavro.parse_schema(raw)
    except Exception as exc:  # fastavro raises many unrelated types for a bad schema
        raise ValueError(f"not a valid Avro schema: {exc}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise ValueError("not an Avro record schema (payloads are objects)")
    return parsed


def _needs_conversion(schema: Any) -> bool:
    """Whether records of this schema can hold values json cannot write; checked once."""
    if isinstance(schema, str):
        return schema in _RAW_TYPES
    if isinstance(schema, list):
        return any(_needs_conversion(branch) for branch in schema)
    if isinstance(schema, dict):
        if "logicalType" in schema or schema.get("type") in _RAW_TYPES:
            return True
        # "__named_schemas" repeats the definitions already inline, so it is not walked.
        nested = [schema.get("type"), schema.get("items"), schema.get("values")]
        nested += [field["type"] for field in schema.get("fields", ())]
        return any(_needs_conversion(part) for part in nested if part is not None)
    return False


def _json_safe(value: Any) -> Any:
    """Payloads go to JSON later (state, lifecycle, API), so logical types become strings here."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")  # str() would give "1E-8" for small values
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, UUID):
        return str(value)
    return value


class AvroCodec:
    """Schemaless Avro datums written with `schema` (a parsed record schema)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.name: str = schema["name"]
        self._convert = _needs_conversion(schema)

    def decode(self, value: bytes | None, headers: Mapping[str, bytes | str]) -> Decoded:
        return Decoded(self.read(require_value(value)), decode_headers(headers))

    def encode(
        self, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[bytes, dict[str, str]]:
        return self.write(payload), dict(headers)

    def read(self, data: bytes) -> dict[str, Any]:
        """The record in `data`, which must hold exactly one datum."""
        buffer = io.BytesIO(data)
        try:
            record = fastavro.schemaless_reader(buffer, self.schema, None)
        except (EOFError, IndexError) as exc:  # fastavro's C reader runs off the end as IndexError
            raise DecodeError(
                f"Avro data ends before the {self.name} record does ({len(data)} bytes)"
            ) from exc
        except Exception as exc:
            raise DecodeError(
                f"Avro data does not fit schema {self.name}: {type(exc).__name__}: {exc}"
            ) from exc
        # Bytes left over mean the writer used another schema, even if a prefix happened to parse.
        left = len(data) - buffer.tell()
        if left:
            raise DecodeError(f"Avro data has {left} bytes after the {self.name} record")
        if not isinstance(record, dict):
            raise DecodeError(f"Avro datum is not a record (got {json_type(record)})")
        return _json_safe(record) if self._convert else record

    def write(self, payload: Mapping[str, Any]) -> bytes:
        # Validation first: the writer's own errors do not say which field is wrong.
        try:
            validate(payload, self.schema, raise_errors=True)
        except ValidationError as exc:
            problems = "; ".join(str(error) for error in exc.errors)
            raise EncodeError(f"payload does not fit Avro schema {self.name}: {problems}") from exc
        buffer = io.BytesIO()
        try:
            fastavro.schemaless_writer(buffer, self.schema, payload)
        except Exception as exc:
            raise EncodeError(
                f"payload cannot be written with Avro schema {self.name}: {exc}"
            ) from exc
        return buffer.getvalue()
