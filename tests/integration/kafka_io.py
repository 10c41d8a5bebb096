"""Plain aiokafka clients, as a third party would use them: produce events, read topics back."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bridge.engine.timefmt import parse_time


async def create_topics(bootstrap: str, names: list[str], partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name in names:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def produce_lines(bootstrap: str, lines: list[dict[str, Any]]) -> None:
    """Each simulate line as a Kafka record on its topic, with `at` as the record timestamp."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for line in lines:
            topic = line["source"].removeprefix("kafka://")
            value = line["value"]
            raw = value.encode() if isinstance(value, str) else json.dumps(value).encode()
            key = line.get("key")
            await producer.send_and_wait(
                topic,
                raw,
                key=key.encode() if key else None,
                timestamp_ms=parse_time(line["at"]),
                headers=[(k, str(v).encode()) for k, v in (line.get("headers") or {}).items()],
            )
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, limit: float = 20) -> list[Any]:
    """Every record of `topic` up to its current end (no consumer group involved)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        loop = asyncio.get_running_loop()
        stop = loop.time() + limit
        while loop.time() < stop:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                # Tansu's end offsets can lag its last records: drain what is left.
                batch = await consumer.getmany(*tps, timeout_ms=300)
                records.extend(r for rs in batch.values() for r in rs)
                if not batch:
                    break
                continue
            batch = await consumer.getmany(*tps, timeout_ms=200)
            records.extend(r for rs in batch.values() for r in rs)
    finally:
        await consumer.stop()
    return records
