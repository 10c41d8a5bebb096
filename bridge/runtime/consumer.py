"""Faust's Kafka consumer, without losing records it fetched and then did not hand on.

Faust's `Consumer.getmany` takes a batch from aiokafka (which moves each partition's position
past it) and then drops what it does not hand on: all of it when the flow was stopped by a
rebalance meanwhile, the rest when a rebalance begins during the batch, and a partition's
records when that partition was paused meanwhile. When the flow was stopped, Faust then seeks
every partition to its committed offset; changelog partitions have none. When the dropped
records were the ones a table recovery had just sought to, the recovery waited for them
forever (in about 1 two-worker rebalance in 30 on Apache Kafka 4, 1 in 10 with a busy core:
the fetch for the changelog's first records came back while the flow was stopped).

Here the records a batch did not hand on are fetched again: the partition is sought back to the
first of them, unless something sought it elsewhere meanwhile.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import structlog
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = structlog.get_logger("sagabridge")

Rewind = dict[TP, tuple[int, int]]  # partition -> (offset to seek to, position the batch left)


def unhanded(records: Mapping[TP, Sequence[Any]], handed: Mapping[TP, int]) -> Rewind:
    """Where each partition's records stopped being handed on, and where the fetch left it.

    `handed` holds the offset of the last record handed on, by partition; records are handed on
    in offset order within a partition.
    """
    rewind: Rewind = {}
    for tp, batch in records.items():
        last = handed.get(tp)
        if not batch or (last is not None and batch[-1].offset <= last):
            continue  # handed on whole: the usual case, one look per partition
        first = next(r.offset for r in batch if last is None or r.offset > last)
        rewind[tp] = (first, batch[-1].offset + 1)
    return rewind


async def seek_back(consumer: Any, rewind: Rewind) -> dict[TP, int]:
    """On the consumer's thread: seek each partition back if it is still where the batch left it
    (a rebalance may have unassigned it, or a recovery sought it, since). Returns the seeks."""
    subscription = consumer._subscription.subscription
    if subscription is None or subscription.assignment is None:
        return {}
    assignment = subscription.assignment
    sought: dict[TP, int] = {}
    for tp, (offset, left_at) in rewind.items():
        if tp not in assignment.tps:
            continue
        state = assignment.state_value(tp)
        if state.has_valid_position and state.position == left_at:
            consumer.seek(tp, offset)
            sought[tp] = offset
    return sought


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer whose `getmany` seeks back over the records it drops, and
    says while it is handing a fetch over (`handing_over`)."""

    handing_over = False

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        # Faust's getmany (faust-streaming 0.15), with the handed-on offsets kept.
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            if rewind := unhanded(records, {}):
                await self._seek_back(rewind)
            # As Faust: partitions with a committed offset go back to it.
            try:
                await self.perform_seek()
            except Exception as exc:  # as Faust: the next rebalance seeks again
                log.warning("consumer.seek_failed", error=str(exc))
            return
        handed: dict[TP, int] = {}
        to_message = self._to_message
        self.handing_over = True
        try:
            for tp, record in self.scheduler.iterate(records):
                if not self.flow_active or self.app.consumer_generation_id != generation_id:
                    break
                if (
                    active_partitions is None
                    or tp in active_partitions
                    or tp in self._buffered_partitions
                ):
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    handed[tp] = record.offset
                    yield tp, to_message(tp, record)
        finally:
            self.handing_over = False
        if rewind := unhanded(records, handed):
            await self._seek_back(rewind)

    async def _seek_back(self, rewind: Rewind) -> None:
        thread = self._thread
        sought = await thread.call_thread(seek_back, thread._ensure_consumer(), rewind)
        if sought:
            log.info(
                "consumer.refetch",
                partitions={f"{tp.topic}/{tp.partition}": at for tp, at in sought.items()},
            )


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
