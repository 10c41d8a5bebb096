"""The engine on a recorded stream with a virtual clock: what `sagabridge simulate` runs.

It plays the shell's part in memory: routes messages, keeps states by (flow, key), fires
deadlines in time order when the clock moves, and feeds forwarded events and associations back
in. The Kafka runtime does the same with topics and tables, so both give the same decisions.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import deque
from typing import Any

from bridge.engine.apply import apply, flow_for
from bridge.engine.effects import Command, DeadLetter, Effect, Forward, Lifecycle, Wake
from bridge.engine.inputs import Associate, Input, Tick, entity_of
from bridge.engine.match import Matcher, Message
from bridge.engine.state import Instance, State
from bridge.engine.timefmt import iso, parse_time
from bridge.flow.compiled import Catalog, CompiledFlow

_SOURCE = re.compile(r"(kafka|sqs)://[A-Za-z0-9._\-]+")
Entity = tuple[str, str | None, str]  # flow, alias (None for instances), key
_COUNTED = {"event.duplicate": "duplicates", "event.late": "late", "event.orphaned": "orphaned"}


class Simulator:
    def __init__(self, flows: list[CompiledFlow]) -> None:
        self.catalog = Catalog(flows)
        self.matcher = Matcher(flows)
        self.states: dict[Entity, State] = {}
        self.first_seen: dict[tuple[str, str], int] = {}
        self._heap: list[tuple[int, int, Entity]] = []
        self._wakes: dict[Entity, int] = {}
        self._seq = 0
        self._offsets: dict[str, int] = {}
        self.clock: int | None = None
        self.commands: list[dict[str, Any]] = []
        self.lifecycle: list[dict[str, Any]] = []
        self.dlq: list[dict[str, Any]] = []
        self.stats = {
            "messages": 0,
            "matched": 0,
            "unmatched": 0,
            "dead_lettered": 0,
            "duplicates": 0,
            "late": 0,
            "orphaned": 0,
        }

    # -- input lines --------------------------------------------------------------------------

    def feed_line(self, text: str, where: str) -> None:
        """One line of a recorded stream; a bad line becomes a DLQ record, never an exception."""
        text = text.strip()
        if not text:
            return
        try:
            line = json.loads(text)
        except json.JSONDecodeError as exc:
            self._dead(where, f"{where}: not a JSON line: {exc.msg} at column {exc.colno}")
            return
        if not isinstance(line, dict):
            self._dead(where, f"{where}: a line is a JSON object with 'at'")
            return
        at = parse_time(line.get("at")) if isinstance(line.get("at"), str) else None
        if at is None:
            self._dead(
                str(line.get("source", where)), f"{where}: 'at' is missing or not an ISO-8601 time"
            )
            return
        self.advance(at)
        if set(line) == {"at"}:
            return
        self.stats["messages"] += 1
        source = line.get("source")
        if not isinstance(source, str) or not _SOURCE.fullmatch(source):
            self._dead(
                str(source), f"{where}: unknown source {source!r}: use kafka://TOPIC or sqs://QUEUE"
            )
            return
        value = line.get("value")
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                self._dead(
                    source,
                    f"{where}: cannot decode the value as JSON: {exc.msg} at column {exc.colno}",
                )
                return
        headers = line.get("headers") or {}
        if not isinstance(headers, dict):
            self._dead(source, f"{where}: headers must be an object")
            return
        key = line.get("key")
        self.feed(
            Message(
                source=source,
                payload=value,
                headers={str(k): str(v) for k, v in headers.items()},
                at=at,
                default_id=self._default_id(source, line),
                key=str(key) if key is not None else None,
            )
        )

    def _default_id(self, source: str, line: dict[str, Any]) -> str:
        if isinstance(line.get("message_id"), str):
            return str(line["message_id"])
        partition = line.get("partition", 0)
        offset = line.get("offset")
        if not isinstance(offset, int):
            offset = self._offsets.get(f"{source}/{partition}", 0)
        self._offsets[f"{source}/{partition}"] = offset + 1
        return f"{source}/{partition}/{offset}"

    def _dead(self, source: str, reason: str) -> None:
        self.stats["dead_lettered"] += 1
        self.dlq.append({"source": source, "reason": reason})

    # -- the shell's loop ---------------------------------------------------------------------

    def feed(self, msg: Message) -> None:
        routed = self.matcher.route(msg)
        if not routed.matched:
            self.stats["unmatched"] += 1
            return
        self.stats["matched"] += 1
        for dead in routed.dead:
            self._dead(dead.source, dead.reason)
        for ev in routed.events:
            self.run(ev)

    def advance(self, at: int) -> None:
        """Move the clock to `at`, firing every deadline due by then in time order."""
        while self._heap and self._heap[0][0] <= at:
            due, _, entity = heapq.heappop(self._heap)
            if self._wakes.get(entity) != due:
                continue  # superseded by a later schedule
            del self._wakes[entity]
            flow, alias, key = entity
            self.clock = due
            self.run(Tick(flow, key, due, alias))
        if self.clock is None or at > self.clock:
            self.clock = at

    def run(self, first: Input) -> None:
        queue: deque[Input] = deque([first])
        while queue:
            inp = queue.popleft()
            flow_name, key, alias = entity_of(inp)
            entity: Entity = (flow_name, alias, key)
            state = self.states.get(entity)
            flow = flow_for(self.catalog, flow_name, state)
            assert flow is not None  # the matcher only routes to loaded flows
            new, effects = apply(flow, state, inp)
            if new is None:
                self.states.pop(entity, None)
            else:
                self.states[entity] = new
                if alias is None:
                    self.first_seen.setdefault((flow_name, key), len(self.first_seen))
            self._perform(effects, queue)

    def _perform(self, effects: list[Effect], queue: deque[Input]) -> None:
        for fx in effects:
            if isinstance(fx, Command):
                self.commands.append({**fx.envelope, "to": fx.to})
            elif isinstance(fx, Lifecycle):
                self.lifecycle.append(lifecycle_record(fx))
                counted = _COUNTED.get(fx.type)
                if counted:
                    self.stats[counted] += 1
            elif isinstance(fx, Wake):
                entity = (fx.flow, fx.alias, fx.key)
                if fx.at is None:
                    self._wakes.pop(entity, None)
                else:
                    self._wakes[entity] = fx.at
                    self._seq += 1
                    heapq.heappush(self._heap, (fx.at, self._seq, entity))
            elif isinstance(fx, Forward):
                queue.append(fx.event)
            elif isinstance(fx, Associate):
                queue.append(fx)
            elif isinstance(fx, DeadLetter):
                self._dead(fx.source, fx.reason)

    # -- output -------------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        instances: list[dict[str, Any]] = []
        buffered: list[dict[str, Any]] = []
        order = sorted(
            (e for e in self.states if e[1] is None),
            key=lambda e: self.first_seen.get((e[0], e[2]), 0),
        )
        for entity in order:
            state = self.states[entity]
            assert isinstance(state, Instance)
            flow = flow_for(self.catalog, entity[0], state)
            assert flow is not None
            if state.status is None:
                buffered.extend(
                    {"flow": entity[0], "key": state.key, "event": o[0], "id": o[2]}
                    for o in state.orphans
                )
            else:
                instances.append(instance_view(flow, state))
        for (flow_name, alias, value), state in self.states.items():
            if alias is not None and not isinstance(state, Instance):
                buffered.extend(
                    {"flow": flow_name, "via": alias, "key": value, "event": b[0], "id": b[2]}
                    for b in state.buffer
                )
        return {
            "instances": instances,
            "commands": self.commands,
            "lifecycle": self.lifecycle,
            "dlq": self.dlq,
            "buffered": buffered,
            "stats": self.stats,
            "clock": iso(self.clock) if self.clock is not None else None,
        }


def lifecycle_record(fx: Lifecycle) -> dict[str, Any]:
    out: dict[str, Any] = {"type": fx.type, "flow": fx.flow, "key": fx.key}
    if fx.step is not None:
        out["step"] = fx.step
    out["at"] = iso(fx.at)
    out.update(fx.detail)
    return out


def instance_view(flow: CompiledFlow, inst: Instance) -> dict[str, Any]:
    """An instance as `simulate` and the HTTP API show it."""
    steps: dict[str, Any] = {}
    for table, st in zip(flow.steps, inst.steps, strict=True):
        view: dict[str, Any] = {"status": st.status, "attempts": st.attempts}
        if st.since is not None:
            view["activated_at"] = iso(st.since)
        if st.ended is not None:
            view["ended_at"] = iso(st.ended)
        if st.due is not None:
            view["due_at" if st.due_kind == "deadline" else "retry_at"] = iso(st.due)
        if st.late:
            view["late"] = True
        steps[table.name] = view
    history = []
    for at, kind, step, detail in inst.history:
        entry: dict[str, Any] = {"at": iso(at), "type": kind}
        if step is not None:
            entry["step"] = step
        if detail:
            entry.update(detail)
            if "time" in detail:
                entry["time"] = iso(detail["time"])
        history.append(entry)
    out: dict[str, Any] = {
        "flow": flow.name,
        "version": inst.version,
        "key": inst.key,
        "status": inst.status,
        "started_at": iso(inst.started) if inst.started is not None else None,
        "ended_at": iso(inst.ended) if inst.ended is not None else None,
        "steps": steps,
        "history": history,
    }
    if inst.failure:
        out["reason"] = inst.failure
    if inst.deadline is not None:
        out["deadline_at"] = iso(inst.deadline)
    if inst.dropped:
        out["history_dropped"] = inst.dropped
    return out
