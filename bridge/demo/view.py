"""The live terminal view, the plain progress line (when stdout is not a terminal) and the
closing summary. Everything here reads a `Scene`; nothing here touches a bus."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from bridge.demo.faults import Ledger
from bridge.demo.knobs import Knobs
from bridge.demo.tracker import Api, Lifecycle

WIDE = 130  # terminal columns from which the tables go side by side in two columns
MEDIUM = 96  # ... in a two by two grid
STATUSES = ["RUNNING", "COMPLETED", "FAILED", "TIMED_OUT", "COMPENSATING", "COMPENSATED"]
_COLOURS = {
    "RUNNING": "cyan",
    "COMPLETED": "green",
    "FAILED": "red",
    "TIMED_OUT": "red",
    "COMPENSATING": "yellow",
    "COMPENSATED": "yellow",
    "TERMINATED": "magenta",
}


@dataclass
class Scene:
    knobs: Knobs
    ledger: Ledger
    lifecycle: Lifecycle
    api: Api
    timings: str  # how the demo shortened the deadlines
    urls: dict[str, str] = field(default_factory=dict)
    phase: str = "starting"
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def status_counts(self) -> tuple[Counter[str], str]:
        if self.api.counts is not None:
            return Counter(self.api.counts.get("status") or {}), "GET /api/flows"
        return self.lifecycle.by_status(), "lifecycle topic"

    def step_counts(self) -> dict[str, Counter[str]]:
        if self.api.counts is not None and self.api.counts.get("steps"):
            return {k: Counter(v) for k, v in self.api.counts["steps"].items()}
        return self.lifecycle.by_step(int(time.time() * 1000))

    def lost_caught(self) -> tuple[int, int]:
        """(events lost, of them caught): timed out in observe/shadow, retried in orchestrate."""
        caught = 0
        for order, step in self.ledger.lost:
            inst = self.lifecycle.instances.get(order)
            if inst is None:
                continue
            seen = inst.retried if self.knobs.mode == "orchestrate" else inst.ever_timed_out
            caught += step in seen
        return len(self.ledger.lost), caught

    def declined_outcome(self) -> tuple[int, int]:
        """(declined, of them compensated in orchestrate / failed otherwise)."""
        want = {"COMPENSATED"} if self.knobs.mode == "orchestrate" else {"FAILED", "COMPENSATED"}
        done = sum(
            1
            for order in self.ledger.declined
            if (inst := self.lifecycle.instances.get(order)) is not None and inst.status in want
        )
        return len(self.ledger.declined), done


def _fmt_commands(counts: Counter[tuple[str, str]]) -> str:
    return ", ".join(f"{c} {a} {n}" for (c, a), n in sorted(counts.items())) or "none"


def _mm_ss(seconds: float) -> str:
    return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"


def header(scene: Scene) -> RenderableType:
    k = scene.knobs
    bus = "SQS (moto's server)" if k.payments_on == "sqs" else "Kafka"
    lines = [
        Text.from_markup(
            f"[bold]mode {k.mode}[/bold] · payments on {bus} · {scene.phase} "
            f"{_mm_ss(scene.elapsed)} · [dim]Ctrl-C stops everything[/dim]"
        ),
        Text.from_markup(
            f"dashboard [link]{scene.urls.get('dashboard', '-')}[/link]   "
            f"API {scene.urls.get('api', '-')}   broker {scene.urls.get('broker', '-')}"
        ),
        Text(
            f"knobs: {k.orders_per_second:g} orders/s · decline {k.decline_rate:.0%} · "
            f"lose {k.lose_rate:.0%} · slow {k.slow_rate:.0%} · seed {k.seed}"
        ),
        Text(scene.timings, style="dim"),
    ]
    return Panel(Group(*lines), title="sagabridge demo", border_style="blue")


def tables(scene: Scene) -> tuple[RenderableType, RenderableType]:
    statuses, source = scene.status_counts()
    status_table = Table(
        title="Orders by status",
        title_justify="left",
        caption=f"from {source}",
        caption_justify="left",
    )
    names = [s for s in STATUSES if statuses.get(s) or s in ("RUNNING", "COMPLETED")]
    names += sorted(set(statuses) - set(names))
    for name in names:
        colour = _COLOURS.get(name, "white")
        status_table.add_column(f"[{colour}]{name}[/{colour}]", justify="right")
    status_table.add_row(*(str(statuses.get(n, 0)) for n in names))

    step_table = Table(title="Steps", title_justify="left")
    for col in ("step", "active", "overdue", "done", "timed out", "failed"):
        step_table.add_column(col, justify="left" if col == "step" else "right")
    for step, counts in scene.step_counts().items():
        step_table.add_row(
            step,
            *(str(counts.get(c, 0)) for c in ("active", "overdue", "done", "timed_out", "failed")),
        )
    return status_table, step_table


def stuck(scene: Scene, limit: int) -> RenderableType:
    table = Table(title="Stuck orders (overdue steps)", title_justify="left")
    for col in ("order", "step", "why", "for"):
        table.add_column(col)
    now_ms = int(time.time() * 1000)
    found = {key: (step, why, age) for key, step, why, age in scene.lifecycle.stuck(now_ms, 50)}
    if scene.api.overdue is not None:  # which orders: the API; why and since when: the lifecycle
        rows: list[tuple[str, str, str, float]] = []
        for item in scene.api.overdue[:limit]:
            key = str(item.get("key"))
            step, why, age = found.get(key, (", ".join(item.get("overdue") or []), "overdue", -1))
            rows.append((key, step, why, age))
        rows.sort(key=lambda row: -row[3])
    else:
        rows = [(key, *rest) for key, rest in list(found.items())[:limit]]
    for key, step, why, age in rows:
        table.add_row(key, step, why, f"{age:.0f}s" if age >= 0 else "")
    if not rows:
        table.add_row("none", "", "", "")
    return table


def commands(scene: Scene, limit: int) -> RenderableType:
    table = Table(title="Last commands from sagabridge", title_justify="left")
    for col in ("at", "order", "command", "action", "attempt"):
        table.add_column(col)
    for sent in list(reversed(scene.lifecycle.recent))[:limit]:
        at = time.strftime("%H:%M:%S", time.localtime(sent.at / 1000))
        name = f"{sent.command} (would send)" if sent.would else sent.command
        table.add_row(at, sent.key, name, sent.action, str(sent.attempt))
    if not scene.lifecycle.recent:
        note = (
            "none: in observe mode sagabridge only watches"
            if scene.knobs.mode == "observe"
            else "none yet"
        )
        table.add_row("", "", note, "", "")
    return table


def value_line(scene: Scene) -> Text:
    lost, caught = scene.lost_caught()
    declined, outcome = scene.declined_outcome()
    led = scene.ledger
    if scene.knobs.mode == "orchestrate":
        what_lost = f"healed by a retry from sagabridge {caught}"
        what_declined = f"compensated (ReleaseInventory sent) {outcome}"
    else:
        what_lost = f"caught as timed-out steps {caught}"
        what_declined = f"failed {outcome} (their stock stays reserved: nobody releases it)"
    return Text(
        f"services: placed {len(led.placed)} · lost {lost} → {what_lost} · slow {len(led.slow)}"
        f" · declined {declined} → {what_declined}",
        style="bold",
    )


def render(scene: Scene, width: int) -> RenderableType:
    """Side by side as far as the terminal is wide; shorter lists when it is narrow."""
    statuses, steps = tables(scene)
    if width >= WIDE:
        grid = Table.grid(padding=(0, 4))
        grid.add_row(Group(statuses, steps), Group(stuck(scene, 8), commands(scene, 8)))
        return Group(header(scene), grid, value_line(scene))
    if width >= MEDIUM:
        grid = Table.grid(padding=(0, 3))
        grid.add_row(statuses, steps)
        grid.add_row(stuck(scene, 5), commands(scene, 5))
        return Group(header(scene), grid, value_line(scene))
    parts = (statuses, steps, stuck(scene, 3), commands(scene, 3))
    return Group(header(scene), *parts, value_line(scene))


def plain_line(scene: Scene) -> str:
    statuses, _ = scene.status_counts()
    counts = " ".join(f"{s} {n}" for s, n in sorted(statuses.items()))
    lost, caught = scene.lost_caught()
    declined, outcome = scene.declined_outcome()
    orchestrating = scene.knobs.mode == "orchestrate"
    sent = sum(scene.lifecycle.commands.values())
    return (
        f"[{scene.elapsed:5.0f}s] {scene.phase}: placed {len(scene.ledger.placed)} · "
        f"{counts or 'no orders tracked yet'} · timed-out steps "
        f"{scene.lifecycle.types['step.timed_out']} · commands sent {sent} · lost {lost} "
        f"({'healed' if orchestrating else 'caught'} {caught}) · declined {declined} "
        f"({'compensated' if orchestrating else 'failed'} {outcome})"
    )


def summary(scene: Scene) -> list[str]:
    statuses = scene.lifecycle.by_status()
    lost, caught = scene.lost_caught()
    declined, outcome = scene.declined_outcome()
    lc = scene.lifecycle
    caught_as = "healed by a retry" if scene.knobs.mode == "orchestrate" else "timed out"
    declined_as = "compensated" if scene.knobs.mode == "orchestrate" else "failed"
    lines = [
        f"sagabridge demo, mode {scene.knobs.mode}, {_mm_ss(scene.elapsed)}:",
        f"  orders placed {len(scene.ledger.placed)}, tracked {len(lc.instances)}: "
        + (", ".join(f"{s} {n}" for s, n in sorted(statuses.items())) or "none"),
        f"  timed-out steps {lc.types['step.timed_out']}; lost events {lost} "
        f"({caught} {caught_as}); slow events {len(scene.ledger.slow)}; "
        f"declined payments {declined} ({outcome} {declined_as})",
        f"  commands sent: {_fmt_commands(lc.commands)}",
    ]
    if lc.would_send:
        lines.append(f"  commands it would have sent: {_fmt_commands(lc.would_send)}")
    return lines


def startup(step: str, detail: str = "", seconds: float | None = None) -> str:
    took = f" ({seconds:.1f} s)" if seconds is not None else ""
    return f"  {step}{': ' + detail if detail else ''}{took}"


def as_report(scene: Scene) -> dict[str, Any]:
    statuses = scene.lifecycle.by_status()
    return {
        "phase": scene.phase,
        "elapsed_s": round(scene.elapsed, 1),
        "tracked": len(scene.lifecycle.instances),
        "status": dict(statuses),
        "commands_sent": _fmt_commands(scene.lifecycle.commands),
    }
