"""Everything the worker writes to Kafka goes through one aiokafka producer: routed inputs,
commands, lifecycle records, dead letters. `send` returns the delivery future, so a caller can
send a whole batch and then wait for all acknowledgements at once."""

from __future__ import annotations

import asyncio
import functools
import struct
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bridge.errors import BrokerError

# Every batch the worker writes (effects here, states in the changelog) may reach this size.
# aiokafka keeps one produce request in flight per broker, with one batch per partition in it:
# at its 16 KB default, a backlog's effects went out in hundreds of round trips, one after the
# other. Half the broker's default message.max.bytes (1 MB).
BATCH_BYTES = 512 * 1024


class KafkaSink:
    def __init__(self, client: dict[str, Any], linger_ms: int = 0) -> None:
        self._client = client
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            **self._client,
            acks="all",
            linger_ms=self._linger_ms,
            max_batch_size=BATCH_BYTES,
            max_request_size=4_194_304,
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise BrokerError(
                f"cannot start a producer on {self._client['bootstrap_servers']}: {exc}"
            ) from None

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Iterable[tuple[str, bytes]] = (),
    ) -> asyncio.Future[Any]:
        """Queue one record; the returned future resolves when Kafka acknowledged it."""
        assert self._producer is not None, "KafkaSink.start() first"
        try:
            fut: asyncio.Future[Any] = await self._producer.send(
                topic, value, key=key, partition=partition, headers=list(headers) or None
            )
        except KafkaError as exc:
            raise BrokerError(f"cannot send to {topic}: {exc}") from None
        return fut

    async def send_many(
        self, topic: str, records: Iterable[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
    ) -> list[asyncio.Future[Any]]:
        """Queue many keyed records for one topic as ready-made batches, one per partition.

        Partitions are Kafka's default (murmur2 of the key), as `send` would pick them; building
        the batch here costs a fraction of a `send` call per record.
        """
        assert self._producer is not None, "KafkaSink.start() first"
        try:
            partitions = sorted(await self._producer.partitions_for(topic))
            futures: list[asyncio.Future[Any]] = []
            batches: dict[int, Any] = {}
            for key, value, headers in records:
                p = partitions[partition_for_bytes(key or b"", len(partitions))]
                batch = batches.get(p)
                if batch is None:
                    batch = batches[p] = self._producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    futures.append(await self._producer.send_batch(batch, topic, partition=p))
                    batch = batches[p] = self._producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=headers)
            for p, batch in batches.items():
                futures.append(await self._producer.send_batch(batch, topic, partition=p))
        except KafkaError as exc:
            raise BrokerError(f"cannot send to {topic}: {exc}") from None
        return futures

    @staticmethod
    async def acknowledged(futures: list[asyncio.Future[Any]]) -> None:
        """Wait until every record of a batch is acknowledged; BrokerError if one was not."""
        try:
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise BrokerError(f"Kafka did not acknowledge a write: {exc}") from None


@functools.lru_cache(maxsize=65_536)
def partition_for_bytes(key: bytes, partitions: int) -> int:
    # Cached: a key comes back with each of its instance's events and with several records
    # per batch.
    return (murmur2(key) & 0x7FFFFFFF) % partitions


_M = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's `Utils.murmur2`, unsigned), as aiokafka's, with the
    key's 4-byte words unpacked at once: about a third of its time per key."""
    length = len(data)
    whole = length & ~3
    h = 0x9747B28C ^ length
    for k in struct.unpack_from(f"<{whole >> 2}I", data):
        k = (k * _M) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * _M) & 0xFFFFFFFF
        h = ((h * _M) & 0xFFFFFFFF) ^ k
    tail = length & 3
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail:
        h = ((h ^ data[whole]) * _M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)
