"""Start, watch and stop a demo run.

Start-up: check the ports, write the demo flow, start the embedded broker (and moto's SQS server
when payments run on SQS), create the topics and queues, start `sagabridge run` and the four
services, and place orders once sagabridge answers. Then show what it sees until the run is
over (`--duration`, `--orders`, or Ctrl-C / SIGTERM), and stop everything in order: services,
sagabridge, moto, broker. A second Ctrl-C kills what is left at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from bridge.config import Settings
from bridge.demo import flowfile, view
from bridge.demo.buses import KafkaBus, SqsBus
from bridge.demo.faults import Faults, Ledger
from bridge.demo.knobs import SLOW_EXTRA_S, STEP_TIMINGS, DemoError, Knobs
from bridge.demo.processes import (
    Child,
    Children,
    broker_ready,
    check_port,
    last_error,
    start_broker,
    start_sagabridge,
    start_sqs_server,
)
from bridge.demo.services import Services
from bridge.demo.tracker import Api, Lifecycle
from bridge.errors import BrokerError, ConfigError, SagabridgeError
from bridge.flow import CompiledFlow
from bridge.runtime import topics
from bridge.runtime.embedded import free_port

INPUT_PARTITIONS = 4
LIFECYCLE = "sagabridge.lifecycle"  # the worker's default lifecycle topic
READY_TIMEOUT_S = 60.0
SQS_READY_TIMEOUT_S = 20.0
PLAIN_EVERY_S = 5.0
SETTLED_FOR_S = 2.0
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, a closed terminal
# Small group timeouts: a first join on the embedded broker waits the whole rebalance timeout.
WORKER_ENV = {
    "SAGABRIDGE_GROUP_SESSION_TIMEOUT": "6",
    "SAGABRIDGE_GROUP_REBALANCE_TIMEOUT": "3",
    "SAGABRIDGE_GROUP_HEARTBEAT_INTERVAL": "1",
    "SAGABRIDGE_TICK_MS": "100",
    "SAGABRIDGE_INPUT_PARTITIONS": str(INPUT_PARTITIONS),
    # The embedded broker reports end offsets from a batch's first record: one record a batch.
    "SAGABRIDGE_PRODUCER_BATCH_BYTES": "1",
    "SAGABRIDGE_SQS__WAIT_TIME_SECONDS": "1",
    # Dummy credentials for moto's server; no AWS configuration is read, nothing reaches AWS.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def run_demo(knobs: Knobs) -> int:
    """Run the demo until it is over; 0 after a clean stop. DemoError when it cannot run."""
    workdir = Path(tempfile.mkdtemp(prefix="sagabridge-demo-"))
    handler = logging.FileHandler(workdir / "demo.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    demo = Demo(knobs, workdir)
    failed = True
    try:
        code = asyncio.run(demo.main())
        failed = False
        return code
    except SagabridgeError as exc:  # DemoError, or a broker error the services ran into
        if demo.children.started:
            raise DemoError(f"{exc} (logs in {workdir})") from None
        raise DemoError(str(exc)) from None
    finally:
        demo.children.kill_all()  # only matters when something above went badly wrong
        root.removeHandler(handler)
        handler.close()
        if not (failed and demo.children.started):
            shutil.rmtree(workdir, ignore_errors=True)


class Demo:
    def __init__(self, knobs: Knobs, workdir: Path) -> None:
        self.knobs = knobs
        self.workdir = workdir
        self.children = Children()
        self.console = Console()
        self.live = self.console.is_terminal
        self.stop = asyncio.Event()
        self.no_more_orders = asyncio.Event()
        self.signals = 0
        self.ledger = Ledger()
        self.faults = Faults(knobs)
        self.kafka: KafkaBus | None = None
        self.sqs: SqsBus | None = None
        self.services: Services | None = None
        self.sagabridge: Child | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.scene: view.Scene | None = None
        self.settled = False
        self.quiet_since: float | None = None

    # -- the run --------------------------------------------------------------------------

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self._on_signal)
        try:
            starting = asyncio.create_task(self._start())
            stopped = asyncio.create_task(self.stop.wait())
            await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
                self._say("stopped during start-up")
                return 0
            starting.result()  # a start-up failure raises here
            await self._watch()
            return 0
        finally:
            await self._stop_everything()
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)
            if self.scene is not None and self.scene.phase == "stopped":
                for line in view.summary(self.scene):
                    self._say(line)
                self._write_report()

    def _on_signal(self) -> None:
        self.signals += 1
        self.stop.set()
        if self.signals > 1:
            self._say("stopping now: killing what is left")
            self.children.kill_all()

    def _say(self, line: str) -> None:
        # The terminal may be gone (SIGHUP) or the pipe closed: stopping cleanly matters more.
        with contextlib.suppress(OSError):
            if self.live:
                self.console.print(line, highlight=False)
            else:
                print(line, flush=True)

    async def _start(self) -> None:
        k = self.knobs
        check_port(k.web_port, "--web-port")
        if k.kafka_port:
            check_port(k.kafka_port, "--kafka-port")
        if k.payments_on == "sqs" and importlib.util.find_spec("moto") is None:
            raise DemoError(
                "payments on SQS need moto's server: pip install 'moto[server]' (make demo "
                "installs it), or run the demo with --payments-on kafka"
            )
        example = flowfile.example_flow()
        flow_path, flow = flowfile.derive(example, k.mode, k.payments_on, self.workdir)
        self._say(f"sagabridge demo: {example.name} in mode {k.mode}, payments on {k.payments_on}")

        t = time.monotonic()
        port = k.kafka_port or free_port()
        child, broker = start_broker(self.children, port, self.workdir / "broker.log")
        await asyncio.to_thread(broker_ready, child, broker)
        self._say(view.startup("embedded broker", broker.bootstrap, time.monotonic() - t))

        endpoint = None
        if k.payments_on == "sqs":
            t = time.monotonic()
            moto, endpoint = start_sqs_server(self.children, self.workdir / "sqs.log")
            self.sqs = await self._sqs_ready(moto, endpoint)
            self._say(view.startup("SQS (moto's server)", endpoint, time.monotonic() - t))

        t = time.monotonic()
        topics_dir = flowfile.find(flowfile.TOPICS)
        partitions = await self._provision(broker.bootstrap, topics_dir, flow)
        self._say(view.startup("topics", f"{len(partitions)} ready", time.monotonic() - t))

        t = time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGABRIDGE_", "AWS_"))}
        env.update(WORKER_ENV, SAGABRIDGE_LOG_LEVEL=k.log_level)
        if topics_dir is not None:
            env["SAGABRIDGE_TOPICS_DIR"] = str(topics_dir)
        self.sagabridge = start_sagabridge(
            self.children, flow_path, broker.bootstrap, k.web_port, endpoint, env, self.workdir
        )
        web = f"http://127.0.0.1:{k.web_port}"
        api = Api(web, flow.name)
        lifecycle = Lifecycle(flow)
        self.scene = view.Scene(
            knobs=k,
            ledger=self.ledger,
            lifecycle=lifecycle,
            api=api,
            timings=_timings(example),
            urls={
                "dashboard": f"{web}/",
                "api": f"{web}/api/flows",
                "broker": broker.bootstrap,
                **({"sqs": endpoint} if endpoint else {}),
            },
        )
        self.kafka = KafkaBus(broker.bootstrap, partitions)
        await self.kafka.start()
        slow = {s.name: (s.deadline_ms or 0) / 1000 + SLOW_EXTRA_S for s in flow.steps}
        self.services = Services(
            self.kafka, self.sqs, k.payments_on, self.faults, self.ledger, slow
        )
        self.tasks += [asyncio.create_task(loop) for loop in self._loops()]
        follow = lifecycle.follow(broker.bootstrap, LIFECYCLE, partitions.get(LIFECYCLE, 3))
        self.tasks.append(asyncio.create_task(follow))
        await self._ready(api, self.sagabridge)
        self._say(view.startup("sagabridge run", f"tracking {flow.name}", time.monotonic() - t))
        self._say(f"  dashboard: {web}/   (API {web}/api/flows, broker {broker.bootstrap})")
        self._write_report()

    def _loops(self) -> list[Any]:
        assert self.services is not None and self.scene is not None
        return [*self.services.tasks(), self._refresh_api(self.scene.api)]

    async def _sqs_ready(self, moto: Child, endpoint: str) -> SqsBus:
        sqs = SqsBus(endpoint)
        await sqs.start()
        end = time.monotonic() + SQS_READY_TIMEOUT_S
        queues = [
            flowfile.PAYMENTS["sqs"]["events"].removeprefix("sqs://"),
            flowfile.PAYMENTS["sqs"]["commands"].removeprefix("sqs://"),
            flowfile.SHIPPING_QUEUE,
        ]
        while True:
            try:
                await sqs.create_queues(queues)
                return sqs
            except BrokerError as exc:
                if not moto.alive() or time.monotonic() > end:
                    await sqs.stop()
                    raise DemoError(f"moto's SQS server did not start: {exc}") from None
                await asyncio.sleep(0.2)

    async def _provision(
        self, bootstrap: str, topics_dir: Path | None, flow: CompiledFlow
    ) -> dict[str, int]:
        # Built field by field: the demo's settings must not take SAGABRIDGE_* from this shell.
        settings = Settings.model_construct(
            bootstrap=bootstrap,
            input_partitions=INPUT_PARTITIONS,
            input_topic="sagabridge.input",
        )
        declared = topics.load_topic_specs(topics_dir / "topics.yaml") if topics_dir else []
        try:
            plan = await topics.apply(settings, declared, [flow], include_flow_topics=True)
        except (BrokerError, ConfigError) as exc:
            raise DemoError(f"cannot create the demo's topics: {exc}") from None
        return {t.name: t.partitions or 1 for t in plan.topics}

    async def _ready(self, api: Api, child: Child) -> None:
        end = time.monotonic() + READY_TIMEOUT_S
        while await api.health() != "ok":
            if not child.alive():
                raise DemoError(f"sagabridge run stopped while starting: {last_error(child)}")
            if time.monotonic() > end:
                raise DemoError(f"sagabridge run did not get ready in {READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.2)

    async def _refresh_api(self, api: Api) -> None:
        while True:
            await api.refresh()
            await asyncio.sleep(1.0)

    async def _watch(self) -> None:
        assert self.scene is not None and self.services is not None
        scene, k = self.scene, self.knobs
        orders = asyncio.create_task(
            self.services.place_orders(k.orders_per_second, k.orders, self.no_more_orders)
        )
        self.tasks.append(orders)
        scene.phase = "running"
        scene.started = time.monotonic()
        live = (
            Live(view.render(scene, self.console.width), console=self.console, refresh_per_second=4)
            if self.live
            else None
        )
        last_plain = last_report = 0.0
        settle_from = 0.0
        with live or contextlib.nullcontext():
            while not self.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 0.5)
                self._check_children()
                now = time.monotonic()
                if scene.phase == "running" and (
                    orders.done() or (k.duration and scene.elapsed >= k.duration)
                ):
                    self.no_more_orders.set()
                    scene.phase, settle_from = "settling", now
                    self._note(
                        live,
                        f"no more orders after {len(self.ledger.placed)}; waiting "
                        f"up to {k.settle:g} s for the orders in flight",
                    )
                if scene.phase == "settling" and (
                    (settled := self._all_settled()) or now - settle_from >= k.settle
                ):
                    self.settled = settled
                    scene.phase = "lingering" if k.linger else "settled"
                    self._write_report()
                    self._note(
                        live,
                        (
                            "every order has ended or is stuck"
                            if settled
                            else "some orders are still in flight"
                        )
                        + ("; the API and dashboard stay up until Ctrl-C" if k.linger else ""),
                    )
                    if not k.linger:
                        break
                if live is not None:
                    live.update(view.render(scene, self.console.width))
                elif now - last_plain >= PLAIN_EVERY_S:
                    self._say(view.plain_line(scene))
                    last_plain = now
                if now - last_report >= 1.0:
                    self._write_report()
                    last_report = now

    def _note(self, live: Live | None, line: str) -> None:
        if live is not None:
            live.console.print(line)
        else:
            self._say(line)

    def _all_settled(self) -> bool:
        """Every order ended or stuck for good, for SETTLED_FOR_S in a row (what a service sends
        takes a moment to show in the lifecycle)."""
        assert self.scene is not None
        late: dict[str, set[str]] = {}
        for order, step in self.ledger.slow_sent:
            late.setdefault(order, set()).add(step)
        orchestrating = self.knobs.mode == "orchestrate"
        now = time.monotonic()
        if self.ledger.pending or not all(
            self.scene.lifecycle.quiet(o, orchestrating, late.get(o, set()))
            for o in self.ledger.placed
        ):
            self.quiet_since = None
            return False
        if self.quiet_since is None:
            self.quiet_since = now
        return now - self.quiet_since >= SETTLED_FOR_S

    def _check_children(self) -> None:
        for child in self.children.started:
            if not child.alive() and not self.stop.is_set():
                what = last_error(child) if child is self.sagabridge else child.tail(1)
                raise DemoError(f"{child.name} stopped unexpectedly: {what}")

    async def _stop_everything(self) -> None:
        self.no_more_orders.set()
        if self.scene is not None and self.scene.phase != "starting":
            self.scene.phase = "stopping"
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.services is not None:
            await self.services.stop()
        for bus in (self.kafka, self.sqs):
            if bus is not None:
                with contextlib.suppress(Exception):  # stopping anyway; the broker may be gone
                    await asyncio.wait_for(bus.stop(), 5.0)
        if self.scene is not None:
            await self.scene.api.close()
        await asyncio.to_thread(self.children.stop_all)
        if self.scene is not None and self.scene.phase == "stopping":
            self.scene.phase = "stopped"

    # -- the report -----------------------------------------------------------------------

    def _write_report(self) -> None:
        path = self.knobs.report
        if path is None or self.scene is None:
            return
        doc = {
            "knobs": {
                "mode": self.knobs.mode,
                "seed": self.knobs.seed,
                "orders_per_second": self.knobs.orders_per_second,
                "decline_rate": self.knobs.decline_rate,
                "lose_rate": self.knobs.lose_rate,
                "slow_rate": self.knobs.slow_rate,
                "payments_on": self.knobs.payments_on,
            },
            "settled": self.settled,
            "urls": self.scene.urls,
            "flow": self.scene.lifecycle.flow.name,
            "lifecycle_topic": LIFECYCLE,
            "pids": {c.name: c.pid for c in self.children.started} | {"demo": os.getpid()},
            **view.as_report(self.scene),
            **self.ledger.as_dict(),
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        tmp.replace(path)


def _timings(example: Path) -> str:
    original = flowfile.original_deadlines(example)
    parts = []
    for name, spec in STEP_TIMINGS.items():
        attempts = spec.get("retry", {}).get("attempts", 1)
        tries = f"{attempts} tries" if attempts > 1 else "1 try"
        parts.append(f"{name} {spec['deadline']}, {tries} (flow file: {original.get(name, '-')})")
    return "deadlines shortened for the demo: " + ", ".join(parts)
