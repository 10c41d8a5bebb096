"""What the engine asks the shell to do. Effects are data; the shell performs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.engine.inputs import Associate, Event


@dataclass(slots=True)
class Command:
    """A command to send: the DESIGN section 4 envelope and its destination."""

    to: str
    envelope: dict[str, Any]


@dataclass(slots=True)
class Lifecycle:
    """A record for `sagabridge.lifecycle`: instance.started, step.done, command.sent, ..."""

    type: str
    flow: str
    key: str
    at: int
    step: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Wake:
    """Deliver a Tick to this state at `at` (None: no deadline pending any more)."""

    flow: str
    key: str
    at: int | None
    alias: str | None = None


@dataclass(slots=True)
class Forward:
    """An event resolved through an association, to apply to its instance."""

    event: Event


@dataclass(slots=True)
class DeadLetter:
    """A message that could not be used, with why; the shell keeps its bytes."""

    source: str
    reason: str
    flow: str | None = None
    event: str | None = None


Effect = Command | Lifecycle | Wake | Forward | Associate | DeadLetter
