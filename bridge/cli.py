"""`sagabridge`: a thin command line over the library. Mistakes get messages, not tracebacks."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from bridge.config import load_settings
from bridge.engine.simulator import Simulator
from bridge.engine.timefmt import parse_time
from bridge.errors import ConfigError, FlowError, SagabridgeError
from bridge.flow import load_compiled, load_flows
from bridge.flow.compiled import with_mode
from bridge.flow.graph import dot, mermaid, svg
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
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot", "svg"]),
    default="mermaid",
    show_default=True,
)
def graph(flow: Path, fmt: str) -> None:
    """Draw FLOW (a flow file) as a Mermaid or Graphviz diagram, or as a standalone SVG."""
    try:
        compiled = load_compiled([flow])
    except FlowError as exc:
        _fail(exc.problems)
    for f in compiled:
        draw = {"mermaid": mermaid, "dot": dot, "svg": svg}[fmt]
        click.echo(draw(f), nl=False)


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


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="YAML settings file; flags override it, SAGABRIDGE_* variables override both.",
)
@click.option(
    "--flows",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Flow file or directory; repeatable.",
)
@click.option("--bootstrap", help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT].")
@click.option("--sqs-endpoint", help="SQS endpoint URL (for sqs:// sources and commands).")
@click.option("--web-port", type=int, help="Port of the HTTP API on this worker.")
@click.option("--web-host", help="Address the HTTP API binds to (default 127.0.0.1).")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="Keep state in RocksDB under this directory (default: in memory).",
)
@click.option(
    "--embedded",
    is_flag=True,
    default=None,
    help="Start the built-in broker (memory only, for trying things out).",
)
@click.option("--api-token", help="Bearer token that operator actions must carry.")
@click.option("--log-level", type=click.Choice(["crit", "error", "warn", "info", "debug"]))
def run(
    config_file: Path | None,
    flows: tuple[Path, ...],
    bootstrap: str | None,
    sqs_endpoint: str | None,
    web_port: int | None,
    web_host: str | None,
    state_dir: Path | None,
    embedded: bool | None,
    api_token: str | None,
    log_level: str | None,
) -> None:
    """Run a worker: read the flows' sources, track every instance, send what they decide."""
    try:
        settings = load_settings(
            config_file,
            flows=list(flows) or None,
            bootstrap=bootstrap,
            sqs_endpoint=sqs_endpoint,
            web_port=web_port,
            web_host=web_host,
            state_dir=state_dir,
            embedded=embedded,
            api_token=api_token,
            log_level=log_level,
        )
        if not settings.flows:
            raise ConfigError("setting flows (or --flows, SAGABRIDGE_FLOWS): no flow given")
        if not settings.embedded and not settings.bootstrap:
            raise ConfigError(
                "setting bootstrap (or --bootstrap, SAGABRIDGE_BOOTSTRAP): no Kafka address "
                "given; pass --bootstrap HOST:PORT, or --embedded for the built-in broker"
            )
        compiled = load_compiled(settings.flows)
        uses_sqs = any(
            e.startswith("sqs://") for f in compiled for e in (*f.sources, *f.destinations)
        )
        if uses_sqs and settings.embedded and not settings.sqs_endpoint:
            raise ConfigError(
                "setting sqs_endpoint (or --sqs-endpoint, SAGABRIDGE_SQS_ENDPOINT): the flows use "
                "sqs:// queues and the embedded broker has no SQS; point it at an SQS server"
            )
    except FlowError as exc:
        _fail(exc.problems)
    except ConfigError as exc:
        _fail(str(exc).splitlines(), 2)
    from bridge.runtime.worker import run_worker

    try:
        run_worker(settings, compiled)
    except SagabridgeError as exc:
        _fail([f"sagabridge: {exc}"], 1)


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="YAML settings file (app_id, bootstrap, dlq_topic, sqs).",
)
@click.option("--bootstrap", help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT].")
@click.option("--sqs-endpoint", help="SQS endpoint URL, for messages that came from SQS.")
@click.option(
    "--source",
    "sources",
    multiple=True,
    help="Only messages from this source (kafka://TOPIC or sqs://QUEUE); repeatable.",
)
@click.option("--dry-run", is_flag=True, help="List what would be replayed; send nothing.")
def replay(
    config_file: Path | None,
    bootstrap: str | None,
    sqs_endpoint: str | None,
    sources: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Send dead-lettered messages back to their source, once the cause is fixed.

    Reads the DLQ from where the last replay stopped (consumer group <app_id>-replay) to its
    current end; each message goes back to its topic or queue with its key and headers.
    """
    import asyncio

    from bridge.runtime.replay import replay as run_replay

    for source in sources:
        if not source.startswith(("kafka://", "sqs://")):
            _fail([f"--source {source}: use kafka://TOPIC or sqs://QUEUE"], 2)
    try:
        settings = load_settings(config_file, bootstrap=bootstrap, sqs_endpoint=sqs_endpoint)
        console = Console(stderr=True)
        with console.status("reading the dead-letter topic") as status:
            report = asyncio.run(
                run_replay(
                    settings,
                    sources,
                    dry_run,
                    lambda n: status.update(f"{n} message(s) {'found' if dry_run else 'sent'}"),
                )
            )
    except ConfigError as exc:
        _fail(str(exc).splitlines(), 2)
    except SagabridgeError as exc:
        _fail([f"sagabridge: {exc}"], 1)
    verb = "would replay" if dry_run else "replayed"
    total = sum(report.replayed.values())
    click.echo(f"{verb} {total} message(s) from {settings.dlq_topic}")
    for source, n in sorted(report.replayed.items()):
        click.echo(f"  {source}: {n}")
    for why, n in sorted(report.skipped.items()):
        click.echo(f"  skipped {n}: {why}")
    if dry_run:
        for source, reason in report.examples:
            click.echo(f"  e.g. {source}: {reason}")


@main.group()
def topics() -> None:
    """Report or create the topics of topics/topics.yaml, sagabridge's own, and the flows'."""


def _topics_settings(
    config_file: Path | None,
    flows: tuple[Path, ...],
    bootstrap: str | None,
    topics_dir: Path | None,
) -> tuple[Any, list[Any]]:
    settings = load_settings(
        config_file, flows=list(flows) or None, bootstrap=bootstrap, topics_dir=topics_dir
    )
    compiled = load_compiled(settings.flows) if settings.flows else []
    return settings, compiled


_topic_options = [
    click.option("--config", "config_file", type=click.Path(path_type=Path)),
    click.option("--flows", multiple=True, type=click.Path(path_type=Path)),
    click.option("--bootstrap"),
    click.option(
        "--topics-dir",
        type=click.Path(path_type=Path),
        help="Folder holding topics.yaml (default: topics).",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON."),
]


def _with_topic_options(fun: Any) -> Any:
    for option in reversed(_topic_options):
        fun = option(fun)
    return fun


def _topics_run(
    config_file: Path | None,
    flows: tuple[Path, ...],
    bootstrap: str | None,
    topics_dir: Path | None,
    as_json: bool,
    create: bool,
) -> None:
    import asyncio

    from bridge.runtime import topics as t
    from bridge.runtime.worker import declared_topics

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # errors are reported below
    try:
        settings, compiled = _topics_settings(config_file, flows, bootstrap, topics_dir)
        declared = declared_topics(settings)
        if create:
            plan = asyncio.run(t.apply(settings, declared, compiled, include_flow_topics=True))
        else:
            plan = asyncio.run(t.plan(settings, declared, compiled))
    except FlowError as exc:
        _fail(exc.problems)
    except SagabridgeError as exc:
        _fail(str(exc).splitlines(), 2 if isinstance(exc, ConfigError) else 1)
    if as_json:
        click.echo(json.dumps(plan.as_dict(), indent=2))
    else:
        Console().print(t.render_plan(plan))


@topics.command("plan")
@_with_topic_options
def topics_plan(
    config_file: Path | None,
    flows: tuple[Path, ...],
    bootstrap: str | None,
    topics_dir: Path | None,
    as_json: bool,
) -> None:
    """Say which topics exist, which are missing and which differ; change nothing."""
    _topics_run(config_file, flows, bootstrap, topics_dir, as_json, create=False)


@topics.command("apply")
@_with_topic_options
def topics_apply(
    config_file: Path | None,
    flows: tuple[Path, ...],
    bootstrap: str | None,
    topics_dir: Path | None,
    as_json: bool,
) -> None:
    """Create the missing topics. Never alters or deletes one."""
    _topics_run(config_file, flows, bootstrap, topics_dir, as_json, create=True)


@main.command()
@click.argument("flow")
@click.argument("key")
@click.option(
    "--url",
    default="http://127.0.0.1:6066",
    show_default=True,
    help="Any worker's HTTP address; it forwards to the worker that owns the key.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the instance as JSON.")
def status(flow: str, key: str, url: str, as_json: bool) -> None:
    """Where is instance KEY of FLOW, and why is it stuck?"""
    from bridge.status import fetch_instance, render_instance

    try:
        found = fetch_instance(url, flow, key)
    except SagabridgeError as exc:
        _fail([str(exc)], 1)
    if as_json:
        click.echo(json.dumps(found, indent=2))
    else:
        render_instance(found, Console())


# The demo's command imports only click; the demo itself loads when the command runs.
from bridge.demo.command import demo  # noqa: E402

main.add_command(demo)
