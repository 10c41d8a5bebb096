"""Every rule of DESIGN section 3, one behaviour per test, through the simulator."""

from __future__ import annotations

import hashlib
import json

from support import (
    at,
    captured,
    clock,
    declined,
    dispatched,
    example_flow,
    flow_from,
    instance,
    out_of_stock,
    placed,
    released,
    reserved,
    run,
    steps,
    types,
)

from bridge.engine import Action, Instance, Tick, apply, backoff_ms, command_id
from bridge.engine.inputs import Event
from bridge.engine.state import HISTORY_LIMIT, SEEN_LIMIT, state_from_json


def commands(result, key="o-1"):
    return [
        (c["name"], c["action"], c["attempt"], c["issued_at"])
        for c in result["commands"]
        if c["key"] == key
    ]


def test_happy_path_completes_and_sends_nothing_in_observe(example):
    r = run(example, [placed(0), reserved(5), captured(20), dispatched(60)])
    assert instance(r, "o-1")["status"] == "COMPLETED"
    assert steps(r, "o-1") == {"reserve": "DONE", "pay": "DONE", "ship": "DONE"}
    assert r["commands"] == []
    assert types(r, "o-1") == [
        "instance.started",
        "step.activated",
        "step.done",
        "step.activated",
        "step.done",
        "step.activated",
        "step.done",
        "instance.completed",
    ]


def test_orchestrate_sends_the_command_with_a_deterministic_envelope():
    flow = example_flow(mode="orchestrate")
    r = run(flow, [placed(0)])
    [cmd] = r["commands"]
    expected_id = hashlib.sha256(b"order-fulfilment|1|o-1|reserve|invoke|1").hexdigest()[:32]
    assert cmd == {
        "command_id": expected_id,
        "name": "ReserveInventory",
        "flow": "order-fulfilment",
        "key": "o-1",
        "step": "reserve",
        "action": "invoke",
        "attempt": 1,
        "issued_at": at(0).replace("Z", ".000Z"),
        "payload": {"order_id": "o-1", "items": ["sku-1"]},
        "to": "kafka://inventory.commands",
    }
    assert command_id("order-fulfilment", 1, "o-1", "reserve", "invoke", 1) == expected_id
    assert "command.sent" in types(r, "o-1")


RETRY_FLOW = """
flow: retrying
key: id
mode: orchestrate
events:
  Start: {source: kafka://t, match: {type: start}, key: $.id}
  Done: {source: kafka://t, match: {type: done}, key: $.id}
  Undone: {source: kafka://t, match: {type: undone}, key: $.id}
start: Start
steps:
  first:
    done: Done
    deadline: 10s
    retry: {attempts: 4, backoff: BACKOFF, initial: 2s, max: MAX, jitter: 0}
    command: {name: Go, to: kafka://cmds, payload: {id: $key}}
    compensate: {name: Undo, to: kafka://cmds, payload: {id: $key}, done: Undone}
"""


def ev(t, kind, key="k"):
    return {"at": at(t), "source": "kafka://t", "value": {"type": kind, "id": key}}


def start(t, key="k"):
    return {"at": at(t), "source": "kafka://t", "value": {"type": "start", "id": key}}


def done(t, key="k", kind="done"):
    return {"at": at(t), "source": "kafka://t", "value": {"type": kind, "id": key}}


def retry_times(backoff, max_="1h"):
    flow = flow_from(RETRY_FLOW.replace("BACKOFF", backoff).replace("MAX", max_))
    r = run(flow, [start(0)], until=1000)
    return r, [(c["action"], c["attempt"], c["issued_at"]) for c in r["commands"]]


def test_exponential_retries_after_each_deadline_then_time_out_final():
    r, sent = retry_times("exponential")
    # attempt n+1 goes initial * 2^(n-1) after attempt n's deadline; each restarts the deadline
    assert sent == [
        ("invoke", 1, at(0).replace("Z", ".000Z")),
        ("retry", 2, at(12).replace("Z", ".000Z")),  # deadline 10 + 2
        ("retry", 3, at(26).replace("Z", ".000Z")),  # deadline 22 + 4
        ("retry", 4, at(44).replace("Z", ".000Z")),  # deadline 36 + 8
    ]
    inst = instance(r, "k")
    assert inst["steps"]["first"] == {
        **inst["steps"]["first"],
        "status": "TIMED_OUT",
        "attempts": 4,
    }
    assert inst["status"] == "FAILED"
    timed_out = [x for x in r["lifecycle"] if x["type"] == "step.timed_out"]
    assert len(timed_out) == 1 and timed_out[0]["at"] == at(54).replace("Z", ".000Z")
    assert timed_out[0]["final"] is True


def test_linear_and_fixed_backoff_and_the_cap():
    _, linear = retry_times("linear")
    assert [t for *_, t in linear] == [at(s).replace("Z", ".000Z") for s in (0, 12, 26, 42)]
    _, fixed = retry_times("fixed")
    assert [t for *_, t in fixed] == [at(s).replace("Z", ".000Z") for s in (0, 12, 24, 36)]
    _, capped = retry_times("exponential", "3s")
    assert [t for *_, t in capped] == [at(s).replace("Z", ".000Z") for s in (0, 12, 25, 38)]


def test_jitter_is_derived_from_the_command_id_within_its_band():
    flow = example_flow()
    step = flow.steps[flow.step_index["reserve"]]  # initial 5s, jitter 0.1
    delays = set()
    for n in range(200):
        cid = command_id("order-fulfilment", 1, f"o-{n}", "reserve", "retry", 2)
        d = backoff_ms(step, 1, cid)
        assert 4_500 <= d <= 5_500
        assert d == backoff_ms(step, 1, cid)  # same id, same delay
        delays.add(d)
    assert len(delays) > 50  # spread, not a constant


def test_observe_deadline_times_out_but_a_late_done_still_completes():
    r = run(example_flow(), [placed(0), clock(31), reserved(40)])
    inst = instance(r, "o-1")
    assert inst["steps"]["reserve"]["status"] == "DONE"
    assert inst["steps"]["reserve"]["late"] is True
    assert inst["steps"]["pay"]["status"] == "ACTIVE"
    assert inst["status"] == "RUNNING"
    assert types(r, "o-1")[:4] == [
        "instance.started",
        "step.activated",
        "step.timed_out",
        "step.done",
    ]
    assert r["commands"] == []


def test_shadow_records_what_it_would_send_and_sends_nothing():
    r = run(example_flow(mode="shadow"), [placed(0), clock(31)])
    would = [x for x in r["lifecycle"] if x["type"] == "command.would_send"]
    assert [(w["action"], w["attempt"]) for w in would] == [("invoke", 1), ("retry", 2)]
    assert r["commands"] == []
    assert instance(r, "o-1")["steps"]["reserve"]["status"] == "TIMED_OUT"


def test_orchestrated_failure_compensates_in_reverse_order_and_waits_for_done():
    flow = flow_from("""
flow: comp
key: id
mode: orchestrate
events:
  S: {source: kafka://t, match: {type: s}, key: $.id}
  A: {source: kafka://t, match: {type: a}, key: $.id}
  B: {source: kafka://t, match: {type: b}, key: $.id}
  C: {source: kafka://t, match: {type: c}, key: $.id}
  Cfail: {source: kafka://t, match: {type: cfail}, key: $.id}
  UndoneA: {source: kafka://t, match: {type: undone-a}, key: $.id}
start: S
steps:
  a: {done: A, compensate: {name: UndoA, to: kafka://x, done: UndoneA}}
  b: {done: B, compensate: {name: UndoB, to: kafka://x}}
  c: {after: [a, b], done: C, failed: Cfail}
""")
    r = run(flow, [ev(0, "s"), ev(1, "b"), ev(2, "a"), ev(3, "cfail")])
    # a completed last, so it is compensated first; it waits for UndoneA before b's goes out
    assert [c["name"] for c in r["commands"]] == ["UndoA"]
    assert instance(r, "k")["status"] == "COMPENSATING"
    assert steps(r, "k")["a"] == "COMPENSATING"
    r = run(flow, [ev(0, "s"), ev(1, "b"), ev(2, "a"), ev(3, "cfail"), ev(4, "undone-a")])
    assert [c["name"] for c in r["commands"]] == ["UndoA", "UndoB"]
    assert all(c["action"] == "compensate" for c in r["commands"])
    assert instance(r, "k")["status"] == "COMPENSATED"
    assert steps(r, "k") == {"a": "COMPENSATED", "b": "COMPENSATED", "c": "FAILED"}
    assert types(r, "k")[-1] == "instance.compensated"


def test_parallel_steps_join_only_when_all_predecessors_are_done():
    flow = flow_from("""
flow: join
key: id
events:
  S: {source: kafka://t, match: {type: s}, key: $.id}
  A: {source: kafka://t, match: {type: a}, key: $.id}
  B: {source: kafka://t, match: {type: b}, key: $.id}
  C: {source: kafka://t, match: {type: c}, key: $.id}
start: S
steps:
  a: {done: A}
  b: {done: B}
  c: {after: [a, b], done: C}
""")
    r = run(flow, [ev(0, "s"), ev(1, "a")])
    assert steps(r, "k") == {"a": "DONE", "b": "ACTIVE", "c": "PENDING"}
    r = run(flow, [ev(0, "s"), ev(1, "a"), ev(2, "b"), ev(3, "c")])
    assert instance(r, "k")["status"] == "COMPLETED"


def test_observe_failure_only_records_compensations():
    r = run(example_flow(), [placed(0), reserved(5), declined(10)])
    inst = instance(r, "o-1")
    assert inst["status"] == "FAILED"
    assert r["commands"] == []
    assert any(
        h["type"] == "compensation.recorded" and h["step"] == "reserve" for h in inst["history"]
    )
    assert types(r, "o-1")[-2:] == ["step.failed", "instance.failed"]


def test_on_failure_fail_compensates_nothing():
    flow = example_flow(mode="orchestrate", on_failure="fail")
    r = run(flow, [placed(0), reserved(5), declined(10)])
    assert instance(r, "o-1")["status"] == "FAILED"
    assert [c["action"] for c in r["commands"]] == ["invoke", "invoke"]


def test_orchestrated_decline_compensates_the_reservation():
    flow = example_flow(mode="orchestrate")
    r = run(flow, [placed(0), reserved(5), declined(10), released(12)])
    assert [(c["name"], c["action"]) for c in r["commands"]] == [
        ("ReserveInventory", "invoke"),
        ("CapturePayment", "invoke"),
        ("ReleaseInventory", "compensate"),
    ]
    assert instance(r, "o-1")["status"] == "COMPENSATED"


def test_flow_deadline_times_the_instance_out():
    r = run(example_flow(deadline="1m"), [placed(0), reserved(5)], until=61)
    inst = instance(r, "o-1")
    assert inst["status"] == "TIMED_OUT"
    assert types(r, "o-1")[-1] == "instance.timed_out"
    # with orchestration, the reservation is compensated and the instance ends COMPENSATED
    flow = example_flow(deadline="1m", mode="orchestrate")
    r = run(flow, [placed(0), reserved(5), clock(61), released(62)])
    assert instance(r, "o-1")["status"] == "COMPENSATED"
    assert r["commands"][-1]["name"] == "ReleaseInventory"


def test_out_of_order_done_is_held_until_the_step_activates():
    flow = example_flow(mode="orchestrate")
    r = run(flow, [placed(0), captured(2), reserved(5)])
    inst = instance(r, "o-1")
    assert steps(r, "o-1") == {"reserve": "DONE", "pay": "DONE", "ship": "ACTIVE"}
    # pay's command goes out on activation although its done is held: commands never depend
    # on the order events arrived in
    assert [c["name"] for c in r["commands"]] == [
        "ReserveInventory",
        "CapturePayment",
        "DispatchShipment",
    ]
    assert any(h["type"] == "event.held" for h in inst["history"])


def test_events_before_start_are_buffered_and_replayed():
    r = run(example_flow(), [reserved(0), placed(10)])
    assert steps(r, "o-1")["reserve"] == "DONE"
    assert r["buffered"] == []


def test_events_whose_start_never_comes_are_orphaned_after_the_ttl():
    r = run(example_flow(), [reserved(0)], until=3599)
    assert r["instances"] == [] and len(r["buffered"]) == 1
    r = run(example_flow(), [reserved(0)], until=3600)
    assert [(x["type"], x["event"], x["at"]) for x in r["lifecycle"]] == [
        ("event.orphaned", "InventoryReserved", at(3600).replace("Z", ".000Z"))
    ]
    assert r["buffered"] == []


def test_an_event_via_an_association_not_yet_recorded_waits_for_it():
    r = run(example_flow(), [placed(0), reserved(1), dispatched(2), captured(3)])
    assert instance(r, "o-1")["status"] == "COMPLETED"
    r = run(example_flow(), [dispatched(0, payment="p-404")], until=3600)
    [orphan] = r["lifecycle"]
    assert orphan["type"] == "event.orphaned" and orphan["via"] == "payment_id"


def test_duplicates_are_ignored_counted_and_recorded():
    once = run(example_flow(), [placed(0), reserved(5)])
    twice = run(example_flow(), [placed(0), reserved(5), reserved(6), placed(7)])
    assert steps(once, "o-1") == steps(twice, "o-1")
    dups = [x for x in twice["lifecycle"] if x["type"] == "event.duplicate"]
    assert [d["event"] for d in dups] == ["InventoryReserved", "OrderPlaced"]


def test_events_after_the_end_are_late_and_change_nothing(example):
    lines = [placed(0), reserved(5), captured(20), dispatched(60)]
    r = run(example, [*lines, reserved(70, eid="res-again")])
    assert instance(r, "o-1")["status"] == "COMPLETED"
    assert types(r, "o-1")[-1] == "event.late"


def test_operator_retry_skip_and_terminate():
    flow = example_flow(mode="orchestrate")
    base = [placed(0), reserved(5), declined(10)]  # pay FAILED, reservation compensated
    r = run(flow, base)
    assert instance(r, "o-1")["status"] == "COMPENSATING"

    flow = example_flow()  # observe: nothing compensated, the instance can be revived
    lines = [placed(0), reserved(5), declined(10)]
    sim_lines = [*lines]
    from bridge.engine.simulator import Simulator

    sim = Simulator([flow])
    for n, line in enumerate(sim_lines):
        sim.feed_line(json.dumps(line), f"t:{n}")
    t = 20 * 1000 + int(__import__("support").T0.timestamp() * 1000)
    sim.run(Action("order-fulfilment", "o-1", t, "retry", "pay", by="alice"))
    doc = sim.result()
    inst = instance(doc, "o-1")
    assert inst["status"] == "RUNNING"
    assert inst["steps"]["pay"] == {**inst["steps"]["pay"], "status": "ACTIVE", "attempts": 2}
    retry = doc["commands"][-1]
    assert (retry["name"], retry["action"], retry["attempt"]) == ("CapturePayment", "retry", 2)
    sim.run(Action("order-fulfilment", "o-1", t + 1, "skip", "pay", by="bob"))
    assert steps(sim.result(), "o-1")["ship"] == "ACTIVE"
    sim.run(Action("order-fulfilment", "o-1", t + 2, "skip", "nope", by="bob"))
    rejected = sim.result()["lifecycle"][-1]
    assert rejected["type"] == "action.rejected" and "unknown step" in rejected["reason"]
    sim.run(Action("order-fulfilment", "o-1", t + 3, "terminate", by="carol"))
    doc = sim.result()
    assert instance(doc, "o-1")["status"] == "TERMINATED"
    actions = [h for h in instance(doc, "o-1")["history"] if h["type"] == "action"]
    assert [(a["action"], a["by"]) for a in actions] == [
        ("retry", "alice"),
        ("skip", "bob"),
        ("skip", "bob"),
        ("terminate", "carol"),
    ]


def test_a_stale_tick_changes_nothing(example):
    ev = Event("order-fulfilment", "OrderPlaced", "o-1", "e1", 1_000, None, {}, (), None, "")
    state, effects = apply(example, None, ev)
    assert isinstance(state, Instance)
    before = json.dumps(state.to_json())
    state, effects = apply(example, state, Tick("order-fulfilment", "o-1", 2_000))
    assert effects == [] and json.dumps(state.to_json()) == before


def test_history_and_duplicate_memory_are_bounded(example):
    state = None
    for n in range(HISTORY_LIMIT + 50):
        ev = Event(
            "order-fulfilment",
            "OrderPlaced" if n == 0 else "InventoryReleased",
            "o-1",
            f"e{n}",
            1_000 + n,
            None,
            {},
            (),
            None,
            "",
        )
        state, _ = apply(example, state, ev)
    assert isinstance(state, Instance)
    assert len(state.history) == HISTORY_LIMIT and state.dropped > 0
    assert len(state.seen) == SEEN_LIMIT


def test_state_keeps_only_what_the_flow_references(example):
    r_state = None
    ev = Event(
        "order-fulfilment",
        "OrderPlaced",
        "o-1",
        "e1",
        1_000,
        None,
        {"$events.OrderPlaced.order.items": ["a"]},
        (),
        None,
        "",
    )
    r_state, _ = apply(example, r_state, ev)
    assert r_state is not None
    text = json.dumps(r_state.to_json())
    assert "4111" not in text  # the card number in the payload is never kept
    restored = state_from_json(json.loads(text))
    assert json.dumps(restored.to_json()) == text


def test_the_start_event_can_finish_a_first_step():
    flow = flow_from("""
flow: self-start
key: id
mode: orchestrate
events:
  S: {source: kafka://t, match: {type: s}, key: $.id}
start: S
steps:
  only: {done: S, command: {name: X, to: kafka://c}}
""")
    r = run(flow, [{"at": at(0), "source": "kafka://t", "value": {"type": "s", "id": "k"}}])
    assert instance(r, "k")["status"] == "COMPLETED"
    assert [c["name"] for c in r["commands"]] == ["X"]


def test_new_instances_take_the_highest_version_old_ones_keep_theirs():
    v1 = flow_from(RETRY_FLOW.replace("BACKOFF", "fixed").replace("MAX", "1h"))
    v2 = flow_from(
        RETRY_FLOW.replace("BACKOFF", "fixed")
        .replace("MAX", "1h")
        .replace("key: id", "version: 2\nkey: id")
    )
    r = run([v1], [start(0, "old")])
    assert instance(r, "old")["version"] == 1
    from bridge.engine.simulator import Simulator

    sim = Simulator([v1])
    sim.feed_line(json.dumps(start(0, "old")), "l1")
    state = sim.states[("retrying", None, "old")]
    sim2 = Simulator([v1, v2])
    sim2.states[("retrying", None, "old")] = state
    sim2.feed_line(json.dumps(start(1, "new")), "l2")
    sim2.feed_line(json.dumps(done(2, "old")), "l3")
    doc = sim2.result()
    assert instance(doc, "new")["version"] == 2
    assert instance(doc, "old")["version"] == 1
    assert instance(doc, "old")["status"] == "COMPLETED"


def test_out_of_stock_fails_the_instance_in_observe(example):
    r = run(example, [placed(0), out_of_stock(3)])
    assert instance(r, "o-1")["status"] == "FAILED"
    assert instance(r, "o-1")["reason"] == "step reserve failed"


def test_a_compensation_confirmed_before_it_was_awaited_does_not_wait():
    flow = example_flow(mode="orchestrate")
    # InventoryReleased overtakes the decline (it travels on another topic)
    r = run(flow, [placed(0), reserved(5), released(6), declined(10)])
    assert instance(r, "o-1")["status"] == "COMPENSATED"
    assert r["commands"][-1]["name"] == "ReleaseInventory"
