"""Raw source messages to engine inputs, grouped by the input-topic partition that owns them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.codecs import Codec, JsonCodec
from bridge.codecs.confluent import UnknownSchemaId
from bridge.engine.match import Matcher, Message
from bridge.engine.timefmt import parse_time
from bridge.engine.wire import input_to_wire
from bridge.errors import DecodeError
from bridge.runtime.routing import target_of
from bridge.sources.record import SourceRecord


@dataclass(slots=True)
class RoutedBatch:
    inputs: dict[int, list[list[Any]]] = field(default_factory=dict)
    dead: list[tuple[SourceRecord, str]] = field(default_factory=list)
    matched: int = 0
    unmatched: dict[str, int] = field(default_factory=dict)  # source -> messages


class Router:
    def __init__(self, matcher: Matcher, codecs: Mapping[str, Codec], partitions: int) -> None:
        self.matcher = matcher
        self.codecs = codecs
        self.partitions = partitions
        self._json = JsonCodec()

    async def _fetch_and_decode(self, codec: Codec, record: SourceRecord, schema_id: Any) -> Any:
        await codec.prefetch(schema_id)  # type: ignore[attr-defined]
        return codec.decode(record.value, dict(record.headers))

    async def route(self, records: Sequence[SourceRecord]) -> RoutedBatch:
        """Route a batch in arrival order: Kafka orders each partition, not topics against
        each other, so a batch mixing topics is put back in timestamp order first."""
        out = RoutedBatch()
        for record in sorted(records, key=lambda r: r.timestamp_ms):
            codec = self.codecs.get(record.source, self._json)
            try:
                try:  # without an await per record, unless a schema must be fetched
                    decoded = codec.decode(record.value, dict(record.headers))
                except UnknownSchemaId as missing:
                    decoded = await self._fetch_and_decode(codec, record, missing.schema_id)
            except DecodeError as exc:
                out.dead.append((record, f"cannot decode: {exc}"))
                continue
            key = None
            if record.key is not None:
                key = record.key.decode("utf-8", errors="replace")
            msg = Message(
                source=record.source,
                payload=decoded.payload,
                headers=decoded.headers,
                at=record.timestamp_ms,
                default_id=record.default_id,
                key=key,
                id_hint=decoded.event_id,
                time_hint=parse_time(decoded.event_time) if decoded.event_time else None,
            )
            routed = self.matcher.route(msg)
            if not routed.matched:
                out.unmatched[record.source] = out.unmatched.get(record.source, 0) + 1
                continue
            out.matched += 1
            for dead in routed.dead:
                out.dead.append((record, dead.reason))
            for event in routed.events:
                _, partition = target_of(event, self.partitions)
                out.inputs.setdefault(partition, []).append(input_to_wire(event))
        return out
