"""The per-partition index of deadlines: which states need a tick, and when.

Filled from the states themselves (their `wake`), after every batch and when partitions are
assigned, so it never drifts from the table. A tick that seems lost is sent again.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from bridge.runtime.processor import Due

RESEND_MS = 5_000  # a tick not answered by a new `wake` within this is sent again


class DeadlineIndex:
    def __init__(self) -> None:
        self._entries: dict[int, dict[str, tuple[Due, int]]] = {}  # partition -> key -> due
        self._heaps: dict[int, list[tuple[int, str]]] = {}

    def update(self, partition: int, dues: dict[str, Due | None]) -> None:
        entries = self._entries.setdefault(partition, {})
        heap = self._heaps.setdefault(partition, [])
        for key, due in dues.items():
            if due is None:
                entries.pop(key, None)
            else:
                entries[key] = (due, due.at)
                heapq.heappush(heap, (due.at, key))

    def update_all(self, dues: dict[str, Due | None], partitions: dict[str, int]) -> None:
        for key, due in dues.items():
            self.update(partitions[key], {key: due})

    def rebuild(self, partition: int, dues: Iterable[tuple[str, Due]]) -> None:
        self.drop(partition)
        self.update(partition, dict(dues))

    def drop(self, partition: int) -> None:
        self._entries.pop(partition, None)
        self._heaps.pop(partition, None)

    @property
    def partitions(self) -> set[int]:
        return set(self._entries)

    def pop_due(self, partition: int, now: int) -> list[Due]:
        """The deadlines due by `now`; each is offered again after RESEND_MS if still there."""
        entries = self._entries.get(partition)
        heap = self._heaps.get(partition)
        if not entries or not heap:
            return []
        fired = []
        while heap and heap[0][0] <= now:
            check, key = heapq.heappop(heap)
            entry = entries.get(key)
            if entry is None or entry[1] != check:
                continue  # replaced or removed since
            due = entry[0]
            fired.append(due)
            entries[key] = (due, now + RESEND_MS)
            heapq.heappush(heap, (now + RESEND_MS, key))
        return fired

    def __len__(self) -> int:
        return sum(len(e) for e in self._entries.values())
