"""`apply(flow, state, input) -> (state, effects)`: every rule of a flow, as one pure function.

No I/O, no clock, no randomness: time is the input's arrival time, command ids and jitter are
hashes. `apply` takes ownership of the state it is given (it may update it in place) and never
raises on bad input: what cannot be used becomes an effect or a history record.
"""

from __future__ import annotations

import hashlib
from typing import Any

from bridge.engine.effects import Command, Effect, Forward, Lifecycle, Wake
from bridge.engine.inputs import Action, Associate, Event, Input, Tick
from bridge.engine.state import (
    ACTIVE,
    COMPENSATED,
    COMPENSATING,
    COMPLETED,
    DEADLINE,
    DONE,
    ENDED,
    FAILED,
    HISTORY_LIMIT,
    PENDING,
    RETRY,
    RUNNING,
    SEEN_LIMIT,
    SKIPPED,
    TERMINATED,
    TIMED_OUT,
    Association,
    Instance,
    State,
    pack_event,
    unpack_event,
)
from bridge.engine.timefmt import iso
from bridge.flow.compiled import Catalog, CompiledFlow, StepTable, Template, render

_SATISFIED = (DONE, SKIPPED)
_NO_DETAIL: dict[str, Any] = {}  # a successor may start once its predecessors are here


def command_id(flow: str, version: int, key: str, step: str, action: str, attempt: int) -> str:
    """The deterministic command id: a re-sent command carries the same one."""
    text = f"{flow}|{version}|{key}|{step}|{action}|{attempt}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def backoff_ms(step: StepTable, attempt: int, next_id: str) -> int:
    """Delay before attempt `attempt + 1`, after attempt `attempt`'s deadline passed."""
    if step.backoff == "exponential":
        delay = step.initial_ms * (1 << (attempt - 1))
    elif step.backoff == "linear":
        delay = step.initial_ms * attempt
    else:
        delay = step.initial_ms
    if step.jitter:
        unit = int(next_id[:8], 16) / 0xFFFFFFFF  # in [0, 1], fixed by the command id
        delay = int(delay * (1 + step.jitter * (2 * unit - 1)))
    if step.max_ms is not None:
        delay = min(delay, step.max_ms)  # `max` is a promise: jitter never passes it
    return max(delay, 0)


def flow_for(catalog: Catalog, name: str, state: State | None) -> CompiledFlow | None:
    """The flow version `state` runs on: its own once started, else the newest."""
    if isinstance(state, Instance) and state.status is not None:
        return catalog.get(name, state.version)
    return catalog.get(name)


def apply(flow: CompiledFlow, state: State | None, inp: Input) -> tuple[State | None, list[Effect]]:
    """Apply one input to the state it targets; None state means none exists yet (or any more)."""
    effects: list[Effect] = []
    kind = type(inp)
    if kind is Associate or (kind is Event and inp.via is not None):  # type: ignore[union-attr]
        return _apply_association(flow, state, inp, effects), effects  # type: ignore[arg-type]
    if kind is Tick and inp.alias is not None:  # type: ignore[union-attr]
        return _apply_association(flow, state, inp, effects), effects  # type: ignore[arg-type]
    inst = state if isinstance(state, Instance) else None
    if isinstance(inp, Action) and (inst is None or inst.status is None):
        return state, effects  # nothing to act on; the shell reports unknown keys
    if inst is None:
        inst = Instance(inp.key, flow.version, len(flow.steps))
    return _Run(flow, inst, inp, effects).go(), effects


class _Run:
    """One application of one input to one instance."""

    __slots__ = ("flow", "fx", "inp", "inst", "now")

    def __init__(self, flow: CompiledFlow, inst: Instance, inp: Input, fx: list[Effect]) -> None:
        self.flow = flow
        self.inst = inst
        self.inp = inp
        self.fx = fx
        self.now = max(inst.clock, inp.at)

    def go(self) -> Instance | None:
        inp, inst = self.inp, self.inst
        if type(inp) is Event:
            version = inst.version if inst.status is not None else self.flow.version
            if inp.version and inp.version != version:
                return inst if inst.status is not None or inst.orphans else None
            # Timers due by this arrival fire first, as if their tick had already come.
            self.on_tick()
            inst.clock = self.now
            self.on_event(inp)
        elif isinstance(inp, Tick):
            self.on_tick()
        elif isinstance(inp, Action):
            self.on_tick()
            inst.clock = self.now
            self.on_action(inp)
        wake = self.next_due()
        if wake != inst.wake:
            inst.wake = wake
            self.fx.append(Wake(self.flow.name, inst.key, wake))
        if inst.status is None and not inst.orphans:
            return None  # only expired orphans were here: nothing left to keep
        return inst

    # -- records ------------------------------------------------------------------------------

    def record(
        self,
        kind: str,
        step: str | None = None,
        detail: dict[str, Any] | None = None,
        lifecycle: bool = True,
    ) -> None:
        inst = self.inst
        if inst.status is not None:
            history = inst.history
            history.append([self.now, kind, step, detail])
            if len(history) > HISTORY_LIMIT:
                del history[0]
                inst.dropped += 1
        if lifecycle:
            self.fx.append(
                Lifecycle(kind, self.flow.name, inst.key, self.now, step, detail or _NO_DETAIL)
            )

    def remember(self, event_id: str) -> None:
        seen = self.inst.seen
        seen.append(event_id)
        if len(seen) > SEEN_LIMIT:
            del seen[0]

    # -- events -------------------------------------------------------------------------------

    def on_event(self, ev: Event) -> None:
        inst, flow = self.inst, self.flow
        if ev.id in inst.seen or (inst.orphans and any(o[2] == ev.id for o in inst.orphans)):
            self.record("event.duplicate", None, {"event": ev.name, "id": ev.id})
            return
        if inst.status is None:
            if ev.name == flow.start:
                self.start(ev)
            else:
                inst.orphans.append(pack_event(ev, self.now + flow.orphan_ttl_ms))
            return
        table = flow.events.get(ev.name)
        self.remember(ev.id)
        if table is None:
            self.record(
                "event.ignored",
                None,
                {
                    "event": ev.name,
                    "id": ev.id,
                    "reason": f"not an event of version {inst.version}",
                },
                lifecycle=False,
            )
            return
        if (
            inst.status == COMPENSATING
            and inst.compensating
            and inst.compensating[0] in table.compensated_of
        ):
            self.received(ev)
            i = inst.compensating.pop(0)
            inst.steps[i].status = COMPENSATED
            self.record("step.compensated", flow.steps[i].name, lifecycle=False)
            self.advance_compensation()
            return
        if inst.status != RUNNING:
            self.record("event.late", None, {"event": ev.name, "id": ev.id})
            return
        self.received(ev)
        for i in table.compensated_of:
            # A confirmation that overtook the compensation (other topic, other partition):
            # kept, so the compensation does not wait for an event that already came.
            inst.steps[i].held.append(["compensated", ev.name, ev.id, self.now])
        for i in table.done_of:
            if inst.status == RUNNING:
                self.outcome(i, "done", ev)
        for i in table.failed_of:
            if inst.status == RUNNING:
                self.outcome(i, "failed", ev)

    def received(self, ev: Event) -> None:
        detail: dict[str, Any] = {"event": ev.name, "id": ev.id}
        if ev.time is not None:
            detail["time"] = ev.time
        self.record("event", None, detail, lifecycle=False)
        if ev.fields:
            self.inst.fields.setdefault(ev.name, {}).update(ev.fields)
        for alias, value in ev.aliases:
            self.fx.append(Associate(self.flow.name, alias, value, self.inst.key, self.now))

    def start(self, ev: Event) -> None:
        inst, flow = self.inst, self.flow
        inst.status = RUNNING
        inst.version = flow.version
        inst.started = self.now
        if flow.deadline_ms is not None:
            inst.deadline = self.now + flow.deadline_ms
        self.record("instance.started", None, {"version": flow.version})
        self.remember(ev.id)
        self.received(ev)
        table = flow.events[ev.name]
        # The start event may itself finish a first step: held, and applied on activation.
        for i in table.done_of:
            inst.steps[i].held.append(["done", ev.name, ev.id, self.now])
        for i in table.failed_of:
            inst.steps[i].held.append(["failed", ev.name, ev.id, self.now])
        # Buffered events first: every step is still PENDING, so their outcomes are held and
        # applied in order as the steps activate.
        orphans, inst.orphans = inst.orphans, []
        for entry in orphans:
            orphan, _ = unpack_event(flow.name, entry)
            self.on_event(orphan)
        for i in flow.roots:
            if inst.status == RUNNING and inst.steps[i].status == PENDING:
                self.activate(i)

    def outcome(self, i: int, outcome: str, ev: Event) -> None:
        st = self.inst.steps[i]
        if st.status == PENDING:
            st.held.append([outcome, ev.name, ev.id, self.now])
            self.record("event.held", self.flow.steps[i].name, {"event": ev.name}, lifecycle=False)
        elif st.status in (ACTIVE, TIMED_OUT):
            if outcome == "done":
                self.complete(i, late=st.status == TIMED_OUT)
            else:
                self.fail_step(i)

    # -- steps --------------------------------------------------------------------------------

    def activate(self, i: int) -> None:
        """A step becomes ACTIVE: its command goes out (per its mode), its deadline starts, and
        an outcome that arrived while it was PENDING is applied at once. The command is sent
        even then, so the commands never depend on the order events happened to arrive in."""
        st, step = self.inst.steps[i], self.flow.steps[i]
        st.status = ACTIVE
        st.since = self.now
        st.attempts = 1
        self.record("step.activated", step.name)
        if step.command is not None:
            if step.mode == "orchestrate":
                self.send(step, step.command, "invoke", 1)
            elif step.mode == "shadow":
                self.would_send(step, step.command, "invoke", 1)
        if step.deadline_ms is not None:
            st.due, st.due_kind = self.now + step.deadline_ms, DEADLINE
        held = [h for h in st.held if h[0] != "compensated"]
        st.held = [h for h in st.held if h[0] == "compensated"]
        for outcome, *_ in held:
            if outcome == "done":
                self.complete(i, late=False)
            else:
                self.fail_step(i)
            return

    def complete(self, i: int, late: bool) -> None:
        inst, flow = self.inst, self.flow
        st = inst.steps[i]
        st.status, st.ended, st.due, st.late = DONE, self.now, None, late
        inst.seq += 1
        st.seq = inst.seq
        if late:
            self.record("step.done", flow.steps[i].name, {"late": True})
        else:
            self.record("step.done", flow.steps[i].name)
        self.release_successors(i)
        self.check_complete()

    def release_successors(self, i: int) -> None:
        inst, flow = self.inst, self.flow
        for j in flow.steps[i].successors:
            if inst.status != RUNNING:
                return
            if inst.steps[j].status == PENDING and all(
                inst.steps[p].status in _SATISFIED for p in flow.steps[j].after
            ):
                self.activate(j)

    def check_complete(self) -> None:
        inst = self.inst
        if inst.status == RUNNING and all(
            inst.steps[i].status in _SATISFIED for i in self.flow.complete_when
        ):
            inst.status, inst.ended, inst.deadline = COMPLETED, self.now, None
            self.clear_timers()
            self.record("instance.completed")

    def fail_step(self, i: int) -> None:
        st = self.inst.steps[i]
        st.status, st.ended, st.due = FAILED, self.now, None
        name = self.flow.steps[i].name
        self.record("step.failed", name)
        self.fail(FAILED, "instance.failed", f"step {name} failed")

    def fail(self, status: str, kind: str, reason: str) -> None:
        inst = self.inst
        inst.status, inst.failure, inst.ended, inst.deadline = status, reason, self.now, None
        self.clear_timers()
        self.record(kind, None, {"reason": reason})
        if self.flow.on_failure == "compensate":
            steps = self.flow.steps
            done = [
                i
                for i, st in enumerate(inst.steps)
                if st.status == DONE and steps[i].compensate is not None
            ]
            inst.compensating = sorted(done, key=lambda i: -inst.steps[i].seq)
            self.advance_compensation()

    def advance_compensation(self) -> None:
        """Compensate DONE steps in reverse order of completion, waiting where told to."""
        inst = self.inst
        while inst.compensating:
            i = inst.compensating[0]
            step = self.flow.steps[i]
            tpl = step.compensate
            assert tpl is not None
            if step.mode == "orchestrate":
                self.send(step, tpl, "compensate", 1)
                inst.sent_compensation = True
                confirmed = any(h[0] == "compensated" for h in inst.steps[i].held)
                if tpl.done and not confirmed:
                    inst.steps[i].status = COMPENSATING
                    inst.status = COMPENSATING
                    return
                inst.steps[i].status = COMPENSATED
                self.record("step.compensated", step.name, lifecycle=False)
            elif step.mode == "shadow":
                self.would_send(step, tpl, "compensate", 1)
            else:
                self.record(
                    "compensation.recorded", step.name, {"command": tpl.name}, lifecycle=False
                )
            inst.compensating.pop(0)
        if inst.sent_compensation and inst.status != COMPENSATED:
            inst.status, inst.ended = COMPENSATED, self.now
            self.record("instance.compensated", None, {"reason": inst.failure})

    def clear_timers(self) -> None:
        for st in self.inst.steps:
            st.due = None

    # -- commands -----------------------------------------------------------------------------

    def envelope(self, step: StepTable, tpl: Template, action: str, attempt: int) -> dict[str, Any]:
        inst, flow = self.inst, self.flow
        return {
            "command_id": command_id(flow.name, inst.version, inst.key, step.name, action, attempt),
            "name": tpl.name,
            "flow": flow.name,
            "key": inst.key,
            "step": step.name,
            "action": action,
            "attempt": attempt,
            "issued_at": iso(self.now),
            "payload": render(tpl.payload, inst.key, inst.fields),
        }

    def send(self, step: StepTable, tpl: Template, action: str, attempt: int) -> None:
        env = self.envelope(step, tpl, action, attempt)
        self.fx.append(Command(tpl.to, env))
        self.record("command.sent", step.name, _command_detail(tpl, env))

    def would_send(self, step: StepTable, tpl: Template, action: str, attempt: int) -> None:
        env = self.envelope(step, tpl, action, attempt)
        self.record(
            "command.would_send",
            step.name,
            {**_command_detail(tpl, env), "payload": env["payload"]},
        )

    # -- time ---------------------------------------------------------------------------------

    def next_due(self) -> int | None:
        inst = self.inst
        if inst.status is None:
            return min((o[-1] for o in inst.orphans), default=None)
        if inst.status != RUNNING:
            return None
        due = inst.deadline
        for st in inst.steps:
            if st.due is not None and (due is None or st.due < due):
                due = st.due
        return due

    def on_tick(self) -> None:
        """Fire every timer due by the tick's time, earliest first; a stale tick changes nothing."""
        inst, now = self.inst, self.now
        while True:
            due = self.next_due()
            if due is None or due > now:
                return
            inst.clock = now
            if inst.status is None:
                self.expire_orphans()
            elif inst.deadline is not None and inst.deadline == due:
                self.fail(TIMED_OUT, "instance.timed_out", "flow deadline passed")
            else:
                i = next(i for i, st in enumerate(inst.steps) if st.due == due)
                self.step_due(i, due)

    def expire_orphans(self) -> None:
        keep = []
        for entry in self.inst.orphans:
            if entry[-1] <= self.now:
                self.record("event.orphaned", None, {"event": entry[0], "id": entry[2]})
            else:
                keep.append(entry)
        self.inst.orphans = keep

    def step_due(self, i: int, due: int) -> None:
        st, step = self.inst.steps[i], self.flow.steps[i]
        if st.due_kind == RETRY:
            assert step.command is not None and step.deadline_ms is not None
            st.attempts += 1
            self.send(step, step.command, "retry", st.attempts)
            st.due, st.due_kind = self.now + step.deadline_ms, DEADLINE
            return
        if step.mode == "orchestrate" and st.attempts < step.attempts:
            next_id = command_id(
                self.flow.name,
                self.inst.version,
                self.inst.key,
                step.name,
                "retry",
                st.attempts + 1,
            )
            st.due = due + backoff_ms(step, st.attempts, next_id)
            st.due_kind = RETRY
            self.record("deadline.missed", step.name, {"attempt": st.attempts}, lifecycle=False)
            return
        st.status, st.ended, st.due = TIMED_OUT, self.now, None
        final = step.mode == "orchestrate"
        self.record("step.timed_out", step.name, {"attempt": st.attempts, "final": final})
        if final:
            self.fail(FAILED, "instance.failed", f"step {step.name} timed out")
        elif step.mode == "shadow" and step.command is not None and step.attempts > 1:
            self.would_send(step, step.command, "retry", st.attempts + 1)

    # -- operators ----------------------------------------------------------------------------

    def on_action(self, act: Action) -> None:
        inst, flow = self.inst, self.flow
        if act.id:
            if act.id in inst.seen:
                return  # the same request delivered again
            self.remember(act.id)
        self.record(
            "action",
            act.step,
            {"action": act.action, "by": act.by, "reason": act.reason},
            lifecycle=False,
        )
        if act.action == "terminate":
            if inst.status in ENDED:
                self.reject(act, f"instance is already {inst.status}")
                return
            inst.status, inst.ended, inst.deadline = TERMINATED, self.now, None
            inst.compensating = []
            self.clear_timers()
            self.record("instance.terminated", None, {"by": act.by, "reason": act.reason})
            return
        i = flow.step_index.get(act.step or "")
        if i is None:
            self.reject(act, f"unknown step {act.step!r}")
            return
        revive = inst.status == FAILED and not inst.sent_compensation
        if inst.status != RUNNING and not revive:
            self.reject(act, f"instance is {inst.status}")
            return
        st, step = inst.steps[i], flow.steps[i]
        allowed = (
            (ACTIVE, TIMED_OUT, FAILED)
            if act.action == "retry"
            else (PENDING, ACTIVE, TIMED_OUT, FAILED)
        )
        if st.status not in allowed:
            self.reject(act, f"step {step.name} is {st.status}")
            return
        if revive:
            self.revive()
        if act.action == "retry":
            st.status, st.ended, st.late = ACTIVE, None, False
            st.attempts += 1
            if step.command is not None:
                self.send(step, step.command, "retry", st.attempts)
            if step.deadline_ms is not None:
                st.due, st.due_kind = self.now + step.deadline_ms, DEADLINE
            self.record(
                "step.retried", step.name, {"by": act.by, "attempt": st.attempts}, lifecycle=False
            )
        else:
            st.status, st.ended, st.due, st.held = SKIPPED, self.now, None, []
            self.record("step.skipped", step.name, {"by": act.by})
            self.release_successors(i)
            self.check_complete()

    def revive(self) -> None:
        """An operator's retry or skip brings a failed instance (nothing compensated) back."""
        inst, flow = self.inst, self.flow
        inst.status, inst.ended, inst.failure, inst.compensating = RUNNING, None, None, []
        if flow.deadline_ms is not None and inst.started is not None:
            inst.deadline = inst.started + flow.deadline_ms
        for st, step in zip(inst.steps, flow.steps, strict=True):
            if st.status == ACTIVE and step.deadline_ms is not None and st.since is not None:
                st.due, st.due_kind = st.since + step.deadline_ms, DEADLINE
        self.record("instance.resumed", lifecycle=False)

    def reject(self, act: Action, reason: str) -> None:
        self.record(
            "action.rejected", act.step, {"action": act.action, "by": act.by, "reason": reason}
        )


# -- associations ---------------------------------------------------------------------------


def _apply_association(
    flow: CompiledFlow, state: State | None, inp: Associate | Event | Tick, fx: list[Effect]
) -> Association | None:
    if isinstance(inp, Associate):
        alias, value = inp.alias, inp.value
    elif isinstance(inp, Event):
        alias, value = inp.via or "", inp.key
    else:
        alias, value = inp.alias or "", inp.key
    assoc = state if isinstance(state, Association) else Association(alias, value)
    now = max(assoc.clock, inp.at)
    if isinstance(inp, Associate):
        assoc.clock = now
        assoc.key = inp.key
        for entry in assoc.buffer:
            ev, _ = unpack_event(flow.name, entry)
            fx.append(Forward(_resolved(ev, inp.key, now)))
        assoc.buffer = []
    elif isinstance(inp, Event):
        assoc.clock = now
        if assoc.key is not None:
            fx.append(Forward(_resolved(inp, assoc.key, now)))
        elif any(entry[2] == inp.id and entry[9] == inp.version for entry in assoc.buffer):
            fx.append(
                Lifecycle(
                    "event.duplicate",
                    flow.name,
                    value,
                    now,
                    None,
                    {"event": inp.name, "id": inp.id, "via": alias},
                )
            )
        else:
            assoc.buffer.append(pack_event(inp, now + flow.orphan_ttl_ms))
    else:
        keep = []
        for entry in assoc.buffer:
            if entry[-1] <= now:
                assoc.clock = now
                fx.append(
                    Lifecycle(
                        "event.orphaned",
                        flow.name,
                        value,
                        now,
                        None,
                        {"event": entry[0], "id": entry[2], "via": alias},
                    )
                )
            else:
                keep.append(entry)
        assoc.buffer = keep
    wake = min((entry[-1] for entry in assoc.buffer), default=None)
    if wake != assoc.wake:
        assoc.wake = wake
        fx.append(Wake(flow.name, value, wake, alias))
    if assoc.key is None and not assoc.buffer:
        return None
    return assoc


def _resolved(ev: Event, key: str, now: int) -> Event:
    return Event(
        ev.flow,
        ev.name,
        key,
        ev.id,
        max(ev.at, now),
        ev.time,
        ev.fields,
        ev.aliases,
        None,
        ev.source,
        ev.version,
    )


def _command_detail(tpl: Template, env: dict[str, Any]) -> dict[str, Any]:
    return {
        "command": tpl.name,
        "action": env["action"],
        "attempt": env["attempt"],
        "command_id": env["command_id"],
        "to": tpl.to,
    }
