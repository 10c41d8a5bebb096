"""What the engine is told: events, clock ticks, associations and operator actions.

Times are integer milliseconds since the epoch. `at` is the arrival time (broker timestamp, or
the simulated clock); it is the engine's only clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(slots=True)
class Event:
    """A matched event for one instance, or, with `via`, for the association it names."""

    flow: str
    name: str
    key: str  # correlation key; with `via`, the association value
    id: str
    at: int
    time: int | None = None  # the event's own time, kept for history and durations
    fields: dict[str, Any] = field(default_factory=dict)  # kept payload fields by path text
    aliases: tuple[tuple[str, str], ...] = ()  # associations this event records
    via: str | None = None
    source: str = ""
    version: int = 0  # the flow version whose event definition matched; 0: any


@dataclass(slots=True)
class Tick:
    """The clock reached `at` for one instance (or one association, with `alias`)."""

    flow: str
    key: str
    at: int
    alias: str | None = None


@dataclass(slots=True)
class Associate:
    """Record that `alias` = `value` belongs to instance `key`; releases buffered events."""

    flow: str
    alias: str
    value: str
    key: str
    at: int


ActionName = Literal["retry", "skip", "terminate"]


@dataclass(slots=True)
class Action:
    """An operator's request, ordered with the events of its instance."""

    flow: str
    key: str
    at: int
    action: ActionName
    step: str | None = None
    by: str = "operator"
    reason: str = ""
    id: str = ""  # set by whoever asked; a redelivered action with the same id is ignored


Input = Event | Tick | Associate | Action


def entity_of(inp: Input) -> tuple[str, str, str | None]:
    """(flow, key, alias) of the state an input applies to; alias is None for instances."""
    if isinstance(inp, Associate):
        return inp.flow, inp.value, inp.alias
    if isinstance(inp, Event):
        return inp.flow, inp.key, inp.via
    if isinstance(inp, Tick):
        return inp.flow, inp.key, inp.alias
    return inp.flow, inp.key, None
