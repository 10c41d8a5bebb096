"""The state the engine keeps: one Instance per (flow, key), one Association per alias value.

Plain slotted classes, so `apply` is a few attribute reads and writes per event, with a compact
JSON form for the state store. An instance keeps only what its flow references.
"""

from __future__ import annotations

from typing import Any

from bridge.engine.inputs import Event

# Instance statuses
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
TIMED_OUT = "TIMED_OUT"
COMPENSATING = "COMPENSATING"
COMPENSATED = "COMPENSATED"
TERMINATED = "TERMINATED"
ENDED = frozenset({COMPLETED, FAILED, TIMED_OUT, COMPENSATED, TERMINATED})

# Step statuses (TIMED_OUT and FAILED shared with the instance's)
PENDING = "PENDING"
ACTIVE = "ACTIVE"
DONE = "DONE"
SKIPPED = "SKIPPED"

# What a step's `due` time means
DEADLINE = "deadline"
RETRY = "retry"

HISTORY_LIMIT = 100  # entries kept per instance; older ones are counted, then dropped
SEEN_LIMIT = 64  # event ids remembered per instance for duplicate detection


class StepState:
    __slots__ = ("attempts", "due", "due_kind", "ended", "held", "late", "seq", "since", "status")

    def __init__(self) -> None:
        self.status = PENDING
        self.attempts = 0
        self.since: int | None = None  # activated at
        self.ended: int | None = None  # done / failed / timed out at
        self.due: int | None = None
        self.due_kind = DEADLINE
        self.late = False
        self.seq = 0  # completion order, for compensation in reverse
        self.held: list[list[Any]] = []  # [outcome "done"|"failed", event, id, at]

    def to_json(self) -> list[Any]:
        return [
            self.status,
            self.attempts,
            self.since,
            self.ended,
            self.due,
            self.due_kind,
            self.late,
            self.seq,
            self.held,
        ]

    @classmethod
    def from_json(cls, data: list[Any]) -> StepState:
        s = cls()
        (s.status, s.attempts, s.since, s.ended, s.due, s.due_kind, s.late, s.seq, s.held) = data
        return s


class Instance:
    """One saga instance, or (status None) the events buffered for a key not started yet."""

    __slots__ = (
        "clock",
        "compensating",
        "deadline",
        "dropped",
        "ended",
        "failure",
        "fields",
        "history",
        "key",
        "orphans",
        "seen",
        "sent_compensation",
        "seq",
        "started",
        "status",
        "steps",
        "version",
        "wake",
    )

    def __init__(self, key: str, version: int, n_steps: int) -> None:
        self.key = key
        self.version = version
        self.status: str | None = None
        self.clock = 0
        self.started: int | None = None
        self.ended: int | None = None
        self.deadline: int | None = None
        self.wake: int | None = None
        self.steps = [StepState() for _ in range(n_steps)]
        self.fields: dict[str, dict[str, Any]] = {}
        self.seen: list[str] = []
        self.history: list[list[Any]] = []
        self.dropped = 0
        self.orphans: list[list[Any]] = []  # serialized events, each with its expiry
        self.compensating: list[int] = []  # steps still to compensate, next first
        self.sent_compensation = False
        self.failure: str | None = None
        self.seq = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "v": self.version,
            "status": self.status,
            "clock": self.clock,
            "started": self.started,
            "ended": self.ended,
            "deadline": self.deadline,
            "wake": self.wake,
            "steps": [s.to_json() for s in self.steps],
            "fields": self.fields,
            "seen": self.seen,
            "history": self.history,
            "dropped": self.dropped,
            "orphans": self.orphans,
            "comp": self.compensating,
            "sent_comp": self.sent_compensation,
            "failure": self.failure,
            "seq": self.seq,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Instance:
        inst = cls(data["key"], data["v"], 0)
        inst.status = data["status"]
        inst.clock = data["clock"]
        inst.started = data["started"]
        inst.ended = data["ended"]
        inst.deadline = data["deadline"]
        inst.wake = data["wake"]
        inst.steps = [StepState.from_json(s) for s in data["steps"]]
        inst.fields = data["fields"]
        inst.seen = data["seen"]
        inst.history = data["history"]
        inst.dropped = data["dropped"]
        inst.orphans = data["orphans"]
        inst.compensating = data["comp"]
        inst.sent_compensation = data["sent_comp"]
        inst.failure = data["failure"]
        inst.seq = data["seq"]
        return inst


class Association:
    """What an association value (e.g. payment_id=p-7) points at, and events waiting for it."""

    __slots__ = ("alias", "buffer", "clock", "key", "value", "wake")

    def __init__(self, alias: str, value: str) -> None:
        self.alias = alias
        self.value = value
        self.key: str | None = None
        self.clock = 0
        self.wake: int | None = None
        self.buffer: list[list[Any]] = []  # serialized events, each with its expiry

    def to_json(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "value": self.value,
            "key": self.key,
            "clock": self.clock,
            "wake": self.wake,
            "buffer": self.buffer,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Association:
        a = cls(data["alias"], data["value"])
        a.key, a.clock, a.wake, a.buffer = data["key"], data["clock"], data["wake"], data["buffer"]
        return a


State = Instance | Association


def state_from_json(data: dict[str, Any]) -> State:
    return Association.from_json(data) if "alias" in data else Instance.from_json(data)


def pack_event(ev: Event, expires: int) -> list[Any]:
    """An event as a buffer entry: only the fields the flow references."""
    return [
        ev.name,
        ev.key,
        ev.id,
        ev.at,
        ev.time,
        ev.fields,
        [list(a) for a in ev.aliases],
        ev.via,
        ev.source,
        ev.version,
        expires,
    ]


def unpack_event(flow: str, entry: list[Any]) -> tuple[Event, int]:
    name, key, id_, at, time, fields, aliases, via, source, version, expires = entry
    aliases_ = tuple((a, v) for a, v in aliases)
    ev = Event(flow, name, key, id_, at, time, fields, aliases_, via, source, version)
    return ev, expires
