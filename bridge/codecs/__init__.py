"""Codecs: message bytes + headers -> payload dict for events, and back for commands.

Build one codec per source or sink at start-up with `build_codec`; `decode` and `encode` are then
synchronous and cheap. Every failure is a `bridge.errors.DecodeError` or `EncodeError`.
"""

from bridge.codecs.avro import AvroCodec
from bridge.codecs.base import Codec, Decoded
from bridge.codecs.cloudevents import CloudEventsCodec
from bridge.codecs.config import CodecConfig, build_codec
from bridge.codecs.confluent import ConfluentCodec, SchemaRegistryError, UnknownSchemaId
from bridge.codecs.json_codec import JsonCodec

__all__ = [
    "AvroCodec",
    "CloudEventsCodec",
    "Codec",
    "CodecConfig",
    "ConfluentCodec",
    "Decoded",
    "JsonCodec",
    "SchemaRegistryError",
    "UnknownSchemaId",
    "build_codec",
]
