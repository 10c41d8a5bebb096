"""The Faust worker: sources -> router -> input topic -> engine -> table, commands, lifecycle.

Faust stays inside this package. Each piece it calls (Router, Processor, DeadlineIndex) is plain
code with its own tests; this module wires them to topics, the table, a timer and web views.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import faust
import structlog
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from bridge.codecs import Codec, build_codec
from bridge.codecs.fastjson import dumps, loads
from bridge.config import Settings
from bridge.engine.effects import Command, Lifecycle
from bridge.engine.inputs import Tick
from bridge.engine.match import Matcher
from bridge.engine.simulator import lifecycle_record
from bridge.engine.wire import input_to_wire, parse_entity_key
from bridge.errors import SagabridgeError
from bridge.flow.compiled import CompiledFlow
from bridge.runtime.changelog import Changelog
from bridge.runtime.consumer import Transport
from bridge.runtime.deadlines import DeadlineIndex
from bridge.runtime.kafka import client_kwargs
from bridge.runtime.processor import Outbox, Processor, decode_state, due_of, state_writes
from bridge.runtime.router import Router
from bridge.runtime.routing import encode_batch, partition_for
from bridge.runtime.web import WebApi, json_errors
from bridge.sinks.kafka import KafkaSink
from bridge.sinks.sqs import SqsSink
from bridge.sources.kafka import KafkaSource
from bridge.sources.record import SourceRecord
from bridge.sources.sqs import SqsSource

log = structlog.get_logger("sagabridge")


class _TableReader:
    """The Processor's view of the Faust table: text keys, JSON bytes values. Writes go
    through `Changelog`."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: str) -> bytes | None:
        value: bytes | None = self.table.data.get(key.encode())  # the store, no Faust wrapper
        return value


def _credentials(settings: Settings) -> Any:
    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return None
    kwargs = client_kwargs(settings)
    if k.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password,
            mechanism=k.sasl_mechanism,
            ssl_context=kwargs.get("ssl_context"),
        )
    return faust.SSLCredentials(kwargs["ssl_context"])


def traceparent(command_id: str) -> str:
    """A W3C traceparent derived from the command id, so a re-sent command traces the same."""
    return f"00-{command_id[:32]}-{command_id[:16]}-01"


class Runtime:
    def __init__(self, settings: Settings, flows: Sequence[CompiledFlow]) -> None:
        self.settings = settings
        self.partitions = settings.input_partitions
        self.retention_ms = int(settings.ended_retention_s * 1000)
        self.processor = Processor(flows, self.partitions, self.retention_ms)
        self.catalog = self.processor.catalog
        self.deadlines = DeadlineIndex()
        self.codecs: dict[str, Codec] = {}
        sources = sorted({s for f in flows for s in f.sources})
        kafka_sources = [s for s in sources if s.startswith("kafka://")]
        sqs_sources = [s for s in sources if s.startswith("sqs://")]
        for source in sources:
            self.codecs[source] = build_codec(settings.codec_for(source), settings.topics_dir)
        for endpoint, config in settings.sources.items():  # codecs for command destinations
            if endpoint not in self.codecs:
                self.codecs[endpoint] = build_codec(config, settings.topics_dir)
        self.router = Router(Matcher(flows), self.codecs, self.partitions)
        _short_fetch_wait(settings.fetch_wait_ms)
        self.app = self._make_app()
        raw: dict[str, Any] = {"value_serializer": "raw", "key_serializer": "raw"}
        self.input_topic = self.app.topic(
            settings.input_topic, partitions=self.partitions, internal=True, **raw
        )
        # bytes keys and values: Faust then uses its raw serializer for the changelog too.
        # use_partitioner: a state's changelog partition is its key's, the same partition
        # the router sends its inputs to, so states can be stored after a batch is acknowledged.
        self.table = self.app.Table(
            "state",
            partitions=self.partitions,
            key_type=bytes,
            value_type=bytes,
            use_partitioner=True,
        )
        self.store = _TableReader(self.table)
        self.changelog = Changelog(
            self.app, self.table, tail_alone=settings.producer_batch_bytes <= 1
        )
        self._indexed: frozenset[int] = frozenset()
        self.started_at = time.time()
        self.client = client_kwargs(settings)
        self.sink = KafkaSink(self.client)
        self.source = (
            KafkaSource(
                self.client,
                f"{settings.app_id}-sources",
                [s.removeprefix("kafka://") for s in kafka_sources],
                self._route,
                batch_size=settings.batch_size,
                batch_ms=settings.batch_ms,
                fetch_wait_ms=settings.fetch_wait_ms,
                session_timeout_s=settings.group_session_timeout,
                heartbeat_s=settings.group_heartbeat_interval,
                rebalance_timeout_s=settings.group_rebalance_timeout,
            )
            if kafka_sources
            else None
        )
        self.sqs_source = (
            SqsSource(
                endpoint_url=settings.sqs_endpoint,
                region=settings.sqs.region,
                queues=sqs_sources,
                wait_time_seconds=settings.sqs.wait_time_seconds,
                visibility_timeout=settings.sqs.visibility_timeout,
                max_receives=settings.sqs.max_receives,
                handoff=self._route,
                dead_letter=self._sqs_dead_letter,
            )
            if sqs_sources
            else None
        )
        uses_sqs = any(d.startswith("sqs://") for f in flows for d in f.destinations)
        self.sqs_sink = (
            SqsSink(
                endpoint_url=settings.sqs_endpoint,
                region=settings.sqs.region,
                codecs={k: v for k, v in self.codecs.items() if k.startswith("sqs://")},
            )
            if uses_sqs
            else None
        )
        self.pipes = _Pipes(self)
        self.counts = {
            "routed": 0,
            "applied": 0,
            "commands": 0,
            "dead_lettered": 0,
            "expired": 0,
        }
        self._between_batches = asyncio.Event()
        self._between_batches.set()
        self.app.agent(self.input_topic, name="sagabridge-inputs")(self._inputs_agent)
        self.app.on_partitions_revoked.connect(cast(Any, self._partitions_revoked))
        self.app.timer(interval=settings.tick_ms / 1000, name="sagabridge-deadlines")(
            self._fire_deadlines
        )
        self.app.timer(interval=30.0, name="sagabridge-progress")(self._progress)
        self.web_api = WebApi(self)
        self.web_api.install()
        self.app.timer(interval=5.0, name="sagabridge-gauges")(self.web_api.refresh_gauges)

    def _make_app(self) -> faust.App:
        s = self.settings
        state_dir = s.state_dir or Path(".sagabridge")
        (state_dir / f"{s.app_id}-data").mkdir(parents=True, exist_ok=True)
        return _App(
            s.app_id,
            broker=";".join(f"kafka://{b.strip()}" for b in (s.bootstrap or "").split(",")),
            broker_credentials=_credentials(s),
            store="rocksdb://" if s.state_dir else "memory://",
            datadir=str(state_dir / f"{s.app_id}-data"),
            topic_partitions=s.input_partitions,
            topic_replication_factor=s.replication_factor,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            producer_max_batch_size=s.producer_batch_bytes,
            # A changelog batch waits up to 5 ms for others to share its produce request
            # (measured: the same to slightly better throughput than without).
            producer_linger=0.005,
            broker_session_timeout=s.group_session_timeout,
            broker_heartbeat_interval=s.group_heartbeat_interval,
            broker_rebalance_timeout=s.group_rebalance_timeout,
            web_enabled=True,
            web_bind=s.web_host,
            web_port=s.web_port,
            canonical_url=s.advertised_url or f"http://{s.web_host}:{s.web_port}",
            autodiscover=False,
            table_standby_replicas=s.standby_replicas,
            stream_wait_empty=False,
            # Faust's own pages would expose raw table keys; the dashboard takes "/".
            web_router_enabled=False,
            web_tables_enabled=False,
            web_stats_enabled=False,
            web_graph_enabled=False,
        )

    # -- sources: raw messages to routed micro-batches ----------------------------------------

    async def _route(self, records: list[SourceRecord]) -> None:
        """Route a batch of source messages to the input topic; return once all is acknowledged."""
        routed = await self.router.route(records)
        pending = [
            await self.sink.send(self.settings.input_topic, encode_batch(inputs), partition=p)
            for p, inputs in routed.inputs.items()
        ]
        for record, reason in routed.dead:
            pending.append(
                await self._dead_letter(
                    record.value, record.headers, record.key, reason, record.source
                )
            )
        await self.sink.acknowledged(pending)
        self.counts["routed"] += routed.matched
        self.web_api.metrics.routed(routed.unmatched)

    # -- inputs: the engine, one micro-batch per message --------------------------------------

    async def _inputs_agent(self, stream: Any) -> None:
        async for events in take_batches(stream, self.settings.batch_size):
            self._between_batches.clear()
            try:
                await self._apply(events)
            finally:
                self._between_batches.set()

    async def _apply(self, events: list[Any]) -> None:
        """Apply a taken batch: effects sent and acknowledged, then the states stored."""
        out = Outbox()
        by_partition: dict[int, Any] = {}
        for event in events:
            try:
                batch = loads(event.value)["i"]
                if not isinstance(batch, list):
                    raise ValueError("'i' is not a list")
            except (ValueError, KeyError, TypeError) as exc:
                reason = f"not an input batch: {exc}"
                await self.sink.acknowledged(
                    [
                        await self._dead_letter(
                            event.value, [], event.key, reason, self.settings.input_topic
                        )
                    ]
                )
                continue
            by_partition[event.message.partition] = event
            self.processor.process(event.message.partition, batch, self.store, out)
        await self._send_until_acknowledged(out)
        await self.changelog.write(state_writes(out), by_partition)
        self.deadlines.update_all(out.dues, out.partitions)
        self.counts["applied"] += out.applied
        self.counts["expired"] += out.expired
        self._observe(out)

    async def _partitions_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """Faust has stopped delivering and flushed its producer; a batch taken before that
        still sends its effects and states. Let it finish and its states reach the changelog
        before the partitions go: their next owner reads the changelog to its end."""
        try:
            await asyncio.wait_for(
                self._between_batches.wait(), timeout=self.settings.group_session_timeout / 2
            )
        except TimeoutError:
            log.warning("rebalance.batch_still_running")
        await self.app.producer.flush()

    def _observe(self, out: Outbox) -> None:
        """Keep the API's instance index and the metrics in step with the stored states."""
        index = self.web_api.index
        for ek, st in out.states.items():
            flow, key, alias = parse_entity_key(ek)
            if alias is None:
                index.update(flow, key, st, out.partitions[ek])
        self.web_api.metrics.batch(out.events, out.commands, out.lifecycle, out.states)

    async def _send_until_acknowledged(self, out: Outbox) -> None:
        """Faust acks a taken batch even when the agent fails, so a failed send must not raise
        out of the agent: it is sent again (same ids) until Kafka takes it."""
        pause = 0.5
        while True:
            try:
                await self._send(out)
                return
            except SagabridgeError as exc:
                log.error("effects.send_failed", error=str(exc), retry_in_s=pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)

    async def _send(self, out: Outbox) -> None:
        """Send every effect of a batch and wait until Kafka acknowledged all of them."""
        pending: list[Any] = []
        to_sqs = [cmd for cmd in out.commands if cmd.to.startswith("sqs://")]
        by_topic: dict[str, list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]] = {}
        for cmd in out.commands:
            record = self._command_record(cmd)
            if record is not None:
                by_topic.setdefault(cmd.to.removeprefix("kafka://"), []).append(record)
        lifecycle = self._lifecycle_records(out.lifecycle)
        if lifecycle:
            by_topic.setdefault(self.settings.lifecycle_topic, []).extend(lifecycle)
        for topic, records in by_topic.items():
            pending += await self.sink.send_many(topic, records)
        for p, inputs in out.inputs.items():
            pending.append(
                await self.sink.send(self.settings.input_topic, encode_batch(inputs), partition=p)
            )
        for dead in out.dead:
            pending.append(await self._dead_letter(b"", [], None, dead.reason, dead.source))
        if to_sqs and self.sqs_sink is not None:
            await self.sqs_sink.send(to_sqs)  # returns once SQS took every command
        await self.sink.acknowledged(pending)
        self.counts["commands"] += len(out.commands)

    def _command_record(
        self, cmd: Command
    ) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]] | None:
        env = cmd.envelope
        scheme = cmd.to.partition("://")[0]
        if scheme == "sqs":
            return None  # sent in one batch by _send
        if scheme != "kafka":
            log.error(
                "command.unsupported_destination",
                to=cmd.to,
                flow=env["flow"],
                key=env["key"],
                command_id=env["command_id"],
            )
            return None
        headers = {
            "command_id": env["command_id"],
            "traceparent": traceparent(env["command_id"]),
            "flow": env["flow"],
            "content-type": "application/json",
        }
        codec = self.codecs.get(cmd.to)
        if codec is not None:
            value, extra = codec.encode(env, headers)
            headers = {**headers, **extra}
        else:
            value = dumps(env)
        return str(env["key"]).encode(), value, [(k, v.encode()) for k, v in headers.items()]

    def _lifecycle_records(
        self, records: list[Lifecycle]
    ) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
        if log_debug():
            for rec in records:
                # structlog reserves `event` for the message: an event name is renamed.
                fields = {("event_name" if k == "event" else k): v for k, v in rec.detail.items()}
                log.debug(rec.type, flow=rec.flow, key=rec.key, step=rec.step, **fields)
        return [(rec.key.encode(), dumps(lifecycle_record(rec)), []) for rec in records]

    async def _dead_letter(
        self,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        key: bytes | None,
        reason: str,
        source: str,
    ) -> Any:
        out_headers = [
            *headers,
            ("sagabridge.error", reason.encode()),
            ("sagabridge.source", source.encode()),
        ]
        log.warning("message.dead_lettered", source=source, reason=reason)
        self.counts["dead_lettered"] += 1
        self.web_api.metrics.dead_lettered(source)
        return await self.sink.send(
            self.settings.dlq_topic, value or b"", key=key, headers=out_headers
        )

    async def _sqs_dead_letter(self, record: SourceRecord, reason: str) -> None:
        sent = await self._dead_letter(
            record.value, record.headers, record.key, reason, record.source
        )
        await self.sink.acknowledged([sent])

    async def _progress(self) -> None:
        """One summary line now and then, instead of a line per event."""
        consumed = self.source.consumed if self.source is not None else 0
        log.info(
            "progress",
            consumed=consumed,
            **self.counts,
            deadlines=len(self.deadlines),
            partitions=sorted(self._indexed),
        )

    # -- time ---------------------------------------------------------------------------------

    @property
    def indexed(self) -> frozenset[int]:
        """The input partitions whose deadlines and instance summaries this worker holds."""
        return self._indexed

    def recovered(self) -> bool:
        """True once the table has been rebuilt from its changelog for this assignment."""
        recovery: Any = getattr(self.app.tables, "recovery", None)
        return bool(recovery is not None and recovery.completed.is_set())

    def _assigned(self) -> frozenset[int]:
        assignment = self.app.consumer.assignment()
        return frozenset(tp.partition for tp in assignment if tp.topic == self.settings.input_topic)

    async def _fire_deadlines(self) -> None:
        if self.app.rebalancing or not self.recovered():
            return
        assigned = self._assigned()
        if assigned != self._indexed:
            self._rebuild_index(assigned)
        now = int(time.time() * 1000)
        for p in assigned:
            due = self.deadlines.pop_due(p, now)
            if due:
                ticks = [input_to_wire(Tick(d.flow, d.key, now, d.alias)) for d in due]
                try:
                    sent = await self.sink.send(
                        self.settings.input_topic, encode_batch(ticks), partition=p
                    )
                    await self.sink.acknowledged([sent])
                except SagabridgeError as exc:
                    # The index offers these deadlines again after RESEND_MS.
                    log.error("deadlines.send_failed", error=str(exc), ticks=len(ticks))

    def _rebuild_index(self, assigned: frozenset[int]) -> None:
        for p in self._indexed - assigned:
            self.deadlines.drop(p)
        fresh = assigned - self._indexed
        self.web_api.index.drop_partitions(self._indexed - assigned)
        found: dict[int, list[Any]] = {p: [] for p in fresh}
        # One pass over the table, each state decoded once, for the deadlines and the API index.
        for raw_key, raw in self.table.items():
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            p = partition_for(key, self.partitions)
            if p in found and raw is not None:
                flow, state_key, alias = parse_entity_key(key)
                state = decode_state(raw)
                due = due_of(state, flow, state_key, alias, self.retention_ms)
                if due is not None:
                    found[p].append((key, due))
                if alias is None:
                    self.web_api.index.update(flow, state_key, state, p)
        for p, dues in found.items():
            self.deadlines.rebuild(p, dues)
        self._indexed = assigned
        log.info("deadlines.indexed", partitions=sorted(assigned), pending=len(self.deadlines))


class _FlowControl(FlowControlEvent):
    """Faust's flow control, whose resume() empties the stream buffers only when the flow was
    suspended. Faust's recovery resumes it while it reads the changelog, then again once the
    input partitions are fetchable and sought to their committed offsets: that second emptying
    dropped input messages fetched in between, which Faust had already counted as read, so they
    were never applied and their partition stopped committing."""

    def resume(self) -> None:
        if self.is_active():
            return
        super().resume()


class _App(faust.App):
    """Faust's App, with flow control that keeps fetched records, a consumer that fetches again
    what it dropped (`bridge.runtime.consumer`), and a web server that leaves "/" to the
    dashboard and answers API errors in JSON."""

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return _FlowControl(loop=self.loop)

    def _new_web(self) -> Any:
        driver = super()._new_web().__class__

        class _Web(driver):  # type: ignore[valid-type,misc]
            production_blueprints: ClassVar[list[Any]] = []

        return _Web(self)

    def on_webserver_init(self, web: Any) -> None:
        web.web_app.middlewares.append(json_errors())

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)


async def take_batches(stream: Any, max_: int) -> AsyncIterator[list[Any]]:
    """The stream's events in batches of what arrived while the last batch was being applied.

    Faust's `take_events` stops buffering while a batch is applied and then waits its whole
    window for the next: every batch costs that window in latency, and a backlog is taken only
    a window's worth at a time. Here events keep arriving into the next batch meanwhile (up to
    `max_`), which is taken at once: small batches when the worker keeps up, large ones when it
    does not. A batch waits for the rest of the fetch its first event came in
    (`rest_of_fetch`). Acks as Faust's: an event is acknowledged once its batch was applied.
    """
    events: list[Any] = []
    arrived = asyncio.Event()
    room = asyncio.Event()
    room.set()

    async def add(value: Any) -> Any:
        while len(events) >= max_:
            room.clear()
            await stream.wait(room)
        event = stream.current_event
        if event is None:
            raise RuntimeError("take buffer found no current event")
        events.append(event)
        arrived.set()
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))  # as take_events does
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(arrived)
            arrived.clear()
            await rest_of_fetch(stream.app.consumer, events, max_)
            if not events:
                continue
            batch = events[:]
            del events[:]
            room.set()
            try:
                yield batch
            finally:
                for event in batch:
                    await stream.ack(event)
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add)


async def rest_of_fetch(consumer: Any, events: list[Any], max_: int, turns: int = 1_000) -> None:
    """Until the consumer has handed over the whole fetch the first of `events` came in.

    Faust's consumer hands a fetch's messages over one at a time, with a turn of the event loop
    for each: the agent woke at the first and took it alone, and the rest of the fetch (one
    routed message per input partition) as another batch or two, each with its own sends,
    acknowledgements and changelog writes."""
    for _ in range(turns):
        if len(events) >= max_ or not getattr(consumer, "handing_over", False):
            break
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # the stream takes the last message handed over


def _short_fetch_wait(wait_ms: int) -> None:
    """Faust creates its consumer with a fixed 1.5 s fetch wait; some brokers (Tansu) hold a
    fetch for part of it even when records arrive, which would be every event's latency."""
    driver = faust_aiokafka.AIOKafkaConsumerThread
    original = driver._create_worker_consumer
    if getattr(original, "_sagabridge", False):
        return

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = wait_ms  # read when the consumer starts its fetcher
        return consumer

    create._sagabridge = True  # type: ignore[attr-defined]
    setattr(driver, "_create_worker_consumer", create)  # noqa: B010


class _Pipes(Service):
    """The plain Kafka clients around the Faust stage: started and stopped with the worker."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self._sqs_task: asyncio.Future[None] | None = None

    async def on_start(self) -> None:
        await self.runtime.sink.start()
        if self.runtime.source is not None:
            await self.runtime.source.start()
            self.add_future(self.runtime.source.run())
        if self.runtime.sqs_source is not None:
            await self.runtime.sqs_source.open()  # a missing queue stops start-up here
            self._sqs_task = asyncio.ensure_future(self.runtime.sqs_source.run())

    async def on_stop(self) -> None:
        if self._sqs_task is not None:
            self._sqs_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sqs_task
        if self.runtime.sqs_source is not None:
            await self.runtime.sqs_source.close()
        if self.runtime.sqs_sink is not None:
            await self.runtime.sqs_sink.close()
        if self.runtime.source is not None:
            await self.runtime.source.stop()
        await self.runtime.sink.stop()


def log_debug() -> bool:
    return logging.getLogger("sagabridge").isEnabledFor(logging.DEBUG)
