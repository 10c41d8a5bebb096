"""The runtime's plain parts, without a broker: config, routing, the batch processor, deadlines."""

from __future__ import annotations

import gc
import json
import random
from pathlib import Path

import pytest
from support import EXAMPLE, captured, dispatched, placed, reserved

from bridge.codecs import JsonCodec
from bridge.config import load_settings
from bridge.engine.match import Matcher
from bridge.engine.simulator import Simulator, instance_view
from bridge.engine.state import Instance
from bridge.engine.timefmt import parse_time
from bridge.engine.wire import input_from_wire
from bridge.errors import ConfigError
from bridge.flow import load_compiled
from bridge.runtime.deadlines import RESEND_MS, DeadlineIndex
from bridge.runtime.kafka import client_kwargs
from bridge.runtime.processor import Due, Processor, decode_state, due_of, state_writes
from bridge.runtime.router import Router
from bridge.runtime.routing import partition_for, target_of
from bridge.sinks.kafka import murmur2
from bridge.sources.record import SourceRecord


class DictStore(dict[str, bytes]):
    def put(self, key: str, value: bytes) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


def record(line: dict, offset: int) -> SourceRecord:
    value = line["value"]
    raw = value.encode() if isinstance(value, str) else json.dumps(value).encode()
    return SourceRecord(
        line["source"], raw, [], None, parse_time(line["at"]) or 0, f"{line['source']}/0/{offset}"
    )


async def run_runtime(lines: list[dict], partitions: int) -> DictStore:
    """Route and process like the worker does, with the input topic as an in-memory queue."""
    flows = load_compiled([EXAMPLE])
    router = Router(Matcher(flows), {}, partitions)
    processor = Processor(flows, partitions)
    store = DictStore()
    routed = await router.route([record(line, n) for n, line in enumerate(lines)])
    queue = list(routed.inputs.items())
    while queue:
        partition, batch = queue.pop(0)
        out = processor.process(partition, batch, store)
        assert all(k not in store or True for k in out.states)  # nothing written yet
        processor.store_states(out, store)
        queue.extend(out.inputs.items())
    return store


STREAM = [
    placed(0, "o-1"),
    reserved(1, "o-1"),
    dispatched(2, "p-1"),
    captured(3, "o-1", "p-1"),
    placed(4, "o-2"),
    captured(5, "o-2", "p-2"),
    reserved(6, "o-2"),
]


@pytest.mark.parametrize("partitions", [1, 4])
async def test_the_runtime_path_decides_what_simulate_decides(partitions: int) -> None:
    store = await run_runtime(STREAM, partitions)
    sim = Simulator(load_compiled([EXAMPLE]))
    for n, line in enumerate(STREAM):
        sim.feed_line(json.dumps(line), str(n))
    flow = load_compiled([EXAMPLE])[0]
    for want in sim.result()["instances"]:
        state = decode_state(store[f"order-fulfilment/{want['key']}"])
        assert isinstance(state, Instance)
        got = instance_view(flow, state)
        assert {k: v for k, v in got.items() if k != "history"} == {
            k: v for k, v in want.items() if k != "history"
        }


def test_process_leaves_the_store_alone_until_told() -> None:
    flows = load_compiled([EXAMPLE])
    processor = Processor(flows, 1)
    store = DictStore()
    batch = [
        [
            "e",
            "order-fulfilment",
            "OrderPlaced",
            "o-9",
            "id",
            1000,
            None,
            {},
            [],
            None,
            "kafka://orders.events",
            0,
        ]
    ]
    out = processor.process(0, batch, store)
    assert store == {} and out.states and out.lifecycle
    processor.store_states(out, store)
    assert "order-fulfilment/o-9" in store
    assert out.dues["order-fulfilment/o-9"] == Due(1000 + 30_000, "order-fulfilment", "o-9", None)


async def test_router_orders_a_mixed_batch_by_time_and_dead_letters_with_reasons() -> None:
    flows = load_compiled([EXAMPLE])
    router = Router(Matcher(flows), {"kafka://orders.events": JsonCodec()}, 4)
    late, early = record(reserved(5, "o-1"), 1), record(placed(1, "o-1"), 2)
    bad = SourceRecord("kafka://orders.events", b"{oops", [], None, 0, "x/0/3")
    keyless = record({**placed(2, "o-2"), "value": {"type": "OrderPlaced", "order": {}}}, 4)
    other = record({**placed(2), "value": {"type": "Unrelated"}}, 5)
    routed = await router.route([late, early, bad, keyless, other])
    inputs = [input_from_wire(w) for ws in routed.inputs.values() for w in ws]
    assert [i.name for i in inputs] == ["OrderPlaced", "InventoryReserved"]  # type: ignore[union-attr]
    for p, ws in routed.inputs.items():
        assert all(target_of(input_from_wire(w), 4)[1] == p for w in ws)
    reasons = [reason for _, reason in routed.dead]
    assert reasons[0].startswith("cannot decode: payload is not valid JSON")
    assert "has no key at $.order.id" in reasons[1]
    assert routed.unmatched == {"kafka://orders.events": 1} and routed.matched == 3


def test_partitions_follow_kafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    default = DefaultPartitioner()
    for key in ("order-fulfilment/o-1", "x", "f/@payment_id/p-9", "ünïcode"):
        assert partition_for(key, 8) == default(key.encode(), list(range(8)), list(range(8)))


def test_murmur2_is_kafkas() -> None:
    from aiokafka.partitioner import murmur2 as aiokafka_murmur2

    # Kafka's own test vectors (UtilsTest.testMurmur2), signed as Java returns them.
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for data, signed in vectors.items():
        assert murmur2(data) == signed & 0xFFFFFFFF
    rng = random.Random(7)
    for length in range(40):  # every tail length, several words
        for _ in range(50):
            data = rng.randbytes(length)
            assert murmur2(data) == aiokafka_murmur2(data)


def test_deadline_index_fires_due_ticks_once_and_offers_them_again_later() -> None:
    index = DeadlineIndex()  # keyed by state key; a Due names the instance
    index.update(0, {"f/a": Due(100, "f", "a", None), "f/b": Due(300, "f", "b", None)})
    assert index.pop_due(0, 50) == []
    assert index.pop_due(0, 100) == [Due(100, "f", "a", None)]
    assert index.pop_due(0, 200) == []  # sent; not again before RESEND_MS
    assert sorted(d.key for d in index.pop_due(0, 100 + RESEND_MS)) == ["a", "b"]
    index.update(0, {"f/a": None, "f/b": Due(10_000_000, "f", "b", None)})  # answered
    assert index.pop_due(0, 200 + 2 * RESEND_MS) == []
    index.rebuild(1, [("f/@ref/c", Due(5, "f", "c", "ref"))])
    assert index.partitions == {0, 1} and len(index) == 2
    index.drop(0)
    assert index.pop_due(1, 5) == [Due(5, "f", "c", "ref")]


def test_deadlines_add_nothing_to_a_full_garbage_collection() -> None:
    """A full collection walks every tracked object: with one deadline per instance held as
    objects, it held the worker for 394 ms at about 170,000 instances."""
    index = DeadlineIndex()
    gc.collect()
    before = len(gc.get_objects())
    for p in range(4):
        dues = {f"f/k{p}-{i}": Due(1_000 + i, "f", f"k{p}-{i}", None) for i in range(5_000)}
        index.update(p, dues)
    del dues
    gc.collect()
    assert len(index) == 20_000
    assert len(gc.get_objects()) - before < 200
    assert index.pop_due(3, 1_000) == [Due(1_000, "f", "k3-0", None)]  # what it was given


def test_settings_precedence_file_then_flags_then_environment(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "sb.yaml"
    config.write_text("bootstrap: file:9092\nweb_port: 7001\nflows: [flows]\napp_id: shop\n")
    s = load_settings(config)
    assert s.bootstrap == "file:9092" and s.web_port == 7001
    assert s.flows == [tmp_path / "flows"]  # relative to the config file
    assert s.input_topic == "shop.input"
    s = load_settings(config, bootstrap="flag:9092")
    assert s.bootstrap == "flag:9092"
    monkeypatch.setenv("SAGABRIDGE_BOOTSTRAP", "env:9092")
    monkeypatch.setenv("SAGABRIDGE_KAFKA__SASL_USERNAME", "alice")
    s = load_settings(config, bootstrap="flag:9092")
    assert s.bootstrap == "env:9092" and s.kafka.sasl_username == "alice"


@pytest.mark.parametrize(
    ("content", "env", "words"),
    [
        ("web_port: seventy\n", {}, "setting web_port (or SAGABRIDGE_WEB_PORT)"),
        ("bootstrap: nohost\n", {}, "setting bootstrap"),
        ("colour: blue\n", {}, "setting colour (or SAGABRIDGE_COLOUR): unknown setting"),
        ("sources: {http://x: {}}\n", {}, "setting sources"),
        ("", {"SAGABRIDGE_INPUT_PARTITIONS": "0"}, "setting input_partitions"),
        ("- a list\n", {}, "must be a mapping"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path: Path, monkeypatch, content, env, words) -> None:
    config = tmp_path / "sb.yaml"
    config.write_text(content)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as exc:
        load_settings(config)
    assert words in str(exc.value)


def test_kafka_security_settings_pass_through() -> None:
    s = load_settings(None, bootstrap="b:9092")
    assert client_kwargs(s) == {"bootstrap_servers": "b:9092", "security_protocol": "PLAINTEXT"}
    s = load_settings(
        None,
        bootstrap="b:9092",
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "u",
            "sasl_password": "p",
        },
    )
    kwargs = client_kwargs(s)
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512" and kwargs["sasl_plain_username"] == "u"
    assert kwargs["ssl_context"] is not None
    s = load_settings(None, bootstrap="b:9092", kafka={"security_protocol": "SASL_PLAINTEXT"})
    with pytest.raises(ConfigError, match=r"sasl_mechanism, kafka\.sasl_username"):
        client_kwargs(s)
    with pytest.raises(ConfigError, match="no Kafka address given"):
        client_kwargs(load_settings(None))


async def test_an_ended_instance_is_deleted_by_the_tick_after_its_retention() -> None:
    flows = load_compiled([EXAMPLE])
    processor = Processor(flows, 1, retention_ms=60_000)
    router = Router(Matcher(flows), {}, 1)
    store = DictStore()
    lines = [placed(0, "o-1"), reserved(1, "o-1"), captured(2, "o-1", "p-1")]
    lines.append(dispatched(3, "p-1"))
    routed = await router.route([record(line, n) for n, line in enumerate(lines)])
    queue = list(routed.inputs.items())
    out = None
    while queue:
        partition, batch = queue.pop(0)
        out = processor.process(partition, batch, store)
        processor.store_states(out, store)
        queue.extend(out.inputs.items())
    state = decode_state(store["order-fulfilment/o-1"])
    assert isinstance(state, Instance) and state.status == "COMPLETED"
    assert state.ended is not None
    ended = state.ended
    assert out is not None and out.dues["order-fulfilment/o-1"] == Due(
        ended + 60_000, "order-fulfilment", "o-1", None
    )
    early = processor.process(0, [["t", "order-fulfilment", "o-1", ended + 59_999, None]], store)
    assert early.expired == 0 and early.states["order-fulfilment/o-1"] is not None
    late = processor.process(0, [["t", "order-fulfilment", "o-1", ended + 60_000, None]], store)
    assert late.expired == 1 and late.dues["order-fulfilment/o-1"] is None
    processor.store_states(late, store)
    assert "order-fulfilment/o-1" not in store
    assert "order-fulfilment/@payment_id/p-1" in store  # associations are not instances


def test_retention_zero_keeps_ended_instances() -> None:
    flows = load_compiled([EXAMPLE])
    inst = Instance("o-1", 1, 3)
    inst.status, inst.ended = "COMPLETED", 5_000
    assert due_of(inst, "order-fulfilment", "o-1", None, 0) is None
    assert due_of(inst, "order-fulfilment", "o-1", None, 10) == Due(
        5_010, "order-fulfilment", "o-1", None
    )
    assert Processor(flows, 1).retention_ms == 0


async def test_changelog_records_are_the_states_a_batch_stores_in_their_partitions() -> None:
    """The worker writes `state_writes` to the changelog, where recovery reads them back:
    they must hold what `store_states` would store, deletions as tombstones, each in the
    partition its key hashes to (the partition its inputs go to)."""
    flows = load_compiled([EXAMPLE])
    processor = Processor(flows, 4, retention_ms=60_000)
    router = Router(Matcher(flows), {}, 4)
    store, replayed = DictStore(), DictStore()
    lines = [placed(0, "o-1"), reserved(1, "o-1"), captured(2, "o-1", "p-1")]
    lines += [dispatched(3, "p-1"), placed(4, "o-2")]
    routed = await router.route([record(line, n) for n, line in enumerate(lines)])
    queue = list(routed.inputs.items())
    while queue:
        partition, batch = queue.pop(0)
        out = processor.process(partition, batch, store)
        for p, records in state_writes(out).items():
            for key, value in records:
                assert partition_for(key.decode(), 4) == p == partition
                if value is None:
                    replayed.delete(key.decode())
                else:
                    replayed.put(key.decode(), value)
        processor.store_states(out, store)
        queue.extend(out.inputs.items())
    assert replayed == store and "order-fulfilment/o-2" in store
    ended = decode_state(store["order-fulfilment/o-1"]).ended
    tick = [["t", "order-fulfilment", "o-1", ended + 60_000, None]]
    p = partition_for("order-fulfilment/o-1", 4)
    late = processor.process(p, tick, store)
    assert state_writes(late) == {p: [(b"order-fulfilment/o-1", None)]}
