"""The flows' source topics, read in batches by a plain aiokafka consumer.

A batch is handed off (routed to the input topic, acknowledged) before its offsets are committed,
so a crash at any point re-reads rather than loses. Offsets are committed once a second (and
when partitions leave or the worker stops), not per batch: a commit is a broker write, and at a
few events per batch it would cost as much as the batch. What a crash makes us re-read, the
engine recognises by event id. Faust is kept for the stateful stage; this stateless one costs a
few microseconds per message instead of a Faust stream event each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, KafkaError

from bridge.errors import BrokerError, SagabridgeError
from bridge.sources.record import SourceRecord

log = structlog.get_logger("sagabridge")
Handoff = Callable[[list[SourceRecord]], Awaitable[None]]
COMMIT_INTERVAL_S = 1.0
# While records flow, a fetch asks for more bytes than batch_ms of them come to: the broker then
# answers once batch_ms has passed, or at once when a backlog is waiting.
BUSY_MIN_BYTES = 1 << 20


def record_of(r: ConsumerRecord[bytes, bytes]) -> SourceRecord:
    source = f"kafka://{r.topic}"
    return SourceRecord(
        source=source,
        value=r.value,
        headers=[(k, v if v is not None else b"") for k, v in (r.headers or ())],
        key=r.key,
        timestamp_ms=r.timestamp,
        default_id=f"{source}/{r.partition}/{r.offset}",
    )


class KafkaSource:
    def __init__(
        self,
        client: dict[str, Any],
        group_id: str,
        topics: list[str],
        handoff: Handoff,
        batch_size: int = 500,
        batch_ms: int = 10,
        fetch_wait_ms: int = 100,
        session_timeout_s: float = 10.0,
        heartbeat_s: float = 1.0,
        rebalance_timeout_s: float = 5.0,
    ) -> None:
        # aiokafka clients need a running loop: the consumer is made in start().
        self._settings: dict[str, Any] = {
            **client,
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": int(session_timeout_s * 1000),
            "heartbeat_interval_ms": int(heartbeat_s * 1000),
            "rebalance_timeout_ms": int(rebalance_timeout_s * 1000),
            "max_poll_records": batch_size,
            "fetch_max_wait_ms": fetch_wait_ms,
        }
        self._topics = topics
        self._consumer: AIOKafkaConsumer | None = None
        self._handoff = handoff
        self._batch_size = batch_size
        self._batch_ms = batch_ms
        self._fetch_wait_ms = fetch_wait_ms
        self._busy = False
        self.consumed = 0
        self._uncommitted: dict[TopicPartition, int] = {}  # handed off, offset not yet committed
        self._committed_at = time.monotonic()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(**self._settings)
        self._consumer.subscribe(self._topics, listener=_CommitOnRevoke(self))
        try:
            await self._consumer.start()
        except KafkaError as exc:
            raise BrokerError(f"cannot start the source consumer: {exc}") from None

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._commit_handed_off()
            await self._consumer.stop()

    async def run(self) -> None:
        consumer = self._consumer
        assert consumer is not None, "KafkaSource.start() first"
        while True:
            try:
                batch = await consumer.getmany(
                    timeout_ms=self._fetch_wait_ms + self._batch_ms, max_records=self._batch_size
                )
            except ConsumerStoppedError:
                return  # stop() was called: the worker is shutting down
            self._pace(busy=bool(batch))
            if time.monotonic() - self._committed_at >= COMMIT_INTERVAL_S:
                await self._commit_handed_off()
            if not batch:
                continue
            records = [record_of(r) for rs in batch.values() for r in rs]
            try:
                await self._handoff(records)
            except SagabridgeError as exc:
                # Nothing committed: read the batch again after a pause.
                log.error("sources.handoff_failed", error=str(exc), records=len(records))
                for tp, rs in batch.items():
                    consumer.seek(tp, rs[0].offset)
                await asyncio.sleep(1.0)
                continue
            self.consumed += len(records)
            self._uncommitted.update({tp: rs[-1].offset + 1 for tp, rs in batch.items()})

    def _pace(self, busy: bool) -> None:
        """Let the broker collect the batches while records flow: each fetch waits up to
        batch_ms for more, so the worker takes one fetch (one handoff: a produce request and a
        Faust event per input partition) per batch_ms, not one per producer request upstream.
        Idle, a fetch returns on the first record and otherwise waits fetch_wait_ms: a fetch
        every batch_ms would cost an idle worker and its broker (0.11 of a core on Kafka).
        The fetcher reads both settings for each request it makes."""
        fetcher = getattr(self._consumer, "_fetcher", None)
        if busy == self._busy or fetcher is None:
            return
        self._busy = busy
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = (
            (BUSY_MIN_BYTES, self._batch_ms) if busy else (1, self._fetch_wait_ms)
        )

    async def _commit_handed_off(self, only: set[TopicPartition] | None = None) -> None:
        if only is None:
            offsets, self._uncommitted = self._uncommitted, {}
            self._committed_at = time.monotonic()
        else:
            offsets = {tp: o for tp, o in self._uncommitted.items() if tp in only}
            for tp in offsets:
                del self._uncommitted[tp]
        if not offsets:
            return
        try:
            assert self._consumer is not None
            await self._consumer.commit(offsets)
        except CommitFailedError:
            # The group moved these partitions on; their new owner re-reads from the last
            # commit, and the engine ignores what it already applied.
            log.info("sources.commit_skipped", reason="rebalance")
        except KafkaError as exc:
            log.warning("sources.commit_failed", error=str(exc))

    async def partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Only handed-off offsets are pending: commit them before the new owner reads. A batch
        # still being handed off is read again by that owner (the engine drops duplicates).
        await self._commit_handed_off(revoked)

    def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # A batch in flight during the rebalance may have left offsets of partitions that
        # are someone else's now: theirs to commit.
        self._uncommitted = {tp: o for tp, o in self._uncommitted.items() if tp in assigned}

    async def lag(self) -> list[tuple[str, int]]:
        """(topic, messages behind) for each assigned partition, from the last fetch."""
        consumer = self._consumer
        if consumer is None:
            return []
        out = []
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                out.append((tp.topic, high - await consumer.position(tp)))
        return out


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.source.partitions_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.source.partitions_assigned(set(assigned))
