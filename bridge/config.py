"""Worker settings: a YAML file, overridden by command-line flags, overridden by SAGABRIDGE_*.

Validated once at start-up; a bad or missing setting stops the worker with the setting's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.codecs import CodecConfig
from bridge.errors import ConfigError


class KafkaSettings(BaseModel):
    """Connection settings passed through to every Kafka client."""

    model_config = ConfigDict(extra="forbid")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None


class SqsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: str = "us-east-1"
    wait_time_seconds: int = Field(default=10, ge=0, le=20)
    visibility_timeout: int = Field(default=30, ge=1, le=43_200)
    max_receives: int = Field(default=5, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SAGABRIDGE_", env_nested_delimiter="__", extra="forbid"
    )

    flows: list[Path] = Field(default_factory=list)
    bootstrap: str | None = None
    embedded: bool = False
    sqs_endpoint: str | None = None
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65_535)
    api_token: str | None = None
    state_dir: Path | None = None
    app_id: str = Field(default="sagabridge", pattern=r"^[A-Za-z0-9._-]+$")
    input_topic: str = ""  # default "<app_id>.input": each deployment routes on its own topic
    input_partitions: int = Field(default=8, ge=1, le=1024)
    lifecycle_topic: str = "sagabridge.lifecycle"
    dlq_topic: str = "sagabridge.dlq"
    topics_dir: Path = Path("topics")
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "info"
    batch_size: int = Field(default=500, ge=1, le=10_000)
    batch_ms: int = Field(default=10, ge=1, le=1_000)
    tick_ms: int = Field(default=200, ge=10, le=1_000)
    # An ended instance's state is deleted this long after it ended (0: kept for ever).
    ended_retention_s: float = Field(default=7 * 86_400, ge=0)
    fetch_wait_ms: int = Field(default=100, ge=1, le=1_500)  # longest a fetch may wait
    create_topics: bool = True
    # Tansu reports a partition's end offset from the last batch's first record, so a changelog
    # read to that end misses records; one record per batch (1 byte) avoids that there.
    producer_batch_bytes: int = Field(default=16_384, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    standby_replicas: int = Field(default=0, ge=0)
    advertised_url: str | None = None  # how other workers reach this one's web port
    group_session_timeout: float = Field(default=10.0, gt=0)
    group_heartbeat_interval: float = Field(default=1.0, gt=0)
    group_rebalance_timeout: float = Field(default=5.0, gt=0)
    sources: dict[str, CodecConfig] = Field(default_factory=dict)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    sqs: SqsSettings = Field(default_factory=SqsSettings)

    @field_validator("bootstrap")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"'{part}' is not HOST:PORT")
        return value

    @field_validator("sources")
    @classmethod
    def _source_names(cls, value: dict[str, CodecConfig]) -> dict[str, CodecConfig]:
        for name in value:
            if not name.startswith(("kafka://", "sqs://")):
                raise ValueError(f"'{name}' is not kafka://TOPIC or sqs://QUEUE")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: the environment beats flags and the file (given as init values).
        return env_settings, init_settings

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        if not self.input_topic:
            self.input_topic = f"{self.app_id}.input"
        return self

    def codec_for(self, source: str) -> CodecConfig:
        return self.sources.get(source, CodecConfig())


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Settings from the file, then flags (None means not given), then the environment."""
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"--config: cannot read {config_file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config: {config_file} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"--config: {config_file} must be a mapping of settings")
        data.update(loaded or {})
        if "flows" in data and isinstance(data["flows"], list):
            # Paths in the file are relative to the file, as users write them.
            data["flows"] = [
                str((config_file.parent / p).resolve()) if not Path(p).is_absolute() else p
                for p in data["flows"]
            ]
    data.update({k: v for k, v in flags.items() if v not in (None, (), [])})
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            env = "SAGABRIDGE_" + "__".join(str(p) for p in err["loc"]).upper()
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown setting"
            problems.append(f"setting {name} (or {env}): {message}")
        raise ConfigError("\n".join(problems)) from None
