"""The Faust consumer's batches: what a batch did not hand on is sought back, nothing else."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.transport.utils import DefaultSchedulingStrategy
from faust.types import TP

from bridge.runtime.consumer import Consumer, unhanded

A, B = TP("sb.input", 0), TP("sb-state-changelog", 1)


def batch(tp: TP, *offsets: int) -> list[Any]:
    return [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=o) for o in offsets]


class Driven:
    """What Faust's getmany reads of its consumer, with the seeks it asks for recorded."""

    def __init__(self, records: dict[TP, list[Any]], flow_active: bool = True) -> None:
        self.records = records
        self.active = set(records)
        self.flow_active = flow_active
        self.should_stop = False
        self.app = SimpleNamespace(
            consumer_generation_id=1,
            monitor=SimpleNamespace(track_tp_end_offset=lambda tp, offset: None),
        )
        self.scheduler = DefaultSchedulingStrategy()
        self._buffered_partitions: set[TP] = set()
        self.calls: list[tuple[Any, ...]] = []

    async def _wait_next_records(self, timeout: float) -> tuple[dict[TP, list[Any]], set[TP]]:
        return self.records, self.active

    def _to_message(self, tp: TP, record: Any) -> tuple[TP, int]:
        return tp, record.offset

    def highwater(self, tp: TP) -> int:
        return 100

    async def _seek_back(self, rewind: dict[TP, tuple[int, int]]) -> None:
        self.calls.append(("seek_back", rewind))

    async def perform_seek(self) -> None:
        self.calls.append(("perform_seek",))


async def drive(consumer: Driven, on_message: Any = None) -> list[tuple[TP, int]]:
    handed = []
    async for _, message in Consumer.getmany(consumer, 1.0):  # type: ignore[arg-type]
        handed.append(message)
        if on_message is not None:
            on_message(consumer, message)
    return handed


async def test_a_batch_taken_while_the_flow_is_stopped_is_fetched_again() -> None:
    # The race that hung a table recovery: the changelog's first records came back after the
    # rebalance stopped the flow, and were dropped with the position already past them.
    consumer = Driven({A: batch(A, 7, 8), B: batch(B, 0, 1, 2)}, flow_active=False)
    assert await drive(consumer) == []
    # Sought back before Faust sends the input partitions to their committed offsets.
    assert consumer.calls == [("seek_back", {A: (7, 9), B: (0, 3)}), ("perform_seek",)]


async def test_a_rebalance_during_a_batch_seeks_back_to_the_first_record_not_handed_on() -> None:
    def stop_after_two(consumer: Driven, message: tuple[TP, int]) -> None:
        if message == (B, 0):
            consumer.flow_active = False

    consumer = Driven({A: batch(A, 7, 8), B: batch(B, 0, 1, 2)})
    handed = await drive(consumer, stop_after_two)
    assert handed == [(A, 7), (B, 0)]  # Faust hands partitions on in turn
    assert consumer.calls == [("seek_back", {A: (8, 9), B: (1, 3)})]


async def test_a_new_generation_during_a_batch_seeks_back_too() -> None:
    def rebalanced(consumer: Driven, message: tuple[TP, int]) -> None:
        consumer.app.consumer_generation_id = 2

    consumer = Driven({A: batch(A, 7, 8)})
    assert await drive(consumer, rebalanced) == [(A, 7)]
    assert consumer.calls == [("seek_back", {A: (8, 9)})]


async def test_a_partition_paused_during_a_batch_is_sought_back_alone() -> None:
    def pause_b(consumer: Driven, message: tuple[TP, int]) -> None:
        consumer.active.discard(B)

    consumer = Driven({A: batch(A, 7, 8), B: batch(B, 0, 1, 2)})
    assert await drive(consumer, pause_b) == [(A, 7), (A, 8)]
    assert consumer.calls == [("seek_back", {B: (0, 3)})]


async def test_a_batch_handed_on_whole_asks_for_no_seek() -> None:
    flags = []
    consumer = Driven({A: batch(A, 7, 8), B: batch(B, 0, 1, 2)})
    handed = await drive(consumer, lambda c, m: flags.append(c.handing_over))
    assert sorted(handed) == sorted([(A, 7), (A, 8), (B, 0), (B, 1), (B, 2)])
    assert consumer.calls == []
    # The agent waits while a fetch is being handed over, and only then.
    assert flags == [True] * 5
    assert consumer.handing_over is False


def test_unhanded_starts_after_the_last_offset_handed_on() -> None:
    records = {A: batch(A, 3, 5, 9), B: batch(B, 0), TP("t", 2): []}
    assert unhanded(records, {A: 5, B: 0}) == {A: (9, 10)}
    assert unhanded(records, {}) == {A: (3, 10), B: (0, 1)}
    assert unhanded(records, {A: 9, B: 0}) == {}


async def test_the_agent_waits_for_the_rest_of_a_fetch_before_taking_its_batch() -> None:
    import asyncio

    from bridge.runtime.app import rest_of_fetch

    consumer = SimpleNamespace(handing_over=True)
    events: list[int] = [0]

    async def hand_over() -> None:  # Faust's pace: one message per turn of the loop
        for n in range(1, 8):
            await asyncio.sleep(0)
            events.append(n)
        consumer.handing_over = False

    handing = asyncio.ensure_future(hand_over())
    await rest_of_fetch(consumer, events, max_=500)
    assert events == list(range(8))  # one batch, not the first message alone
    await handing


async def test_a_full_batch_or_an_idle_consumer_is_taken_at_once() -> None:
    import asyncio

    from bridge.runtime.app import rest_of_fetch

    events = [1, 2, 3]
    for consumer, max_ in [
        (SimpleNamespace(handing_over=True), 3),  # full: the stream waits for room meanwhile
        (SimpleNamespace(handing_over=False), 500),
        (object(), 500),  # a consumer without the flag
    ]:
        await asyncio.wait_for(rest_of_fetch(consumer, events, max_, turns=10**9), 1)
