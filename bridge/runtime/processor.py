"""Apply one micro-batch of inputs for one partition: load, apply, write each state once.

No Faust here: the store and the outbox are plain interfaces, so the same code is tested
without a broker and runs unchanged in the Faust agent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.codecs.fastjson import dumps, loads
from bridge.engine.apply import apply, flow_for
from bridge.engine.effects import Command, DeadLetter, Forward, Lifecycle
from bridge.engine.inputs import Associate, Event, Input, Tick, entity_of
from bridge.engine.state import ENDED, Instance, State, state_from_json
from bridge.engine.wire import entity_key, input_from_wire, input_to_wire
from bridge.flow.compiled import Catalog, CompiledFlow
from bridge.runtime.routing import partition_for


class StateReader(Protocol):
    def get(self, key: str) -> bytes | None: ...


class StateStore(StateReader, Protocol):
    def put(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Due:
    """When a state next needs a tick, and what to put in it."""

    at: int
    flow: str
    key: str
    alias: str | None


@dataclass(slots=True)
class Outbox:
    """What a batch asks the shell to send, and the deadlines it leaves behind."""

    commands: list[Command] = field(default_factory=list)
    lifecycle: list[Lifecycle] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    inputs: dict[int, list[list[Any]]] = field(default_factory=dict)  # partition -> inputs
    dues: dict[str, Due | None] = field(default_factory=dict)  # state key -> next tick
    states: dict[str, State | None] = field(default_factory=dict)  # to store once sent
    partitions: dict[str, int] = field(default_factory=dict)  # state key -> its partition
    events: dict[tuple[str, str], int] = field(default_factory=dict)  # (flow, event) -> count
    applied: int = 0
    expired: int = 0  # ended instances deleted after their retention


def encode_state(state: State) -> bytes:
    return dumps(state.to_json())


def decode_state(raw: bytes) -> State:
    return state_from_json(loads(raw))


def due_of(
    state: State | None, flow: str, key: str, alias: str | None, retention_ms: int = 0
) -> Due | None:
    """When `state` next needs a tick: its own timers, or the end of an ended instance's
    retention (a tick then deletes it)."""
    if state is None:
        return None
    wake, expiry = state.wake, expiry_of(state, retention_ms)
    if expiry is not None:
        wake = expiry if wake is None else min(wake, expiry)
    if wake is None:
        return None
    return Due(wake, flow, key, alias)


def expiry_of(state: State | None, retention_ms: int) -> int | None:
    """When an ended instance's retention is over (None: not ended, or kept for ever)."""
    ended = state.ended if isinstance(state, Instance) and state.status in ENDED else None
    return ended + retention_ms if retention_ms > 0 and ended is not None else None


def expired(state: State | None, inp: Input, retention_ms: int) -> bool:
    """An ended instance whose retention is over, reached by a tick: its state goes."""
    expiry = expiry_of(state, retention_ms)
    return isinstance(inp, Tick) and expiry is not None and inp.at >= expiry


class Processor:
    def __init__(
        self, flows: Iterable[CompiledFlow], partitions: int, retention_ms: int = 0
    ) -> None:
        self.partitions = partitions
        self.catalog = Catalog(flows)
        self.retention_ms = retention_ms

    def process(
        self,
        partition: int,
        batch: list[list[Any]],
        store: StateReader,
        out: Outbox | None = None,
    ) -> Outbox:
        """Apply `batch`; the new states are in the outbox, not yet in the store.

        The caller stores them (`store_states`) only once every effect was acknowledged: a
        crash in between replays the batch on the old states, which sends the same effects
        again (same ids) instead of losing them. Several batches may share one outbox: each
        sees the states the earlier ones left.
        """
        out = Outbox() if out is None else out
        touched = out.states
        queue: deque[Input] = deque(input_from_wire(w) for w in batch)
        while queue:
            inp = queue.popleft()
            flow_name, key, alias = entity_of(inp)
            if flow_name not in self.catalog.latest:
                out.dead.append(
                    DeadLetter(
                        "sagabridge.input",
                        f"no flow named {flow_name!r} is loaded; its input was set aside",
                        flow_name,
                    )
                )
                continue
            ek = entity_key(flow_name, key, alias)
            if ek in touched:
                state = touched[ek]
            else:
                raw = store.get(ek)
                state = decode_state(raw) if raw is not None else None
            if expired(state, inp, self.retention_ms):
                touched[ek] = None
                out.partitions[ek] = partition
                out.dues[ek] = None
                out.expired += 1
                continue
            flow = flow_for(self.catalog, flow_name, state)
            assert flow is not None
            new, effects = apply(flow, state, inp)
            out.applied += 1
            if isinstance(inp, Event) and alias is None:
                counted = (flow_name, inp.name)
                out.events[counted] = out.events.get(counted, 0) + 1
            touched[ek] = new
            out.partitions[ek] = partition
            out.dues[ek] = due_of(new, flow_name, key, alias, self.retention_ms)
            for fx in effects:
                if isinstance(fx, Command):
                    out.commands.append(fx)
                elif isinstance(fx, Lifecycle):
                    out.lifecycle.append(fx)
                elif isinstance(fx, Forward | Associate):
                    follow = fx.event if isinstance(fx, Forward) else fx
                    f2, k2, a2 = entity_of(follow)
                    p2 = partition_for(entity_key(f2, k2, a2), self.partitions)
                    if p2 == partition:
                        queue.append(follow)  # same owner: apply now, in order
                    else:
                        out.inputs.setdefault(p2, []).append(input_to_wire(follow))
                elif isinstance(fx, DeadLetter):
                    out.dead.append(fx)
        return out

    @staticmethod
    def store_states(out: Outbox, store: StateStore) -> None:
        """Write the batch's states to a plain store (the worker writes `state_writes` to the
        Faust table and its changelog instead)."""
        for ek, st in out.states.items():
            if st is None:
                store.delete(ek)
            else:
                store.put(ek, encode_state(st))


def state_writes(out: Outbox) -> dict[int, list[tuple[bytes, bytes | None]]]:
    """The batch's states as changelog records (None: deleted), by partition."""
    writes: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for ek, st in out.states.items():
        record = (ek.encode(), None if st is None else encode_state(st))
        writes.setdefault(out.partitions[ek], []).append(record)
    return writes
