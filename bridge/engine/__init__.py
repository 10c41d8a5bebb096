"""The engine: `apply(flow, state, input) -> (state, effects)`, pure and deterministic."""

from __future__ import annotations

from bridge.engine.apply import apply, backoff_ms, command_id
from bridge.engine.effects import Command, DeadLetter, Effect, Forward, Lifecycle, Wake
from bridge.engine.inputs import Action, Associate, Event, Input, Tick
from bridge.engine.match import Matcher, Message, Routed
from bridge.engine.simulator import Simulator, instance_view
from bridge.engine.state import Association, Instance, State, StepState, state_from_json

__all__ = [
    "Action",
    "Associate",
    "Association",
    "Command",
    "DeadLetter",
    "Effect",
    "Event",
    "Forward",
    "Input",
    "Instance",
    "Lifecycle",
    "Matcher",
    "Message",
    "Routed",
    "Simulator",
    "State",
    "StepState",
    "Tick",
    "Wake",
    "apply",
    "backoff_ms",
    "command_id",
    "instance_view",
    "state_from_json",
]
