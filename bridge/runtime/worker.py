"""Start a worker: settings and flows in, a running Faust worker out, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import sys

import faust
import structlog

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.flow.compiled import CompiledFlow
from bridge.runtime.app import Runtime
from bridge.runtime.embedded import TansuBroker, start_tansu
from bridge.runtime.logs import configure_logging, logging_config
from bridge.runtime.topics import TopicSpec, apply, load_topic_specs

log = structlog.get_logger("sagabridge")


def run_worker(settings: Settings, flows: list[CompiledFlow]) -> None:
    configure_logging(settings.log_level)
    broker: TansuBroker | None = None
    if settings.embedded:
        broker = start_tansu()
        settings = settings.model_copy(
            update={"bootstrap": broker.bootstrap, "producer_batch_bytes": 1}
        )
        log.info(
            "embedded.started",
            bootstrap=broker.bootstrap,
            note="memory only: everything is lost when sagabridge stops",
        )
    try:
        if settings.create_topics:
            asyncio.run(ensure_topics(settings, flows))
        runtime = Runtime(settings, flows)
        log.info(
            "worker.starting",
            flows=[f"{f.name} v{f.version}" for f in flows],
            bootstrap=settings.bootstrap,
            web=f"http://{settings.web_host}:{settings.web_port}",
        )
        quiet_gc()
        worker = faust.Worker(
            runtime.app,
            runtime.pipes,
            loglevel=settings.log_level,
            logging_config=logging_config(settings.log_level),
            redirect_stdouts=False,
            quiet=True,
        )
        worker.execute_from_commandline()
    finally:
        if broker is not None:
            broker.stop()


def quiet_gc() -> None:
    """Short garbage collections, full ones rare. With Python's defaults a worker holding a few
    hundred thousand objects (instance summaries, clients, Faust) ran a full collection every
    second or so under load, each 100+ ms with every stream stopped. Any collection stops
    every stream while it scans, so the middle generation is kept small too (6 ms on average;
    with 20,000 and 20 it grew to 400,000 objects and took 40 ms, up to 92: latency spikes).
    Nearly all of the hot path's garbage is freed by reference counting; the collector is
    there for cycles."""
    gc.collect()
    gc.freeze()  # what start-up built lives as long as the worker: never scan it again
    gc.set_threshold(5_000, 5, 2_000)
    # Faust's consumer runs in a thread of its own: with the default 5 ms switch interval a
    # fetched batch could wait that long for the GIL at each handoff to the event loop.
    sys.setswitchinterval(0.001)


def declared_topics(settings: Settings) -> list[TopicSpec]:
    path = settings.topics_dir / "topics.yaml"
    return load_topic_specs(path) if path.exists() else []


async def ensure_topics(settings: Settings, flows: list[CompiledFlow]) -> None:
    """Create what is missing (never alter or delete); refuse an input topic of another size."""
    plan = await apply(settings, declared_topics(settings), flows, include_flow_topics=True)
    if plan.created:
        log.info("topics.created", topics=list(plan.created))
    state = plan.topic(settings.input_topic)
    if state.partitions is not None and state.partitions != settings.input_partitions:
        raise ConfigError(
            f"setting input_partitions (or SAGABRIDGE_INPUT_PARTITIONS): {settings.input_topic} "
            f"has {state.partitions} partitions, not {settings.input_partitions}; state is "
            "partitioned like it, so use the topic's count (growing it needs a new app_id)"
        )
