"""What the API searches and counts: a small summary of every instance this worker owns.

States live in the table as JSON; decoding each one per request would not scale, so the worker
keeps one summary per instance, updated when a batch's states are stored and rebuilt for the
partitions it is assigned. Plain code: tested without a broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from bridge.engine.apply import flow_for
from bridge.engine.state import (
    ACTIVE,
    COMPENSATING,
    DEADLINE,
    RUNNING,
    TIMED_OUT,
    Instance,
    State,
)
from bridge.engine.timefmt import iso
from bridge.flow.compiled import Catalog

INSTANCE_STATUSES = (
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "TIMED_OUT",
    "COMPENSATING",
    "COMPENSATED",
    "TERMINATED",
)
STEP_STATUSES = (
    "PENDING",
    "ACTIVE",
    "DONE",
    "FAILED",
    "TIMED_OUT",
    "SKIPPED",
    "COMPENSATING",
    "COMPENSATED",
)
_OPEN = frozenset({RUNNING, COMPENSATING})


@dataclass(frozen=True, slots=True)
class Summary:
    flow: str
    key: str
    version: int
    status: str
    started: int | None
    ended: int | None
    updated: int
    deadline: int | None
    reason: str | None
    steps: tuple[tuple[str, str, int | None, str], ...]  # name, status, due, due kind
    partition: int

    def overdue_steps(self, now: int) -> list[str]:
        if self.status not in _OPEN:
            return []
        return [
            name
            for name, status, due, kind in self.steps
            if status == TIMED_OUT
            or (status == ACTIVE and kind == DEADLINE and due is not None and due <= now)
        ]

    def current_steps(self) -> list[str]:
        """Steps the instance waits on: ACTIVE, or TIMED_OUT while it still runs."""
        return [
            name
            for name, status, _, _ in self.steps
            if status == ACTIVE or (status == TIMED_OUT and self.status in _OPEN)
        ]

    def is_overdue(self, now: int) -> bool:
        late = self.status == RUNNING and self.deadline is not None and self.deadline <= now
        return late or bool(self.overdue_steps(now))

    def view(self, now: int) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "version": self.version,
            "key": self.key,
            "status": self.status,
            "started_at": iso(self.started) if self.started is not None else None,
            "ended_at": iso(self.ended) if self.ended is not None else None,
            "updated_at": iso(self.updated),
            "deadline_at": iso(self.deadline) if self.deadline is not None else None,
            "active": [n for n, s, _, _ in self.steps if s == ACTIVE],
            "overdue": self.overdue_steps(now),
            # final failures only: a TIMED_OUT step of a running instance is `overdue`
            "failed": [
                n
                for n, s, _, _ in self.steps
                if s == "FAILED" or (s == TIMED_OUT and self.status not in _OPEN)
            ],
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Search:
    """A validated search (see bridge.api.query)."""

    statuses: frozenset[str] = frozenset()
    step: str | None = None
    overdue: bool | None = None
    key_prefix: str = ""
    after: str | None = None  # keys after this one (the cursor)
    limit: int = 50


class InstanceIndex:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._by_flow: dict[str, dict[str, Summary]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_flow.values())

    def summarize(self, flow: str, state: State | None, partition: int) -> Summary | None:
        if not isinstance(state, Instance) or state.status is None:
            return None  # associations and buffered orphans are not instances
        compiled = flow_for(self.catalog, flow, state)
        if compiled is None:
            return None
        steps = tuple(
            (table.name, st.status, st.due, st.due_kind)
            for table, st in zip(compiled.steps, state.steps, strict=True)
        )
        return Summary(
            flow=flow,
            key=state.key,
            version=state.version,
            status=state.status,
            started=state.started,
            ended=state.ended,
            updated=state.clock,
            deadline=state.deadline,
            reason=state.failure,
            steps=steps,
            partition=partition,
        )

    def update(self, flow: str, key: str, state: State | None, partition: int) -> None:
        """Record an instance's new state (None or a non-instance state removes nothing:
        association states share no key space with instances)."""
        summary = self.summarize(flow, state, partition)
        if summary is not None:
            self._by_flow.setdefault(flow, {})[key] = summary
        elif state is None:
            self._by_flow.get(flow, {}).pop(key, None)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        if not gone:
            return
        for flow, entries in self._by_flow.items():
            self._by_flow[flow] = {k: s for k, s in entries.items() if s.partition not in gone}

    def entries(self, flow: str) -> Iterator[Summary]:
        return iter(self._by_flow.get(flow, {}).values())

    def search(self, flow: str, q: Search, now: int) -> tuple[list[Summary], bool]:
        """Up to `q.limit` matches after the cursor, ordered by key, and whether more follow."""
        found: list[Summary] = []
        for s in self._by_flow.get(flow, {}).values():
            if q.after is not None and s.key <= q.after:
                continue
            if q.key_prefix and not s.key.startswith(q.key_prefix):
                continue
            if q.statuses and s.status not in q.statuses:
                continue
            if q.step is not None and q.step not in s.current_steps():
                continue
            if q.overdue is not None and s.is_overdue(now) != q.overdue:
                continue
            found.append(s)
        found.sort(key=lambda s: s.key)
        return found[: q.limit], len(found) > q.limit

    def counts(self, flow: str, now: int) -> dict[str, Any]:
        """Instances by status and steps by status (lowercase), with `overdue` and `active`."""
        status: dict[str, int] = {}
        steps: dict[str, dict[str, int]] = {}
        total = 0
        for s in self._by_flow.get(flow, {}).values():
            total += 1
            status[s.status] = status.get(s.status, 0) + 1
            overdue = set(s.overdue_steps(now))
            for name, st_status, _, _ in s.steps:
                c = steps.setdefault(name, {})
                if st_status == ACTIVE and s.status not in _OPEN:
                    continue  # an ended instance's leftover ACTIVE step is not live work
                label = st_status.lower()
                c[label] = c.get(label, 0) + 1
                if name in overdue:
                    c["overdue"] = c.get("overdue", 0) + 1
        return {"total": total, "status": status, "steps": steps}


def merge_counts(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum the counts of several workers."""
    total = 0
    status: dict[str, int] = {}
    steps: dict[str, dict[str, int]] = {}
    for part in parts:
        total += int(part.get("total", 0))
        for k, v in part.get("status", {}).items():
            status[k] = status.get(k, 0) + int(v)
        for name, c in part.get("steps", {}).items():
            into = steps.setdefault(name, {})
            for k, v in c.items():
                into[k] = into.get(k, 0) + int(v)
    return {"total": total, "status": status, "steps": steps}
