"""Engine benchmark: `apply` throughput with 100,000 concurrent instances, and state size.

Targets (issue: foundation): >= 100,000 events/s on one core; <= 2 KiB per RUNNING instance.
Also reported beside it, from the same run: the cost of matching (Matcher.route) per message.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bridge.engine import Associate, Event, Forward, Instance, Matcher, Message, apply
from bridge.engine.inputs import entity_of
from bridge.flow import load_compiled

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_767_261_600_000  # 2026-01-01T10:00:00Z


def make_events(flow_name: str, n: int) -> list[Event]:
    """Four events per order, interleaved across all orders, as the engine receives them."""
    events: list[Event] = []
    at = T0
    for phase, (name, via) in enumerate(
        [
            ("OrderPlaced", None),
            ("InventoryReserved", None),
            ("PaymentCaptured", None),
            ("ShipmentDispatched", "payment_id"),
        ]
    ):
        for i in range(n):
            at += 1
            key = f"p-{i}" if via else f"o-{i}"
            fields: dict[str, Any] = {}
            aliases: tuple[tuple[str, str], ...] = ()
            if name == "OrderPlaced":
                fields = {
                    "$events.OrderPlaced.order.items": ["sku-1", "sku-2"],
                    "$events.OrderPlaced.order.total": 42.5,
                }
            if name == "PaymentCaptured":
                aliases = (("payment_id", f"p-{i}"),)
            events.append(
                Event(
                    flow_name,
                    name,
                    key,
                    f"e-{phase}-{i}",
                    at,
                    at - 5,
                    fields,
                    aliases,
                    via,
                    "kafka://bench",
                )
            )
    return events


def run(flow: Any, events: list[Event]) -> tuple[float, dict[Any, Any], int]:
    states: dict[Any, Any] = {}
    applied = 0
    gc.disable()
    start = time.perf_counter()
    for ev in events:
        pending: list[Any] = [ev]
        while pending:
            inp = pending.pop()
            _, k, a = entity_of(inp)
            ent = (a, k)
            new, effects = apply(flow, states.get(ent), inp)
            applied += 1
            if new is None:
                states.pop(ent, None)
            else:
                states[ent] = new
            for fx in effects:
                if isinstance(fx, Forward):
                    pending.append(fx.event)
                elif isinstance(fx, Associate):
                    pending.append(fx)
    elapsed = time.perf_counter() - start
    gc.enable()
    return elapsed, states, applied


def bench_match(flows: list[Any], n: int) -> float:
    matcher = Matcher(flows)
    msgs = [
        Message(
            "kafka://inventory.events",
            {"type": "InventoryReserved", "event_id": f"e{i}", "order_id": f"o-{i}"},
            {},
            T0 + i,
            f"kafka://inventory.events/0/{i}",
        )
        for i in range(n)
    ]
    start = time.perf_counter()
    for m in msgs:
        matcher.route(m)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    flows = load_compiled([ROOT / "examples/flows/order-fulfilment.yaml"])
    flow = flows[0]
    events = make_events(flow.name, args.instances)
    rates = []
    for _ in range(args.rounds):
        elapsed, states, applied = run(flow, events)
        rates.append(len(events) / elapsed)
    statuses: dict[str, int] = {}
    for s in states.values():
        if isinstance(s, Instance):
            statuses[s.status or "-"] = statuses.get(s.status or "-", 0) + 1
    # A RUNNING instance as it stands mid-flow: started, reserve done, pay active.
    mid_events = [
        e for e in make_events(flow.name, 1) if e.name in ("OrderPlaced", "InventoryReserved")
    ]
    _, mid_states, _ = run(flow, mid_events)
    running = next(s for s in mid_states.values() if isinstance(s, Instance))
    size = len(json.dumps(running.to_json(), separators=(",", ":")).encode())
    match_s = bench_match(flows, 100_000)
    rate = statistics.median(rates)
    print(f"instances            {args.instances:,} (final: {statuses})")
    print(
        f"events               {len(events):,} per round, {applied:,} apply calls "
        f"(associations and forwarded events included)"
    )
    print(
        f"apply throughput     {rate:,.0f} events/s (median of {args.rounds}; "
        f"rounds: {', '.join(f'{r:,.0f}' for r in rates)})"
    )
    print(f"  vs target 100,000  ratio {rate / 100_000:.2f}")
    print(f"RUNNING state size   {size} bytes (JSON)")
    print(f"  vs target 2 KiB    ratio {size / 2048:.2f}")
    print(f"match                {100_000 / match_s:,.0f} messages/s (Matcher.route alone)")
    ok = rate >= 100_000 and size <= 2048
    print("targets              " + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
