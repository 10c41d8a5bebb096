"""The engine's promises, checked on generated event streams for the example flow.

Streams hold several orders, each one's events in a plausible order (sometimes swapped, so some
arrive early and are held or buffered), random gaps between arrivals (sometimes long enough for
step deadlines, the orphan ttl or the flow deadline to pass) and clock-only lines. Each property
runs the simulator, the same engine the Kafka runtime runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import bridge.engine.simulator as simulator_module
from bridge.engine import Simulator, apply, command_id, state_from_json
from bridge.engine.timefmt import iso, parse_time
from bridge.flow import CompiledFlow, compile_flow, load_flow_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flows" / "order-fulfilment.yaml"
BASE = parse_time("2026-01-01T10:00:00Z") or 0
SECOND, MINUTE, HOUR = 1_000, 60_000, 3_600_000

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _flow(mode: str) -> CompiledFlow:
    """The example flow with `mode` as the mode of every step."""
    text = EXAMPLE.read_text(encoding="utf-8").replace("\nmode: observe", f"\nmode: {mode}")
    flow, problems, _ = load_flow_text(text, f"{EXAMPLE.name} ({mode})")
    assert flow is not None, problems
    return compile_flow(flow)


def flows(mode: str) -> list[CompiledFlow]:
    """A fresh compile each time, so two runs share no objects."""
    return [_flow(mode)]


# -- messages of the example flow -------------------------------------------------------------


def message(name: str, key: str, at: int, n: int = 0) -> str:
    """One simulate input line: event `name` of order `key`, arriving at `at` (ms)."""
    eid = f"{key}/{name}/{n}"
    value: dict[str, Any]
    if name == "OrderPlaced":
        source = "kafka://orders.events"
        value = {
            "type": "OrderPlaced",
            "event_id": eid,
            "occurred_at": iso(at - SECOND),
            "order": {"id": key, "items": [f"sku-{key}"], "total": len(key)},
        }
    elif name in ("InventoryReserved", "OutOfStock", "InventoryReleased"):
        source = "kafka://inventory.events"
        value = {"type": name, "event_id": eid, "order_id": key}
    elif name in ("PaymentCaptured", "PaymentDeclined"):
        source = "sqs://payments-events"
        kind = "payment.captured" if name == "PaymentCaptured" else "payment.declined"
        value = {"eventType": kind, "eventId": eid, "orderId": key, "paymentId": f"pay-{key}"}
    else:
        assert name == "ShipmentDispatched"
        source = "kafka://shipping.events"
        value = {"type": "Dispatched", "event_id": eid, "payment_ref": f"pay-{key}"}
    return json.dumps({"at": iso(at), "source": source, "value": value})


def clock_line(at: int) -> str:
    return json.dumps({"at": iso(at)})


JOURNEYS = {
    "complete": ["OrderPlaced", "InventoryReserved", "PaymentCaptured", "ShipmentDispatched"],
    "out_of_stock": ["OrderPlaced", "OutOfStock"],
    "declined": ["OrderPlaced", "InventoryReserved", "PaymentDeclined", "InventoryReleased"],
}

# Gaps between one order's events: mostly seconds, sometimes past the reserve (30s) or pay (2m)
# deadline, now and then past the orphan ttl (1h) or the ship (48h) deadline.
gaps = st.one_of(
    st.integers(0, 20 * SECOND),
    st.integers(0, 4 * MINUTE),
    st.sampled_from([61 * MINUTE, 49 * HOUR]),
)


@st.composite
def order_events(draw: st.DrawFn, key: str) -> list[tuple[int, str]]:
    """One order's (arrival, event name) pairs, in arrival order."""
    names = list(JOURNEYS[draw(st.sampled_from(sorted(JOURNEYS)))])
    if draw(st.booleans()):  # events lost on the way
        names = names[: draw(st.integers(1, len(names)))]
    for _ in range(draw(st.integers(0, 2))):  # a neighbour overtakes
        if len(names) > 1:
            i = draw(st.integers(0, len(names) - 2))
            names[i], names[i + 1] = names[i + 1], names[i]
    at = BASE + draw(st.integers(0, 2 * MINUTE))
    out = []
    for name in names:
        out.append((at, name))
        at += draw(gaps)
    return out


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[str], int]:
    """(lines, until): a recorded stream of several orders, and where the clock ends."""
    keyed: list[tuple[int, int, str]] = []
    n_keys = draw(st.integers(1, 4))
    for k in range(n_keys):
        key = f"o-{k}"
        for at, name in draw(order_events(key)):
            keyed.append((at, len(keyed), message(name, key, at)))
    for at in draw(st.lists(st.integers(BASE, BASE + 80 * HOUR), max_size=3)):
        keyed.append((at, len(keyed), clock_line(at)))
    keyed.sort()  # by arrival; one order's events keep their order (same time: line order)
    last = keyed[-1][0]
    until = last + draw(st.sampled_from([0, 10 * MINUTE, 2 * HOUR, 80 * HOUR]))
    return [line for _, _, line in keyed], until


def simulate(fl: list[CompiledFlow], lines: list[str], until: int) -> dict[str, Any]:
    sim = Simulator(fl)
    for n, line in enumerate(lines, 1):
        sim.feed_line(line, f"stream:{n}")
    sim.advance(until)
    return sim.result()


def at_of(line: str) -> int:
    at = parse_time(json.loads(line)["at"])
    assert at is not None
    return at


def final_views(doc: dict[str, Any]) -> dict[str, Any]:
    """Per instance: status and each step's status, attempts and lateness."""
    return {
        i["key"]: (
            i["status"],
            {
                name: (s["status"], s["attempts"], s.get("late", False))
                for name, s in i["steps"].items()
            },
        )
        for i in doc["instances"]
    }


modes = st.sampled_from(["observe", "shadow", "orchestrate"])


# -- (a) determinism --------------------------------------------------------------------------


@PROPERTY
@given(streams(), modes)
def test_same_input_gives_the_same_output_byte_for_byte(
    stream: tuple[list[str], int], mode: str
) -> None:
    lines, until = stream
    first = json.dumps(simulate(flows(mode), lines, until))
    second = json.dumps(simulate(flows(mode), lines, until))
    assert first == second
    doc = json.loads(first)
    # the generated messages are all valid events of the flow
    assert doc["stats"]["dead_lettered"] == 0
    assert doc["stats"]["unmatched"] == 0


def _fixed_stream(seed: int) -> list[str]:
    rnd = random.Random(seed)
    lines: list[tuple[int, int, str]] = []
    for k in range(12):
        key = f"order-{k}"
        names = list(JOURNEYS[rnd.choice(sorted(JOURNEYS))])
        if rnd.random() < 0.3:
            names = names[: rnd.randint(1, len(names))]
        if rnd.random() < 0.3 and len(names) > 1:
            i = rnd.randrange(len(names) - 1)
            names[i], names[i + 1] = names[i + 1], names[i]
        at = BASE + rnd.randint(0, 10 * MINUTE)
        for name in names:
            lines.append((at, len(lines), message(name, key, at)))
            at += rnd.choice([2 * SECOND, 40 * SECOND, 3 * MINUTE, 2 * HOUR])
    lines.sort()
    return [line for _, _, line in lines]


def test_output_does_not_depend_on_the_process(tmp_path: Path) -> None:
    """Two separate `sagabridge simulate` processes with different hash seeds (so different set
    and dict-of-set iteration orders) print the same bytes."""
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(_fixed_stream(7)) + "\n", encoding="utf-8")
    flow = tmp_path / "orchestrated.yaml"
    text = EXAMPLE.read_text(encoding="utf-8").replace("\nmode: observe", "\nmode: orchestrate")
    flow.write_text(text, encoding="utf-8")
    exe = Path(sys.executable).with_name("sagabridge")
    args = [str(exe), "simulate", "--flow", str(flow), "--events", str(events)]
    args += ["--until", "2026-01-06T00:00:00Z"]
    outputs = []
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(args, capture_output=True, env=env, check=True, timeout=60)
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    doc = json.loads(outputs[0])
    assert len(doc["instances"]) >= 8
    assert doc["commands"]


# -- (b) duplicates ---------------------------------------------------------------------------


@PROPERTY
@given(streams(), modes, st.data())
def test_redelivered_messages_change_nothing_but_duplicate_records(
    stream: tuple[list[str], int], mode: str, data: st.DataObject
) -> None:
    lines, until = stream
    base = simulate(flows(mode), lines, until)
    # messages whose event some instance applied (not those that were late or orphaned)
    applied = {
        h["id"] for inst in base["instances"] for h in inst["history"] if h["type"] == "event"
    }
    candidates = [line for line in lines if "value" in line and _id(line) in applied]
    assume(candidates)
    picked = data.draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=4), "dups")
    redelivered = list(lines)
    for line in picked:
        later = at_of(line) + data.draw(st.integers(0, 3 * HOUR), "delay")
        later = min(later, until)
        copy = json.loads(line)
        copy["at"] = iso(later)
        # after every line that arrives no later than the copy: arrival order is kept
        pos = max(i for i, existing in enumerate(redelivered) if at_of(existing) <= later)
        redelivered.insert(pos + 1, json.dumps(copy))
    again = simulate(flows(mode), redelivered, until)

    assert again["commands"] == base["commands"]
    assert final_views(again) == final_views(base)
    for before, after in zip(base["instances"], again["instances"], strict=True):
        history = [h for h in after["history"] if h["type"] != "event.duplicate"]
        assert history == before["history"]
        assert {k: v for k, v in after.items() if k != "history"} == {
            k: v for k, v in before.items() if k != "history"
        }
    dup_records = [r for r in again["lifecycle"] if r["type"] == "event.duplicate"]
    assert len(dup_records) == len(picked)
    assert sorted(r["id"] for r in dup_records) == sorted(_id(line) for line in picked)
    assert [r for r in again["lifecycle"] if r["type"] != "event.duplicate"] == base["lifecycle"]
    assert again["buffered"] == base["buffered"]
    assert again["dlq"] == base["dlq"] == []
    assert again["stats"]["messages"] == base["stats"]["messages"] + len(picked)
    assert again["stats"]["matched"] == base["stats"]["matched"] + len(picked)


def _id(line: str) -> str:
    value = json.loads(line)["value"]
    return str(value.get("event_id") or value["eventId"])


# -- (c) arrival order within the buffering rules ---------------------------------------------


@st.composite
def shuffled_orders(draw: st.DrawFn) -> tuple[dict[str, str], list[str], list[str]]:
    """(outcome per key, canonical lines, shuffled lines): each order's events arrive within
    25s of each other, so before the reserve deadline (30s) and well within the orphan ttl."""
    outcome: dict[str, str] = {}
    canonical: list[tuple[int, int, str]] = []
    shuffled: list[tuple[int, int, str]] = []
    for k in range(draw(st.integers(1, 4))):
        key = f"o-{k}"
        outcome[key] = draw(st.sampled_from(["complete", "declined"]))
        names = JOURNEYS[outcome[key]][:3] if outcome[key] == "declined" else JOURNEYS["complete"]
        start = BASE + draw(st.integers(0, MINUTE))
        n = len(names)
        times = sorted(draw(st.lists(st.integers(0, 25 * SECOND), min_size=n, max_size=n)))
        order = draw(st.permutations(names))
        for at, name in zip(times, names, strict=True):
            canonical.append((start + at, len(canonical), message(name, key, start + at)))
        for at, name in zip(times, order, strict=True):
            shuffled.append((start + at, len(shuffled), message(name, key, start + at)))
    canonical.sort()
    shuffled.sort()
    return (
        outcome,
        [line for *_, line in canonical],
        [line for *_, line in shuffled],
    )


_FINAL = {
    ("complete", "observe"): ("COMPLETED", {"reserve": "DONE", "pay": "DONE", "ship": "DONE"}),
    ("complete", "orchestrate"): ("COMPLETED", {"reserve": "DONE", "pay": "DONE", "ship": "DONE"}),
    # observe only records the compensation; orchestrate sends ReleaseInventory and waits for
    # InventoryReleased, which never comes here
    ("declined", "observe"): ("FAILED", {"reserve": "DONE", "pay": "FAILED", "ship": "PENDING"}),
    ("declined", "orchestrate"): (
        "COMPENSATING",
        {"reserve": "COMPENSATING", "pay": "FAILED", "ship": "PENDING"},
    ),
}


@PROPERTY
@given(shuffled_orders(), st.sampled_from(["observe", "orchestrate"]))
def test_arrival_order_within_the_buffering_rules_converges(
    orders: tuple[dict[str, str], list[str], list[str]], mode: str
) -> None:
    outcome, canonical, shuffled = orders
    end = max(at_of(line) for line in canonical) + MINUTE
    expected = simulate(flows(mode), canonical, end)
    got = simulate(flows(mode), shuffled, end)
    assert final_views(got) == final_views(expected)
    assert got["buffered"] == []
    for key, result in outcome.items():
        status, steps = _FINAL[(result, mode)]
        view = final_views(got)[key]
        assert view[0] == status
        assert {name: s[0] for name, s in view[1].items()} == steps
        assert not any(s[2] for s in view[1].values())  # nothing was late


# -- (d) command ids --------------------------------------------------------------------------


@PROPERTY
@given(streams())
def test_command_ids_are_stable_across_runs_and_follow_the_formula(
    stream: tuple[list[str], int],
) -> None:
    lines, until = stream
    first = simulate(flows("orchestrate"), lines, until)
    second = simulate(flows("orchestrate"), lines, until)
    ids = [c["command_id"] for c in first["commands"]]
    assert ids == [c["command_id"] for c in second["commands"]]
    assert len(set(ids)) == len(ids)  # each (key, step, action, attempt) goes out once
    version = {i["key"]: i["version"] for i in first["instances"]}
    for c in first["commands"]:
        text = "|".join(
            [c["flow"], str(version[c["key"]]), c["key"], c["step"], c["action"], str(c["attempt"])]
        )
        assert c["command_id"] == hashlib.sha256(text.encode()).hexdigest()[:32]


texts = st.text(min_size=1, max_size=20)


@PROPERTY
@given(
    texts, st.integers(1, 1000), texts, texts, st.sampled_from(["invoke", "retry", "compensate"])
)
def test_command_id_is_the_documented_hash(
    flow: str, version: int, key: str, step: str, action: str
) -> None:
    for attempt in (1, 2, 17):
        text = f"{flow}|{version}|{key}|{step}|{action}|{attempt}"
        expected = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
        assert command_id(flow, version, key, step, action, attempt) == expected


# -- (e) serialised state ---------------------------------------------------------------------


@contextmanager
def states_through_json() -> Iterator[list[int]]:
    """Make the simulator store every state as JSON and reload it before each input, the way
    the state store does; yields a counter of round trips."""
    trips = [0]
    real: Callable[..., Any] = apply

    def reloading_apply(flow: CompiledFlow, state: Any, inp: Any) -> Any:
        if state is not None:
            data = json.loads(json.dumps(state.to_json()))
            state = state_from_json(data)
            assert state.to_json() == data  # nothing lost or changed by the round trip
            trips[0] += 1
        return real(flow, state, inp)

    with mock.patch.object(simulator_module, "apply", reloading_apply):
        yield trips


@PROPERTY
@given(streams(), modes)
def test_state_reloaded_from_json_between_inputs_decides_the_same(
    stream: tuple[list[str], int], mode: str
) -> None:
    lines, until = stream
    plain = simulate(flows(mode), lines, until)
    with states_through_json():
        reloaded = simulate(flows(mode), lines, until)
    assert json.dumps(reloaded) == json.dumps(plain)


def test_states_really_go_through_json_on_a_rich_stream() -> None:
    lines = _fixed_stream(7)
    until = BASE + 80 * HOUR
    plain = simulate(flows("orchestrate"), lines, until)
    with states_through_json() as trips:
        reloaded = simulate(flows("orchestrate"), lines, until)
    assert trips[0] > len(lines)  # every event after a start, every tick, every association
    assert reloaded == plain
