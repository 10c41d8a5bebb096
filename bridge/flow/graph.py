"""Draw a compiled flow as Mermaid or Graphviz DOT, from the tables the engine runs on."""

from __future__ import annotations

import re

from bridge.flow.compiled import CompiledFlow, StepTable
from bridge.flow.durations import format_duration


def _label(step: StepTable) -> str:
    parts = [step.name, f"[{step.mode}]"]
    if step.deadline_ms is not None:
        parts.append(f"deadline {format_duration(step.deadline_ms)}")
    if step.attempts > 1:
        parts.append(f"{step.attempts} attempts")
    if step.command is not None:
        parts.append(f"cmd {step.command.name}")
    return "\\n".join(parts)


def _edges(flow: CompiledFlow) -> list[tuple[str | None, str | None, str]]:
    """(from, to, label), None standing for the start and the end: the start event into the
    first steps, then `after` edges, then the steps that complete the instance."""
    done_by = {
        s.index: "|".join(n for n, e in flow.events.items() if s.index in e.done_of)
        for s in flow.steps
    }
    edges: list[tuple[str | None, str | None, str]] = [
        (None, flow.steps[i].name, flow.start) for i in flow.roots
    ]
    for step in flow.steps:
        for j in step.successors:
            edges.append((step.name, flow.steps[j].name, done_by[step.index]))
    for i in flow.complete_when:
        edges.append((flow.steps[i].name, None, done_by[i]))
    return edges


def _id(name: str) -> str:
    # Mermaid reserves words such as `end`; prefixed, sanitised ids never clash.
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def mermaid(flow: CompiledFlow) -> str:
    lines = [
        "flowchart LR",
        f'  {_id("start")}(("{flow.start}"))',
        f'  {_id("end")}(("completed"))',
    ]
    for step in flow.steps:
        node = _id("step_" + step.name)
        lines.append(f'  {node}["{_label(step).replace(chr(92) + "n", "<br/>")}"]')
        fail = [n for n, e in flow.events.items() if step.index in e.failed_of]
        if fail:
            lines.append(f'  {node} -. "{"|".join(fail)}" .-> {_id("failed")}{{{{"failed"}}}}')
        if step.compensate is not None:
            lines.append(
                f'  {node} -. "compensate" .-> {_id("comp_" + step.name)}["{step.compensate.name}"]'
            )
    for a, b, label in _edges(flow):
        src = _id("start") if a is None else _id("step_" + a)
        dst = _id("end") if b is None else _id("step_" + b)
        lines.append(f'  {src} -- "{label}" --> {dst}')
    return "\n".join(lines) + "\n"


def dot(flow: CompiledFlow) -> str:
    def node(name: str) -> str:
        return '"step:' + name.replace('"', '\\"') + '"'

    lines = [
        f'digraph "{flow.name}" {{',
        "  rankdir=LR;",
        "  node [shape=box];",
        f'  "start" [shape=circle, label="{flow.start}"];',
        '  "end" [shape=doublecircle, label="completed"];',
    ]
    for step in flow.steps:
        lines.append(f'  {node(step.name)} [label="{_label(step)}"];')
        fail = [n for n, e in flow.events.items() if step.index in e.failed_of]
        if fail:
            lines.append(
                f'  {node(step.name)} -> "failed" [style=dashed, label="{"|".join(fail)}"];'
            )
        if step.compensate is not None:
            comp = node("compensate:" + step.name)
            lines.append(f'  {node(step.name)} -> {comp} [style=dotted, label="compensate"];')
            lines.append(f'  {comp} [shape=note, label="{step.compensate.name}"];')
    if any(e.failed_of for e in flow.events.values()):
        lines.append('  "failed" [shape=octagon, label="failed"];')
    for a, b, label in _edges(flow):
        src = '"start"' if a is None else node(a)
        dst = '"end"' if b is None else node(b)
        lines.append(f'  {src} -> {dst} [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
