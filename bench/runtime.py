"""Runtime benchmark: raw aiokafka, a bare Faust agent and `sagabridge run`, one broker, one run.

All three consume the same events: N orders x (OrderPlaced, InventoryReserved, PaymentCaptured)
on a Kafka-only copy of the example flow in orchestrate mode, so every event makes the worker send
a command (ReserveInventory, CapturePayment, DispatchShipment). The first two read them
pre-produced; the worker gets them produced at full speed once it is ready (see saga_throughput).
Then, on the same worker, OrderPlaced events at half the measured rate give the event-to-command
latency, split at the routed input-topic message into the routing and the engine stage. The
worker and the broker are warmed up first, so that the broker's JIT is done with the load (see
measure); the bare Faust agent runs before and after, the faster run counts.

    bench/runtime.py                    Tansu (in memory, started and stopped here)
    bench/runtime.py --kafka            Apache Kafka 4 through brokers/kafka.sh
    bench/runtime.py --bootstrap H:P    an existing broker (add --tansu-quirks for Tansu)
    ... --sweep 500,2500,4000           then latency and worker CPU at these fixed rates, and
                                        the worker's CPU fitted as a + b x rate

Targets: sagabridge >= 0.75 x bare Faust (events/s); p99 event-to-command latency < 50 ms.
Figures go to stdout and to bench/results/runtime-<broker>.json. The exit code is 0 whether or
not a target is met (the figures are the point); 1 when the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import harness
from aiokafka import AIOKafkaConsumer
from harness import Broker, Process, assigned, cpu_seconds, http_json, read_all

from bridge.runtime.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EXAMPLE = ROOT / "examples" / "flows" / "order-fulfilment.yaml"
BIN = Path(sys.executable).parent
SOURCES = ["orders.events", "inventory.events", "payments.events"]
COMMANDS = ["inventory.commands", "payments.commands", "shipping.commands"]
FLOW_TOPICS = [*SOURCES, "shipping.events", *COMMANDS]
TOPIC_PARTITIONS = 3
LAG = 1000  # orders between an order's events: its three events land in different micro-batches
SAGA_TARGET = 0.75
P99_TARGET_MS = 50.0
LOAD_LINGER_MS = 5
WARMUP_RATE = 2_500  # events/s: below what the worker takes on a 2-core machine
SWEEP_WARMUP_S = 4.0  # before each --sweep rate: the broker is warm by then


# -- events -------------------------------------------------------------------------------------


def flow_copy(work: Path, uid: str) -> Path:
    """The example flow, orchestrated, on Kafka only (payments moved off SQS), on own topics."""
    text = EXAMPLE.read_text().replace("mode: observe", "mode: orchestrate")
    # The latency phase's orders stop at the reserve step: its 30 s deadline would start
    # retries within the phase, and the phase measures events, not retries.
    text = text.replace("deadline: 30s", "deadline: 10m")
    text = text.replace("sqs://payments-events", "kafka://payments.events")
    text = text.replace("sqs://payments-commands", "kafka://payments.commands")
    for t in FLOW_TOPICS:
        text = text.replace(f"kafka://{t}", f"kafka://{t}.{uid}")
    path = work / "flow.yaml"
    path.write_text(text)
    return path


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def placed(order: str) -> bytes:
    return encode(
        {
            "type": "OrderPlaced",
            "event_id": f"placed-{order}",
            "occurred_at": "2026-01-01T10:00:00Z",
            "order": {"id": order, "items": ["sku-1", "sku-2"], "total": 42.5},
        }
    )


def order_events(orders: int, uid: str, prefix: str = "o") -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value): each order's three events LAG orders apart, orders interleaved.

    Only the topic names depend on `uid`: every phase gets the same keys and values.
    """
    out: list[tuple[str, bytes, bytes]] = []
    for step in range(orders + 2 * LAG):
        if step < orders:
            o = f"{prefix}{step}"
            out.append((f"orders.events.{uid}", o.encode(), placed(o)))
        if 0 <= step - LAG < orders:
            o = f"{prefix}{step - LAG}"
            value = {"type": "InventoryReserved", "event_id": f"res-{o}", "order_id": o}
            out.append((f"inventory.events.{uid}", o.encode(), encode(value)))
        if 0 <= step - 2 * LAG < orders:
            o = f"{prefix}{step - 2 * LAG}"
            value = {
                "eventType": "payment.captured",
                "eventId": f"cap-{o}",
                "orderId": o,
                "paymentId": f"p-{o}",
            }
            out.append((f"payments.events.{uid}", o.encode(), encode(value)))
    return out


# -- 1. raw aiokafka ----------------------------------------------------------------------------


async def raw_consume(bootstrap: str, topics: list[str], expect: int) -> float:
    """Messages/s of a group-less consumer reading and JSON-decoding `expect` messages.

    The clock starts before the first fetch: one fetch can return most of the events.
    """
    async with assigned(bootstrap, topics) as (consumer, _):
        seen = 0
        start = time.perf_counter()
        while seen < expect:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch and time.perf_counter() - start > 60:
                raise RuntimeError(f"raw consumer saw {seen} of {expect} events")
            for records in batch.values():
                for r in records:
                    json.loads(r.value)
                seen += len(records)
        return seen / (time.perf_counter() - start)


# -- 2. bare Faust agent ------------------------------------------------------------------------


def bare_faust(broker: Broker, topics: list[str], expect: int, work: Path) -> dict[str, Any]:
    """bench/bare_faust.py in its own process; it reports first/last event times itself."""
    result = work / "bare-faust.json"
    result.unlink(missing_ok=True)  # an earlier run's
    cmd = [sys.executable, str(ROOT / "bench" / "bare_faust.py"), "--bootstrap", broker.bootstrap]
    cmd += ["--topics", ",".join(topics), "--expect", str(expect), "--result", str(result)]
    cmd += ["--app-id", f"bench-bare-{uuid.uuid4().hex[:8]}"]
    launched = time.time()
    with harness.running(cmd, work / "bare-faust.log", work, {}) as proc:
        while not result.exists():
            if not proc.alive():
                raise RuntimeError(f"bare Faust worker exited:\n{proc.tail()}")
            if time.time() - launched > 180:
                raise RuntimeError(f"bare Faust saw fewer than {expect} events:\n{proc.tail()}")
            time.sleep(0.05)
    found = json.loads(result.read_text())
    seconds = found["last"] - found["first"]
    return {
        "events": found["events"],
        "seconds": round(seconds, 3),
        "events_per_s": round((found["events"] - 1) / seconds, 1),
        "cpu_share": round(found["cpu_s"] / seconds, 2),
        "startup_s": round(found["first"] - launched, 1),
    }


# -- 3. sagabridge end to end -------------------------------------------------------------------


class Saga:
    """One `sagabridge run` worker on the flow copy, with the tests' small group timeouts."""

    def __init__(self, args: argparse.Namespace, broker: Broker, work: Path, uid: str) -> None:
        self.uid = uid
        self.app_id = f"bench-{uid}"
        self.url = f"http://127.0.0.1:{free_port()}"
        self.input_topic = f"{self.app_id}.input"
        self.changelog = f"{self.app_id}-state-changelog"  # Faust's name for table "state"
        self.lifecycle = f"bench.lifecycle.{uid}"
        self.commands = [f"{t}.{uid}" for t in COMMANDS]
        self.env = {
            "SAGABRIDGE_APP_ID": self.app_id,
            "SAGABRIDGE_LIFECYCLE_TOPIC": self.lifecycle,
            "SAGABRIDGE_DLQ_TOPIC": f"bench.dlq.{uid}",
            "SAGABRIDGE_GROUP_SESSION_TIMEOUT": "6",
            "SAGABRIDGE_GROUP_REBALANCE_TIMEOUT": "3",
            "SAGABRIDGE_GROUP_HEARTBEAT_INTERVAL": "1",
            "SAGABRIDGE_INPUT_PARTITIONS": str(args.partitions),
            "SAGABRIDGE_LOG_LEVEL": args.log_level,
        }
        if broker.name == "tansu" or args.tansu_quirks:
            self.env["SAGABRIDGE_PRODUCER_BATCH_BYTES"] = "1"  # crash-safe recovery on Tansu
        self.env.update(kv.split("=", 1) for kv in args.worker_env)
        self.cmd = [str(BIN / "sagabridge"), "run", "--flows", str(flow_copy(work, uid))]
        self.cmd += ["--bootstrap", broker.bootstrap, "--web-port", self.url.rsplit(":", 1)[1]]
        self.log = work / "worker.log"
        self.proc: Process | None = None

    async def wait_idle(self, timeout: float = 60) -> float:
        """Seconds until the worker uses under 15% of a core: the latency phase must not start
        while it still writes the throughput phase's states. Raises after `timeout`."""
        start = time.monotonic()
        before = cpu_seconds(self.check().pid)
        while time.monotonic() - start < timeout:
            await asyncio.sleep(0.5)
            now = cpu_seconds(self.check().pid)
            if before is None or now is None or now - before < 0.075:
                return round(time.monotonic() - start, 1)
            before = now
        raise RuntimeError(f"worker still busy {timeout:.0f} s after the last command")

    @contextlib.contextmanager
    def running(self) -> Iterator[Process]:
        with harness.running(self.cmd, self.log, self.log.parent, self.env) as proc:
            self.proc = proc
            yield proc
        if proc.proc.returncode not in (0, -signal.SIGTERM):
            print(f"warning: the worker exited with {proc.proc.returncode}", file=sys.stderr)

    def check(self) -> Process:
        if self.proc is None or not self.proc.alive():
            raise RuntimeError(f"worker exited:\n{self.proc.tail() if self.proc else ''}")
        return self.proc

    def wait_ready(self, timeout: float = 90) -> None:
        stop = time.monotonic() + timeout
        while time.monotonic() < stop:
            self.check()
            h = http_json(self.url + "/healthz")
            if h and h.get("status") == "ok" and h.get("partitions"):  # recovered and assigned
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready in {timeout:.0f} s:\n{self.check().tail()}")

    @contextlib.asynccontextmanager
    async def command_ends(self, bootstrap: str) -> AsyncIterator[Callable[[], Awaitable[int]]]:
        """A function that sums the command topics' end offsets: one ListOffsets request, where
        a consumer of the records would compete with the worker for the CPUs (and the
        worker's /metrics walks every instance)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = await harness.topic_partitions(consumer, self.commands)

            async def ends() -> int:
                return sum((await consumer.end_offsets(tps)).values())

            yield ends
        finally:
            await consumer.stop()

    async def wait_commands(
        self, ends: Callable[[], Awaitable[int]], count: int, timeout: float
    ) -> None:
        """Until the command topics hold `count` records, or stopped growing for a second
        (Tansu's end offsets can lag its last records: collect_commands reads them)."""
        stop, last, still = time.monotonic() + timeout, -1, 0
        while (now := await ends()) < count and still < 4:
            if time.monotonic() > stop:
                raise RuntimeError(f"{now} of {count} command records in {timeout:.0f} s")
            self.check()
            still = still + 1 if now == last else 0
            last = now
            await asyncio.sleep(0.25)

    async def collect_commands(
        self, bootstrap: str, expect: int, timeout: float, prefix: str
    ) -> list[Any]:
        """Every command record of the orders whose keys start with `prefix`, until `expect`
        distinct command ids came (re-sends included).

        Read, not counted by end offsets: Tansu's end offsets can lag its last records.
        """
        records: list[Any] = []
        ids: set[bytes | None] = set()
        async with assigned(bootstrap, self.commands) as (consumer, _):
            stop = time.monotonic() + timeout
            while len(ids) < expect:
                if time.monotonic() > stop:
                    raise RuntimeError(
                        f"{len(ids)} of {expect} commands in {timeout:.0f} s:\n"
                        + self.check().tail()
                    )
                self.check()
                batch = await consumer.getmany(timeout_ms=200)
                for rs in batch.values():
                    ours = [r for r in rs if r.key.startswith(prefix.encode())]
                    records += ours
                    ids.update(dict(r.headers).get("command_id") for r in ours)
        return records


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The load generator's own collections would hold its loop (measured: up to 109 ms, 357
    events more than 50 ms late in 12 s), and the events it holds count as the worker's."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None) -> Iterator[None]:
    """Sample `pid` into `out` (collapsed stacks) while the block runs; nothing if out is None."""
    if out is None:
        yield
        return
    cmd = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--format", "raw", "--rate", "250"]
    cmd.append("--nonblocking")  # without pausing the worker at each sample
    spy = subprocess.Popen([*cmd, "--output", str(out)], stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        spy.wait(30)


async def saga_throughput(
    saga: Saga, broker: Broker, orders: int, profile: Path | None, prefix: str = "o"
) -> dict[str, Any]:
    """The events are produced once the worker is ready, as fast as the broker takes them.

    Produced before the worker starts, they would be routed by its source consumer while the
    Faust stage is still joining its group: start-up would count as processing time.
    """
    proc = saga.check()
    records = order_events(orders, saga.uid, prefix)
    events = len(records)
    since = int(time.time() * 1000)  # records of an earlier phase are older
    cpu0, bcpu0 = cpu_seconds(proc.pid), cpu_seconds(broker.pid)
    timeout = max(120, events / 200)
    async with saga.command_ends(broker.bootstrap) as ends:
        before = await ends()
        with py_spy(proc.pid, profile):
            producing = asyncio.create_task(harness.produce(broker.bootstrap, records))
            await saga.wait_commands(ends, before + 3 * orders, timeout)
            produced = await producing
    cpu1, bcpu1 = cpu_seconds(proc.pid), cpu_seconds(broker.pid)
    settle = await saga.wait_idle()
    cpu2 = cpu_seconds(proc.pid)
    # Read once the worker is idle; their record timestamps say when it sent them.
    commands = await saga.collect_commands(broker.bootstrap, 3 * orders, timeout, prefix)

    async def this_phase(topic: str) -> list[Any]:
        return [r for r in await read_all(broker.bootstrap, [topic]) if r.timestamp >= since]

    inputs = await this_phase(saga.input_topic)
    changelog = await this_phase(saga.changelog)
    lifecycle = await this_phase(saga.lifecycle)
    # The router sends its first input batch within one micro-batch of the first event consumed.
    start = min(r.timestamp for r in inputs)
    last_command = max(r.timestamp for r in commands)
    last_state = max((r.timestamp for r in changelog), default=last_command)
    seconds = (last_command - start) / 1000
    wall = (max(last_command, last_state) - start) / 1000
    stamps = sorted(r.timestamp for r in inputs)
    inputs_in = sum(len(json.loads(r.value)["i"]) for r in inputs)

    def share(a: float | None, b: float | None) -> float | None:
        return round((b - a) / seconds, 2) if a is not None and b is not None else None

    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1),
        # Until the last state was in the changelog too (durable).
        "events_per_s_to_durable": round(events / wall, 1),
        # Far above events_per_s, or the producer, not the worker, set the pace.
        "produced_per_s": round(produced, 1),
        "commands": len(commands),
        "distinct_commands": len({dict(r.headers).get("command_id") for r in commands}),
        "state_durable_after_last_command_ms": last_state - last_command,
        "input_topic_messages": len(inputs),
        # The micro-batch size the engine saw (DESIGN.md section 2).
        "inputs_per_message": round(inputs_in / len(inputs), 1),
        "changelog_writes": len(changelog),
        "lifecycle_records": len(lifecycle),
        # From the last command until the worker was idle (its last states being written).
        "settle_s": settle,
        "longest_input_gap_ms": max((b - a for a, b in itertools.pairwise(stamps)), default=0),
        # CPU seconds per wall second until the last command (1.0 = one core): below 1, the
        # worker waited (acknowledgements, fetches) rather than computed.
        "worker_cpu_share": share(cpu0, cpu1),
        "broker_cpu_share": share(bcpu0, bcpu1),
        # All the worker's CPU for these events, the states written after the last command too.
        "worker_cpu_us_per_event": round((cpu2 - cpu0) / events * 1e6) if cpu0 and cpu2 else None,
    }


# -- 4. latency ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def by_second(values: list[float], rate: float) -> list[float]:
    """p99 of each second's worth of `values` (in send order)."""
    step = max(1, int(rate))
    return [round(percentile(values[i : i + step], 0.99), 1) for i in range(0, len(values), step)]


async def routed_at(bootstrap: str, topic: str, since: float, prefix: str) -> dict[str, int]:
    """Key -> timestamp (ms) of the input-topic message that first carried its event."""
    found: dict[str, int] = {}
    for r in await read_all(bootstrap, [topic]):
        if r.timestamp >= since:
            for inp in json.loads(r.value)["i"]:
                # ["e", flow, event name, key, ...]: see bridge.engine.wire
                if inp[0] == "e" and inp[3].startswith(prefix):
                    found.setdefault(inp[3], r.timestamp)
    return found


async def latency(
    saga: Saga, broker: Broker, rate: float, seconds: float, warmup: float
) -> dict[str, Any]:
    """OrderPlaced at a steady `rate`; each one's ReserveInventory command matched by key."""
    from aiokafka import AIOKafkaProducer

    bootstrap, broker_pid = broker.bootstrap, broker.pid
    total = int(rate * (warmup + seconds))
    # Own keys per call: the warm-up's orders must not be taken for this call's on the input topic.
    prefix = f"lat{saga.uid}{uuid.uuid4().hex[:4]}-"
    since = time.time() * 1000
    cpu0, bcpu0, own0, wall0 = (
        cpu_seconds(saga.check().pid),
        cpu_seconds(broker_pid),
        time.process_time(),
        time.monotonic(),
    )
    sent: dict[str, float] = {}
    got: dict[str, tuple[float, int]] = {}  # key -> (arrival, command record timestamp)
    late: list[float] = []  # measured events sent behind their schedule (s)
    async with assigned(bootstrap, [saga.commands[0]]) as (consumer, tps):
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolve the end now, before the first command exists
        done = asyncio.Event()

        async def collect() -> None:
            while not done.is_set() or len(got) < len(sent):
                batch = await consumer.getmany(timeout_ms=200)
                now = time.time()
                for records in batch.values():
                    for r in records:
                        key = r.key.decode()
                        if key.startswith(prefix) and key not in got:
                            got[key] = (now, r.timestamp)

        collector = asyncio.create_task(collect())
        # Kafka's own producer default since 4.0 (KIP-1030): a request per 5 ms, not per
        # event. The clock starts before the send, so the linger counts in the latency.
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=LOAD_LINGER_MS)
        await producer.start()
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            pending = []
            for i in range(total):
                delay = t0 + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif i >= rate * warmup:
                    late.append(-delay)
                key = f"{prefix}{i}"
                sent[key] = at = time.time()
                fut = await producer.send(
                    f"orders.events.{saga.uid}",
                    placed(key),
                    key=key.encode(),
                    timestamp_ms=int(at * 1000),
                )
                pending.append(fut)
            achieved = total / (loop.time() - t0)
            # Sent before gathering: gathering this many futures holds the loop for a while,
            # and the last events would wait in the producer meanwhile.
            await producer.flush()
            await asyncio.gather(*pending)
            done.set()
            with contextlib.suppress(TimeoutError):  # what never came counts as missing
                await asyncio.wait_for(asyncio.shield(collector), 30)
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            await producer.stop()
    cpu1, bcpu1 = cpu_seconds(saga.check().pid), cpu_seconds(broker_pid)
    wall = time.monotonic() - wall0
    measured = list(sent)[int(rate * warmup) :]
    to_record = [got[k][1] - sent[k] * 1000 for k in measured if k in got]
    to_arrival = [(got[k][0] - sent[k]) * 1000 for k in measured if k in got]
    if not to_record:
        raise RuntimeError(f"no command came back:\n{saga.check().tail()}")
    routed = await routed_at(bootstrap, saga.input_topic, since, prefix)
    staged = [k for k in measured if k in got and k in routed]
    to_routed = [routed[k] - sent[k] * 1000 for k in staged]
    routed_to_record = [got[k][1] - routed[k] for k in staged]
    return {
        "rate_per_s": round(rate, 1),
        "achieved_rate_per_s": round(achieved, 1),
        "seconds": seconds,
        "warmup_s": warmup,
        "events": len(measured),
        "missing": len(measured) - len(to_record),
        "p50_ms": round(percentile(to_record, 0.50), 1),
        "p99_ms": round(percentile(to_record, 0.99), 1),
        "max_ms": round(max(to_record), 1),
        "arrival_p50_ms": round(percentile(to_arrival, 0.50), 1),
        "arrival_p99_ms": round(percentile(to_arrival, 0.99), 1),
        # Rising from the first to the last second: the worker did not keep up with `rate`.
        "first_second_p50_ms": round(percentile(to_record[: int(rate)], 0.5), 1),
        "last_second_p50_ms": round(percentile(to_record[-int(rate) :], 0.5), 1),
        "p99_ms_by_second": by_second(to_record, rate),
        # Where the time went: the record timestamps of the routed input (the router's send)
        # split each event's latency into the routing stage and the engine stage.
        "stages": {
            "events": len(staged),
            "routing_p50_ms": round(percentile(to_routed, 0.50), 1),
            "routing_p99_ms": round(percentile(to_routed, 0.99), 1),
            "engine_p50_ms": round(percentile(routed_to_record, 0.50), 1),
            "engine_p99_ms": round(percentile(routed_to_record, 0.99), 1),
            "routing_p99_ms_by_second": by_second(to_routed, rate),
            "engine_p99_ms_by_second": by_second(routed_to_record, rate),
        },
        # The load generator's own lag behind its schedule: large, and it was short of CPU.
        "load_late_max_ms": round(max(late, default=0.0) * 1000, 1),
        "load_late_over_10ms": sum(1 for x in late if x > 0.010),
        # Up to the last command: a worker that fell behind spent longer than the send phase.
        "worker_cpu_us_per_event": round((cpu1 - cpu0) / total * 1e6) if cpu0 and cpu1 else None,
        # What else wanted the 2 cores meanwhile: this benchmark's producer and consumer, broker.
        "bench_cpu_share": round((time.process_time() - own0) / wall, 2),
        "broker_cpu_share": round((bcpu1 - bcpu0) / wall, 2) if bcpu0 and bcpu1 else None,
    }


def run_latency(
    saga: Saga, broker: Broker, rate: float, seconds: float, warmup: float
) -> dict[str, Any]:
    """`latency` in a loop of its own, with this process's garbage collector paused."""
    with gc_paused():
        return asyncio.run(latency(saga, broker, rate, seconds, warmup))


def sweep_point(saga: Saga, broker: Broker, rate: float, seconds: float) -> dict[str, Any]:
    """The latency phase at a fixed `rate` on the warm worker: its p99 and its CPU at that rate."""
    lat = run_latency(saga, broker, rate, seconds, SWEEP_WARMUP_S)
    us = lat["worker_cpu_us_per_event"]
    point = {
        "rate_per_s": lat["rate_per_s"],
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "routing_p99_ms": lat["stages"]["routing_p99_ms"],
        "engine_p99_ms": lat["stages"]["engine_p99_ms"],
        "worker_cpu_us_per_event": us,
        "worker_cores": round(us * rate / 1e6, 3) if us else None,
        "broker_cpu_share": lat["broker_cpu_share"],
    }
    print(f"at {rate:,.0f}/s: p99 {point['p99_ms']} ms, worker {point['worker_cores']} cores")
    return point


def cpu_fit(points: list[dict[str, Any]]) -> dict[str, float] | None:
    """Least squares of the worker's cores against the rate: the intercept is what the worker
    spends whatever the rate (mostly per routed batch: about one per batch_ms while events flow,
    whatever their number), the slope what each event adds. Rates of a few hundred per second
    or more: below, each event is a routed batch of its own."""
    xy = [(p["rate_per_s"], p["worker_cores"]) for p in points if p["worker_cores"] is not None]
    if len({x for x, _ in xy}) < 2:
        return None
    slope, intercept = statistics.linear_regression(*zip(*xy, strict=True))
    return {"cores_at_no_rate": round(intercept, 3), "us_per_event": round(slope * 1e6)}


# -- run and report -----------------------------------------------------------------------------


def measure(args: argparse.Namespace, broker: Broker, work: Path) -> dict[str, Any]:
    # One asyncio.run per phase: blocking phases then run outside any loop, so Ctrl-C stops
    # them at once instead of waiting for a loop to notice.
    uid, saga_uid = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    sources = [f"{t}.{uid}" for t in SOURCES]
    topics = [f"{t}.{u}" for t in FLOW_TOPICS for u in (uid, saga_uid)]
    asyncio.run(harness.create_topics(broker.bootstrap, topics, TOPIC_PARTITIONS))
    records = order_events(args.orders, uid)
    n = len(records)
    produced = asyncio.run(harness.produce(broker.bootstrap, records))
    print(f"produced {n:,} events at {produced:,.0f}/s", flush=True)

    rounds = [asyncio.run(raw_consume(broker.bootstrap, sources, n)) for _ in range(3)]
    raw = statistics.median(rounds)
    print(f"raw aiokafka: {raw:,.0f} msg/s", flush=True)

    cold = bare_faust(broker, sources, n, work)  # on the fresh broker; see below
    print(f"bare Faust on the fresh broker: {cold['events_per_s']:,.0f} events/s", flush=True)

    saga = Saga(args, broker, work, saga_uid)
    with saga.running():
        saga.wait_ready()  # start-up and group joins are not measured
        # A fresh broker's JIT compiles under the first load: measured, its compiler threads
        # took 0.2-0.3 of a core for some 20 s of this load, while the phases that followed a
        # one-second warm-up ran. So everything below runs on a warm broker, as in production.
        if args.warmup_orders:
            asyncio.run(saga_throughput(saga, broker, args.warmup_orders, None, prefix="w"))
        if args.warmup_seconds:
            run_latency(saga, broker, WARMUP_RATE, 1.0, args.warmup_seconds)
        print(
            f"warm-up: {args.warmup_orders:,} orders, then {args.warmup_seconds:.0f} s"
            f" at {WARMUP_RATE:,}/s",
            flush=True,
        )
        profile = args.profile and args.profile.with_name(f"{args.profile.name}-throughput.txt")
        thr = asyncio.run(saga_throughput(saga, broker, args.orders, profile))
        print(f"sagabridge: {thr['events_per_s']:,.0f} events/s", flush=True)
        rate = args.rate or thr["events_per_s"] / 2
        profile = args.profile and args.profile.with_name(f"{args.profile.name}-latency.txt")
        with py_spy(saga.check().pid, profile):
            lat = run_latency(saga, broker, rate, args.latency_seconds, args.latency_warmup)
        print(f"latency at {rate:,.0f}/s: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms")
        sweep = [sweep_point(saga, broker, at, args.latency_seconds) for at in (args.sweep or [])]

    warm = bare_faust(broker, sources, n, work)  # on the same warm broker, alone
    print(f"bare Faust on the warm broker: {warm['events_per_s']:,.0f} events/s", flush=True)
    # The faster of its two runs is the baseline: the broker's warmth is the worker's due,
    # not a slower baseline's.
    bare = max(cold, warm, key=lambda b: b["events_per_s"])
    bare = {**bare, "runs_events_per_s": [cold["events_per_s"], warm["events_per_s"]]}
    ratio = thr["events_per_s"] / bare["events_per_s"]
    return {
        "raw_aiokafka": {"events_per_s": round(raw, 1), "rounds": [round(r, 1) for r in rounds]},
        "bare_faust": bare,
        "sagabridge": thr,
        "latency": lat,
        "sweep": {"points": sweep, "fit": cpu_fit(sweep)} if sweep else None,
        "produce_per_s": round(produced, 1),
        "ratios": {
            "sagabridge_over_bare_faust": round(ratio, 3),
            "bare_faust_over_raw": round(bare["events_per_s"] / raw, 3),
        },
        "targets": {"throughput": ratio >= SAGA_TARGET, "p99": lat["p99_ms"] < P99_TARGET_MS},
        "params": {
            "orders": args.orders,
            "warmup_orders": args.warmup_orders,
            "warmup_seconds": args.warmup_seconds,
            "warmup_rate_per_s": WARMUP_RATE,
            "events": n,
            "input_partitions": args.partitions,
            "source_partitions": TOPIC_PARTITIONS,
            "worker_log_level": args.log_level,
            "worker_env": saga.env,
            "worker_env_extra": args.worker_env,
            "latency_seconds": args.latency_seconds,
            "latency_warmup_s": args.latency_warmup,
            "sweep_warmup_s": SWEEP_WARMUP_S if sweep else None,
        },
    }


def git_commit() -> str:
    cmd = ["git", "rev-parse", "--short", "HEAD"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()


def verdict(ok: bool) -> str:
    return "target met" if ok else "NOT met"


def report(doc: dict[str, Any]) -> None:
    raw, bare, saga, lat = doc["raw_aiokafka"], doc["bare_faust"], doc["sagabridge"], doc["latency"]
    st = lat["stages"]
    ratios, targets, p = doc["ratios"], doc["targets"], doc["params"]
    rows = [
        (
            "raw aiokafka consumer",
            f"{raw['events_per_s']:,.0f} msg/s",
            "median of " + ", ".join(f"{x:,.0f}" for x in raw["rounds"]),
        ),
        (
            "bare Faust agent",
            f"{bare['events_per_s']:,.0f} events/s",
            f"{bare['seconds']:.2f} s first to last event, CPU {bare['cpu_share']}; the faster of"
            f" {' and '.join(f'{r:,.0f}' for r in bare['runs_events_per_s'])}"
            " (before the worker, after)",
        ),
        (
            "sagabridge end to end",
            f"{saga['events_per_s']:,.0f} events/s",
            f"{saga['seconds']:.2f} s to the last of {saga['distinct_commands']:,} commands; "
            f"CPU worker {saga['worker_cpu_share']} ({saga['worker_cpu_us_per_event']} us/event), "
            f"broker {saga['broker_cpu_share']}",
        ),
        (
            "",
            "",
            f"{saga['events_per_s_to_durable']:,.0f}/s until the last state was written; "
            f"{saga['inputs_per_message']} inputs per input-topic message, "
            f"{saga['changelog_writes']:,} table writes, {saga['lifecycle_records']:,} lifecycle; "
            f"idle {saga['settle_s']} s after",
        ),
        (
            "latency p50 / p99",
            f"{lat['p50_ms']:.1f} / {lat['p99_ms']:.1f} ms",
            f"{lat['events']:,} OrderPlaced at {lat['rate_per_s']:,.0f}/s for "
            f"{lat['seconds']:.0f} s after {lat['warmup_s']:.0f} s at that rate; "
            "event sent to command record timestamp; "
            f"max {lat['max_ms']:.0f} ms",
        ),
        (
            "  p50 first / last second",
            f"{lat['first_second_p50_ms']:.0f} / {lat['last_second_p50_ms']:.0f} ms",
            "rising: the worker fell behind at this rate"
            if lat["last_second_p50_ms"] - lat["first_second_p50_ms"]
            > max(50, lat["first_second_p50_ms"] / 4)
            else "steady",
        ),
        (
            "  routing / engine stage",
            f"{st['routing_p50_ms']:.0f}+{st['engine_p50_ms']:.0f} / "
            f"{st['routing_p99_ms']:.0f}+{st['engine_p99_ms']:.0f} ms",
            "p50 / p99 of sent to routed (the input-topic message's timestamp), and of routed to"
            " command",
        ),
        (
            "  at a consumer",
            f"{lat['arrival_p50_ms']:.1f} / {lat['arrival_p99_ms']:.1f} ms",
            f"sent to arrival in a consumer of the command topic; {lat['missing']} missing",
        ),
        (
            "",
            "",
            f"CPU: worker {lat['worker_cpu_us_per_event']} us/event; broker "
            f"{lat['broker_cpu_share']}, benchmark {lat['bench_cpu_share']} (load generator, "
            f"behind schedule by up to {lat['load_late_max_ms']:.0f} ms)",
        ),
        (
            "sagabridge / bare Faust",
            f"{ratios['sagabridge_over_bare_faust']:.2f}",
            f"target >= {SAGA_TARGET}: {verdict(targets['throughput'])}",
        ),
        ("bare Faust / raw aiokafka", f"{ratios['bare_faust_over_raw']:.2f}", ""),
        ("p99 latency", f"{lat['p99_ms']:.1f} ms", f"target < 50 ms: {verdict(targets['p99'])}"),
    ]
    print(
        f"\nruntime benchmark, {doc['broker']} at {doc['bootstrap']}: {p['orders']:,} orders = "
        f"{p['events']:,} events after a warm-up of {p['warmup_orders']:,} orders and "
        f"{p['warmup_seconds']:.0f} s at {p['warmup_rate_per_s']:,}/s; "
        f"{p['input_partitions']} input partitions; worker log level "
        f"{p['worker_log_level']}"
    )
    if p["worker_env_extra"]:
        print(f"  worker settings added: {' '.join(p['worker_env_extra'])}")
    for name, figure, note in rows:
        print(f"  {name:<26} {figure:>18}   {note}")
    if doc.get("sweep"):
        print("  at fixed rates (--sweep), each for the latency phase's length on the warm worker:")
        for pt in doc["sweep"]["points"]:
            print(
                f"    {pt['rate_per_s']:>8,.0f}/s   p50 / p99 {pt['p50_ms']:.1f} /"
                f" {pt['p99_ms']:.1f} ms (routing p99 {pt['routing_p99_ms']:.0f}, engine p99"
                f" {pt['engine_p99_ms']:.0f})   worker {pt['worker_cpu_us_per_event']} us/event ="
                f" {pt['worker_cores']} cores"
            )
        if fit := doc["sweep"]["fit"]:
            print(
                f"    worker cores = {fit['cores_at_no_rate']} + rate x {fit['us_per_event']} us"
                " (least squares): the first term is what the worker spends whatever the rate,"
                " mostly per routed batch (one per batch_ms or so while events flow)"
            )
    if saga["produced_per_s"] < 2 * saga["events_per_s"]:
        print(
            f"  warning: events were produced at only {saga['produced_per_s']:,.0f}/s: the "
            "producer, not the worker, may have set the pace"
        )
    print(
        f"  load average {doc['load_before'][0]} before, {doc['load_after'][0]} after, on "
        f"{doc['cpus']} CPUs (above ~0.5 before, something else was running: noisy figures)"
    )


def rates(text: str) -> list[float]:
    try:
        found = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        found = []
    if not found or min(found) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of rates, e.g. 500,2500,5000")
    return found


def setting(text: str) -> str:
    if not text.startswith("SAGABRIDGE_") or "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not SAGABRIDGE_NAME=VALUE")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--kafka", action="store_true", help="start Apache Kafka 4 (kafka.sh)")
    where.add_argument("--bootstrap", help="use this broker, HOST:PORT")
    parser.add_argument("--tansu-quirks", action="store_true", help="--bootstrap is Tansu")
    parser.add_argument("--orders", type=int, default=10_000, help="3 events each")
    parser.add_argument("--partitions", type=int, default=8, help="input topic partitions")
    parser.add_argument(
        "--warmup-orders", type=int, default=3_000, help="orders through the worker first"
    )
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=25.0,
        help=f"then this long at {WARMUP_RATE:,} events/s, before anything is measured",
    )
    parser.add_argument("--log-level", default="info", choices=["warn", "info", "debug"])
    parser.add_argument(
        "--worker-env",
        type=setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra worker setting, e.g. SAGABRIDGE_BATCH_MS=5 (repeatable; recorded)",
    )
    parser.add_argument("--rate", type=float, help="latency phase rate (default: half the max)")
    parser.add_argument("--latency-seconds", type=float, default=12.0)
    parser.add_argument(
        "--sweep",
        type=rates,
        metavar="RATES",
        help="then latency and worker CPU at each of these rates, e.g. 500,2500,5000 (events/s)",
    )
    parser.add_argument(
        "--latency-warmup",
        type=float,
        default=20.0,
        help="seconds at the latency rate before measuring (a fresh broker's JIT settles)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PREFIX",
        help="py-spy the worker: PREFIX-throughput.txt, PREFIX-latency.txt (collapsed stacks)",
    )
    args = parser.parse_args()
    if args.profile is not None and not (BIN / "py-spy").exists():
        parser.error(f"--profile needs py-spy: {BIN / 'pip'} install py-spy")

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: every `finally` runs

    signal.signal(signal.SIGTERM, interrupted)
    harness.quiet_aiokafka()
    name = "external" if args.bootstrap else "kafka" if args.kafka else "tansu"
    work = RESULTS / f"work-{name}"  # logs of the last run, kept for reading
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        with harness.broker(name, args.bootstrap) as broker:
            print(f"broker: {broker.name} at {broker.bootstrap}", flush=True)
            found = measure(args, broker, work)
    except KeyboardInterrupt:
        print("interrupted; every process started here was stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"benchmark failed: {exc}\n(logs in {work})", file=sys.stderr)
        return 1
    doc = {
        "broker": broker.name,
        "bootstrap": broker.bootstrap,
        "commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        **found,
    }
    report(doc)
    out = RESULTS / f"runtime-{broker.name}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"  written to {out.relative_to(ROOT)}; logs in {work.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
