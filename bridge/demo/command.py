"""`sagabridge demo`: the click command. Imports stay light so `sagabridge --help` stays fast;
the demo itself is imported when the command runs."""

from __future__ import annotations

import sys
from pathlib import Path

import click

_RATE = click.FloatRange(0.0, 1.0)


@click.command()
@click.option(
    "--mode",
    type=click.Choice(["observe", "shadow", "orchestrate"]),
    default="orchestrate",
    show_default=True,
    help="Run every step of the flow in this mode.",
)
@click.option(
    "--orders-per-second",
    type=click.FloatRange(0.1, 20.0),
    default=2.0,
    show_default=True,
    help="Orders placed per second (moto's SQS server keeps up with a few a second).",
)
@click.option(
    "--decline-rate",
    type=_RATE,
    default=0.1,
    show_default=True,
    help="Share of payments the payment service declines.",
)
@click.option(
    "--lose-rate",
    type=_RATE,
    default=0.1,
    show_default=True,
    help="Share of events a service silently never sends (first try of each step).",
)
@click.option(
    "--slow-rate",
    type=_RATE,
    default=0.05,
    show_default=True,
    help="Share of events a service sends only after the step's deadline.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same faults.")
@click.option(
    "--duration",
    type=click.FloatRange(0.0),
    default=0.0,
    show_default=True,
    help="Seconds of placing orders, then let them finish and stop; 0: until Ctrl-C.",
)
@click.option(
    "--orders",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Place this many orders, then let them finish and stop; 0: no limit.",
)
@click.option(
    "--settle",
    type=click.FloatRange(0.0),
    default=30.0,
    show_default=True,
    help="After the last order, seconds to wait at most for the orders in flight.",
)
@click.option(
    "--linger",
    is_flag=True,
    help="After the last orders finished, keep everything up (API, dashboard) until Ctrl-C.",
)
@click.option(
    "--web-port",
    type=click.IntRange(1, 65_535),
    default=6066,
    show_default=True,
    help="Port of sagabridge's HTTP API and dashboard.",
)
@click.option(
    "--kafka-port",
    type=click.IntRange(0, 65_535),
    default=0,
    show_default=True,
    help="Port of the embedded broker, for your own Kafka tools; 0: any free port.",
)
@click.option(
    "--payments-on",
    type=click.Choice(["sqs", "kafka"]),
    default="sqs",
    show_default=True,
    help="The payment service's bus: SQS (moto's server, as the example flow says) or Kafka.",
)
@click.option(
    "--report",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Keep a JSON file up to date with what the services did (orders, losses, declines).",
)
@click.option(
    "--log-level",
    type=click.Choice(["crit", "error", "warn", "info", "debug"]),
    default="info",
    show_default=True,
    help="Log level of the sagabridge worker (its log is in the demo's folder).",
)
def demo(
    mode: str,
    orders_per_second: float,
    decline_rate: float,
    lose_rate: float,
    slow_rate: float,
    seed: int,
    duration: float,
    orders: int,
    settle: float,
    linger: bool,
    web_port: int,
    kafka_port: int,
    payments_on: str,
    report: Path | None,
    log_level: str,
) -> None:
    """Watch sagabridge track a live choreography: no Kafka, AWS or Docker needed.

    Starts the embedded broker (and moto's SQS server for the payment service), four small
    services that react to each other's events (orders, inventory, payment, shipping), and
    `sagabridge run` on examples/flows/order-fulfilment.yaml with shortened deadlines. The
    services lose, delay and decline events as the knobs say; the view shows what sagabridge
    makes of it. Ctrl-C stops everything.
    """
    from bridge.demo.knobs import DemoError, Knobs  # keeps --help fast
    from bridge.demo.runner import run_demo

    knobs = Knobs(
        orders_per_second=orders_per_second,
        decline_rate=decline_rate,
        lose_rate=lose_rate,
        slow_rate=slow_rate,
        mode=mode,  # type: ignore[arg-type]
        seed=seed,
        duration=duration,
        orders=orders,
        web_port=web_port,
        kafka_port=kafka_port,
        payments_on=payments_on,  # type: ignore[arg-type]
        settle=settle,
        linger=linger,
        report=report,
        log_level=log_level,
    )
    problems = knobs.problems()
    if problems:
        for p in problems:
            click.echo(f"sagabridge demo: {p}", err=True)
        sys.exit(2)
    try:
        code = run_demo(knobs)
    except DemoError as exc:
        click.echo(f"sagabridge demo: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)
