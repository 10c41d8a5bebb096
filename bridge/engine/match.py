"""From a decoded message to engine inputs: which events of which flows it is, and for whom.

Each version of each flow takes a message at most once: the first of its events, in declaration
order, whose source and `match` fit. A message that fits no flow is unmatched; one that fits but
has no key becomes a dead letter with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge.engine.effects import DeadLetter
from bridge.engine.inputs import Event
from bridge.engine.timefmt import parse_time
from bridge.flow.compiled import CompiledFlow, EventTable, read_kept
from bridge.flow.paths import MISSING, Path


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded message from a source, with what the broker said about it."""

    source: str  # kafka://topic or sqs://queue
    payload: Any
    headers: dict[str, str]
    at: int  # arrival: broker or SQS timestamp, or the simulated clock
    default_id: str  # source/partition/offset, or the SQS MessageId
    key: str | None = None  # the Kafka record key (or SQS MessageGroupId)
    id_hint: str | None = None  # an id the codec knows (CloudEvents id)
    time_hint: int | None = None


@dataclass(slots=True)
class Routed:
    events: list[Event] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return bool(self.events or self.dead)


def _scalar(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


def _fits(table: EventTable, msg: Message) -> bool:
    for path, accepted in table.match:
        value = path.read_message(msg.payload, msg.headers)
        if value is MISSING:
            return False
        if path.kind == "header":
            if value not in (str(a) for a in accepted):
                return False
        elif value not in accepted or isinstance(value, bool) != any(
            isinstance(a, bool) and a == value for a in accepted
        ):
            return False
    return True


class Matcher:
    """Routes messages to the events of every loaded flow."""

    def __init__(self, flows: Iterable[CompiledFlow]) -> None:
        ordered = sorted(flows, key=lambda f: (f.name, -f.version))
        self._key_names = {f.name: f.key_name for f in ordered}
        self._by_source: dict[str, dict[str, dict[int, list[EventTable]]]] = {}
        multi = {f.name for f in ordered if sum(g.name == f.name for g in ordered) > 1}
        for flow in ordered:
            version = flow.version if flow.name in multi else 0
            for table in flow.events.values():
                per_flow = self._by_source.setdefault(table.source, {})
                per_flow.setdefault(flow.name, {}).setdefault(version, []).append(table)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self._by_source)

    def route(self, msg: Message) -> Routed:
        routed = Routed()
        for flow_name, by_version in self._by_source.get(msg.source, {}).items():
            # One event per version: an instance reads the message with the definitions of
            # the version it started on; the engine drops the other versions' copies.
            for version, tables in by_version.items():
                for table in tables:
                    if _fits(table, msg):
                        self._take(flow_name, table, msg, routed, version)
                        break
        return routed

    def _take(
        self, flow: str, table: EventTable, msg: Message, routed: Routed, version: int
    ) -> None:
        payload = msg.payload
        if table.key is not None:
            where = table.key.text
            raw = table.key.read_message(payload, msg.headers)
        else:
            where = f"$.{self._key_names[flow]}"
            raw = Path(where, "payload", (self._key_names[flow],)).read(payload)
            if raw is MISSING and msg.key is not None:
                where, raw = "the message key", msg.key
        key = _scalar(raw) if raw is not MISSING else None
        if key is None or key == "":
            what = (
                "no key" if raw is MISSING or key == "" else f"a key that is {type(raw).__name__}"
            )
            routed.dead.append(
                DeadLetter(
                    msg.source,
                    f"{flow}: event {table.name} matched but has {what} at {where}",
                    flow,
                    table.name,
                )
            )
            return
        event_id = msg.id_hint or msg.default_id
        if table.id is not None:
            found = _scalar(table.id.read_message(payload, msg.headers))
            if found:
                event_id = found
        time = msg.time_hint
        if table.time is not None:
            time = parse_time(table.time.read_message(payload, msg.headers)) or time
        aliases = []
        for alias, path in table.associate:
            value = _scalar(path.read_message(payload, msg.headers))
            if value is not None:
                aliases.append((alias, value))
        routed.events.append(
            Event(
                flow=flow,
                name=table.name,
                key=key,
                id=event_id,
                at=msg.at,
                time=time,
                fields=read_kept(table, payload) if table.keep else {},
                aliases=tuple(aliases),
                via=table.via,
                source=msg.source,
                version=version,
            )
        )
