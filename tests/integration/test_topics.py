"""`topics plan|apply` against real brokers: Tansu always, the SAGABRIDGE_TEST_BOOTSTRAP broker too.

The broker is shared by the module, so every test names its topics with its own random prefix.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError
from rich.console import Console
from support import EXAMPLE, ROOT, flow_from

from bridge.config import Settings
from bridge.errors import BrokerError, ConfigError
from bridge.flow import CompiledFlow
from bridge.runtime import topics
from bridge.runtime.embedded import free_port, start_tansu
from bridge.runtime.topics import (
    TopicPlan,
    TopicSpec,
    apply,
    load_topic_specs,
    parse_topic_specs,
    plan,
    render_plan,
)

EXTERNAL = os.environ.get("SAGABRIDGE_TEST_BOOTSTRAP")
DAY_MS = str(24 * 60 * 60 * 1000)


@dataclass(frozen=True)
class Broker:
    kind: str
    bootstrap: str


@pytest.fixture(scope="module", params=["tansu", *(["external"] if EXTERNAL else [])])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    if request.param == "external":
        assert EXTERNAL is not None
        yield Broker("external", EXTERNAL)
        return
    tansu = start_tansu()
    try:
        yield Broker("tansu", tansu.bootstrap)
    finally:
        tansu.stop()


@pytest.fixture
async def prefix(broker: Broker) -> AsyncIterator[str]:
    """A fresh topic-name prefix; on a broker that outlives the tests its topics are deleted."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    if broker.kind == "external":
        async with admin_client(broker.bootstrap) as admin:
            mine = [t for t in await admin.list_topics() if t.startswith(f"{name}.")]
            if mine:
                await admin.delete_topics(mine)


@asynccontextmanager
async def admin_client(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """A plain aiokafka admin client, independent of the code under test."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def cluster_topics(bootstrap: str, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """name -> (partitions, configs) for those of `names` that exist, seen by a fresh client."""
    async with admin_client(bootstrap) as admin:
        # All topics, not named ones: naming a missing topic may auto-create it on Kafka.
        layout = {
            t["topic"]: len(t["partitions"])
            for t in await admin.describe_topics()
            if t["topic"] in names
        }
        configs: dict[str, dict[str, str]] = {name: {} for name in layout}
        if layout:
            resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in layout]
            for response in await admin.describe_configs(resources):
                for res in response.to_object()["resources"]:
                    configs[res["resource_name"]] = {
                        e["config_names"]: e["config_value"] for e in res["config_entries"]
                    }
    return {name: (layout[name], configs[name]) for name in layout}


def settings_for(broker: Broker, prefix: str) -> Settings:
    return Settings(
        bootstrap=broker.bootstrap,
        input_topic=f"{prefix}.input",
        input_partitions=4,
        lifecycle_topic=f"{prefix}.lifecycle",
        dlq_topic=f"{prefix}.dlq",
    )


def declared_for(prefix: str) -> list[TopicSpec]:
    return [
        TopicSpec(
            name=f"{prefix}.orders",
            partitions=3,
            replication_factor=1,
            config={"retention.ms": DAY_MS, "cleanup.policy": "delete"},
        ),
        TopicSpec(name=f"{prefix}.commands", partitions=2, replication_factor=1),
    ]


def flow_for(prefix: str) -> CompiledFlow:
    """Reads orders and results, commands into commands; the SQS queue is not a topic."""
    return flow_from(
        f"""
flow: topics-test
version: 1
key: id
events:
  Placed: {{source: kafka://{prefix}.orders, match: {{type: Placed}}, key: $.id}}
  Done: {{source: kafka://{prefix}.results, match: {{type: Done}}, key: $.id}}
  Paid: {{source: sqs://{prefix}-payments, match: {{type: Paid}}, key: $.id}}
start: Placed
steps:
  work:
    done: Done
    command: {{name: DoWork, to: kafka://{prefix}.commands, payload: {{id: $key}}}}
    compensate: {{name: Undo, to: kafka://{prefix}.undo, payload: {{id: $key}}}}
  pay: {{after: [work], done: Paid}}
"""
    )


def names(prefix: str, *suffixes: str) -> list[str]:
    return [f"{prefix}.{s}" for s in suffixes]


DECLARED = ("orders", "commands")
OWN = ("input", "lifecycle", "dlq")
FLOW_ONLY = ("results", "undo")  # sorted by name, as the plan lists them


def actions(result: TopicPlan) -> dict[str, str]:
    return {t.name: t.action for t in result.topics}


def rendered(result: TopicPlan) -> str:
    console = Console(width=250, record=True, color_system=None)
    console.print(render_plan(result))
    return console.export_text()


# ---- against a broker ------------------------------------------------------------------------


@pytest.mark.kafka
async def test_plan_on_an_empty_cluster_creates_everything_and_touches_nothing(
    broker: Broker, prefix: str
) -> None:
    result = await plan(settings_for(broker, prefix), declared_for(prefix), [flow_for(prefix)])

    everything = names(prefix, *DECLARED, *OWN, *FLOW_ONLY)
    assert [t.name for t in result.topics] == everything
    assert set(actions(result).values()) == {"create"}
    assert [t.origin for t in result.topics] == ["declared"] * 2 + ["sagabridge"] * 3 + [
        "flows"
    ] * 2
    assert [t.name for t in result.undeclared] == names(prefix, *FLOW_ONLY)
    assert all(t.used_by == ("topics-test",) for t in result.undeclared)
    assert [t.name for t in result.to_create] == names(prefix, *DECLARED, *OWN)
    assert result.topic(f"{prefix}.input").spec.partitions == 4
    # Reading the cluster created nothing, not even through broker-side auto-creation.
    assert await cluster_topics(broker.bootstrap, everything) == {}
    text = rendered(result)
    assert f"{prefix}.results" in text
    assert "required by flows (topics-test), not declared in topics.yaml" in text


@pytest.mark.kafka
async def test_apply_creates_the_declared_and_own_topics_with_their_shape(
    broker: Broker, prefix: str
) -> None:
    result = await apply(settings_for(broker, prefix), declared_for(prefix), [flow_for(prefix)])

    assert set(result.created) == set(names(prefix, *DECLARED, *OWN))
    assert {t.name: t.action for t in result.topics if t.origin != "flows"} == dict.fromkeys(
        names(prefix, *DECLARED, *OWN), "ok"
    )
    # Topics only the flows name wait for include_flow_topics.
    assert [t.action for t in result.undeclared] == ["create", "create"]

    seen = await cluster_topics(broker.bootstrap, names(prefix, *DECLARED, *OWN, *FLOW_ONLY))
    partitions = {name: p for name, (p, _) in seen.items()}
    assert partitions == {
        f"{prefix}.orders": 3,
        f"{prefix}.commands": 2,
        f"{prefix}.input": 4,
        f"{prefix}.lifecycle": 3,
        f"{prefix}.dlq": 3,
    }
    orders_config = seen[f"{prefix}.orders"][1]
    assert orders_config["retention.ms"] == DAY_MS
    assert orders_config["cleanup.policy"] == "delete"
    assert seen[f"{prefix}.dlq"][1]["retention.ms"] == str(7 * 24 * 60 * 60 * 1000)
    assert "created" in rendered(result)


@pytest.mark.kafka
async def test_a_second_apply_changes_nothing(broker: Broker, prefix: str) -> None:
    settings, declared, flows = settings_for(broker, prefix), declared_for(prefix), []
    first = await apply(settings, declared, flows)
    before = await cluster_topics(broker.bootstrap, names(prefix, *DECLARED, *OWN))

    second = await apply(settings, declared, flows)

    assert len(first.created) == 5
    assert second.created == ()
    assert set(actions(second).values()) == {"ok"}
    assert await cluster_topics(broker.bootstrap, names(prefix, *DECLARED, *OWN)) == before
    assert set(actions(await plan(settings, declared, flows)).values()) == {"ok"}


@pytest.mark.kafka
async def test_include_flow_topics_creates_the_undeclared_ones_with_default_partitions(
    broker: Broker, prefix: str
) -> None:
    settings, declared, flows = (
        settings_for(broker, prefix),
        declared_for(prefix),
        [flow_for(prefix)],
    )
    result = await apply(settings, declared, flows, include_flow_topics=True)

    assert set(result.created) == set(names(prefix, *DECLARED, *OWN, *FLOW_ONLY))
    assert set(actions(result).values()) == {"ok"}
    # Still reported as undeclared: creating them does not make them declared.
    assert [t.origin for t in result.undeclared] == ["flows", "flows"]
    seen = await cluster_topics(broker.bootstrap, names(prefix, *FLOW_ONLY))
    assert {name: p for name, (p, _) in seen.items()} == dict.fromkeys(names(prefix, *FLOW_ONLY), 3)


@pytest.mark.kafka
async def test_a_topic_with_another_shape_differs_and_is_left_alone(
    broker: Broker, prefix: str
) -> None:
    orders = f"{prefix}.orders"
    async with admin_client(broker.bootstrap) as admin:
        response = await admin.create_topics(
            [NewTopic(orders, 1, 1, topic_configs={"retention.ms": "3600000"})]
        )
        assert response.to_object()["topic_errors"][0]["error_code"] == 0
        # Kafka lists a new topic in its metadata a moment after it answers CreateTopics.
        while orders not in await admin.list_topics():
            await asyncio.sleep(0.05)
    settings, declared = settings_for(broker, prefix), declared_for(prefix)

    planned = await plan(settings, declared, [])
    applied = await apply(settings, declared, [])

    for result in (planned, applied):
        state = result.topic(orders)
        assert state.action == "differs"
        assert (state.partitions, state.replication_factor) == (1, 1)
        found = {d.field: (d.wanted, d.actual) for d in state.differences}
        assert found["partitions"] == ("3", "1")
        assert found["config retention.ms"] == (DAY_MS, "3600000")
    assert [t.name for t in applied.differing] == [orders]
    assert orders not in applied.created
    assert json.loads(json.dumps(applied.as_dict()))["topics"][0]["differences"][0] == {
        "field": "partitions",
        "wanted": "3",
        "actual": "1",
    }
    assert applied.topic(f"{prefix}.commands").action == "ok"
    partitions, config = (await cluster_topics(broker.bootstrap, [orders]))[orders]
    assert partitions == 1 and config["retention.ms"] == "3600000"
    text = rendered(applied)
    assert "partitions: wanted 3, actual 1" in text
    assert f"config retention.ms: wanted {DAY_MS}, actual 3600000" in text
    assert "3 / 1" in text


@pytest.mark.kafka
async def test_concurrent_applies_both_succeed(broker: Broker, prefix: str) -> None:
    settings, declared = settings_for(broker, prefix), declared_for(prefix)

    one, two = await asyncio.gather(apply(settings, declared, []), apply(settings, declared, []))

    # Whoever lost a race saw TOPIC_ALREADY_EXISTS, which counts as done.
    assert set(one.created) | set(two.created) == set(names(prefix, *DECLARED, *OWN))
    assert not set(one.created) & set(two.created)
    assert set(actions(one).values()) == set(actions(two).values()) == {"ok"}


@pytest.mark.kafka
async def test_a_refused_creation_names_the_topic_and_the_reason(
    broker: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A one-node Kafka refuses replication factor 2 like this; Tansu accepts it (and keeps 1).
    orders, commands = names(prefix, "orders", "commands")

    class Refused:
        def to_object(self) -> dict[str, Any]:
            return {
                "topic_errors": [
                    {"topic": orders, "error_code": 0, "error_message": None},
                    {"topic": commands, "error_code": 38, "error_message": "only 1 broker"},
                ]
            }

    async def create_topics(self: Any, new_topics: Any, timeout_ms: Any = None) -> Any:
        return Refused()

    monkeypatch.setattr(AIOKafkaAdminClient, "create_topics", create_topics)
    with pytest.raises(BrokerError) as caught:
        await apply(settings_for(broker, prefix), declared_for(prefix), [])

    assert str(caught.value).splitlines() == [
        f"Kafka at {broker.bootstrap} refused to create 1 topic(s) (created: {orders}):",
        f"{commands}: INVALID_REPLICATION_FACTOR: only 1 broker",
    ]


@pytest.mark.kafka
async def test_configs_the_broker_does_not_describe_are_reported_unknown(
    broker: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for a broker without DescribeConfigs; partitions are still compared.
    settings, declared = settings_for(broker, prefix), declared_for(prefix)
    await apply(settings, declared, [])

    async def refuse(self: Any, resources: Any) -> Any:
        raise KafkaConnectionError("Connection closed")

    monkeypatch.setattr(AIOKafkaAdminClient, "describe_configs", refuse)
    result = await plan(settings, declared, [])

    assert set(actions(result).values()) == {"ok"}
    assert result.config_note is not None and "configs not compared" in result.config_note
    assert not result.topic(f"{prefix}.orders").config_checked
    assert result.topic(f"{prefix}.commands").config_checked  # it wants no configs
    text = rendered(result)
    assert "config not checked" in text and "configs not compared" in text


@pytest.mark.kafka
async def test_the_file_cannot_declare_sagabridge_own_topics(broker: Broker, prefix: str) -> None:
    settings = settings_for(broker, prefix)
    clash = TopicSpec(name=settings.dlq_topic, partitions=1, replication_factor=1)

    with pytest.raises(ConfigError, match=r"setting dlq_topic: .* remove it from topics.yaml"):
        await plan(settings, [clash], [])


@pytest.mark.kafka
async def test_the_shipped_topics_file_covers_the_example_flow(broker: Broker) -> None:
    from bridge.flow import load_compiled

    declared = load_topic_specs(ROOT / "topics" / "topics.yaml")
    result = await plan(Settings(bootstrap=broker.bootstrap), declared, load_compiled([EXAMPLE]))

    assert result.undeclared == ()
    assert [t.name for t in result.topics if t.origin == "declared"] == [
        "orders.events",
        "inventory.events",
        "shipping.events",
        "inventory.commands",
        "shipping.commands",
    ]
    assert {t.spec.partitions for t in result.topics if t.origin == "declared"} == {3}
    assert [t.name for t in result.topics if t.origin == "sagabridge"] == [
        "sagabridge.input",
        "sagabridge.lifecycle",
        "sagabridge.dlq",
    ]


# ---- without a broker ------------------------------------------------------------------------


async def test_an_unreachable_broker_is_a_quick_broker_error() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()

    with pytest.raises(BrokerError, match=rf"cannot reach Kafka at 127\.0\.0\.1:{port}"):
        await plan(Settings(bootstrap=f"127.0.0.1:{port}"), [], [])

    assert time.monotonic() - started < 5


async def test_a_broker_that_never_answers_is_a_broker_error_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Accepts connections, never answers: like a hung broker or a wrong port behind a proxy.
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(topics, "TIMEOUT_S", 1.0)
    started = time.monotonic()
    try:
        with pytest.raises(
            BrokerError, match=rf"127\.0\.0\.1:{port}: no answer to connect within 1 s"
        ):
            await plan(Settings(bootstrap=f"127.0.0.1:{port}"), [], [])
        assert time.monotonic() - started < 3
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_no_bootstrap_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="setting bootstrap"):
        await apply(Settings(), [], [])


BAD_FILES = {
    "unknown field": (
        "topics:\n  - name: a.b\n    partitions: 3\n    replication_factor: 1\n    retention: 5\n",
        r"topics.yaml:5: topics\[a\.b\]\.retention: unknown field \(allowed: name, partitions,",
    ),
    "zero partitions": (
        "topics:\n  - name: a.b\n    partitions: 0\n    replication_factor: 1\n",
        r"topics.yaml:3: topics\[a\.b\]\.partitions: .*greater than or equal to 1",
    ),
    "missing replication factor": (
        "topics:\n  - name: a.b\n    partitions: 3\n",
        r"topics.yaml:2: topics\[a\.b\]\.replication_factor: required",
    ),
    "bad topic name": (
        "topics:\n  - name: a b\n    partitions: 3\n    replication_factor: 1\n",
        r"topics.yaml:2: topics\[a b\]\.name: 'a b' is not a topic name",
    ),
    "declared twice": (
        "topics:\n  - {name: a, partitions: 1, replication_factor: 1}\n"
        "  - {name: a, partitions: 2, replication_factor: 1}\n",
        r"topics.yaml:3: topics\[a\]: declared twice \(first at line 2\)",
    ),
    "bad config name": (
        "topics:\n  - name: a\n    partitions: 1\n    replication_factor: 1\n"
        "    config:\n      retention_ms: 5\n",
        r"topics.yaml:5: topics\[a\]\.config: 'retention_ms' is not a Kafka config name",
    ),
    "config value not a scalar": (
        "topics:\n  - name: a\n    partitions: 1\n    replication_factor: 1\n"
        "    config: {retention.ms: [1]}\n",
        r"topics\[a\]\.config: retention\.ms: the value must be a string, number or boolean",
    ),
    "repeated key": (
        "topics:\n  - name: a\n    partitions: 1\n    partitions: 2\n    replication_factor: 1\n",
        r"topics.yaml:4: topics\[a\]\.partitions: repeated key",
    ),
    "not a list": ("topics: {name: a}\n", r"topics.yaml:1: topics: Input should be a valid list"),
    "not a mapping": ("- a\n", r"topics.yaml:1: \(file\): a topics file is a mapping"),
    "empty": ("", r"topics.yaml:1: \(file\): the file is empty"),
    "not yaml": ("topics: [\n", r"topics.yaml:2: \(file\): not valid YAML"),
    "dots for a name": (
        "topics:\n  - {name: '..', partitions: 1, replication_factor: 1}\n",
        r"topics.yaml:2: topics\[\.\.\]\.name: '\.\.' is not a topic name",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_topics_file_names_line_and_field(case: str) -> None:
    text, expected = BAD_FILES[case]
    with pytest.raises(ConfigError) as caught:
        parse_topic_specs(text)
    assert re.search(expected, str(caught.value)), str(caught.value)


def test_every_mistake_in_a_file_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text(
        "topics:\n"
        "  - {name: a, partitions: 0, replication_factor: 1}\n"
        "  - {name: b, partitions: 1}\n"
        "colour: red\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_topic_specs(path)
    lines = str(caught.value).splitlines()
    assert [line.split(": ", 2)[:2] for line in lines] == [
        [f"{path}:2", "topics[a].partitions"],
        [f"{path}:3", "topics[b].replication_factor"],
        [f"{path}:4", "colour"],
    ]


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the topics file"):
        load_topic_specs(tmp_path / "missing.yaml")


def test_config_values_become_kafka_strings() -> None:
    [spec] = parse_topic_specs(
        "topics:\n  - name: a\n    partitions: 1\n    replication_factor: 1\n"
        "    config: {retention.ms: 60000, unclean.leader.election.enable: false, "
        "min.cleanable.dirty.ratio: 0.5}\n"
    )
    assert spec.config == {
        "retention.ms": "60000",
        "unclean.leader.election.enable": "false",
        "min.cleanable.dirty.ratio": "0.5",
    }
