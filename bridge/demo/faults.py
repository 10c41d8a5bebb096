"""Which events the services lose, delay or decline, and the ledger of what they did.

Each decision comes from a `random.Random` seeded with the run's seed and the order and step, so
a run is reproducible whatever order the services happen to see their messages in.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.demo.knobs import Knobs

Fate = Literal["ok", "lost", "slow"]


class Faults:
    def __init__(self, knobs: Knobs) -> None:
        self.seed = knobs.seed
        self.lose_rate = knobs.lose_rate
        self.slow_rate = knobs.slow_rate
        self.decline_rate = knobs.decline_rate

    def _draw(self, *parts: str) -> random.Random:
        return random.Random("/".join((str(self.seed), *parts)))

    def fate(self, order: str, step: str) -> Fate:
        """What happens to the event a service owes for `order` the first time it does `step`."""
        r = self._draw(order, step).random()
        if r < self.lose_rate:
            return "lost"
        if r < self.lose_rate + self.slow_rate:
            return "slow"
        return "ok"

    def declined(self, order: str) -> bool:
        return self._draw(order, "decline").random() < self.decline_rate

    def order_lines(self, order: str) -> tuple[list[str], int]:
        rng = self._draw(order, "order")
        items = sorted({f"sku-{rng.randint(1, 9)}" for _ in range(rng.randint(1, 3))})
        return items, rng.randint(5, 400)


@dataclass
class Ledger:
    """What the services did: the demo's report, and the truth the view compares with."""

    placed: list[str] = field(default_factory=list)
    lost: dict[tuple[str, str], str] = field(default_factory=dict)  # (order, step) -> event
    slow: dict[tuple[str, str], str] = field(default_factory=dict)
    slow_sent: set[tuple[str, str]] = field(default_factory=set)  # slow, and sent by now
    declined: set[str] = field(default_factory=set)
    healed: set[tuple[str, str]] = field(default_factory=set)  # lost, then a retry made it
    received: Counter[tuple[str, str]] = field(default_factory=Counter)  # (command, action)
    duplicates: int = 0  # commands delivered again, ignored by command_id
    emitted: int = 0
    pending: int = 0  # slow events scheduled and not sent yet

    def as_dict(self) -> dict[str, Any]:
        return {
            "placed": len(self.placed),
            "orders": self.placed,
            "lost": [
                {"order": o, "step": s, "event": e} for (o, s), e in sorted(self.lost.items())
            ],
            "slow": [
                {"order": o, "step": s, "event": e} for (o, s), e in sorted(self.slow.items())
            ],
            "declined": sorted(self.declined),
            "healed": [{"order": o, "step": s} for o, s in sorted(self.healed)],
            "commands_received": {f"{c} {a}": n for (c, a), n in sorted(self.received.items())},
            "duplicate_commands": self.duplicates,
            "events_emitted": self.emitted,
        }
