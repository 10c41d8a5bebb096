"""Prometheus metrics of one worker. Prometheus sums the workers of a group, as usual.

Counters move when a batch's effects were acknowledged; the instance gauges are read from the
worker's instance index at scrape time, so they always agree with the API.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.api.index import InstanceIndex
from bridge.engine.apply import flow_for
from bridge.engine.effects import Command, Lifecycle
from bridge.engine.state import Instance, State
from bridge.engine.wire import entity_key
from bridge.flow.compiled import Catalog

CONTENT_TYPE = "text/plain; version=0.0.4"  # aiohttp adds no charset to bytes
# Step durations span milliseconds (a reservation) to days (a shipment).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
_OUTCOMES = {"event.duplicate": "duplicate", "event.late": "late", "event.orphaned": "orphaned"}


class _InstanceGauges(Collector):
    def __init__(self, index: InstanceIndex, now_ms: Callable[[], int]) -> None:
        self.index = index
        self.now_ms = now_ms

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.now_ms()
        instances = GaugeMetricFamily(
            "sagabridge_instances",
            "Instances this worker owns, by status.",
            labels=["flow", "status"],
        )
        overdue = GaugeMetricFamily(
            "sagabridge_overdue_steps",
            "Steps past their deadline in running instances this worker owns.",
            labels=["flow", "step"],
        )
        for flow in sorted(self.index.catalog.latest):
            counts = self.index.counts(flow, now)
            for status, n in sorted(counts["status"].items()):
                instances.add_metric([flow, status], n)
            for step, c in sorted(counts["steps"].items()):
                overdue.add_metric([flow, step], c.get("overdue", 0))
        yield instances
        yield overdue

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


class Metrics:
    def __init__(self, catalog: Catalog, index: InstanceIndex, now_ms: Callable[[], int]) -> None:
        self.catalog = catalog
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "sagabridge_events",
            "Messages in, by source, event and outcome "
            "(applied, duplicate, late, orphaned, unmatched, dlq).",
            ["source", "event", "outcome"],
            registry=r,
        )
        self.commands = Counter(
            "sagabridge_commands",
            "Commands sent, by flow, command name and action (invoke, retry, compensate).",
            ["flow", "name", "action"],
            registry=r,
        )
        self.would_send = Counter(
            "sagabridge_commands_would_send",
            "Commands a shadow step would have sent.",
            ["flow", "name", "action"],
            registry=r,
        )
        self.deadlines_missed = Counter(
            "sagabridge_deadlines_missed",
            "Deadlines that passed: a step's (step label) or an instance's (step empty).",
            ["flow", "step"],
            registry=r,
        )
        self.step_duration = Histogram(
            "sagabridge_step_duration_seconds",
            "Time from a step's activation to its done event.",
            ["flow", "step"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.dlq = Counter(
            "sagabridge_dlq_messages",
            "Messages this worker wrote to the dead-letter topic, by source.",
            ["source"],
            registry=r,
        )
        self.dlq_size = Gauge(
            "sagabridge_dlq_size", "Messages in the dead-letter topic (all partitions).", registry=r
        )
        self.consumer_lag = Gauge(
            "sagabridge_consumer_lag",
            "Messages not yet consumed, by topic (this worker's partitions).",
            ["topic"],
            registry=r,
        )
        r.register(_InstanceGauges(index, now_ms))
        self._source_of = {
            (f.name, name): ev.source for f in catalog for name, ev in f.events.items()
        }

    def source_of(self, flow: str, event: str) -> str:
        return self._source_of.get((flow, event), "")

    def routed(self, unmatched: Mapping[str, int]) -> None:
        for source, n in unmatched.items():
            self.events.labels(source, "", "unmatched").inc(n)

    def dead_lettered(self, source: str) -> None:
        self.dlq.labels(source).inc()
        self.events.labels(source, "", "dlq").inc()

    def batch(
        self,
        events: Mapping[tuple[str, str], int],
        commands: Iterable[Command],
        lifecycle: Iterable[Lifecycle],
        states: Mapping[str, State | None],
    ) -> None:
        """Count what one acknowledged batch did.

        Tallied first, then one `labels()` per label set: a lookup costs microseconds, and a
        batch repeats a few label sets thousands of times."""
        applied = dict(events)
        outcomes: collections.Counter[tuple[str, str, str]] = collections.Counter()
        durations: dict[tuple[str, str], list[float]] = {}
        for rec in lifecycle:
            kind = rec.type
            outcome = _OUTCOMES.get(kind)
            if outcome is not None:
                name = str(rec.detail.get("event", ""))
                outcomes[(rec.flow, name, outcome)] += 1
                if outcome != "orphaned" and applied.get((rec.flow, name), 0) > 0:
                    applied[(rec.flow, name)] -= 1
            elif kind == "step.timed_out":
                self.deadlines_missed.labels(rec.flow, rec.step or "").inc()
            elif kind == "instance.timed_out":
                self.deadlines_missed.labels(rec.flow, "").inc()
            elif kind == "command.would_send":
                self.would_send.labels(
                    rec.flow, str(rec.detail.get("name", "")), str(rec.detail.get("action", ""))
                ).inc()
            elif kind == "step.done" and rec.step is not None:
                seconds = self._duration(rec, states)
                if seconds is not None:
                    durations.setdefault((rec.flow, rec.step), []).append(seconds)
        for (flow, name, outcome), n in outcomes.items():
            self.events.labels(self.source_of(flow, name), name, outcome).inc(n)
        for (flow, name), n in applied.items():
            if n:
                self.events.labels(self.source_of(flow, name), name, "applied").inc(n)
        for (flow, step), seconds_each in durations.items():
            histogram = self.step_duration.labels(flow, step)
            for seconds in seconds_each:
                histogram.observe(seconds)
        sent = collections.Counter(
            (c.envelope["flow"], c.envelope["name"], c.envelope["action"]) for c in commands
        )
        for labels, n in sent.items():
            self.commands.labels(*labels).inc(n)

    def _duration(self, rec: Lifecycle, states: Mapping[str, State | None]) -> float | None:
        state = states.get(entity_key(rec.flow, rec.key, None))
        if not isinstance(state, Instance):
            return None
        flow = flow_for(self.catalog, rec.flow, state)
        if flow is None or rec.step not in flow.step_index:
            return None
        st = state.steps[flow.step_index[rec.step]]
        if st.since is None or st.ended is None:
            return None
        return max(0, st.ended - st.since) / 1000

    def render(self) -> bytes:
        return generate_latest(self.registry)


def lag_by_topic(lags: Iterable[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for topic, lag in lags:
        out[topic] = out.get(topic, 0) + max(0, lag)
    return out
