"""Runtime benchmark: raw aiokafka, a bare Faust agent and `sagabridge run`, one broker, one run.

All three consume the same pre-produced events: N orders x (OrderPlaced, InventoryReserved,
PaymentCaptured) on a Kafka-only copy of the example flow in orchestrate mode, so every event
makes the worker send a command (ReserveInventory, CapturePayment, DispatchShipment). Then, on
the same worker, OrderPlaced events at half the measured rate give the event-to-command latency.

    bench/runtime.py                    Tansu (in-memory, started and stopped here)
    bench/runtime.py --kafka            Apache Kafka 4 through brokers/kafka.sh
    bench/runtime.py --bootstrap H:P    an existing broker

Targets: sagabridge >= 0.75 x bare Faust (events/s); p99 event-to-command latency < 50 ms.
Figures go to stdout and to bench/results/runtime-<broker>.json; the exit code is 0 whether or
not a target is met (the figures are the point), 1 only when the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from pathlib import Path
from typing import Any

import harness
from harness import Broker, Process, assigned, cpu_seconds, http_json, read_all

from bridge.runtime.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EXAMPLE = ROOT / "examples" / "flows" / "order-fulfilment.yaml"
SAGABRIDGE = str(Path(sys.executable).parent / "sagabridge")
SOURCES = ["orders.events", "inventory.events", "payments.events"]
COMMANDS = ["inventory.commands", "payments.commands", "shipping.commands"]
FLOW_TOPICS = [*SOURCES, "shipping.events", *COMMANDS]
TOPIC_PARTITIONS = 3
LAG = 1000  # orders between an order's events: each of its events lands in another micro-batch
SAGA_TARGET = 0.75
P99_TARGET_MS = 50.0


# -- events -------------------------------------------------------------------------------------


def flow_copy(work: Path, uid: str) -> Path:
    """The example flow, orchestrated, on Kafka only (payments moved off SQS), on own topics."""
    text = EXAMPLE.read_text().replace("mode: observe", "mode: orchestrate")
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


def order_events(uid: str, orders: int) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value): each order's three events LAG orders apart, orders interleaved."""
    out: list[tuple[str, bytes, bytes]] = []
    for step in range(orders + 2 * LAG):
        if step < orders:
            o = f"o{step}"
            out.append((f"orders.events.{uid}", o.encode(), placed(o)))
        if 0 <= step - LAG < orders:
            o = f"o{step - LAG}"
            value = {"type": "InventoryReserved", "event_id": f"res-{o}", "order_id": o}
            out.append((f"inventory.events.{uid}", o.encode(), encode(value)))
        if 0 <= step - 2 * LAG < orders:
            o = f"o{step - 2 * LAG}"
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

    The clock starts before the first fetch: a first batch can hold most of the events.
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
    result = work / "bare-faust.json"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "bare_faust.py"),
        "--bootstrap",
        broker.bootstrap,
        "--topics",
        ",".join(topics),
        "--expect",
        str(expect),
        "--result",
        str(result),
        "--app-id",
        f"bench-bare-{work.name}",
    ]
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
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.input_topic = f"{self.app_id}.input"
        self.changelog = f"{self.app_id}-state-changelog"
        self.lifecycle = f"bench.lifecycle.{uid}"
        self.commands = [f"{t}.{uid}" for t in COMMANDS]
        env = {
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
            env["SAGABRIDGE_PRODUCER_BATCH_BYTES"] = "1"  # crash-safe recovery on Tansu
        cmd = [SAGABRIDGE, "run", "--flows", str(flow_copy(work, uid))]
        cmd += ["--bootstrap", broker.bootstrap, "--web-port", str(self.port)]
        self.proc = Process(cmd, work / "worker.log", work, env)

    def wait_ready(self, timeout: float = 90) -> None:
        stop = time.monotonic() + timeout
        while time.monotonic() < stop:
            if not self.proc.alive():
                raise RuntimeError(f"worker exited:\n{self.proc.tail()}")
            h = http_json(self.url + "/healthz")
            if h and h.get("status") == "ok":
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready in {timeout:.0f} s:\n{self.proc.tail()}")

    async def wait_commands(self, bootstrap: str, expect: int, timeout: float) -> None:
        async with assigned(bootstrap, self.commands) as (consumer, tps):
            stop = time.monotonic() + timeout
            count = 0
            while time.monotonic() < stop:
                count = await harness.count_records(consumer, tps)
                if count >= expect:
                    return
                if not self.proc.alive():
                    raise RuntimeError(f"worker exited:\n{self.proc.tail()}")
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{count} of {expect} commands in {timeout:.0f} s:\n{self.proc.tail()}")


async def saga_throughput(
    saga: Saga, broker: Broker, events: int, expect_commands: int
) -> dict[str, Any]:
    await asyncio.to_thread(saga.wait_ready)
    cpu0, bcpu0 = cpu_seconds(saga.proc.pid), cpu_seconds(broker.pid)
    await saga.wait_commands(broker.bootstrap, expect_commands, timeout=max(120, events / 200))
    cpu1, bcpu1 = cpu_seconds(saga.proc.pid), cpu_seconds(broker.pid)
    inputs = await read_all(broker.bootstrap, [saga.input_topic])
    commands = await read_all(broker.bootstrap, saga.commands)
    changelog = await read_all(broker.bootstrap, [saga.changelog])
    lifecycle = await read_all(broker.bootstrap, [saga.lifecycle])
    # The router's first input batch is sent within one micro-batch of the first event consumed.
    start = min(r.timestamp for r in inputs)
    last_command = max(r.timestamp for r in commands)
    last_state = max((r.timestamp for r in changelog), default=last_command)
    seconds = (last_command - start) / 1000
    ids = {dict(r.headers).get("command_id") for r in commands}
    gaps = sorted(r.timestamp for r in inputs)
    wall = (max(last_command, last_state) - start) / 1000
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1),
        "commands": len(commands),
        "distinct_commands": len(ids),
        "state_durable_after_last_command_ms": last_state - last_command,
        "input_topic_messages": len(inputs),
        "changelog_writes": len(changelog),
        "lifecycle_records": len(lifecycle),
        "longest_input_gap_ms": max((b - a for a, b in itertools.pairwise(gaps)), default=0),
        "worker_cpu_share": round((cpu1 - cpu0) / wall, 2) if cpu0 and cpu1 else None,
        "broker_cpu_share": round((bcpu1 - bcpu0) / wall, 2) if bcpu0 and bcpu1 else None,
    }


# -- 4. latency ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def latency(
    saga: Saga, bootstrap: str, rate: float, seconds: float, warmup: float
) -> dict[str, Any]:
    """OrderPlaced at a steady `rate`; each ReserveInventory command matched by its key."""
    from aiokafka import AIOKafkaProducer

    total = int(rate * (warmup + seconds))
    prefix = f"lat{saga.uid}-"
    sent: dict[str, float] = {}
    got: dict[str, tuple[float, int]] = {}  # key -> (arrival, command record timestamp)
    async with assigned(bootstrap, [saga.commands[0]], fetch_max_wait_ms=100) as (consumer, tps):
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolve now, not after the first command
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
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            pending = []
            for i in range(total):
                delay = t0 + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                key = f"{prefix}{i}"
                at = time.time()
                sent[key] = at
                pending.append(
                    await producer.send(
                        f"orders.events.{saga.uid}",
                        placed(key),
                        key=key.encode(),
                        timestamp_ms=int(at * 1000),
                    )
                )
            achieved = total / (loop.time() - t0)
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collector, 30)
    measured = [k for i, k in enumerate(sent) if i >= int(rate * warmup)]
    to_record = [got[k][1] - sent[k] * 1000 for k in measured if k in got]
    to_arrival = [(got[k][0] - sent[k]) * 1000 for k in measured if k in got]
    if not to_record:
        raise RuntimeError(f"no command came back:\n{saga.proc.tail()}")
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
    }


# -- report -------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "target met" if ok else "NOT met"


def report(doc: dict[str, Any]) -> None:
    raw, bare, saga, lat = doc["raw_aiokafka"], doc["bare_faust"], doc["sagabridge"], doc["latency"]
    r = doc["ratios"]
    rows = [
        ("raw aiokafka consumer", f"{raw['events_per_s']:>10,.0f} msg/s", raw["note"]),
        ("bare Faust agent", f"{bare['events_per_s']:>10,.0f} events/s", bare["note"]),
        ("sagabridge end to end", f"{saga['events_per_s']:>10,.0f} events/s", saga["note"]),
        ("latency p50", f"{lat['p50_ms']:>10.1f} ms", lat["note"]),
        ("latency p99", f"{lat['p99_ms']:>10.1f} ms", f"max {lat['max_ms']:.1f} ms"),
        (
            "  at a consumer",
            f"{lat['arrival_p50_ms']:>7.1f} / {lat['arrival_p99_ms']:.1f}",
            "p50 / p99 ms, arrival in a consumer of the command topic",
        ),
        ("sagabridge / bare Faust", f"{r['sagabridge_over_bare_faust']:>10.2f}", ""),
        ("bare Faust / raw aiokafka", f"{r['bare_faust_over_raw']:>10.2f}", ""),
    ]
    p = doc["params"]
    print(
        f"\nruntime benchmark on {doc['broker']} ({doc['bootstrap']}): {p['orders']:,} orders, "
        f"{p['events']:,} events, {p['input_partitions']} input partitions, "
        f"worker log level {p['log_level']}"
    )
    for name, figure, note in rows:
        print(f"  {name:<26} {figure:<22} {note}")
    t = doc["targets"]
    print(
        f"  target sagabridge >= {SAGA_TARGET} x bare Faust: {verdict(t['throughput'])}; "
        f"p99 < {P99_TARGET_MS:.0f} ms: {verdict(t['p99'])}"
    )
    print(f"  load average before/after: {doc['load_before']} / {doc['load_after']} (2 cores)")


def notes(doc: dict[str, Any]) -> None:
    raw, bare, saga, lat = doc["raw_aiokafka"], doc["bare_faust"], doc["sagabridge"], doc["latency"]
    raw["note"] = "median of " + ", ".join(f"{x:,.0f}" for x in raw["rounds"])
    bare["note"] = f"{bare['seconds']:.2f} s first to last event"
    saga["note"] = (
        f"{saga['seconds']:.2f} s, {saga['distinct_commands']:,} commands, "
        f"worker CPU {saga['worker_cpu_share']}, broker CPU {saga['broker_cpu_share']}"
    )
    lat["note"] = (
        f"{lat['events']:,} OrderPlaced at {lat['rate_per_s']:,.0f}/s for {lat['seconds']:.0f} s, "
        f"{lat['missing']} missing; send to command record timestamp"
    )


# -- main ---------------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, broker: Broker, work: Path) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:8]
    sources = [f"{t}.{uid}" for t in SOURCES]
    await harness.create_topics(
        broker.bootstrap, [f"{t}.{uid}" for t in FLOW_TOPICS], TOPIC_PARTITIONS
    )
    records = order_events(uid, args.orders)
    produced = await harness.produce(broker.bootstrap, records)
    n = len(records)
    print(f"produced {n:,} events at {produced:,.0f}/s", flush=True)

    rounds = [await raw_consume(broker.bootstrap, sources, n) for _ in range(3)]
    print(f"raw aiokafka: {statistics.median(rounds):,.0f} msg/s", flush=True)

    bare = await asyncio.to_thread(bare_faust, broker, sources, n, work)
    print(f"bare Faust: {bare['events_per_s']:,.0f} events/s", flush=True)

    saga = Saga(args, broker, work, uid)
    try:
        thr = await saga_throughput(saga, broker, n, 3 * args.orders)
        print(f"sagabridge: {thr['events_per_s']:,.0f} events/s", flush=True)
        rate = args.rate or thr["events_per_s"] / 2
        lat = await latency(saga, broker.bootstrap, rate, args.latency_seconds, warmup=1.0)
        print(f"latency at {rate:,.0f}/s: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms")
    finally:
        code = saga.proc.stop()
    if code != 0:
        print(f"warning: the worker exited with {code}:\n{saga.proc.tail()}", file=sys.stderr)
    ratio = thr["events_per_s"] / bare["events_per_s"]
    return {
        "raw_aiokafka": {"events_per_s": round(statistics.median(rounds), 1), "rounds": rounds},
        "bare_faust": bare,
        "sagabridge": thr,
        "latency": lat,
        "produce_per_s": round(produced, 1),
        "ratios": {
            "sagabridge_over_bare_faust": round(ratio, 3),
            "bare_faust_over_raw": round(bare["events_per_s"] / statistics.median(rounds), 3),
        },
        "targets": {"throughput": ratio >= SAGA_TARGET, "p99": lat["p99_ms"] < P99_TARGET_MS},
        "params": {
            "orders": args.orders,
            "events": n,
            "input_partitions": args.partitions,
            "source_partitions": TOPIC_PARTITIONS,
            "log_level": args.log_level,
        },
    }


def git_commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


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
    parser.add_argument("--log-level", default="info", choices=["warn", "info", "debug"])
    parser.add_argument("--rate", type=float, help="latency rate (default: half the max)")
    parser.add_argument("--latency-seconds", type=float, default=12.0)
    args = parser.parse_args()

    # SIGTERM unwinds like Ctrl-C, so every `finally` stops what it started.
    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    harness.quiet_aiokafka()
    kind = "kafka" if args.kafka else "tansu"
    name = "external" if args.bootstrap else kind
    work = RESULTS / f"work-{name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        with harness.broker(kind, args.bootstrap) as broker:
            print(f"broker: {broker.name} at {broker.bootstrap}", flush=True)
            doc = asyncio.run(measure(args, broker, work))
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
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
        **doc,
    }
    notes(doc)
    report(doc)
    out = RESULTS / f"runtime-{broker.name}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"  written to {out.relative_to(ROOT)}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
