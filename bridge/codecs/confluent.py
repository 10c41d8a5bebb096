"""Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro body.

Decoding stays synchronous: a schema id that is not cached raises `UnknownSchemaId`, the caller
awaits `prefetch(schema_id)` (the only network call, made once per id) and decodes again:

    try:
        decoded = codec.decode(value, headers)
    except UnknownSchemaId as missing:
        await codec.prefetch(missing.schema_id)
        decoded = codec.decode(value, headers)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bridge.codecs.avro import AvroCodec, parse_avro_schema
from bridge.codecs.base import Decoded, decode_headers
from bridge.errors import DecodeError, EncodeError

_HEADER_SIZE = 5
_TIMEOUT = aiohttp.ClientTimeout(total=10)


class UnknownSchemaId(DecodeError):
    """The schema id is not cached yet; `ConfluentCodec.prefetch` it and decode again."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"schema id {schema_id} is not cached yet: prefetch it and retry")
        self.schema_id = schema_id


class SchemaRegistryError(DecodeError):
    """The registry gave no usable schema; `status` is its HTTP status, None if unreachable."""

    def __init__(self, message: str, schema_id: int, status: int | None = None) -> None:
        super().__init__(message)
        self.schema_id = schema_id
        self.status = status


def _redacted(url: str) -> str:
    # A registry URL may carry basic-auth credentials; messages end up in DLQ headers and logs.
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class ConfluentCodec:
    """Avro in the Confluent wire format, with schemas from config first and the registry second."""

    def __init__(self, schemas: Mapping[int, AvroCodec], registry_url: str | None = None) -> None:
        self._schemas = dict(schemas)
        # Commands are written with the first configured schema: a sink has one command schema.
        self._encode_id = next(iter(self._schemas), None)
        self.registry_url = registry_url.rstrip("/") if registry_url else None

    def decode(self, value: bytes | None, headers: Mapping[str, bytes | str]) -> Decoded:
        if value is None or len(value) < _HEADER_SIZE:
            size = "no value" if value is None else f"{len(value)} bytes"
            raise DecodeError(f"not Confluent wire format: {size}, the header alone is 5 bytes")
        if value[0] != 0:
            raise DecodeError(f"not Confluent wire format: magic byte 0x{value[0]:02x}")
        schema_id = int.from_bytes(value[1:_HEADER_SIZE], "big")
        avro = self._schemas.get(schema_id)
        if avro is None:
            if self.registry_url is None:
                raise DecodeError(
                    f"unknown schema id {schema_id}: not in `schemas` and no registry_url is set"
                )
            raise UnknownSchemaId(schema_id)
        return Decoded(avro.read(value[_HEADER_SIZE:]), decode_headers(headers))

    def encode(
        self, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[bytes, dict[str, str]]:
        if self._encode_id is None:
            raise EncodeError(
                "the confluent codec needs a schema id in `schemas` to write commands"
            )
        body = self._schemas[self._encode_id].write(payload)
        return b"\x00" + self._encode_id.to_bytes(4, "big") + body, dict(headers)

    async def prefetch(self, schema_id: int) -> None:
        """Fetch schema `schema_id` from the registry into the cache; a no-op once cached.

        Raises `SchemaRegistryError` (a `DecodeError`) when the registry refuses or is unreachable.
        """
        if schema_id in self._schemas:
            return
        if self.registry_url is None:
            raise DecodeError(f"unknown schema id {schema_id}: no registry_url is set")
        url = f"{self.registry_url}/schemas/ids/{schema_id}"
        shown = _redacted(url)
        # A session per fetch: fetches happen once per schema id, and nothing is left to close.
        try:
            async with (
                aiohttp.ClientSession(timeout=_TIMEOUT) as session,
                session.get(url) as response,
            ):
                if response.status != 200:
                    raise SchemaRegistryError(
                        f"schema registry answered HTTP {response.status} for schema id"
                        f" {schema_id} ({shown})",
                        schema_id,
                        response.status,
                    )
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SchemaRegistryError(
                f"schema registry unreachable for schema id {schema_id} ({shown}):"
                f" {type(exc).__name__}: {exc}",
                schema_id,
            ) from exc
        except ValueError as exc:  # the body is not JSON
            raise SchemaRegistryError(
                f"schema registry answer for schema id {schema_id} is not JSON: {exc}",
                schema_id,
                200,
            ) from exc
        self._schemas[schema_id] = _avro_from_registry(body, schema_id)


def _avro_from_registry(body: Any, schema_id: int) -> AvroCodec:
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise SchemaRegistryError(
            f"schema registry answer for schema id {schema_id} has no `schema` string",
            schema_id,
            200,
        )
    schema_type = body.get("schemaType", "AVRO")
    if schema_type != "AVRO":
        raise SchemaRegistryError(
            f"schema id {schema_id} is a {schema_type} schema; only Avro is supported",
            schema_id,
            200,
        )
    try:
        return AvroCodec(parse_avro_schema(body["schema"]))
    except ValueError as exc:
        raise SchemaRegistryError(
            f"registry schema id {schema_id} is {exc}", schema_id, 200
        ) from exc
