from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import bridge.codecs
from bridge.codecs import (
    AvroCodec,
    CloudEventsCodec,
    Codec,
    CodecConfig,
    ConfluentCodec,
    Decoded,
    JsonCodec,
    build_codec,
)
from bridge.errors import ConfigError

SCHEMAS = Path(__file__).parent / "schemas"


def test_public_api_is_pinned() -> None:
    # Changing what bridge.codecs exports must be deliberate: update this list with it.
    assert sorted(bridge.codecs.__all__) == [
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


def test_decoded_is_frozen() -> None:
    decoded = Decoded({}, {})
    with pytest.raises(AttributeError):
        decoded.event_id = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        ({}, JsonCodec),
        ({"format": "avro", "schema_file": "order.avsc"}, AvroCodec),
        ({"format": "confluent", "schemas": {"3": "ping.avsc"}}, ConfluentCodec),
        ({"format": "confluent", "registry_url": "http://registry:8081"}, ConfluentCodec),
        ({"format": "cloudevents"}, CloudEventsCodec),
    ],
)
def test_build_codec_for_each_format(settings: dict[str, Any], kind: type[Codec]) -> None:
    codec = build_codec(CodecConfig.model_validate(settings), SCHEMAS)
    assert isinstance(codec, kind)
    assert isinstance(codec, Codec)


def test_schema_ids_given_as_yaml_strings_become_ints() -> None:
    config = CodecConfig.model_validate({"format": "confluent", "schemas": {"3": "ping.avsc"}})
    assert config.schemas == {3: "ping.avsc"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"format": "xml"}, "format"),
        ({"schema": "x.avsc"}, "Extra inputs are not permitted"),
        ({"format": "avro"}, "format avro needs schema_file"),
        ({"format": "confluent"}, "format confluent needs schemas, registry_url or both"),
        ({"schema_file": "x.avsc"}, "schema_file is not used with format json"),
        (
            {"format": "avro", "schema_file": "x.avsc", "schemas": {1: "y.avsc"}},
            "schemas is not used with format avro",
        ),
        ({"cloudevents_mode": "binary"}, "cloudevents_mode is not used with format json"),
        (
            {"format": "confluent", "registry_url": "registry:8081"},
            "registry_url must be an http(s) URL",
        ),
        (
            {"format": "confluent", "schemas": {2**32: "x.avsc"}},
            "schemas: ids must be between 0 and 4294967295",
        ),
        ({"format": "cloudevents", "cloudevents_mode": "batch"}, "cloudevents_mode"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CodecConfig.model_validate(settings)
    assert message in str(caught.value)


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON"),
        ('{"type": "record", "name": "R", "fields": [{"name": "a", "type": "strin"}]}', "Avro"),
        ('"string"', "is not an Avro record schema"),
        (
            '{"type": "record", "name": "R",'
            ' "fields": [{"name": "n", "type": "int", "default": "x"}]}',
            "is not a valid Avro schema: Default value <x> must match schema type: int",
        ),
    ],
)
def test_bad_schema_file_is_a_config_error_naming_the_setting(
    tmp_path: Path, text: str | None, problem: str
) -> None:
    if text is not None:
        write(tmp_path, "order.avsc", text)
    with pytest.raises(ConfigError) as caught:
        build_codec(CodecConfig(format="avro", schema_file="order.avsc"), tmp_path)
    message = str(caught.value)
    assert message.startswith(f"codec schema_file: schema file {tmp_path / 'order.avsc'} ")
    assert problem in message


def test_bad_confluent_schema_names_its_id(tmp_path: Path) -> None:
    write(tmp_path, "ok.avsc", (SCHEMAS / "ping.avsc").read_text())
    config = CodecConfig(format="confluent", schemas={1: "ok.avsc", 5: "missing.avsc"})
    with pytest.raises(ConfigError, match=r"^codec schemas\[5\]: schema file .*missing\.avsc"):
        build_codec(config, tmp_path)


def test_schema_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "order.avsc").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError, match="cannot read schema file"):
        build_codec(CodecConfig(format="avro", schema_file="order.avsc"), tmp_path)
