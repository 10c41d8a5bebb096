"""The flow language as written in YAML: pydantic models, one per section of a flow file.

These models check the shape of each part; `loader.py` checks how the parts refer to each other
and `compiled.py` turns a valid flow into the tables the engine runs on.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from bridge.flow.durations import parse_duration
from bridge.flow.paths import compile_match_key, compile_path

Mode = Literal["observe", "shadow", "orchestrate"]
Duration = Annotated[int, BeforeValidator(parse_duration)]
_ENDPOINT = re.compile(r"(kafka|sqs)://[A-Za-z0-9._\-]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _endpoint(value: object) -> str:
    if not isinstance(value, str) or not _ENDPOINT.fullmatch(value):
        raise ValueError(f"{value!r} is not an endpoint: use kafka://TOPIC or sqs://QUEUE")
    return value


def _path(value: object) -> str:
    return compile_path(value).text


def _names(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError("give one event name or a non-empty list of event names")


Endpoint = Annotated[str, BeforeValidator(_endpoint)]
PathText = Annotated[str, BeforeValidator(_path)]
EventNames = Annotated[list[str], BeforeValidator(_names)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventSpec(_Strict):
    """How raw messages from one source become one named event."""

    source: Endpoint
    match: dict[str, Any] = Field(default_factory=dict)
    key: PathText | None = None
    id: PathText | None = None
    time: PathText | None = None
    associate: dict[str, PathText] = Field(default_factory=dict)
    via: str | None = None

    @field_validator("match")
    @classmethod
    def _match_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for k, v in value.items():
            compile_match_key(k)
            if isinstance(v, dict):
                raise ValueError(f"match value of '{k}' must be a scalar or a list of scalars")
        return value

    @field_validator("key", "id", "time")
    @classmethod
    def _message_paths(cls, value: str | None) -> str | None:
        if value is not None and compile_path(value).kind not in ("payload", "header"):
            raise ValueError(f"'{value}' must read the message: use $.field or $headers.name")
        return value

    @field_validator("associate")
    @classmethod
    def _associations(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not _IDENT.fullmatch(name):
                raise ValueError(f"association name '{name}' must be an identifier")
            if compile_path(path).kind not in ("payload", "header"):
                raise ValueError(f"association '{name}' must read the message ($.field)")
        return value


class RetrySpec(_Strict):
    """How often, and how far apart, an orchestrated step's command is tried."""

    attempts: int = Field(default=1, ge=1, le=100)
    backoff: Literal["exponential", "linear", "fixed"] = "exponential"
    initial: Duration = 1_000
    max: Duration | None = None
    jitter: float = Field(default=0.0, ge=0.0, le=1.0)


class CommandSpec(_Strict):
    """A command sagabridge sends (or would send) for a step."""

    name: str = Field(min_length=1)
    to: Endpoint
    payload: dict[str, Any] = Field(default_factory=dict)


class CompensationSpec(CommandSpec):
    """A compensation command; with `done`, the compensation waits for that event."""

    done: EventNames | None = None


class StepSpec(_Strict):
    after: list[str] = Field(default_factory=list)
    done: EventNames
    failed: EventNames | None = None
    deadline: Duration | None = None
    retry: RetrySpec | None = None
    command: CommandSpec | None = None
    compensate: CompensationSpec | None = None
    mode: Mode | None = None


class FlowHeader(_Strict):
    """The top-level scalars of a flow file; events and steps are checked one by one."""

    flow: str = Field(pattern=r"^[a-z0-9-]+$")
    version: int = Field(default=1, ge=1)
    key: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    mode: Mode = "observe"
    deadline: Duration | None = None
    orphan_ttl: Duration = 3_600_000
    on_failure: Literal["compensate", "fail"] = "compensate"
    start: str
    complete_when: list[str] | None = None
    events: dict[str, Any]
    steps: dict[str, Any]
