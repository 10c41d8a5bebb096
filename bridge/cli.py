"""`sagabridge`: a thin command line over the library. Mistakes get messages, not tracebacks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console

from bridge.engine.simulator import Simulator
from bridge.engine.timefmt import parse_time
from bridge.errors import FlowError
from bridge.flow import load_compiled, load_flows
from bridge.flow.compiled import with_mode
from bridge.flow.graph import dot, mermaid
from bridge.summary import render_summary


def _fail(problems: list[str], code: int = 1) -> None:
    for p in problems:
        click.echo(p, err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sagabridge")
def main() -> None:
    """Track sagas across Kafka and SQS events, and orchestrate them step by step."""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check flow FILES (or directories of them); print every problem as file:line: field: what."""
    flows, problems, warnings = load_flows(files)
    for f in flows:
        click.echo(
            f"{f.file}: ok ({f.header.flow} v{f.header.version}, "
            f"{len(f.events)} events, {len(f.steps)} steps)"
        )
    for w in warnings:
        click.echo(w, err=True)
    if problems:
        _fail([*problems, f"{len(problems)} problem(s) found"])


@main.command()
@click.argument("flow", type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
def graph(flow: Path, fmt: str) -> None:
    """Draw FLOW (a flow file) as a Mermaid or Graphviz diagram."""
    try:
        compiled = load_compiled([flow])
    except FlowError as exc:
        _fail(exc.problems)
    for f in compiled:
        click.echo(mermaid(f) if fmt == "mermaid" else dot(f), nl=False)


@main.command()
@click.option(
    "--flow",
    "flows",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Flow file or directory; repeatable.",
)
@click.option(
    "--events",
    required=True,
    type=click.Path(path_type=Path, allow_dash=True),
    help="Recorded stream, one JSON line each ('-' reads standard input).",
)
@click.option("--until", help="Move the clock to this ISO-8601 time at the end, firing deadlines.")
@click.option("--compact", is_flag=True, help="Print the JSON document on one line.")
@click.option("--summary", is_flag=True, help="Print tables for people instead of JSON.")
@click.option(
    "--mode",
    type=click.Choice(["observe", "shadow", "orchestrate"]),
    help="Run every step in this mode, whatever the flow says (what-if replays).",
)
def simulate(
    flows: tuple[Path, ...],
    events: Path,
    until: str | None,
    compact: bool,
    summary: bool,
    mode: str | None,
) -> None:
    """Run the engine on a recorded stream with a virtual clock and print the result as JSON."""
    try:
        compiled = load_compiled(flows)
    except FlowError as exc:
        _fail(exc.problems)
    if mode is not None:
        compiled = [with_mode(f, mode) for f in compiled]
    end = None
    if until is not None:
        end = parse_time(until)
        if end is None:
            _fail([f"--until: '{until}' is not an ISO-8601 time"], 2)
    sim = Simulator(compiled)
    try:
        stream = sys.stdin if str(events) == "-" else events.open(encoding="utf-8")
    except OSError as exc:
        _fail([f"--events: cannot read {events}: {exc.strerror or exc}"], 2)
    name = "stdin" if str(events) == "-" else str(events)
    with stream:
        try:
            for n, line in enumerate(stream, 1):
                sim.feed_line(line, f"{name}:{n}")
        except UnicodeDecodeError as exc:
            _fail([f"--events: {name} is not UTF-8 text ({exc.reason})"], 2)
    if end is not None:
        sim.advance(end)
    doc = sim.result()
    if summary:
        render_summary(doc, Console())
    elif compact:
        click.echo(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))
    else:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
