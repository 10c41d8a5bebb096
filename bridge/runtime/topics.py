"""`sagabridge topics plan|apply`: compare the topics sagabridge needs with a Kafka cluster.

The wanted topics are those declared in topics.yaml, sagabridge's own topics (from the settings),
and every kafka:// topic the flows read or command into. `plan` reads the cluster; `apply`
creates what is missing. Neither ever alters or deletes a topic: a difference is reported for
a person to decide, since a wrong partition count or retention is not ours to fix silently.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.table import Table
from rich.text import Text

from bridge.config import Settings
from bridge.errors import BrokerError, ConfigError
from bridge.flow import CompiledFlow
from bridge.runtime.kafka import client_kwargs

__all__ = [
    "DEFAULT_PARTITIONS",
    "Difference",
    "TopicPlan",
    "TopicSpec",
    "TopicState",
    "apply",
    "load_topic_specs",
    "parse_topic_specs",
    "plan",
    "render_plan",
]

Action = Literal["create", "ok", "differs"]
Origin = Literal["declared", "sagabridge", "flows"]
T = TypeVar("T")

DEFAULT_PARTITIONS = 3  # for sagabridge's lifecycle and DLQ topics and for undeclared flow topics
OWN_RETENTION_MS = 7 * 24 * 60 * 60 * 1000
TIMEOUT_S = 10.0
_POLL_S = 0.1
_CONFIG_NAME = re.compile(r"[a-z0-9]+(\.[a-z0-9]+)*")


class TopicSpec(BaseModel):
    """One topic as it should be: name, partitions, replication factor, topic-level configs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Kafka's own rule: letters, digits, '.', '_', '-', at most 249, and not '.' or '..'.
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    partitions: int = Field(ge=1, le=100_000)
    replication_factor: int = Field(ge=1, le=32_767)
    config: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _not_dots(cls, value: str) -> str:
        if value in (".", ".."):
            raise ValueError(f"{value!r} is not a topic name")
        return value

    @field_validator("config", mode="before")
    @classmethod
    def _config_as_strings(cls, value: Any) -> Any:
        # Kafka takes every config value as a string; YAML gives numbers and booleans too.
        if not isinstance(value, dict):
            return value
        out: dict[Any, str] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not _CONFIG_NAME.fullmatch(key):
                raise ValueError(f"{key!r} is not a Kafka config name (like retention.ms)")
            if isinstance(item, bool):
                out[key] = "true" if item else "false"
            elif isinstance(item, str | int | float):
                out[key] = str(item)
            else:
                raise ValueError(f"{key}: the value must be a string, number or boolean")
        return out


class _TopicsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topics: list[TopicSpec]


@dataclass(frozen=True, slots=True)
class Difference:
    """A value the cluster has that the declaration does not want; actual None: not set."""

    field: str  # "partitions", "replication_factor" or "config retention.ms"
    wanted: str
    actual: str | None


@dataclass(frozen=True, slots=True)
class TopicState:
    """One wanted topic compared with the cluster."""

    spec: TopicSpec  # for a topic only the flows need: what `apply` would create
    origin: Origin
    action: Action
    partitions: int | None = None  # actual values; None while the topic does not exist
    replication_factor: int | None = None
    differences: tuple[Difference, ...] = ()
    config_checked: bool = True  # False: the broker did not describe this topic's configs
    used_by: tuple[str, ...] = ()  # names of the flows that read or command into it

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class TopicPlan:
    bootstrap: str
    topics: tuple[TopicState, ...]
    created: tuple[str, ...] = ()  # by this `apply` call; empty for `plan`
    config_note: str | None = None  # why configs could not be compared, when they could not

    def topic(self, name: str) -> TopicState:
        return next(t for t in self.topics if t.name == name)

    @property
    def to_create(self) -> tuple[TopicState, ...]:
        """Missing topics that `apply` creates without being asked to include flow topics."""
        return tuple(t for t in self.topics if t.action == "create" and t.origin != "flows")

    @property
    def undeclared(self) -> tuple[TopicState, ...]:
        """Topics the flows need that neither topics.yaml nor the settings declare."""
        return tuple(t for t in self.topics if t.origin == "flows")

    @property
    def differing(self) -> tuple[TopicState, ...]:
        return tuple(t for t in self.topics if t.action == "differs")

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "bootstrap": self.bootstrap,
            "created": list(self.created),
            "config_note": self.config_note,
            "topics": [
                {
                    "name": t.name,
                    "origin": t.origin,
                    "action": t.action,
                    "wanted": t.spec.model_dump(),
                    "partitions": t.partitions,
                    "replication_factor": t.replication_factor,
                    "differences": [
                        {"field": d.field, "wanted": d.wanted, "actual": d.actual}
                        for d in t.differences
                    ],
                    "config_checked": t.config_checked,
                    "used_by": list(t.used_by),
                }
                for t in self.topics
            ],
        }


# ---- topics.yaml ---------------------------------------------------------------------------

Loc = tuple[str | int, ...]


def load_topic_specs(path: Path) -> list[TopicSpec]:
    """The topics declared in a topics.yaml; ConfigError lists every `file:line: field: what`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the topics file: {exc.strerror}") from None
    return parse_topic_specs(text, str(path))


def parse_topic_specs(text: str, file: str = "topics.yaml") -> list[TopicSpec]:
    lines: dict[Loc, int] = {}
    found: list[tuple[Loc, int, str]] = []  # where, line, what
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{file}:{line}: (file): not valid YAML: {problem}") from None
    if node is None:
        raise ConfigError(f"{file}:1: (file): the file is empty; declare topics: [...]")
    data = _to_data(node, (), lines, found)
    if not isinstance(data, dict):
        raise ConfigError(f"{file}:1: (file): a topics file is a mapping with topics: [...]")
    specs: list[TopicSpec] = []
    try:
        specs = _TopicsFile.model_validate(data).topics
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            found.append((loc, _line(lines, loc), _message(err)))
    items = data.get("topics")
    first: dict[str, int] = {}
    for i, item in enumerate(items if isinstance(items, list) else []):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            here = _line(lines, ("topics", i, "name"))
            if name in first:
                found.append((("topics", i), here, f"declared twice (first at line {first[name]})"))
            first.setdefault(name, here)
    if found:
        problems = sorted((line, f"{_field(loc, data)}: {what}") for loc, line, what in found)
        raise ConfigError("\n".join(f"{file}:{line}: {what}" for line, what in problems))
    return specs


def _to_data(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], found: list[tuple[Loc, int, str]]
) -> Any:
    """The node as plain data, noting the line of every key and list item on the way."""
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader("").construct_object(key_node)
            here = key_node.start_mark.line + 1
            if not isinstance(key, str | int):
                found.append((loc, here, "keys must be plain names"))
            elif key in out:
                # PyYAML would keep the last silently; a repeated key is a mistake to show.
                found.append(((*loc, key), here, "repeated key"))
            else:
                lines[(*loc, key)] = here
                out[key] = _to_data(value_node, (*loc, key), lines, found)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(item, (*loc, i), lines, found) for i, item in enumerate(node.value)]
    return yaml.SafeLoader("").construct_object(node)


def _line(lines: dict[Loc, int], loc: Loc) -> int:
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _field(loc: Loc, data: Any) -> str:
    """`topics[orders.events].partitions`: a list item is named by its topic when it has one."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            name = None
            if loc[:i] == ("topics",) and isinstance(data, dict):
                items = data.get("topics")
                item = items[part] if isinstance(items, list) and part < len(items) else None
                name = item.get("name") if isinstance(item, dict) else None
            out += f"[{name}]" if isinstance(name, str) and name else f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(file)"


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        allowed = ", ".join(TopicSpec.model_fields) if len(err["loc"]) > 1 else "topics"
        return f"unknown field (allowed: {allowed})"
    if kind == "string_pattern_mismatch":
        return (
            f"{err['input']!r} is not a topic name: use letters, digits, '.', '_' and '-' "
            "(at most 249)"
        )
    return str(err["msg"]).removeprefix("Value error, ")


# ---- what is wanted ------------------------------------------------------------------------


def _wanted(
    settings: Settings, declared: list[TopicSpec], flows: list[CompiledFlow]
) -> list[tuple[TopicSpec, Origin, tuple[str, ...]]]:
    users: dict[str, list[str]] = {}  # topic -> flows that read or command into it
    for flow in flows:
        endpoints = list(flow.sources)
        for step in flow.steps:
            endpoints += [t.to for t in (step.command, step.compensate) if t is not None]
        for endpoint in endpoints:
            if endpoint.startswith("kafka://"):
                names = users.setdefault(endpoint.removeprefix("kafka://"), [])
                if flow.name not in names:
                    names.append(flow.name)

    def spec(what: str, name: str, partitions: int, config: dict[str, str]) -> TopicSpec:
        try:
            return TopicSpec(
                name=name, partitions=partitions, replication_factor=replication, config=config
            )
        except ValidationError:
            raise ConfigError(f"{what}: '{name}' is not a Kafka topic name") from None

    # Topics not in the file follow its replication factor, so a production topics.yaml that
    # asks for 3 copies does not leave sagabridge's state-bearing topics with only 1.
    replication = max((s.replication_factor for s in declared), default=1)
    wanted: list[tuple[TopicSpec, Origin, tuple[str, ...]]] = [
        (s, "declared", tuple(users.get(s.name, ()))) for s in declared
    ]
    seen = {s.name: "topics.yaml" for s in declared}
    own_config = {"cleanup.policy": "delete", "retention.ms": str(OWN_RETENTION_MS)}
    for setting, name, partitions in (
        ("input_topic", settings.input_topic, settings.input_partitions),
        ("lifecycle_topic", settings.lifecycle_topic, DEFAULT_PARTITIONS),
        ("dlq_topic", settings.dlq_topic, DEFAULT_PARTITIONS),
    ):
        if name in seen:
            fix = (
                "remove it from topics.yaml: sagabridge's own topics come from the settings"
                if seen[name] == "topics.yaml"
                else "each of sagabridge's topics needs its own name"
            )
            raise ConfigError(f"setting {setting}: topic '{name}' is also {seen[name]}; {fix}")
        seen[name] = f"setting {setting}"
        own = spec(f"setting {setting}", name, partitions, own_config)
        wanted.append((own, "sagabridge", tuple(users.get(name, ()))))
    for name in sorted(users.keys() - seen.keys()):
        needed = spec(f"flow {', '.join(users[name])}", name, DEFAULT_PARTITIONS, {})
        wanted.append((needed, "flows", tuple(users[name])))
    return wanted


# ---- the cluster ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cluster:
    layout: dict[str, tuple[int, int]]  # topic -> (partitions, replication factor)
    configs: dict[str, dict[str, str | None]]  # topics whose configs the broker described
    config_note: str | None


async def _guarded(bootstrap: str, what: str, call: Awaitable[T]) -> T:
    """Await one admin call, bounded in time, with aiokafka's errors turned into ours."""
    try:
        async with asyncio.timeout(TIMEOUT_S):
            return await call
    except TimeoutError:
        raise BrokerError(
            f"Kafka at {bootstrap}: no answer to {what} within {TIMEOUT_S:.0f} s"
        ) from None
    except KafkaConnectionError as exc:
        # aiokafka's text lists resolved socket tuples; the address as given says more.
        detail = "no broker answered" if "bootstrap" in str(exc) else str(exc)
        raise BrokerError(
            f"cannot reach Kafka at {bootstrap} ({what}): {detail}; check the bootstrap setting "
            "(--bootstrap, SAGABRIDGE_BOOTSTRAP) and that the broker is running"
        ) from None
    except KafkaError as exc:
        raise BrokerError(f"Kafka at {bootstrap}: {what} failed: {exc}") from None


@asynccontextmanager
async def _admin(settings: Settings) -> AsyncIterator[tuple[Any, str]]:
    kwargs = client_kwargs(settings)
    bootstrap = str(kwargs["bootstrap_servers"])
    admin = AIOKafkaAdminClient(
        **kwargs, client_id=f"{settings.app_id}-topics", request_timeout_ms=int(TIMEOUT_S * 1000)
    )
    try:
        await _guarded(bootstrap, "connect", admin.start())
        yield admin, bootstrap
    finally:
        await admin.close()


async def _layout(admin: Any, bootstrap: str, names: set[str]) -> dict[str, tuple[int, int]]:
    # Metadata for all topics, never for named ones: naming a missing topic makes a broker with
    # auto.create.topics.enable create it, with the broker's default partition count.
    described: list[dict[str, Any]] = await _guarded(
        bootstrap, "describe topics", admin.describe_topics()
    )
    layout: dict[str, tuple[int, int]] = {}
    for topic in described:
        name = topic["topic"]
        if name not in names:
            continue
        partitions = topic["partitions"]
        if topic["error_code"] and not partitions:
            error = for_code(topic["error_code"])
            if error.retriable:
                continue  # e.g. LEADER_NOT_AVAILABLE while a new topic settles: not there yet
            raise BrokerError(
                f"Kafka at {bootstrap}: cannot describe topic {name}: {error.message}"
            )
        replicas = max((len(p["replicas"]) for p in partitions), default=0)
        layout[name] = (len(partitions), replicas)
    return layout


async def _describe(admin: Any, bootstrap: str, names: set[str]) -> _Cluster:
    layout = await _layout(admin, bootstrap, names)
    if not layout:
        return _Cluster(layout, {}, None)
    # Unfiltered: Tansu 0.6 closes the connection when asked for named config keys.
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in sorted(layout)]
    try:
        async with asyncio.timeout(TIMEOUT_S):
            responses = await admin.describe_configs(resources)
    except (TimeoutError, KafkaError) as exc:
        # Creating and comparing partitions still works without configs: say so, do not fail.
        why = str(exc) or type(exc).__name__
        return _Cluster(
            layout, {}, f"configs not compared: the broker did not describe them ({why})"
        )
    configs: dict[str, dict[str, str | None]] = {}
    refused: list[str] = []
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"]:
                refused.append(resource["resource_name"])
                continue
            configs[resource["resource_name"]] = {
                entry["config_names"]: None if entry["is_sensitive"] else entry["config_value"]
                for entry in resource["config_entries"]
            }
    note = f"configs not compared for {', '.join(refused)}: refused by the broker"
    return _Cluster(layout, configs, note if refused else None)


def _same(wanted: str, actual: str) -> bool:
    # Kafka echoes lists as "compact,delete"; the file may say "compact, delete".
    return [p.strip() for p in wanted.split(",")] == [p.strip() for p in actual.split(",")]


def _differences(
    spec: TopicSpec, partitions: int, replicas: int, configs: dict[str, str | None] | None
) -> list[Difference]:
    out: list[Difference] = []
    if partitions != spec.partitions:
        out.append(Difference("partitions", str(spec.partitions), str(partitions)))
    if replicas != spec.replication_factor:
        out.append(Difference("replication_factor", str(spec.replication_factor), str(replicas)))
    for key, value in spec.config.items():
        if configs is None or (key in configs and configs[key] is None):
            continue  # not described, or sensitive: the broker does not show the value
        actual = configs.get(key)
        if actual is None or not _same(value, actual):
            out.append(Difference(f"config {key}", value, actual))
    return out


def _compare(
    wanted: list[tuple[TopicSpec, Origin, tuple[str, ...]]], cluster: _Cluster, bootstrap: str
) -> TopicPlan:
    states: list[TopicState] = []
    for spec, origin, used_by in wanted:
        if spec.name not in cluster.layout:
            states.append(TopicState(spec, origin, "create", used_by=used_by))
            continue
        partitions, replicas = cluster.layout[spec.name]
        configs = cluster.configs.get(spec.name)
        # A topic only the flows name has no declared shape to compare with.
        differences = _differences(spec, partitions, replicas, configs) if origin != "flows" else []
        states.append(
            TopicState(
                spec,
                origin,
                "differs" if differences else "ok",
                partitions=partitions,
                replication_factor=replicas,
                differences=tuple(differences),
                config_checked=configs is not None or not spec.config,
                used_by=used_by,
            )
        )
    return TopicPlan(bootstrap, tuple(states), config_note=cluster.config_note)


# ---- plan and apply ------------------------------------------------------------------------


async def plan(
    settings: Settings, declared: list[TopicSpec], flows: list[CompiledFlow]
) -> TopicPlan:
    """Each wanted topic with `create`, `ok` or `differs`; topics nothing wants are left out."""
    wanted = _wanted(settings, declared, flows)
    async with _admin(settings) as (admin, bootstrap):
        cluster = await _describe(admin, bootstrap, {s.name for s, _, _ in wanted})
    return _compare(wanted, cluster, bootstrap)


async def apply(
    settings: Settings,
    declared: list[TopicSpec],
    flows: list[CompiledFlow],
    include_flow_topics: bool = False,
) -> TopicPlan:
    """Create the missing topics (flow-only ones when asked) and return the plan afterwards.

    Never alters or deletes. A topic someone else creates meanwhile counts as existing.
    """
    wanted = _wanted(settings, declared, flows)
    names = {s.name for s, _, _ in wanted}
    async with _admin(settings) as (admin, bootstrap):
        before = _compare(wanted, await _describe(admin, bootstrap, names), bootstrap)
        todo = [
            t.spec
            for t in before.topics
            if t.action == "create" and (include_flow_topics or t.origin != "flows")
        ]
        created = await _create(admin, bootstrap, todo) if todo else ()
        # Also those someone else created meanwhile: the broker may not list them yet either.
        await _await_visible(admin, bootstrap, {s.name for s in todo})
        after = _compare(wanted, await _describe(admin, bootstrap, names), bootstrap)
    return replace(after, created=created)


async def _create(admin: Any, bootstrap: str, specs: Iterable[TopicSpec]) -> tuple[str, ...]:
    new = [
        NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.config))
        for s in specs
    ]
    response = await _guarded(
        bootstrap,
        "create topics",
        admin.create_topics(new, timeout_ms=int(TIMEOUT_S * 1000)),
    )
    created: list[str] = []
    failed: list[str] = []
    for result in response.to_object()["topic_errors"]:
        code = result["error_code"]
        if code == 0:
            created.append(result["topic"])
        elif code != TopicAlreadyExistsError.errno:
            detail = result.get("error_message") or for_code(code).description
            failed.append(f"{result['topic']}: {for_code(code).message}: {detail}")
    if failed:
        done = f" (created: {', '.join(created)})" if created else ""
        raise BrokerError(
            f"Kafka at {bootstrap} refused to create {len(failed)} topic(s){done}:\n"
            + "\n".join(failed)
        )
    return tuple(created)


async def _await_visible(admin: Any, bootstrap: str, names: set[str]) -> None:
    """Wait until the metadata lists what was just created, so the plan after shows it.

    Kafka answers CreateTopics once the controller has the topic; the broker that serves
    metadata may learn of it a few milliseconds later.
    """
    if not names:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_S
    while set(await _layout(admin, bootstrap, names)) != names and loop.time() < deadline:
        await asyncio.sleep(_POLL_S)


# ---- output --------------------------------------------------------------------------------

_STYLE = {"create": "yellow", "ok": "green", "differs": "red"}


def render_plan(plan: TopicPlan) -> Table:
    """One row per topic: action, where it comes from, partitions and replicas, differences."""
    table = Table(title=f"Kafka topics at {plan.bootstrap}", title_justify="left")
    table.add_column("topic", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("from")
    table.add_column("partitions\nwanted / actual")
    table.add_column("replicas\nwanted / actual")
    table.add_column("notes")
    for t in plan.topics:
        shape_known = t.origin != "flows"
        notes = [
            f"{d.field}: wanted {d.wanted}, actual {'(not set)' if d.actual is None else d.actual}"
            for d in t.differences
        ]
        if t.origin == "flows":
            flows = ", ".join(t.used_by)
            notes.append(f"required by flows ({flows}), not declared in topics.yaml")
            if t.action == "create":
                notes.append(f"apply creates it ({t.spec.partitions} partitions) only when asked")
        if t.name in plan.created:
            notes.append("created")
        if t.action != "create" and not t.config_checked:
            notes.append("config not checked")
        table.add_row(
            t.name,
            Text(t.action, style=_STYLE[t.action]),
            t.origin,
            _pair(t.spec.partitions if shape_known else None, t.partitions),
            _pair(t.spec.replication_factor if shape_known else None, t.replication_factor),
            "; ".join(notes),
        )
    if plan.config_note:
        table.caption = plan.config_note
    return table


def _pair(wanted: int | None, actual: int | None) -> str:
    """`wanted / actual`, '-' where a side is unknown."""
    return f"{'-' if wanted is None else wanted} / {'-' if actual is None else actual}"
