"""A flow as GET /api/flows shows it: drawn from the engine's compiled tables, not the YAML."""

from __future__ import annotations

from typing import Any

from bridge.api.index import STEP_STATUSES, merge_counts
from bridge.flow.compiled import Catalog, CompiledFlow, Template


def _command(tpl: Template | None) -> dict[str, str] | None:
    return None if tpl is None else {"name": tpl.name, "to": tpl.to}


def describe_flow(flow: CompiledFlow, versions: list[int]) -> dict[str, Any]:
    done: dict[int, list[str]] = {}
    failed: dict[int, list[str]] = {}
    for name, ev in flow.events.items():
        for i in ev.done_of:
            done.setdefault(i, []).append(name)
        for i in ev.failed_of:
            failed.setdefault(i, []).append(name)
    return {
        "name": flow.name,
        "version": flow.version,
        "versions": versions,
        "key": flow.key_name,
        "mode": flow.mode,
        "on_failure": flow.on_failure,
        "deadline_ms": flow.deadline_ms,
        "start": flow.start,
        "events": [{"name": n, "source": e.source} for n, e in flow.events.items()],
        "steps": [
            {
                "name": s.name,
                "after": [flow.steps[i].name for i in s.after],
                "mode": s.mode,
                "deadline_ms": s.deadline_ms,
                "attempts": s.attempts,
                "done": done.get(s.index, []),
                "failed": failed.get(s.index, []),
                "command": _command(s.command),
                "compensate": _command(s.compensate),
            }
            for s in flow.steps
        ],
        "complete_when": [flow.steps[i].name for i in flow.complete_when],
    }


def empty_counts(flow: CompiledFlow) -> dict[str, Any]:
    """Counts with a zero for every step status, so a client never meets a missing member."""
    zero = {s.lower(): 0 for s in STEP_STATUSES} | {"overdue": 0}
    return {"total": 0, "status": {}, "steps": {s.name: dict(zero) for s in flow.steps}}


def flows_document(catalog: Catalog, counts: dict[str, list[dict[str, Any]]]) -> list[Any]:
    """Every flow (latest version) with the counts that the workers reported for it."""
    out = []
    for name in sorted(catalog.latest):
        flow = catalog.latest[name]
        versions = sorted(f.version for f in catalog if f.name == name)
        doc = describe_flow(flow, versions)
        doc["counts"] = merge_counts([empty_counts(flow), *counts.get(name, [])])
        out.append(doc)
    return out
