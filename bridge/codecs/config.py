"""Per-source codec settings, and building a codec from them once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.codecs.avro import AvroCodec, parse_avro_schema
from bridge.codecs.base import Codec
from bridge.codecs.cloudevents import CloudEventsCodec
from bridge.codecs.confluent import ConfluentCodec
from bridge.codecs.json_codec import JsonCodec
from bridge.errors import ConfigError

_MAX_SCHEMA_ID = 2**32 - 1  # four bytes on the wire


class CodecConfig(BaseModel):
    """How one source's messages are encoded. Settings another format would ignore are refused,
    so a mistyped `format` cannot silently drop a schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["json", "avro", "confluent", "cloudevents"] = "json"
    schema_file: str | None = None  # avro: writer schema, relative to the topics directory
    registry_url: str | None = None  # confluent: schema registry for ids not in `schemas`
    schemas: dict[int, str] = Field(default_factory=dict)  # confluent: id -> schema file
    cloudevents_mode: Literal["binary", "structured", "auto"] = "auto"

    @model_validator(mode="after")
    def _fits_format(self) -> Self:
        used = {
            "json": set(),
            "avro": {"schema_file"},
            "confluent": {"registry_url", "schemas"},
            "cloudevents": {"cloudevents_mode"},
        }[self.format]
        for name in sorted(self.model_fields_set - used - {"format"}):
            if getattr(self, name) not in (None, {}):
                raise ValueError(f"{name} is not used with format {self.format}")
        if self.format == "avro" and not self.schema_file:
            raise ValueError("format avro needs schema_file")
        if self.format == "confluent" and not (self.schemas or self.registry_url):
            raise ValueError("format confluent needs schemas, registry_url or both")
        if self.registry_url is not None and not self.registry_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError(f"registry_url must be an http(s) URL, not {self.registry_url!r}")
        bad_ids = [schema_id for schema_id in self.schemas if not 0 <= schema_id <= _MAX_SCHEMA_ID]
        if bad_ids:
            raise ValueError(f"schemas: ids must be between 0 and {_MAX_SCHEMA_ID}: {bad_ids}")
        return self


def build_codec(config: CodecConfig, topics_dir: Path) -> Codec:
    """The codec for `config`; schema files are read and checked now, never per message."""
    if config.format == "json":
        return JsonCodec()
    if config.format == "cloudevents":
        return CloudEventsCodec(config.cloudevents_mode)
    if config.format == "avro":
        if not config.schema_file:
            raise ConfigError("codec: format avro needs schema_file")
        return _load_schema(topics_dir, config.schema_file, "schema_file")
    schemas = {
        schema_id: _load_schema(topics_dir, name, f"schemas[{schema_id}]")
        for schema_id, name in config.schemas.items()
    }
    return ConfluentCodec(schemas, config.registry_url)


def _load_schema(topics_dir: Path, name: str, setting: str) -> AvroCodec:
    path = topics_dir / name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"codec {setting}: schema file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"codec {setting}: cannot read schema file {path}: {exc}") from exc
    try:
        return AvroCodec(parse_avro_schema(text))
    except ValueError as exc:
        raise ConfigError(f"codec {setting}: schema file {path} is {exc}") from exc
