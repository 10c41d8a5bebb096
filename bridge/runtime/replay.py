"""`sagabridge replay`: send dead-lettered messages back to where they came from.

The usual repair loop: a message lands in the DLQ (a flow's key path was wrong, a schema was
missing), the team fixes the cause, then replays. Each DLQ record carries the original bytes,
headers and key, and its source in the `sagabridge.source` header; replay re-sends them
there, so they enter sagabridge exactly like new messages. Progress is the consumer group
`<app_id>-replay`: a replayed message is not replayed again by the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiobotocore.session import get_session
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from bridge.config import Settings
from bridge.errors import BrokerError
from bridge.runtime.kafka import client_kwargs

OWN_HEADERS = ("sagabridge.error", "sagabridge.source")
IDLE_MS = 1500  # a DLQ read ends after this long without a record


@dataclass(slots=True)
class ReplayReport:
    replayed: dict[str, int] = field(default_factory=dict)  # source -> messages
    skipped: dict[str, int] = field(default_factory=dict)  # why -> messages
    examples: list[tuple[str, str]] = field(default_factory=list)  # (source, reason), first few

    def count(self, into: dict[str, int], key: str) -> None:
        into[key] = into.get(key, 0) + 1


def _header(headers: list[tuple[str, bytes]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("utf-8", errors="replace")
    return None


def wanted(source: str | None, sources: tuple[str, ...]) -> str | None:
    """Why a DLQ record is not replayed, or None when it is."""
    if source is None:
        return "no sagabridge.source header"
    if not source.startswith(("kafka://", "sqs://")):
        return f"internal source {source}: not replayable"
    if sources and source not in sources:
        return "other source"
    return None


async def replay(
    settings: Settings,
    sources: tuple[str, ...] = (),
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    client = client_kwargs(settings)
    topic = settings.dlq_topic
    group = f"{settings.app_id}-replay"
    consumer = AIOKafkaConsumer(
        **client,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(**client, acks="all")
    report = ReplayReport()
    try:
        await consumer.start()
        await producer.start()
    except Exception as exc:
        raise BrokerError(f"cannot reach Kafka at {settings.bootstrap}: {exc}") from None
    sqs_cm: Any = None
    sqs: Any = None
    queue_urls: dict[str, str] = {}
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return report
        consumer.assign(tps)
        for tp in tps:  # from the group's committed offset, else the beginning
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        done = 0
        # Read until the topic stays quiet rather than up to end_offsets(): some brokers
        # (Tansu) report end offsets that lag multi-record batches.
        while True:
            batch = await consumer.getmany(*tps, timeout_ms=IDLE_MS, max_records=500)
            if not batch:
                break
            pending: list[Any] = []
            for records in batch.values():
                for record in records:
                    headers = [(k, bytes(v)) for k, v in record.headers]
                    source = _header(headers, "sagabridge.source")
                    why = wanted(source, sources)
                    if why is not None:
                        report.count(report.skipped, why)
                        continue
                    assert source is not None
                    if len(report.examples) < 10:
                        reason = _header(headers, "sagabridge.error") or ""
                        report.examples.append((source, reason))
                    report.count(report.replayed, source)
                    done += 1
                    if dry_run:
                        continue
                    original = [(k, v) for k, v in headers if k not in OWN_HEADERS]
                    if source.startswith("kafka://"):
                        pending.append(
                            await producer.send(
                                source.removeprefix("kafka://"),
                                record.value or b"",
                                key=record.key,
                                headers=original,
                            )
                        )
                    else:
                        if sqs is None:
                            sqs_cm = get_session().create_client(
                                "sqs",
                                endpoint_url=settings.sqs_endpoint,
                                region_name=settings.sqs.region,
                            )
                            sqs = await sqs_cm.__aenter__()
                        await _send_sqs(sqs, queue_urls, source, record.value or b"", original)
                if progress is not None:
                    progress(done)
            if not dry_run:
                for fut in pending:
                    await fut  # acknowledged before the DLQ offsets move on
                await consumer.commit(
                    {
                        tp: OffsetAndMetadata(records[-1].offset + 1, "")
                        for tp, records in batch.items()
                    }
                )
    finally:
        if sqs_cm is not None:
            with contextlib.suppress(Exception):
                await sqs_cm.__aexit__(None, None, None)
        await producer.stop()
        await consumer.stop()
    return report


async def _send_sqs(
    sqs: Any, urls: dict[str, str], source: str, body: bytes, headers: list[tuple[str, bytes]]
) -> None:
    queue = source.removeprefix("sqs://")
    if queue not in urls:
        urls[queue] = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
    attributes = {
        k: {"DataType": "String", "StringValue": v.decode("utf-8", errors="replace")}
        for k, v in headers[:10]  # SQS takes at most 10 message attributes
        if v
    }
    kwargs: dict[str, Any] = {"QueueUrl": urls[queue], "MessageBody": body.decode()}
    if attributes:
        kwargs["MessageAttributes"] = attributes
    if queue.endswith(".fifo"):
        kwargs["MessageGroupId"] = "replay"
        kwargs["MessageDeduplicationId"] = hashlib.sha256(body).hexdigest()[:64]
    await sqs.send_message(**kwargs)
