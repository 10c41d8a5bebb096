"""The API's pure parts: instance index, search parameters, counts, metrics, OpenAPI document."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import T0, example_flow, out_of_stock, placed, reserved

from bridge.api.flows import flows_document
from bridge.api.index import InstanceIndex, Search, merge_counts
from bridge.api.metrics import Metrics
from bridge.api.openapi import document
from bridge.api.query import BadRequest, decode_cursor, encode_cursor, parse_action, parse_search
from bridge.engine.effects import Command, Lifecycle
from bridge.engine.simulator import Simulator
from bridge.flow.compiled import Catalog

FLOW = example_flow(mode="orchestrate")
MS = lambda s: int((T0 + timedelta(seconds=s)).timestamp() * 1000)  # noqa: E731


def simulate(lines: list[dict[str, object]]) -> Simulator:
    sim = Simulator([FLOW])
    for n, line in enumerate(lines):
        sim.feed_line(json.dumps(line), f"line {n}")
    return sim


def indexed(sim: Simulator) -> InstanceIndex:
    index = InstanceIndex(Catalog([FLOW]))
    for (flow, alias, key), state in sim.states.items():
        if alias is None:
            index.update(flow, key, state, partition=int(key[-1]) % 2)
    return index


@pytest.fixture
def index() -> InstanceIndex:
    lines = [placed(0, f"o-{n}") for n in range(1, 6)]
    lines += [reserved(1, "o-1"), reserved(1, "o-2"), out_of_stock(1, "o-3")]
    return indexed(simulate(lines))


def test_search_filters_by_status_step_prefix_and_overdue(index: InstanceIndex) -> None:
    now = MS(2)
    keys = lambda q: [s.key for s in index.search(FLOW.name, q, now)[0]]  # noqa: E731
    assert keys(Search()) == ["o-1", "o-2", "o-3", "o-4", "o-5"]
    assert keys(Search(statuses=frozenset({"FAILED"}))) == ["o-3"]
    assert keys(Search(step="pay")) == ["o-1", "o-2"]
    assert keys(Search(step="reserve")) == ["o-4", "o-5"]
    assert keys(Search(key_prefix="o-4")) == ["o-4"]
    assert keys(Search(overdue=True)) == []
    # reserve's 30 s deadline has passed for o-4 and o-5, though no tick fired yet
    later = MS(45)
    assert [s.key for s in index.search(FLOW.name, Search(overdue=True), later)[0]] == [
        "o-4",
        "o-5",
    ]


def test_pages_follow_the_cursor_without_gaps_or_repeats(index: InstanceIndex) -> None:
    seen: list[str] = []
    after = None
    while True:
        page, more = index.search(FLOW.name, Search(limit=2, after=after), MS(2))
        seen += [s.key for s in page]
        if not more:
            break
        after = decode_cursor(encode_cursor(page[-1].key))
    assert seen == ["o-1", "o-2", "o-3", "o-4", "o-5"]


def test_counts_by_status_and_step_and_their_merge(index: InstanceIndex) -> None:
    counts = index.counts(FLOW.name, MS(45))
    assert counts["total"] == 5
    assert counts["status"] == {"RUNNING": 4, "FAILED": 1}
    assert counts["steps"]["reserve"] == {"done": 2, "failed": 1, "active": 2, "overdue": 2}
    assert counts["steps"]["pay"]["active"] == 2
    merged = merge_counts([counts, counts])
    assert merged["total"] == 10 and merged["steps"]["reserve"]["overdue"] == 4
    doc = flows_document(Catalog([FLOW]), {FLOW.name: [counts]})
    assert doc[0]["counts"]["steps"]["ship"] == {
        "pending": 5,
        "active": 0,
        "done": 0,
        "failed": 0,
        "timed_out": 0,
        "skipped": 0,
        "compensating": 0,
        "compensated": 0,
        "overdue": 0,
    }


def test_revoked_partitions_leave_the_index(index: InstanceIndex) -> None:
    before = len(index)
    index.drop_partitions([1])
    assert 0 < len(index) < before
    assert all(s.partition == 0 for s in index.entries(FLOW.name))


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"status": "running,nope"}, "status: 'nope' is not an instance status"),
        ({"step": "fly"}, "step: 'fly' is not a step of this flow"),
        ({"limit": "1001"}, "limit: 1001 is out of range"),
        ({"limit": "-"}, "limit: '-' is not a whole number"),
        ({"overdue": "yes"}, "overdue: 'yes' is not true or false"),
        ({"cursor": "eyJ4IjoxfQ"}, "cursor: not a cursor"),
        ({"sort": "key"}, "unknown parameter 'sort'"),
    ],
)
def test_bad_search_parameters_say_what_is_wrong(params: dict[str, str], says: str) -> None:
    with pytest.raises(BadRequest, match=says.replace("(", r"\(")):
        parse_search(params, [FLOW])


def test_good_search_parameters() -> None:
    q = parse_search({"status": "running,Failed", "overdue": "true", "limit": "7"}, [FLOW])
    assert q == Search(statuses=frozenset({"RUNNING", "FAILED"}), overdue=True, limit=7)


def test_action_bodies() -> None:
    assert parse_action({"action": "terminate", "reason": "dup"}, [FLOW]).step is None
    assert parse_action({"action": "skip", "step": "ship"}, [FLOW]).step == "ship"
    for body, says in [
        ({"action": "retry"}, "needs the name of a step"),
        ({"action": "undo"}, "is not an action"),
        ({"action": "retry", "step": "pay", "reason": 5}, "reason: must be a string"),
        ("retry", "a JSON object"),
    ]:
        with pytest.raises(BadRequest, match=says):
            parse_action(body, [FLOW])


def test_metrics_count_outcomes_commands_deadlines_and_durations() -> None:
    index = InstanceIndex(Catalog([FLOW]))
    metrics = Metrics(Catalog([FLOW]), index, lambda: MS(100))
    sim = simulate([placed(0, "o-1"), reserved(2.5, "o-1")])
    index.update(FLOW.name, "o-1", sim.states[(FLOW.name, None, "o-1")], 0)
    states = {"order-fulfilment/o-1": sim.states[(FLOW.name, None, "o-1")]}
    cmd = Command("kafka://x", {"flow": FLOW.name, "name": "ReserveInventory", "action": "retry"})
    lifecycle = [
        Lifecycle("event.duplicate", FLOW.name, "o-1", MS(3), None, {"event": "InventoryReserved"}),
        Lifecycle("step.timed_out", FLOW.name, "o-1", MS(3), "pay"),
        Lifecycle("step.done", FLOW.name, "o-1", MS(3), "reserve"),
    ]
    events = {(FLOW.name, "OrderPlaced"): 1, (FLOW.name, "InventoryReserved"): 2}
    metrics.batch(events, [cmd], lifecycle, states)
    metrics.routed({"kafka://orders.events": 3})
    metrics.dead_lettered("sqs://payments-events")
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(metrics.render().decode())
        for s in fam.samples
    }

    def v(series: str, **labels: str) -> float:
        return values[(series, tuple(sorted(labels.items())))]

    ev = "sagabridge_events_total"
    inv = "kafka://inventory.events"
    assert v(ev, source=inv, event="InventoryReserved", outcome="applied") == 1
    assert v(ev, source=inv, event="InventoryReserved", outcome="duplicate") == 1
    assert v(ev, source="kafka://orders.events", event="", outcome="unmatched") == 3
    assert v(ev, source="sqs://payments-events", event="", outcome="dlq") == 1
    cmds = "sagabridge_commands_total"
    assert v(cmds, flow=FLOW.name, name="ReserveInventory", action="retry") == 1
    assert v("sagabridge_deadlines_missed_total", flow=FLOW.name, step="pay") == 1
    assert v("sagabridge_step_duration_seconds_sum", flow=FLOW.name, step="reserve") == 2.5
    assert v("sagabridge_instances", flow=FLOW.name, status="RUNNING") == 1


def test_openapi_document_is_valid_openapi() -> None:
    from openapi_spec_validator import validate

    doc = document("1.0", [FLOW.name])
    validate(doc)  # type: ignore[arg-type]
    assert doc["paths"]["/api/flows/{flow}/instances"]["get"]["parameters"][0]["schema"] == {
        "type": "string",
        "enum": [FLOW.name],
    }
