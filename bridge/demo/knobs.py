"""What a demo run is asked to do, and the timings the demo flow runs on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bridge.errors import SagabridgeError

Mode = Literal["observe", "shadow", "orchestrate"]
Bus = Literal["sqs", "kafka"]


class DemoError(SagabridgeError):
    """The demo cannot start or keep running; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class Knobs:
    orders_per_second: float = 2.0
    decline_rate: float = 0.1
    lose_rate: float = 0.1
    slow_rate: float = 0.05
    mode: Mode = "orchestrate"
    seed: int = 1
    duration: float = 0.0  # seconds of placing orders; 0: until Ctrl-C
    orders: int = 0  # orders to place at most; 0: no limit
    web_port: int = 6066
    kafka_port: int = 0  # 0: a free port
    payments_on: Bus = "sqs"
    settle: float = 30.0  # after the last order, how long to wait for the rest to finish
    linger: bool = False  # after settling, keep serving until Ctrl-C
    report: Path | None = None
    log_level: str = "info"

    def problems(self) -> list[str]:
        out = []
        if self.lose_rate + self.slow_rate > 1:
            out.append("--lose-rate plus --slow-rate must not exceed 1")
        return out


# The example flow waits 30 s, 2 m and 48 h: a demo shows the same behaviour in seconds. Every
# step gets a retry, so a lost event can always be healed in orchestrate mode.
STEP_TIMINGS: dict[str, dict[str, Any]] = {
    "reserve": {
        "deadline": "3s",
        "retry": {"attempts": 3, "backoff": "exponential", "initial": "1s", "max": "4s"},
    },
    "pay": {"deadline": "5s", "retry": {"attempts": 2, "initial": "1s"}},
    "ship": {"deadline": "5s", "retry": {"attempts": 2, "initial": "1s"}},
}
FLOW_DEADLINE = "5m"
SLOW_EXTRA_S = 1.5  # a slow event comes this long after its step's deadline
