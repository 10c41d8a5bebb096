"""Engine inputs as JSON-ready lists, for the input topic: compact, and exact round trips."""

from __future__ import annotations

from typing import Any

from bridge.engine.inputs import Action, Associate, Event, Input, Tick


def input_to_wire(inp: Input) -> list[Any]:
    if type(inp) is Event:
        return [
            "e",
            inp.flow,
            inp.name,
            inp.key,
            inp.id,
            inp.at,
            inp.time,
            inp.fields,
            [list(a) for a in inp.aliases],
            inp.via,
            inp.source,
            inp.version,
        ]
    if isinstance(inp, Tick):
        return ["t", inp.flow, inp.key, inp.at, inp.alias]
    if isinstance(inp, Associate):
        return ["a", inp.flow, inp.alias, inp.value, inp.key, inp.at]
    if isinstance(inp, Action):
        return ["x", inp.flow, inp.key, inp.at, inp.action, inp.step, inp.by, inp.reason, inp.id]
    raise TypeError(f"not an engine input: {inp!r}")


def input_from_wire(data: list[Any]) -> Input:
    kind = data[0]
    if kind == "e":
        _, flow, name, key, id_, at, time, fields, aliases, via, source, version = data
        aliases_ = tuple((a, v) for a, v in aliases)
        return Event(flow, name, key, id_, at, time, fields, aliases_, via, source, version)
    if kind == "t":
        return Tick(data[1], data[2], data[3], data[4])
    if kind == "a":
        return Associate(data[1], data[2], data[3], data[4], data[5])
    if kind == "x":
        return Action(data[1], data[2], data[3], data[4], data[5], data[6], data[7], data[8])
    raise ValueError(f"unknown input kind {kind!r}")


def entity_key(flow: str, key: str, alias: str | None) -> str:
    """The state store key, and the routing key on the input topic."""
    return f"{flow}/{key}" if alias is None else f"{flow}/@{alias}/{key}"


def parse_entity_key(text: str) -> tuple[str, str, str | None]:
    """(flow, key, alias) back from `entity_key`."""
    flow, _, rest = text.partition("/")
    if rest.startswith("@"):
        alias, _, key = rest[1:].partition("/")
        return flow, key, alias
    return flow, rest, None
