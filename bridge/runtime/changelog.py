"""A batch's states into the Faust table: the local store at once, the changelog as one Kafka
batch per partition.

Faust's own path (`table[key] = value`) queues one changelog record at a time and sends each
with its own producer call, tens of microseconds apiece. Here the records go out as ready-made
batches, still through Faust's producer: Faust flushes that producer before it commits input
offsets and when partitions are revoked, so no offset is committed ahead of the states it led
to (DESIGN.md section 6), exactly as with Faust's own writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import Mapping
from typing import Any

import structlog
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from faust.streams import _current_event
from faust.types import TP

from bridge.sinks.kafka import BATCH_BYTES

log = structlog.get_logger("sagabridge")

Write = tuple[bytes, bytes | None]  # key, value (None: deleted)

# States are JSON that repeats itself (step rows, history entries): zstd writes a twelfth of
# the bytes for about 1.2 us more per state. Only the table's recovery reads them.
COMPRESSION = DefaultRecordBatch.CODEC_ZSTD


def _batch() -> BatchBuilder:
    return BatchBuilder(BATCH_BYTES, COMPRESSION, is_transactional=False)


class Changelog:
    def __init__(self, app: Any, table: Any, tail_alone: bool) -> None:
        self.app = app
        self.table = table
        # Tansu reports a partition's end offset from its last batch's first record: a last
        # batch of one record keeps the end exact, so recovery reads every state.
        self.tail_alone = tail_alone
        self.topic: str = table.changelog_topic.get_topic_name()
        self._crash: asyncio.Future[Any] | None = None

    async def write(self, writes: Mapping[int, list[Write]], events: Mapping[int, Any]) -> None:
        """Store `writes` (by partition) locally and queue their changelog records.

        `events` holds an input event of each partition: Faust's RocksDB store picks the
        database by the current event's partition.
        """
        data = self.table.data
        for partition, records in writes.items():
            token = _current_event.set(weakref.ref(events[partition]))
            try:
                for key, value in records:
                    if value is None:
                        with contextlib.suppress(KeyError):
                            del data[key]
                    else:
                        data[key] = value
            finally:
                _current_event.reset(token)
        producer = self.app.producer._ensure_producer()  # started with the app
        for partition, records in writes.items():
            for chunk in self._chunks(records):
                batch, n = _batch(), 0
                for key, value in chunk:
                    if batch.append(key=key, value=value, timestamp=None, headers=[]) is None:
                        await self._send(producer, batch, partition, n)  # full: start another
                        batch, n = _batch(), 0
                        batch.append(key=key, value=value, timestamp=None, headers=[])
                    n += 1
                await self._send(producer, batch, partition, n)

    def _chunks(self, records: list[Write]) -> list[list[Write]]:
        if self.tail_alone and len(records) > 1:
            return [records[:-1], records[-1:]]
        return [records]

    async def _send(self, producer: Any, batch: BatchBuilder, partition: int, n: int) -> None:
        fut = await producer.send_batch(batch, self.topic, partition=partition)
        fut.add_done_callback(functools.partial(self._sent, partition, n))

    def _sent(self, partition: int, n: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            # aiokafka retried for the whole request timeout: the states are only local now,
            # so stop rather than let Faust commit the inputs that made them.
            log.error("changelog.send_failed", error=str(exc), partition=partition)
            self._crash = asyncio.ensure_future(self.app.crash(exc))
            return
        # What Faust's own changelog callback does: where RocksDB recovery resumes.
        self.table.data.set_persisted_offset(TP(self.topic, partition), fut.result().offset + n - 1)
