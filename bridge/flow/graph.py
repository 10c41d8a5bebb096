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


def layers(flow: CompiledFlow) -> dict[str, int]:
    """Column of each step: one right of its furthest predecessor (the start event is 0)."""
    column: dict[int, int] = {}

    def of(i: int) -> int:
        if i not in column:
            after = flow.steps[i].after
            column[i] = 1 + max((of(j) for j in after), default=0)
        return column[i]

    return {s.name: of(s.index) for s in flow.steps}


_BOX_W, _BOX_H, _GAP_X, _GAP_Y, _PAD = 190, 74, 130, 26, 20


def svg(flow: CompiledFlow) -> str:
    """A standalone SVG: no Graphviz needed. Steps in columns by `after`, edges labelled with
    the events that move the flow on."""
    cols = layers(flow)
    last = max(cols.values(), default=0) + 1
    rows: dict[int, list[str]] = {}
    for step in flow.steps:
        rows.setdefault(cols[step.name], []).append(step.name)
    height_rows = max((len(r) for r in rows.values()), default=1)
    width = _PAD * 2 + (last + 1) * _BOX_W + last * _GAP_X
    height = _PAD * 2 + height_rows * _BOX_H + (height_rows - 1) * _GAP_Y + 20

    def pos(name: str | None) -> tuple[float, float]:
        """Centre of a node; None is the start (left) or the end (right) by context."""
        col = cols[name] if name is not None else 0
        row = rows[col].index(name) if name is not None else 0
        count = len(rows[col]) if name is not None else 1
        x = _PAD + col * (_BOX_W + _GAP_X) + _BOX_W / 2
        top = (height - count * _BOX_H - (count - 1) * _GAP_Y) / 2
        return x, top + row * (_BOX_H + _GAP_Y) + _BOX_H / 2

    def esc(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">',
        f"<title>{esc(flow.name)} v{flow.version}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
    ]
    sx, sy = pos(None)
    ex = _PAD + last * (_BOX_W + _GAP_X) + _BOX_W / 2
    out.append(f'<circle cx="{sx}" cy="{sy}" r="34" fill="#eef" stroke="#557"/>')
    out.append(f'<text x="{sx}" y="{sy + 4}" text-anchor="middle">{esc(flow.start)}</text>')
    out.append(f'<circle cx="{ex}" cy="{sy}" r="34" fill="#efe" stroke="#575"/>')
    out.append(f'<text x="{ex}" y="{sy + 4}" text-anchor="middle">completed</text>')
    for a, b, label in _edges(flow):
        x1, y1 = pos(a) if a is not None else (sx, sy)
        x2, y2 = pos(b) if b is not None else (ex, sy)
        x1 += 34 if a is None else _BOX_W / 2
        x2 -= 34 if b is None else _BOX_W / 2
        out.append(
            f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#555" '
            'marker-end="url(#arrow)"/>'
        )
        out.append(
            f'<text x="{(x1 + x2) / 2}" y="{(y1 + y2) / 2 - 5}" text-anchor="middle" '
            f'font-size="10" fill="#333">{esc(label)}</text>'
        )
    for step in flow.steps:
        cx, cy = pos(step.name)
        x, y = cx - _BOX_W / 2, cy - _BOX_H / 2
        fill = {"observe": "#f6f6f6", "shadow": "#fff7e0", "orchestrate": "#e6f0ff"}[step.mode]
        out.append(
            f'<rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="6" fill="{fill}" '
            'stroke="#333"/>'
        )
        for n, line in enumerate(_label(step).split("\\n")):
            weight = ' font-weight="bold"' if n == 0 else ""
            out.append(
                f'<text x="{cx}" y="{y + 16 + n * 14}" text-anchor="middle"{weight}>'
                f"{esc(line)}</text>"
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"
