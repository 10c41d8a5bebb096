"""SQS benchmark: a bare aiobotocore loop against `sagabridge run` with payments on SQS.

One ElasticMQ (brokers/elasticmq.sh) and one Tansu, started and stopped here:

1. bare aiobotocore: N small JSON messages pre-filled (SendMessageBatch), then received (10 per
   call, 1 s long poll) and deleted in batches until the queue is empty: messages/s.
2. sagabridge SQS in: N orders are started on Kafka (OrderPlaced + InventoryReserved) by a first
   worker, which is then stopped; N PaymentCaptured are pre-filled into the events queue and a
   second worker (same app id, recovering the states) is started. Measured from the worker's first
   receive (the queue's counts first change) until the queue is empty and sample orders' pay steps
   are DONE: messages/s.
3. commands out: in orchestrate mode each InventoryReserved activates `pay`, which sends
   CapturePayment to the payments-commands queue; measured (first worker) from the first to the
   N-th command in that queue: commands/s.

    bench/sqs.py [--orders N]

Target: (2) >= 0.7 x (1). Figures go to stdout and bench/results/sqs.json; the exit code is 0
whether or not the target is met (1 when the benchmark itself failed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
from aiobotocore.session import get_session
from harness import Process, http_json
from runtime import encode, git_commit, placed

from bridge.runtime.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EXAMPLE = ROOT / "examples" / "flows" / "order-fulfilment.yaml"
ELASTICMQ_SH = ROOT / "brokers" / "elasticmq.sh"
BIN = Path(sys.executable).parent
FLOW = "order-fulfilment"
TOPICS = [
    "orders.events",
    "inventory.events",
    "shipping.events",
    "inventory.commands",
    "shipping.commands",
]
TARGET = 0.7
SAMPLES = 20  # orders whose pay step is checked through the HTTP API
AWS_ENV = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}


# -- processes ----------------------------------------------------------------------------------


@contextlib.contextmanager
def elasticmq() -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "ELASTICMQ_HEAP_OPTS": "-Xms512m -Xmx1g"}
    try:
        out = subprocess.run(
            [str(ELASTICMQ_SH), "start", str(port)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        yield out.stdout.strip().rpartition("endpoint=")[2]
    finally:
        subprocess.run(
            [str(ELASTICMQ_SH), "stop", str(port)],
            cwd=ROOT,
            check=False,
            capture_output=True,
            timeout=60,
        )


def sqs_client(endpoint: str) -> Any:
    return get_session().create_client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


async def depth(sqs: Any, url: str) -> tuple[int, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    found = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names))["Attributes"]
    return int(found[names[0]]), int(found[names[1]])


async def fill(sqs: Any, url: str, bodies: list[str]) -> float:
    """SendMessageBatch, 10 at a time, a few calls in flight; returns messages/s."""
    start = time.perf_counter()
    chunks = [bodies[i : i + 10] for i in range(0, len(bodies), 10)]
    sem = asyncio.Semaphore(8)

    async def send(n: int, chunk: list[str]) -> None:
        async with sem:
            entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)]
            reply = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
            if reply.get("Failed"):
                raise RuntimeError(f"SendMessageBatch failed: {reply['Failed'][:2]}")

    await asyncio.gather(*(send(n, c) for n, c in enumerate(chunks)))
    return len(bodies) / (time.perf_counter() - start)


# -- 1. bare aiobotocore ------------------------------------------------------------------------


async def bare_loop(endpoint: str, n: int, uid: str) -> dict[str, Any]:
    async with sqs_client(endpoint) as sqs:
        url = (await sqs.create_queue(QueueName=f"bench-bare-{uid}"))["QueueUrl"]
        bodies = [json.dumps({"i": i, "kind": "bench", "at": time.time()}) for i in range(n)]
        filled = await fill(sqs, url, bodies)
        seen = 0
        start = time.perf_counter()
        while True:
            reply = await sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = reply.get("Messages") or []
            if not messages:
                if seen >= n or time.perf_counter() - start > 60:
                    break
                continue
            for m in messages:
                json.loads(m["Body"])
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            await sqs.delete_message_batch(QueueUrl=url, Entries=entries)
            seen += len(messages)
            last = time.perf_counter()
        if seen < n:
            raise RuntimeError(f"bare loop saw {seen} of {n} messages")
        seconds = last - start  # up to the last delete, not the final empty long poll
        return {
            "messages": seen,
            "seconds": round(seconds, 3),
            "messages_per_s": round(seen / seconds, 1),
            "fill_per_s": round(filled, 1),
        }


# -- sagabridge ---------------------------------------------------------------------------------


class Worker:
    """`sagabridge run` on the example flow copy (orchestrate, own queues and topics)."""

    def __init__(self, bootstrap: str, endpoint: str, work: Path, uid: str) -> None:
        text = EXAMPLE.read_text().replace("mode: observe", "mode: orchestrate")
        for q in ("payments-events", "payments-commands"):
            text = text.replace(f"sqs://{q}", f"sqs://{q}-{uid}")
        for t in TOPICS:
            text = text.replace(f"kafka://{t}", f"kafka://{t}.{uid}")
        flow = work / "flow.yaml"
        flow.write_text(text)
        self.topics = [f"{t}.{uid}" for t in TOPICS]
        self.events_queue = f"payments-events-{uid}"
        self.commands_queue = f"payments-commands-{uid}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **AWS_ENV,
            "SAGABRIDGE_APP_ID": f"bench-sqs-{uid}",
            "SAGABRIDGE_LIFECYCLE_TOPIC": f"bench.lifecycle.{uid}",
            "SAGABRIDGE_DLQ_TOPIC": f"bench.dlq.{uid}",
            "SAGABRIDGE_GROUP_SESSION_TIMEOUT": "6",
            "SAGABRIDGE_GROUP_REBALANCE_TIMEOUT": "3",
            "SAGABRIDGE_GROUP_HEARTBEAT_INTERVAL": "1",
            "SAGABRIDGE_INPUT_PARTITIONS": "8",
            "SAGABRIDGE_PRODUCER_BATCH_BYTES": "1",  # crash-safe recovery on Tansu
            "SAGABRIDGE_SQS__WAIT_TIME_SECONDS": "1",
        }
        self.cmd = [str(BIN / "sagabridge"), "run", "--flows", str(flow)]
        self.cmd += ["--bootstrap", bootstrap, "--web-port", str(self.port)]
        self.cmd += ["--sqs-endpoint", endpoint]
        self.work = work
        self.proc: Process | None = None

    @contextlib.contextmanager
    def running(self, name: str) -> Iterator[Process]:
        with harness.running(self.cmd, self.work / f"{name}.log", self.work, self.env) as proc:
            self.proc = proc
            yield proc
        if proc.proc.returncode not in (0, -signal.SIGTERM):
            print(f"warning: {name} exited with {proc.proc.returncode}", file=sys.stderr)

    def check(self) -> Process:
        if self.proc is None or not self.proc.alive():
            raise RuntimeError(f"worker exited:\n{self.proc.tail() if self.proc else ''}")
        return self.proc

    def wait_ready(self, timeout: float = 90) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            self.check()
            h = http_json(self.url + "/healthz")
            if h and h.get("status") == "ok" and h.get("partitions"):
                return round(time.monotonic() - start, 1)
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready in {timeout:.0f} s:\n{self.check().tail()}")

    def pay_status(self, key: str) -> str | None:
        body = http_json(f"{self.url}/api/flows/{FLOW}/instances/{key}")
        steps = (body or {}).get("steps")
        if not isinstance(steps, dict) or "pay" not in steps:
            return None
        return str(steps["pay"].get("status"))

    async def wait_pay(self, keys: list[str], want: str, timeout: float) -> None:
        pending = list(keys)
        stop = time.monotonic() + timeout
        while pending:
            self.check()
            if time.monotonic() > stop:
                last = self.pay_status(pending[0])
                raise RuntimeError(
                    f"{len(pending)} sample orders not {want} in {timeout:.0f} s "
                    f"({pending[0]}: pay {last}):\n{self.check().tail()}"
                )
            pending = [k for k in pending if self.pay_status(k) != want]
            if pending:
                await asyncio.sleep(0.05)


def samples(n: int) -> list[str]:
    step = max(1, n // SAMPLES)
    return sorted({f"o{i}" for i in range(0, n, step)} | {f"o{n - 1}"})


async def start_orders(w: Worker, endpoint: str, bootstrap: str, n: int) -> dict[str, Any]:
    """(3): produce N OrderPlaced + N InventoryReserved, count CapturePayment in the queue."""
    records: list[tuple[str, bytes, bytes]] = []
    for i in range(n):
        o = f"o{i}"
        records.append((w.topics[0], o.encode(), placed(o)))
    for i in range(n):
        o = f"o{i}"
        value = {"type": "InventoryReserved", "event_id": f"res-{o}", "order_id": o}
        records.append((w.topics[1], o.encode(), encode(value)))
    async with sqs_client(endpoint) as sqs:
        url = (await sqs.get_queue_url(QueueName=w.commands_queue))["QueueUrl"]
        producing = asyncio.create_task(harness.produce(bootstrap, records))
        t0 = time.perf_counter()
        first: float | None = None
        first_count = 0
        count = 0
        try:
            while count < n:
                w.check()
                if time.perf_counter() - t0 > max(60, n / 100):
                    raise RuntimeError(f"{count} of {n} commands in the queue:\n{w.check().tail()}")
                visible, hidden = await depth(sqs, url)
                now = time.perf_counter()
                count = visible + hidden
                if first is None and count:
                    first, first_count = now, count
                if count < n:
                    await asyncio.sleep(0.02)
            last = time.perf_counter()
        finally:
            produced = await producing
    assert first is not None
    seconds = last - first
    return {
        "commands": count,
        "seconds": round(seconds, 3),
        # From the first command seen (count at that poll: first_count) to the N-th.
        "commands_per_s": round((n - first_count) / seconds, 1) if seconds > 0 else None,
        "from_produce_s": round(last - t0, 3),
        "commands_per_s_from_produce": round(n / (last - t0), 1),
        "first_poll_count": first_count,
        "kafka_produced_per_s": round(produced, 1),
    }


async def sqs_in(w: Worker, endpoint: str, n: int) -> dict[str, Any]:
    """(2): pre-fill N PaymentCaptured, start the worker, time it from first receive to done."""
    bodies = [
        json.dumps(
            {"eventType": "payment.captured", "eventId": f"cap-o{i}", "orderId": f"o{i}"}
            | {"paymentId": f"p-o{i}"}
        )
        for i in range(n)
    ]
    async with sqs_client(endpoint) as sqs:
        url = (await sqs.get_queue_url(QueueName=w.events_queue))["QueueUrl"]
        filled = await fill(sqs, url, bodies)
        visible, hidden = await depth(sqs, url)
        if visible + hidden != n:
            raise RuntimeError(f"events queue holds {visible}+{hidden}, not {n}")
        with w.running("worker-2"):
            launched = time.perf_counter()
            before = launched
            start: float | None = None
            while True:  # the first receive: the counts change
                w.check()
                if time.perf_counter() - launched > 90:
                    raise RuntimeError(f"the worker never received:\n{w.check().tail()}")
                visible, hidden = await depth(sqs, url)
                now = time.perf_counter()
                if hidden or visible < n:
                    start = (before + now) / 2  # somewhere between the two polls
                    break
                before = now
                await asyncio.sleep(0.01)
            ready_at: float | None = None

            def poll_ready() -> None:
                nonlocal ready_at
                h = http_json(w.url + "/healthz") if ready_at is None else None
                if h and h.get("status") == "ok" and h.get("partitions"):
                    ready_at = time.perf_counter()

            while visible + hidden:
                w.check()
                poll_ready()
                if time.perf_counter() - start > max(60, n / 50):
                    raise RuntimeError(f"{visible}+{hidden} left in the queue:\n{w.check().tail()}")
                await asyncio.sleep(0.02)
                visible, hidden = await depth(sqs, url)
            empty = time.perf_counter()
            while ready_at is None:  # the engine (Faust stage) recovered and assigned
                w.check()
                if time.perf_counter() - launched > 120:
                    raise RuntimeError(f"worker not ready:\n{w.check().tail()}")
                poll_ready()
                await asyncio.sleep(0.05)
            await w.wait_pay(samples(n), "DONE", 60)
            done = time.perf_counter()
    # The SQS source starts polling before the engine has joined its group and recovered: the
    # engine's start-up (first receive to ready, if later than the queue emptying) is left out.
    seconds = (empty - start) + (done - max(empty, ready_at))
    overlap = max(0.0, min(empty, ready_at) - start) if ready_at > start else 0.0
    return {
        "messages": n,
        "seconds": round(seconds, 3),
        "messages_per_s": round(n / seconds, 1),
        "seconds_incl_engine_startup": round(done - start, 3),
        "messages_per_s_incl_engine_startup": round(n / (done - start), 1),
        "engine_ready_after_first_receive_s": round(ready_at - start, 3),
        "engine_overlap_s": round(overlap, 3),
        "engine_after_drain_s": round(done - max(empty, ready_at), 3),
        "queue_empty_s": round(empty - start, 3),
        "messages_per_s_to_empty": round(n / (empty - start), 1),
        "first_receive_after_launch_s": round(start - launched, 1),
        "fill_per_s": round(filled, 1),
    }


# -- run and report -----------------------------------------------------------------------------


def measure(n: int, work: Path) -> dict[str, Any]:
    with elasticmq() as endpoint, harness.broker("tansu") as broker:
        print(f"ElasticMQ at {endpoint}; Tansu at {broker.bootstrap}", flush=True)
        uid = uuid.uuid4().hex[:8]
        bare = asyncio.run(bare_loop(endpoint, n, uid))
        print(f"bare aiobotocore: {bare['messages_per_s']:,.0f} msg/s", flush=True)

        w = Worker(broker.bootstrap, endpoint, work, uid)
        asyncio.run(harness.create_topics(broker.bootstrap, w.topics, 3))

        async def queues() -> None:
            async with sqs_client(endpoint) as sqs:
                await sqs.create_queue(QueueName=w.events_queue)
                await sqs.create_queue(QueueName=w.commands_queue)

        asyncio.run(queues())
        with w.running("worker-1"):
            startup = w.wait_ready()
            out = asyncio.run(start_orders(w, endpoint, broker.bootstrap, n))
            print(f"commands out: {out['commands_per_s']:,.0f} commands/s", flush=True)
            asyncio.run(w.wait_pay(samples(n), "ACTIVE", 60))
            time.sleep(2)  # the last states reach the changelog before the stop
        print("first worker stopped; pre-filling PaymentCaptured", flush=True)
        inbound = asyncio.run(sqs_in(w, endpoint, n))
        print(f"sagabridge SQS in: {inbound['messages_per_s']:,.0f} msg/s", flush=True)
    ratio = inbound["messages_per_s"] / bare["messages_per_s"]
    return {
        "bare_aiobotocore": bare,
        "sagabridge_sqs_in": inbound,
        "commands_out": out,
        "ratio_sqs_in_over_bare": round(ratio, 3),
        "target": TARGET,
        "target_met": ratio >= TARGET,
        "params": {"n": n, "worker_env": w.env, "worker_startup_s": startup},
    }


def report(doc: dict[str, Any]) -> None:
    bare, inb, out = doc["bare_aiobotocore"], doc["sagabridge_sqs_in"], doc["commands_out"]
    rows = [
        (
            "bare aiobotocore loop",
            f"{bare['messages_per_s']:,.0f} msg/s",
            f"{bare['messages']:,} received+deleted in {bare['seconds']:.2f} s",
        ),
        (
            "sagabridge SQS in",
            f"{inb['messages_per_s']:,.0f} msg/s",
            f"drain {inb['queue_empty_s']:.2f} s + engine {inb['engine_after_drain_s']:.2f} s "
            f"to sample pay DONE (engine start-up excluded; incl.: "
            f"{inb['messages_per_s_incl_engine_startup']:,.0f}/s)",
        ),
        (
            "",
            "",
            f"SQS drain alone "
            f"{inb['messages_per_s_to_empty']:,.0f}/s (first receive to empty queue)",
        ),
        (
            "commands out (CapturePayment)",
            f"{out['commands_per_s']:,.0f} cmd/s",
            f"first to last in the queue, {out['seconds']:.2f} s; "
            f"{out['commands_per_s_from_produce']:,.0f}/s from the start of the Kafka produce",
        ),
        (
            "SQS in / bare",
            f"{doc['ratio_sqs_in_over_bare']:.2f}",
            f"target >= {TARGET}: {'met' if doc['target_met'] else 'NOT met'}",
        ),
    ]
    print(f"\nSQS benchmark (ElasticMQ + Tansu), N = {doc['params']['n']:,}")
    for name, figure, note in rows:
        print(f"  {name:<30} {figure:>16}   {note}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=5_000, help="N (messages per phase)")
    args = parser.parse_args()

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: every `finally` runs

    signal.signal(signal.SIGTERM, interrupted)
    harness.quiet_aiokafka()
    work = RESULTS / "work-sqs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    began = time.monotonic()
    try:
        found = measure(args.orders, work)
    except KeyboardInterrupt:
        print("interrupted; every process started here was stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"benchmark failed: {exc}\n(logs in {work})", file=sys.stderr)
        return 1
    doc = {
        "commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "run_s": round(time.monotonic() - began, 1),
        **found,
    }
    report(doc)
    out = RESULTS / "sqs.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"  written to {out.relative_to(ROOT)}; logs in {work.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
