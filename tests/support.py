"""Test helpers: flows from YAML text, and the simulator driven with readable lines.

Imported by name (`from support import ...`); fixtures live in conftest.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge.engine.simulator import Simulator
from bridge.flow import CompiledFlow, compile_flow, load_flow_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flows" / "order-fulfilment.yaml"
T0 = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    """The ISO time `seconds` after T0."""
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def flow_from(text: str, name: str = "test.yaml") -> CompiledFlow:
    flow, problems, _ = load_flow_text(text, name)
    assert not problems, problems
    assert flow is not None
    return compile_flow(flow)


def example_flow(**changes: str) -> CompiledFlow:
    """The example flow, with top-level lines or step modes replaced: mode="orchestrate"."""
    text = EXAMPLE.read_text()
    for field, value in changes.items():
        text = text.replace(
            next(line for line in text.splitlines() if line.startswith(f"{field}:")),
            f"{field}: {value}",
        )
    return flow_from(text, "example.yaml")


def run(
    flows: CompiledFlow | list[CompiledFlow],
    lines: list[dict[str, Any]],
    until: float | None = None,
) -> dict[str, Any]:
    sim = Simulator(flows if isinstance(flows, list) else [flows])
    for n, line in enumerate(lines, 1):
        sim.feed_line(json.dumps(line), f"test:{n}")
    if until is not None:
        sim.advance(int((T0 + timedelta(seconds=until)).timestamp() * 1000))
    return sim.result()


def instance(result: dict[str, Any], key: str) -> dict[str, Any]:
    return next(i for i in result["instances"] if i["key"] == key)


def steps(result: dict[str, Any], key: str) -> dict[str, str]:
    return {name: s["status"] for name, s in instance(result, key)["steps"].items()}


def types(result: dict[str, Any], key: str) -> list[str]:
    return [r["type"] for r in result["lifecycle"] if r["key"] == key]


# Messages of the example flow's services.
def placed(t: float, order: str = "o-1", eid: str | None = None, **extra: Any) -> dict[str, Any]:
    value = {
        "type": "OrderPlaced",
        "event_id": eid or f"placed-{order}",
        "order": {"id": order, "items": ["sku-1"], "total": 42, "card": "4111"},
        **extra,
    }
    return {"at": at(t), "source": "kafka://orders.events", "value": value}


def reserved(t: float, order: str = "o-1", eid: str | None = None) -> dict[str, Any]:
    return {
        "at": at(t),
        "source": "kafka://inventory.events",
        "value": {
            "type": "InventoryReserved",
            "event_id": eid or f"res-{order}",
            "order_id": order,
        },
    }


def out_of_stock(t: float, order: str = "o-1") -> dict[str, Any]:
    return {
        "at": at(t),
        "source": "kafka://inventory.events",
        "value": {"type": "OutOfStock", "event_id": f"oos-{order}", "order_id": order},
    }


def released(t: float, order: str = "o-1") -> dict[str, Any]:
    return {
        "at": at(t),
        "source": "kafka://inventory.events",
        "value": {"type": "InventoryReleased", "event_id": f"rel-{order}", "order_id": order},
    }


def captured(t: float, order: str = "o-1", payment: str = "p-1") -> dict[str, Any]:
    return {
        "at": at(t),
        "source": "sqs://payments-events",
        "value": {
            "eventType": "payment.captured",
            "eventId": f"cap-{order}",
            "orderId": order,
            "paymentId": payment,
        },
    }


def declined(t: float, order: str = "o-1") -> dict[str, Any]:
    return {
        "at": at(t),
        "source": "sqs://payments-events",
        "value": {"eventType": "payment.declined", "eventId": f"dec-{order}", "orderId": order},
    }


def dispatched(t: float, payment: str = "p-1", eid: str | None = None) -> dict[str, Any]:
    return {
        "at": at(t),
        "source": "kafka://shipping.events",
        "value": {
            "type": "Dispatched",
            "event_id": eid or f"dis-{payment}",
            "payment_ref": payment,
        },
    }


def clock(t: float) -> dict[str, Any]:
    return {"at": at(t)}
