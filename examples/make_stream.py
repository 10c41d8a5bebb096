"""Write a recorded day of orders for the example flow: `python examples/make_stream.py > F`.

Deterministic (fixed seed): most orders complete; some lose an event, some are declined, some
arrive out of order, some events are delivered twice.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 1, 1, 9, 0, 0, tzinfo=UTC)


def main(orders: int = 60, seed: int = 7) -> None:
    rnd = random.Random(seed)
    lines: list[tuple[float, dict[str, object]]] = []

    def emit(t: float, source: str, value: dict[str, object]) -> None:
        lines.append((t, {"source": source, "value": value}))

    for n in range(orders):
        order, payment = f"o-{n + 1}", f"p-{n + 1}"
        t = n * 20 + rnd.uniform(0, 5)
        emit(
            t,
            "kafka://orders.events",
            {
                "type": "OrderPlaced",
                "event_id": f"ord-{n}",
                "occurred_at": None,
                "order": {
                    "id": order,
                    "items": [f"sku-{rnd.randint(1, 9)}"],
                    "total": rnd.randint(10, 300),
                },
            },
        )
        fate = rnd.random()
        t_res = t + rnd.uniform(1, 10)
        if fate < 0.06:
            emit(
                t_res,
                "kafka://inventory.events",
                {"type": "OutOfStock", "event_id": f"oos-{n}", "order_id": order},
            )
            continue
        if fate < 0.12:
            continue  # the reservation event is lost: reserve times out
        reserved = {"type": "InventoryReserved", "event_id": f"res-{n}", "order_id": order}
        emit(t_res, "kafka://inventory.events", reserved)
        if fate < 0.17:
            emit(t_res + 2, "kafka://inventory.events", reserved)  # delivered twice
        t_pay = t_res + rnd.uniform(2, 30)
        if fate < 0.24:
            emit(
                t_pay,
                "sqs://payments-events",
                {"eventType": "payment.declined", "eventId": f"dec-{n}", "orderId": order},
            )
            continue
        emit(
            t_pay,
            "sqs://payments-events",
            {
                "eventType": "payment.captured",
                "eventId": f"cap-{n}",
                "orderId": order,
                "paymentId": payment,
            },
        )
        if fate < 0.30:
            continue  # the dispatch is lost: ship stays active
        # some dispatches overtake the payment event: held until the association arrives
        t_ship = t_pay + (rnd.uniform(-1.5, -0.5) if fate > 0.92 else rnd.uniform(30, 600))
        emit(
            t_ship,
            "kafka://shipping.events",
            {"type": "Dispatched", "event_id": f"dis-{n}", "payment_ref": payment},
        )
    lines.sort(key=lambda x: x[0])
    for t, line in lines:
        at = (T0 + timedelta(seconds=t)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        value = line["value"]
        if isinstance(value, dict) and "occurred_at" in value:
            value["occurred_at"] = at
        sys.stdout.write(json.dumps({"at": at, **line}) + "\n")
    end = T0 + timedelta(seconds=orders * 20 + 3600)
    sys.stdout.write(json.dumps({"at": end.isoformat().replace("+00:00", "Z")}) + "\n")


if __name__ == "__main__":
    main()
