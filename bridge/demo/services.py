"""The four choreographed services: orders, inventory, payment and shipping.

Each reacts to the event before it, the way a choreography works, and to sagabridge's commands.
A service owes one event per order and step. The first trigger (event or command) decides its
fate: sent, lost (never sent) or slow (sent after the step's deadline). A command delivered
again (same command_id), or a second trigger for the same order, is ignored, so duplicates are
harmless; a `retry` command does the work again and sends the event, which heals a loss.
Nobody in the choreography releases the stock of a declined order: only a ReleaseInventory
command does, and only sagabridge sends one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from bridge.demo.buses import KafkaBus, SqsBus
from bridge.demo.faults import Faults, Ledger
from bridge.demo.flowfile import PAYMENTS, SHIPPING_QUEUE
from bridge.demo.knobs import Bus, Knobs

Emit = Callable[[str], Awaitable[None]]


def _now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StepWork:
    """One service's share of every order: see the module docstring."""

    def __init__(
        self,
        step: str,
        event: str,
        emit: Emit,
        faults: Faults,
        ledger: Ledger,
        slow_delay_s: float,
        background: set[asyncio.Task[None]],
    ) -> None:
        self.step, self.event, self.emit = step, event, emit
        self.faults, self.ledger = faults, ledger
        self.slow_delay_s = slow_delay_s
        self.background = background
        self.handled: set[str] = set()
        self.command_ids: set[str] = set()

    async def trigger(self, order: str, command: dict[str, Any] | None = None) -> None:
        if command is not None:
            if command["command_id"] in self.command_ids:
                self.ledger.duplicates += 1
                return
            self.command_ids.add(command["command_id"])
            self.ledger.received[(command["name"], command["action"])] += 1
        retry = command is not None and command["action"] == "retry"
        if order in self.handled and not retry:
            return
        first = order not in self.handled
        self.handled.add(order)
        fate = self.faults.fate(order, self.step) if first and not retry else "ok"
        if retry and (order, self.step) in self.ledger.lost:
            self.ledger.healed.add((order, self.step))
        if fate == "lost":
            self.ledger.lost[(order, self.step)] = self.event
        elif fate == "slow":
            self.ledger.slow[(order, self.step)] = self.event
            self.ledger.pending += 1
            task = asyncio.create_task(self._later(order))
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        else:
            await self._emit(order)

    async def _later(self, order: str) -> None:
        try:
            await asyncio.sleep(self.slow_delay_s)
            await self._emit(order)
            self.ledger.slow_sent.add((order, self.step))
        finally:
            self.ledger.pending -= 1

    async def _emit(self, order: str) -> None:
        await self.emit(order)
        self.ledger.emitted += 1


class Services:
    """The four services on their buses; `run_forever` reacts until cancelled."""

    def __init__(
        self,
        kafka: KafkaBus,
        sqs: SqsBus | None,
        payments_on: Bus,
        faults: Faults,
        ledger: Ledger,
        slow_delay_s: dict[str, float],
    ) -> None:
        self.kafka, self.sqs, self.payments_on = kafka, sqs, payments_on
        self.faults, self.ledger = faults, ledger
        self.background: set[asyncio.Task[None]] = set()
        self.released: set[str] = set()
        self.payment_of: dict[str, str] = {}  # order -> payment id, as shipping learns them
        self.waiting: dict[str, list[dict[str, Any]]] = {}  # dispatch commands before payment

        def work(step: str, event: str, emit: Emit) -> StepWork:
            return StepWork(step, event, emit, faults, ledger, slow_delay_s[step], self.background)

        self.reserve = work("reserve", "InventoryReserved", self._reserved)
        self.pay = work("pay", "PaymentCaptured", self._paid)
        self.ship = work("ship", "ShipmentDispatched", self._dispatched)

    # -- orders -------------------------------------------------------------------------------

    async def place_orders(self, per_second: float, limit: int, stop: asyncio.Event) -> None:
        """Place orders o-1, o-2, ... at `per_second` until `limit` (0: none) or `stop`."""
        start = time.monotonic()
        n = 0
        while not stop.is_set() and (limit == 0 or n < limit):
            n += 1
            order = f"o-{n}"
            items, total = self.faults.order_lines(order)
            self.ledger.placed.append(order)
            await self.kafka.send(
                "orders.events",
                order,
                {
                    "type": "OrderPlaced",
                    "event_id": f"placed-{order}",
                    "occurred_at": _now_iso(),
                    "order": {"id": order, "items": items, "total": total},
                },
            )
            delay = start + n / per_second - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    # -- inventory ----------------------------------------------------------------------------

    async def _inventory(self, topic: str, value: dict[str, Any]) -> None:
        if topic == "orders.events" and value.get("type") == "OrderPlaced":
            await self.reserve.trigger(str(value["order"]["id"]))
        elif topic == "inventory.commands" and value.get("name") == "ReserveInventory":
            await self.reserve.trigger(str(value["key"]), value)
        elif topic == "inventory.commands" and value.get("name") == "ReleaseInventory":
            order = str(value["key"])
            self.ledger.received[(value["name"], value["action"])] += 1
            if order not in self.released:
                self.released.add(order)
                await self._inventory_event("InventoryReleased", "rel", order)

    async def _inventory_event(self, kind: str, prefix: str, order: str) -> None:
        value = {"type": kind, "event_id": f"{prefix}-{order}", "order_id": order}
        await self.kafka.send("inventory.events", order, value)

    async def _reserved(self, order: str) -> None:
        await self._inventory_event("InventoryReserved", "res", order)

    # -- payment ------------------------------------------------------------------------------

    async def _payment(self, where: str, value: dict[str, Any]) -> None:
        if where == "inventory.events" and value.get("type") == "InventoryReserved":
            await self.pay.trigger(str(value["order_id"]))
        elif value.get("name") == "CapturePayment":
            await self.pay.trigger(str(value["key"]), value)

    async def _paid(self, order: str) -> None:
        declined = self.faults.declined(order)
        if declined:
            self.ledger.declined.add(order)
        value = {
            "eventType": "payment.declined" if declined else "payment.captured",
            "eventId": f"{'dec' if declined else 'cap'}-{order}",
            "orderId": order,
            "paymentId": f"pay-{order}",
            "amount": 0,
        }
        if self.sqs is not None:
            # As an SNS topic would: one copy for whoever tracks payments, one for shipping.
            await self.sqs.send(PAYMENTS["sqs"]["events"].removeprefix("sqs://"), value)
            await self.sqs.send(SHIPPING_QUEUE, value)
        else:
            await self.kafka.send(
                PAYMENTS["kafka"]["events"].removeprefix("kafka://"), order, value
            )

    # -- shipping -----------------------------------------------------------------------------

    async def _shipping(self, where: str, value: dict[str, Any]) -> None:
        if value.get("eventType") == "payment.captured":
            order = str(value["orderId"])
            self.payment_of[order] = str(value["paymentId"])
            await self.ship.trigger(order)
            for command in self.waiting.pop(order, []):
                await self.ship.trigger(order, command)
        elif value.get("name") == "DispatchShipment":
            order = str(value["key"])
            if order in self.payment_of:
                await self.ship.trigger(order, value)
            else:  # shipping needs the payment reference: wait for the payment event
                self.waiting.setdefault(order, []).append(value)

    async def _dispatched(self, order: str) -> None:
        value = {
            "type": "Dispatched",
            "event_id": f"dsp-{order}",
            "payment_ref": self.payment_of[order],
            "carrier": "demo-post",
        }
        await self.kafka.send("shipping.events", order, value)

    # -- running ------------------------------------------------------------------------------

    def tasks(self) -> list[Awaitable[None]]:
        """The consuming loops of inventory, payment and shipping."""
        loops: list[Awaitable[None]] = [
            self.kafka.consume(["orders.events", "inventory.commands"], self._inventory),
        ]
        if self.sqs is not None:
            loops += [
                self.kafka.consume(["inventory.events"], self._payment),
                self.sqs.consume(PAYMENTS["sqs"]["commands"].removeprefix("sqs://"), self._payment),
                self.kafka.consume(["shipping.commands"], self._shipping),
                self.sqs.consume(SHIPPING_QUEUE, self._shipping),
            ]
        else:
            events = PAYMENTS["kafka"]["events"].removeprefix("kafka://")
            commands = PAYMENTS["kafka"]["commands"].removeprefix("kafka://")
            loops += [
                self.kafka.consume(["inventory.events", commands], self._payment),
                self.kafka.consume(["shipping.commands", events], self._shipping),
            ]
        return loops

    async def stop(self) -> None:
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)


# -- on their own: python -m bridge.demo.services -------------------------------------------


async def _partitions(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Partition counts of the topics the services read (created by `sagabridge topics apply`)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    out = {}
    for topic in described:
        if topic.get("error_code") or not topic.get("partitions"):
            raise SystemExit(
                f"demo services: topic {topic['topic']} does not exist; run topics apply"
            )
        out[topic["topic"]] = len(topic["partitions"])
    return out


async def serve(args: argparse.Namespace) -> None:
    """The four services against brokers run by someone else (docker-compose.yml)."""
    knobs = Knobs(
        orders_per_second=args.orders_per_second,
        decline_rate=args.decline_rate,
        lose_rate=args.lose_rate,
        slow_rate=args.slow_rate,
        seed=args.seed,
    )
    payments_on: Bus = "sqs" if args.sqs_endpoint else "kafka"
    topics = ["orders.events", "inventory.events", "inventory.commands", "shipping.commands"]
    if payments_on == "kafka":
        topics += [PAYMENTS["kafka"][k].removeprefix("kafka://") for k in ("events", "commands")]
    kafka = KafkaBus(args.bootstrap, await _partitions(args.bootstrap, topics))
    await kafka.start()
    sqs = None
    if args.sqs_endpoint:
        sqs = SqsBus(args.sqs_endpoint)
        await sqs.start()
        await sqs.create_queues(
            [PAYMENTS["sqs"][k].removeprefix("sqs://") for k in ("events", "commands")]
            + [SHIPPING_QUEUE]
        )
    # The example flow's own deadlines: a slow event arrives after them.
    slow = {"reserve": 30 + 5.0, "pay": 120 + 5.0, "ship": 48 * 3600 + 5.0}
    services = Services(kafka, sqs, payments_on, Faults(knobs), Ledger(), slow)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.ensure_future(t) for t in services.tasks()]
    tasks.append(asyncio.ensure_future(services.place_orders(knobs.orders_per_second, 0, stop)))
    print(f"demo services: orders, inventory, payment (on {payments_on}), shipping", flush=True)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await services.stop()
    await kafka.stop()
    if sqs is not None:
        await sqs.stop()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.demo.services",
        description="The demo's four choreographed services, against your Kafka (and SQS).",
    )
    parser.add_argument("--bootstrap", required=True, help="Kafka HOST:PORT")
    parser.add_argument("--sqs-endpoint", help="SQS endpoint URL; payments then run on SQS")
    parser.add_argument("--orders-per-second", type=float, default=1.0)
    parser.add_argument("--decline-rate", type=float, default=0.1)
    parser.add_argument("--lose-rate", type=float, default=0.05)
    parser.add_argument("--slow-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    return parser


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parser().parse_args(argv)))


if __name__ == "__main__":
    main()
