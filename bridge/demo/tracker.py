"""What sagabridge saw and did, read back the way an operator would.

`Lifecycle` reads the lifecycle topic (every decision sagabridge records) into per-instance
states and counts; `Api` asks the worker's HTTP API for its own counts and overdue instances,
and says so when this sagabridge does not serve those endpoints yet, so the view falls back on
the lifecycle.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.engine.timefmt import parse_time
from bridge.flow import CompiledFlow

log = logging.getLogger("sagabridge.demo")

FINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "COMPENSATED", "TERMINATED"}
_ENDED = {
    "instance.completed": "COMPLETED",
    "instance.failed": "FAILED",
    "instance.timed_out": "TIMED_OUT",
    "instance.compensated": "COMPENSATED",
    "instance.terminated": "TERMINATED",
}


@dataclass
class Tracked:
    """One instance as its lifecycle records tell it."""

    status: str = "RUNNING"
    active: dict[str, int] = field(default_factory=dict)  # step -> activated or last sent, ms
    attempts: dict[str, int] = field(default_factory=dict)
    timed_out: set[str] = field(default_factory=set)  # steps TIMED_OUT and not final
    ever_timed_out: set[str] = field(default_factory=set)
    retried: set[str] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)  # steps DONE or FAILED


@dataclass(frozen=True)
class Sent:
    at: int
    key: str
    command: str
    action: str
    attempt: int
    would: bool  # recorded as command.would_send (shadow), not sent


class Lifecycle:
    def __init__(self, flow: CompiledFlow) -> None:
        self.flow = flow
        self.deadline_ms = {s.name: s.deadline_ms for s in flow.steps}
        self.instances: dict[str, Tracked] = {}
        self.types: Counter[str] = Counter()
        self.step_events: Counter[tuple[str, str]] = Counter()  # (type, step)
        self.commands: Counter[tuple[str, str]] = Counter()  # (command, action) sent
        self.would_send: Counter[tuple[str, str]] = Counter()
        self.recent: deque[Sent] = deque(maxlen=8)

    def feed(self, rec: dict[str, Any]) -> None:
        kind, key, step = rec.get("type"), rec.get("key"), rec.get("step")
        if not isinstance(kind, str) or not isinstance(key, str):
            return
        self.types[kind] += 1
        if step:
            self.step_events[(kind, str(step))] += 1
        at = parse_time(rec.get("at")) or int(time.time() * 1000)
        if kind == "instance.started":
            self.instances.setdefault(key, Tracked())
            return
        inst = self.instances.setdefault(key, Tracked())
        if kind in _ENDED:
            inst.status = _ENDED[kind]
            inst.active.clear()
            inst.timed_out.clear()
        elif kind == "step.activated" and step:
            inst.active[step] = at
            inst.attempts[step] = 1
        elif kind in ("step.done", "step.failed", "step.skipped") and step:
            inst.finished.add(step)
            inst.active.pop(step, None)
            inst.timed_out.discard(step)
        elif kind == "step.timed_out" and step:
            inst.ever_timed_out.add(step)
            if rec.get("final"):
                inst.active.pop(step, None)
            else:
                inst.timed_out.add(step)
        elif kind in ("command.sent", "command.would_send") and step:
            name, action = str(rec.get("command")), str(rec.get("action"))
            would = kind == "command.would_send"
            (self.would_send if would else self.commands)[(name, action)] += 1
            attempt = int(rec.get("attempt") or 1)
            self.recent.append(Sent(at, key, name, action, attempt, would))
            if action == "retry" and not would:
                inst.retried.add(step)
                inst.attempts[step] = attempt
                if step in inst.active:
                    inst.active[step] = at  # a retry restarts the step's deadline
            if action == "compensate" and not would and inst.status in ("FAILED", "TIMED_OUT"):
                inst.status = "COMPENSATING"

    # -- what the view asks -------------------------------------------------------------------

    def by_status(self) -> Counter[str]:
        return Counter(i.status for i in self.instances.values())

    def by_step(self, now_ms: int) -> dict[str, Counter[str]]:
        """Per step: active and overdue now (in running instances); done, failed, timed out."""
        out: dict[str, Counter[str]] = {s.name: Counter() for s in self.flow.steps}
        for inst in self.instances.values():
            for step in inst.ever_timed_out:
                out[step]["timed_out"] += 1
            if inst.status not in ("RUNNING", "COMPENSATING"):
                continue
            for step in inst.active:
                out[step]["active"] += step not in inst.timed_out  # as the API counts
                if self.overdue(inst, step, now_ms):
                    out[step]["overdue"] += 1
        for step, counts in out.items():
            counts["done"] = self.step_events[("step.done", step)]
            counts["failed"] = self.step_events[("step.failed", step)]
        return out

    def overdue(self, inst: Tracked, step: str, now_ms: int) -> bool:
        if step in inst.timed_out:
            return True
        limit = self.deadline_ms.get(step)
        return limit is not None and now_ms > inst.active.get(step, now_ms) + limit

    def stuck(self, now_ms: int, limit: int = 8) -> list[tuple[str, str, str, float]]:
        """(key, step, what, seconds since the step started) for overdue steps, oldest first."""
        found = []
        for key, inst in self.instances.items():
            if inst.status not in ("RUNNING", "COMPENSATING"):
                continue
            for step, since in inst.active.items():
                if not self.overdue(inst, step, now_ms):
                    continue
                if step in inst.timed_out:
                    what = "timed out"
                else:
                    what = f"try {inst.attempts.get(step, 1)} late: retry due"
                found.append((key, step, what, (now_ms - since) / 1000))
        found.sort(key=lambda f: -f[3])
        return found[:limit]

    def quiet(self, key: str, orchestrating: bool, late: set[str]) -> bool:
        """True when nothing more will happen to `key` unless a service still owes an event;
        `late` names the steps a late event was sent for, which must have been seen."""
        inst = self.instances.get(key)
        if inst is None:
            return False
        if inst.status in FINAL:
            return True
        if orchestrating or inst.status != "RUNNING" or not late <= inst.finished:
            return False
        return bool(inst.active) and set(inst.active) <= inst.timed_out

    async def follow(self, bootstrap: str, topic: str, partitions: int) -> None:
        """Read `topic` from its start into this tracker, until cancelled."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
            while True:
                try:
                    batches = await consumer.getmany(timeout_ms=500)
                except KafkaError as exc:
                    log.warning("lifecycle read failed: %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                for records in batches.values():
                    for record in records:
                        try:
                            value = json.loads(record.value or b"")
                        except ValueError:
                            continue
                        if isinstance(value, dict):
                            self.feed(value)
        finally:
            await consumer.stop()


class Api:
    """The worker's HTTP API: its counts and overdue instances, when it serves them."""

    def __init__(self, base_url: str, flow: str) -> None:
        self.base = base_url.rstrip("/")
        self.flow = flow
        self.flows_served: bool | None = None  # None: not asked yet
        self.counts: dict[str, Any] | None = None
        self.overdue: list[dict[str, Any]] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _get(self, path: str) -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        try:
            async with self._session.get(self.base + path) as resp:
                body = await resp.json(content_type=None) if resp.status == 200 else None
                return resp.status, body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return 0, None

    async def health(self) -> str | None:
        status, body = await self._get("/healthz")
        if isinstance(body, dict):
            return str(body.get("status"))
        return "starting" if status == 503 else None

    async def refresh(self) -> None:
        if self.flows_served is False:
            return
        status, body = await self._get("/api/flows")
        if status == 404:
            self.flows_served = False  # an older sagabridge: the lifecycle tells the counts
            return
        if status == 200 and isinstance(body, dict):
            self.flows_served = True
            for flow in body.get("flows") or []:
                if flow.get("name") == self.flow:
                    self.counts = flow.get("counts")
            status, body = await self._get(
                f"/api/flows/{self.flow}/instances?overdue=true&limit=10"
            )
            if status == 200 and isinstance(body, dict):
                self.overdue = list(body.get("items") or [])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
