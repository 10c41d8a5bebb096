from __future__ import annotations

import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from bridge.codecs import (
    CodecConfig,
    ConfluentCodec,
    SchemaRegistryError,
    UnknownSchemaId,
    build_codec,
)
from bridge.errors import DecodeError, EncodeError

SCHEMAS = Path(__file__).parent / "schemas"

PING_SCHEMA = (SCHEMAS / "ping.avsc").read_text()
PING = {"id": "p-1", "n": 7}
PING_BODY = b"\x06p-1\x0e"  # Avro: string "p-1" (zigzag length 3 -> 0x06), long 7 (-> 0x0e)


def framed(schema_id: int, body: bytes = PING_BODY) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def confluent(registry_url: str | None = None) -> ConfluentCodec:
    config = CodecConfig(format="confluent", schemas={3: "ping.avsc"}, registry_url=registry_url)
    codec = build_codec(config, SCHEMAS)
    assert isinstance(codec, ConfluentCodec)
    return codec


def test_round_trip_with_configured_schema() -> None:
    codec = confluent()
    value, headers = codec.encode(PING, {"h": "v"})
    assert (value, headers) == (framed(3), {"h": "v"})
    decoded = codec.decode(value, {"h": b"v"})
    assert (decoded.payload, decoded.headers) == (PING, {"h": "v"})


def test_encode_uses_the_first_configured_id() -> None:
    config = CodecConfig(format="confluent", schemas={9: "ping.avsc", 3: "ping.avsc"})
    value, _ = build_codec(config, SCHEMAS).encode(PING, {})
    assert value[:5] == b"\x00\x00\x00\x00\x09"


def test_encode_without_configured_schema_is_an_encode_error() -> None:
    codec = ConfluentCodec({}, "http://127.0.0.1:1")
    with pytest.raises(EncodeError, match="needs a schema id in `schemas`"):
        codec.encode(PING, {})


def test_wrong_magic_byte_is_named() -> None:
    with pytest.raises(DecodeError) as caught:
        confluent().decode(b'{"id": "p-1"}', {})
    assert str(caught.value) == "not Confluent wire format: magic byte 0x7b"


@pytest.mark.parametrize("value", [None, b"", b"\x00\x00\x00\x03"])
def test_message_shorter_than_the_header_is_a_decode_error(value: bytes | None) -> None:
    with pytest.raises(
        DecodeError, match=r"^not Confluent wire format: .* the header alone is 5 bytes$"
    ):
        confluent().decode(value, {})


def test_unknown_id_without_registry_is_a_plain_decode_error() -> None:
    with pytest.raises(DecodeError) as caught:
        confluent().decode(framed(4), {})
    assert not isinstance(caught.value, UnknownSchemaId)
    assert str(caught.value) == ("unknown schema id 4: not in `schemas` and no registry_url is set")


def test_truncated_body_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"ends before the demo\.Ping record"):
        confluent().decode(framed(3, PING_BODY[:-1]), {})


@dataclass
class Registry:
    url: str
    hits: Counter[int] = field(default_factory=Counter)
    auth: list[str | None] = field(default_factory=list)


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    """A schema registry on 127.0.0.1: id 7 is Ping, 8 fails, 9 and 10 are unusable."""
    state = Registry(url="")

    async def schema_by_id(request: web.Request) -> web.Response:
        schema_id = int(request.match_info["id"])
        state.hits[schema_id] += 1
        state.auth.append(request.headers.get("Authorization"))
        answers = {
            7: {"schema": PING_SCHEMA},
            9: {"schema": "{not json"},
            10: {"schemaType": "PROTOBUF", "schema": "syntax = 'proto3';"},
        }
        if schema_id == 8:
            return web.json_response({"error_code": 50001, "message": "boom"}, status=500)
        if schema_id not in answers:
            return web.json_response({"error_code": 40403, "message": "not found"}, status=404)
        return web.json_response(
            answers[schema_id], content_type="application/vnd.schemaregistry.v1+json"
        )

    app = web.Application()
    app.router.add_get("/schemas/ids/{id}", schema_by_id)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_unknown_id_is_fetched_once_and_cached(registry: Registry) -> None:
    codec = confluent(registry.url + "/")
    with pytest.raises(UnknownSchemaId) as caught:
        codec.decode(framed(7), {})
    assert caught.value.schema_id == 7

    await codec.prefetch(caught.value.schema_id)
    assert codec.decode(framed(7), {}).payload == PING
    await codec.prefetch(7)
    assert codec.decode(framed(7), {}).payload == PING
    assert registry.hits == Counter({7: 1})


async def test_configured_ids_never_reach_the_registry(registry: Registry) -> None:
    codec = confluent(registry.url)
    await codec.prefetch(3)
    assert codec.decode(framed(3), {}).payload == PING
    assert registry.hits == Counter()


@pytest.mark.parametrize(("schema_id", "status"), [(404, 404), (8, 500)])
async def test_registry_http_errors_carry_the_status(
    registry: Registry, schema_id: int, status: int
) -> None:
    codec = confluent(registry.url)
    with pytest.raises(SchemaRegistryError) as caught:
        await codec.prefetch(schema_id)
    assert (caught.value.schema_id, caught.value.status) == (schema_id, status)
    assert f"schema registry answered HTTP {status} for schema id {schema_id}" in str(caught.value)
    with pytest.raises(UnknownSchemaId):  # a failed fetch caches nothing
        codec.decode(framed(schema_id), {})


@pytest.mark.parametrize(
    ("schema_id", "message"),
    [
        (9, "registry schema id 9 is not valid JSON"),
        (10, "schema id 10 is a PROTOBUF schema; only Avro is supported"),
    ],
)
async def test_unusable_registry_schemas_are_decode_errors(
    registry: Registry, schema_id: int, message: str
) -> None:
    with pytest.raises(DecodeError, match=message):
        await confluent(registry.url).prefetch(schema_id)


async def test_credentials_are_sent_but_never_shown(registry: Registry) -> None:
    url = registry.url.replace("http://", "http://reader:s3cret@")
    with pytest.raises(SchemaRegistryError) as caught:
        await confluent(url).prefetch(404)
    assert "s3cret" not in str(caught.value)
    assert registry.url in str(caught.value)
    assert registry.auth == ["Basic cmVhZGVyOnMzY3JldA=="]  # base64("reader:s3cret")


async def test_unreachable_registry_is_a_decode_error_without_status() -> None:
    with socket.socket() as probe:  # a port that nothing listens on once this socket closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    codec = confluent(f"http://127.0.0.1:{port}")
    with pytest.raises(SchemaRegistryError, match="schema registry unreachable") as caught:
        await codec.prefetch(7)
    assert caught.value.status is None
