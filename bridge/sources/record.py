"""A message as a source delivered it, before decoding: the same shape from Kafka and SQS."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One message as a source delivered it, before decoding."""

    source: str  # kafka://topic or sqs://queue
    value: bytes | None
    headers: list[tuple[str, bytes]]
    key: bytes | None
    timestamp_ms: int
    default_id: str  # topic/partition/offset, or the SQS MessageId
