"""The Faust consumer's seek back over dropped records, on a real consumer and broker."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka_io import create_topics

from bridge.runtime.consumer import seek_back


async def fetch(consumer: AIOKafkaConsumer, tp: TopicPartition, until: int) -> list[int]:
    """Offsets fetched from `tp` until the consumer's position reaches `until`."""
    offsets: list[int] = []
    for _ in range(10):
        if await consumer.position(tp) >= until:
            break
        batches = await consumer.getmany(tp, timeout_ms=2000)
        offsets += [r.offset for r in batches.get(tp, [])]
    return offsets


async def test_records_dropped_after_a_fetch_are_fetched_again_unless_sought_since(
    bootstrap: str,
) -> None:
    topic = f"seek-back-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for n in range(6):
            await producer.send_and_wait(topic, f"r{n}".encode(), partition=0)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        assert await fetch(consumer, tp, 6) == [0, 1, 2, 3, 4, 5]
        # Records 2-5 were dropped: the partition is still where that batch left it.
        assert await seek_back(consumer, {tp: (2, 6)}) == {tp: 2}
        assert await fetch(consumer, tp, 6) == [2, 3, 4, 5]
        # Sought elsewhere since (a recovery's seek): that seek stands.
        consumer.seek(tp, 1)
        assert await seek_back(consumer, {tp: (4, 6)}) == {}
        assert await consumer.position(tp) == 1
        assert await fetch(consumer, tp, 6) == [1, 2, 3, 4, 5]
        # A partition no longer assigned is left alone.
        assert await seek_back(consumer, {TopicPartition(topic, 7): (0, 6)}) == {}
    finally:
        await consumer.stop()
