"""A human view of a simulate document: counts by status and step, stuck instances, commands."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

_COLOURS = {
    "COMPLETED": "green",
    "RUNNING": "cyan",
    "FAILED": "red",
    "TIMED_OUT": "red",
    "COMPENSATING": "yellow",
    "COMPENSATED": "yellow",
    "TERMINATED": "magenta",
    "DONE": "green",
    "ACTIVE": "cyan",
    "PENDING": "dim",
    "SKIPPED": "dim",
}


def _styled(status: str) -> str:
    colour = _COLOURS.get(status, "white")
    return f"[{colour}]{status}[/{colour}]"


def render_summary(doc: dict[str, Any], console: Console, stuck_limit: int = 10) -> None:
    instances = doc["instances"]
    by_status = Counter(i["status"] for i in instances)
    status_table = Table(title="Instances by status", expand=False)
    status_table.add_column("flow")
    for status in sorted(by_status):
        status_table.add_column(_styled(status), justify="right")
    for flow in sorted({i["flow"] for i in instances}):
        counts = Counter(i["status"] for i in instances if i["flow"] == flow)
        status_table.add_row(flow, *(str(counts.get(s, 0)) for s in sorted(by_status)))

    step_counts: Counter[tuple[str, str, str]] = Counter()
    for i in instances:
        for name, step in i["steps"].items():
            step_counts[(i["flow"], name, step["status"])] += 1
    step_statuses = sorted({s for _, _, s in step_counts})
    step_table = Table(title="Steps by status")
    step_table.add_column("flow / step")
    for s in step_statuses:
        step_table.add_column(_styled(s), justify="right")
    for flow, name in dict.fromkeys((f, n) for f, n, _ in step_counts):
        step_table.add_row(
            f"{flow} / {name}", *(str(step_counts.get((flow, name, s), 0)) for s in step_statuses)
        )

    stuck = [
        i
        for i in instances
        if i["status"] in ("RUNNING", "COMPENSATING")
        and any(s["status"] in ("TIMED_OUT", "ACTIVE") for s in i["steps"].values())
    ]
    stuck_table = Table(title=f"Unfinished instances ({len(stuck)})")
    for col in ("flow", "key", "status", "waiting on", "since"):
        stuck_table.add_column(col)
    for i in stuck[:stuck_limit]:
        waiting = [(n, s) for n, s in i["steps"].items() if s["status"] in ("TIMED_OUT", "ACTIVE")]
        stuck_table.add_row(
            i["flow"],
            i["key"],
            _styled(i["status"]),
            ", ".join(f"{n} ({_styled(s['status'])})" for n, s in waiting),
            min(s.get("activated_at", "") for _, s in waiting),
        )
    commands = Counter((c["name"], c["action"]) for c in doc["commands"])
    would = Counter(
        (x["command"], x["action"]) for x in doc["lifecycle"] if x["type"] == "command.would_send"
    )
    cmd_table = Table(title="Commands")
    for col in ("command", "action", "sent", "would send"):
        cmd_table.add_column(col, justify="right" if col in ("sent", "would send") else "left")
    for name, action in sorted(set(commands) | set(would)):
        cmd_table.add_row(
            name, action, str(commands.get((name, action), 0)), str(would.get((name, action), 0))
        )
    stats = doc.get("stats", {})
    footer = (
        f"messages {stats.get('messages', 0)}, unmatched {stats.get('unmatched', 0)}, "
        f"dead-lettered {len(doc['dlq'])}, duplicates "
        f"{sum(1 for x in doc['lifecycle'] if x['type'] == 'event.duplicate')}, "
        f"orphaned {sum(1 for x in doc['lifecycle'] if x['type'] == 'event.orphaned')}; "
        f"clock at {doc.get('clock')}"
    )
    console.print(
        Panel(
            Group(status_table, step_table, stuck_table, cmd_table, footer),
            title="sagabridge simulate",
            expand=False,
        )
    )
