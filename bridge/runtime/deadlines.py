"""The per-partition index of deadlines: which states need a tick, and when.

Filled from the states themselves (their `wake`), after every batch and when partitions are
assigned, so it never drifts from the table. A tick that seems lost is sent again.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from bridge.runtime.processor import Due

RESEND_MS = 5_000  # a tick not answered by a new `wake` within this is sent again


# state key -> (when to check, due at, flow, instance key, alias): plain tuples of strings and
# numbers, which the garbage collector stops tracking, rather than Due objects. Those added two
# objects per instance to every full collection (at 170,000 instances with the API's
# summaries: 107 ms a collection, 34 without them).
Entry = tuple[int, int, str, str, str | None]


class DeadlineIndex:
    def __init__(self) -> None:
        self._entries: dict[int, dict[str, Entry]] = {}  # partition -> key -> entry
        self._heaps: dict[int, list[tuple[int, str]]] = {}

    def update(self, partition: int, dues: dict[str, Due | None]) -> None:
        entries = self._entries.setdefault(partition, {})
        heap = self._heaps.setdefault(partition, [])
        for key, due in dues.items():
            if due is None:
                entries.pop(key, None)
            else:
                entries[key] = (due.at, due.at, due.flow, due.key, due.alias)
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
            if entry is None or entry[0] != check:
                continue  # replaced or removed since
            _, at, flow, instance, alias = entry
            fired.append(Due(at, flow, instance, alias))
            entries[key] = (now + RESEND_MS, at, flow, instance, alias)
            heapq.heappush(heap, (now + RESEND_MS, key))
        return fired

    def __len__(self) -> int:
        return sum(len(e) for e in self._entries.values())
