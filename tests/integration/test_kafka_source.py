"""The source stage on a real broker: every record handed off, in partition order, and its offset
committed only once its handoff returned; a failed handoff is read again, nothing skipped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka_io import create_topics

from bridge.errors import BrokerError
from bridge.sources.kafka import KafkaSource
from bridge.sources.record import SourceRecord

RECORDS = 300
PARTITIONS = 3


async def produce(bootstrap: str, topic: str) -> dict[int, int]:
    """RECORDS over the partitions; each partition's end offset, from the acknowledgements
    (Tansu's ListOffsets can lag a multi-record batch)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        sends = [
            await producer.send(topic, json.dumps({"seq": i}).encode(), key=f"k{i % 10}".encode())
            for i in range(RECORDS)
        ]
        placed = await asyncio.gather(*sends)
    finally:
        await producer.stop()
    ends: dict[int, int] = {}
    for meta in placed:
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    return ends


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        await consumer.stop()


async def run_source(
    bootstrap: str,
    handoff: Callable[[list[SourceRecord]], Awaitable[None]],
    done: Callable[[], bool],
) -> tuple[str, str, dict[int, int]]:
    """Produce RECORDS, run a source until `done()`, stop it (which commits): the topic, the
    group and each partition's end offset."""
    uid = uuid.uuid4().hex[:10]
    topic, group = f"source-{uid}", f"source-{uid}"
    await create_topics(bootstrap, [topic], PARTITIONS)
    ends = await produce(bootstrap, topic)
    source = KafkaSource(
        {"bootstrap_servers": bootstrap},
        group,
        [topic],
        handoff,
        batch_size=40,
        batch_ms=5,
        session_timeout_s=6,
        heartbeat_s=1,
        rebalance_timeout_s=3,
    )
    await source.start()
    task = asyncio.ensure_future(source.run())
    try:
        deadline = time.monotonic() + 60
        while not done():
            assert time.monotonic() < deadline, "the source stopped handing off"
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        await source.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return topic, group, ends


def positions(records: list[SourceRecord]) -> list[tuple[int, int]]:
    """(partition, offset) of each record, from its default id kafka://topic/partition/offset."""
    out = []
    for r in records:
        partition, offset = r.default_id.rsplit("/", 2)[1:]
        out.append((int(partition), int(offset)))
    return out


@pytest.mark.kafka
async def test_every_record_is_handed_off_once_in_order_then_committed(bootstrap: str) -> None:
    handed: list[SourceRecord] = []

    async def handoff(records: list[SourceRecord]) -> None:
        await asyncio.sleep(0.01)  # an acknowledgement's round trip
        handed.extend(records)

    topic, group, ends = await run_source(bootstrap, handoff, lambda: len(handed) >= RECORDS)

    seen = positions(handed)
    assert len(seen) == len(set(seen)) == RECORDS
    by_partition: dict[int, list[int]] = defaultdict(list)
    for partition, offset in seen:
        by_partition[partition].append(offset)
    for partition, offsets in by_partition.items():
        assert offsets == list(range(ends[partition])), f"partition {partition} out of order"
    assert await committed(bootstrap, group, topic) == ends


@pytest.mark.kafka
async def test_a_failed_handoff_is_read_again_and_nothing_is_skipped(bootstrap: str) -> None:
    handed: list[SourceRecord] = []
    calls = 0

    async def handoff(records: list[SourceRecord]) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 2:
            raise BrokerError("input topic unavailable")
        handed.extend(records)

    topic, group, ends = await run_source(
        bootstrap, handoff, lambda: len(set(positions(handed))) >= RECORDS
    )

    assert calls > 2
    # Nothing skipped, and each partition's records first handed off in offset order.
    first: dict[int, list[int]] = defaultdict(list)
    for partition, offset in positions(handed):
        if offset not in first[partition]:
            first[partition].append(offset)
    assert {p: sorted(o) for p, o in first.items()} == {
        p: list(range(end)) for p, end in ends.items()
    }
    for partition, offsets in first.items():
        assert offsets == sorted(offsets), f"partition {partition} out of order"
    assert await committed(bootstrap, group, topic) == ends
