"""Flow files: every mistake reported at once, each as `file:line: field: what is wrong`."""

from __future__ import annotations

import re

import pytest
from support import EXAMPLE

from bridge.flow import load_flow_text, load_flows
from bridge.flow.durations import format_duration, parse_duration
from bridge.flow.paths import MISSING, compile_path

TEN_MISTAKES = """\
flow: Orders_Flow
key: order_id
mode: watch
start: OrderPlaced
events:
  OrderPlaced: {source: kafka://orders, key: $.order.id}
  Paid: {source: sqs://payments, key: $.ref, via: payment_id}
  Shipped: {source: ftp://shipping, key: $.id}
  OrderPlaced: {source: kafka://again}
steps:
  reserve: {done: Reserved, deadline: 30 seconds}
  pay: {after: [ship], done: Paid}
  ship: {after: [pay], done: Shipped, retry: {attempts: 3}, dedline: 5s}
complete_when: [shipping]
"""


def test_ten_mistakes_are_all_reported_with_line_and_field():
    flow, problems, _ = load_flow_text(TEN_MISTAKES, "orders.yaml")
    assert flow is None
    expected = [
        (1, "flow", "not a flow name"),
        (3, "mode", "'observe', 'shadow' or 'orchestrate'"),
        (7, "events.Paid.via", "no event declares associate 'payment_id'"),
        (8, "events.Shipped.source", "not an endpoint"),
        (9, "events.OrderPlaced", "duplicate event 'OrderPlaced' (first at line 6)"),
        (11, "steps.reserve.done", "unknown event 'Reserved'"),
        (11, "steps.reserve.deadline", "not a duration"),
        (12, "steps.pay.after", "cycle"),
        (13, "steps.ship.retry", "retries need a step deadline"),
        (13, "steps.ship.dedline", "unknown field"),
        (14, "complete_when[0]", "unknown step 'shipping'"),
    ]
    for line, field, words in expected:
        assert any(
            p.startswith(f"orders.yaml:{line}: {field}: ") and words in p for p in problems
        ), (line, field, words, problems)
    for p in problems:
        assert re.match(r"^orders\.yaml:\d+: [\w.\[\]-]+: .+", p), p


def test_the_example_flow_is_valid():
    flows, problems, warnings = load_flows([EXAMPLE])
    assert problems == [] and warnings == []
    assert flows[0].header.flow == "order-fulfilment"


@pytest.mark.parametrize(
    ("snippet", "field", "words"),
    [
        ("start: Nope", "start", "unknown event 'Nope'"),
        ("deadline: 30", "deadline", "needs a unit"),
        ("orphan_ttl: -5s", "orphan_ttl", "not a duration"),
        ("on_failure: retry", "on_failure", "'compensate' or 'fail'"),
        ("version: zero", "version", "integer"),
        ("colour: blue", "colour", "unknown field"),
    ],
)
def test_top_level_mistakes(snippet, field, words):
    base = {
        "start": "start: A",
        "deadline": "",
        "orphan_ttl": "",
        "on_failure": "",
        "version": "",
        "colour": "",
    }
    name = snippet.split(":")[0]
    text = (
        "flow: f\nkey: id\n"
        + "\n".join(snippet if k == name else v for k, v in base.items() if v or k == name)
        + "\nevents:\n  A: {source: kafka://t}\nsteps:\n  s: {done: A}\n"
    )
    _, problems, _ = load_flow_text(text, "f.yaml")
    assert any(f": {field}: " in p and words in p for p in problems), problems


def test_unreachable_steps_and_template_paths():
    text = """flow: f
key: id
start: A
events:
  A: {source: kafka://t}
steps:
  a: {after: [b], done: A}
  b: {after: [a], done: A}
  c: {after: [b], done: A, command: {name: X, to: kafka://c, payload: {x: $.raw, y: $events.Z.v}}}
"""
    _, problems, _ = load_flow_text(text, "f.yaml")
    assert any("steps.c: unreachable" in p for p in problems)
    assert any("steps.c.command.payload.x" in p and "$key or $events" in p for p in problems)
    assert any("steps.c.command.payload.y" in p and "unknown event 'Z'" in p for p in problems)


def test_yaml_syntax_errors_point_at_the_line():
    _, problems, _ = load_flow_text("flow: f\nkey: [unclosed\n", "f.yaml")
    assert len(problems) == 1 and problems[0].startswith("f.yaml:3: (file): not valid YAML")


def test_the_same_flow_version_twice_in_a_directory(tmp_path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(EXAMPLE.read_text())
    _, problems, _ = load_flows([tmp_path])
    assert len(problems) == 1 and "version 1 is also defined in" in problems[0]


def test_unused_events_are_warned_about_not_rejected():
    text = """flow: f
key: id
start: A
events:
  A: {source: kafka://t}
  Unused: {source: kafka://t}
steps:
  s: {done: A}
"""
    flow, problems, warnings = load_flow_text(text, "f.yaml")
    assert flow is not None and problems == []
    assert warnings == [
        "f.yaml:6: events.Unused: warning: declared but never used by start, steps or commands"
    ]


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("30s", 30_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("3d", 259_200_000),
        ("1h30m", 5_400_000),
        ("PT30S", 30_000),
        ("P1DT2H", 93_600_000),
        ("1.5s", 1_500),
    ],
)
def test_durations(text, ms):
    assert parse_duration(text) == ms


@pytest.mark.parametrize("bad", ["30", "3 s", "s", "", "P", "PT", "5x", "0s"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration_round_trips():
    for ms in (500, 30_000, 5_400_000, 93_600_000, 90_500):
        assert parse_duration(format_duration(ms)) == ms


def test_paths_read_payloads_and_headers():
    payload = {"order": {"id": "o-1", "lines": [{"sku": "a"}, {"sku": "b"}]}, "odd.key": 1}
    assert compile_path("$.order.id").read(payload) == "o-1"
    assert compile_path("$.order.lines[1].sku").read(payload) == "b"
    assert compile_path("$['odd.key']").read(payload) == 1
    assert compile_path("$.order.lines[5]").read(payload) is MISSING
    assert compile_path("$.order.id.deeper").read(payload) is MISSING
    assert compile_path("$headers.trace").read_message(payload, {"trace": "t1"}) == "t1"
    ev = compile_path("$events.OrderPlaced.order.total")
    assert ev.kind == "event" and ev.event == "OrderPlaced"
    for bad in ["order.id", "$", "$events.X", "$.a[x]", "$headers."]:
        with pytest.raises(ValueError):
            compile_path(bad)
