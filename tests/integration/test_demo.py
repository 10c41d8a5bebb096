"""`sagabridge demo` end to end: what the services did to the orders (the demo's report) against
what sagabridge made of it (its HTTP API and the lifecycle topic), with fixed seeds."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka_io import read_topic
from workers import SAGABRIDGE

from bridge.runtime.embedded import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.sqs]
FLOW = "order-fulfilment"


class Demo:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.report = tmp_path / "report.json"
        self.out = tmp_path / "demo.out"
        self.port = free_port()
        cmd = [SAGABRIDGE, "demo", "--web-port", str(self.port), "--report", str(self.report)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAGABRIDGE_")}
        with self.out.open("wb") as out:
            # Not a terminal: the demo prints plain progress lines. Run from elsewhere than the
            # checkout: the demo finds its example flow anyway.
            self.proc = subprocess.Popen(
                [*cmd, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                env=env,
                start_new_session=True,
            )

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.out.read_text(errors="replace").splitlines()[-n:])

    def wait_phase(self, phase: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"demo exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                doc: dict[str, Any] = json.loads(self.report.read_text())
                if doc["phase"] == phase:
                    return doc
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"demo never reached {phase} in {timeout} s:\n{self.tail()}")

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"demo did not stop on SIGTERM:\n{self.tail()}") from None


@pytest.fixture
def demos() -> Iterator[list[Demo]]:
    """Demos started by a test; whatever happens, none outlives it."""
    started: list[Demo] = []
    yield started
    for demo in started:
        if demo.proc.poll() is None:
            demo.stop()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def run_and_read(demo: Demo) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Wait until the demo's orders have all ended or got stuck, then read what sagabridge says."""
    report = demo.wait_phase("lingering", timeout=75)
    assert report["settled"], f"orders still in flight:\n{demo.tail()}"
    instances = {}
    for key in report["orders"]:
        code, body = demo.get(f"/api/flows/{FLOW}/instances/{key}")
        assert code == 200, f"{key}: HTTP {code}"
        instances[key] = body
    records = asyncio.run(read_topic(report["urls"]["broker"], report["lifecycle_topic"]))
    lifecycle = [json.loads(r.value) for r in records]
    code, flows = demo.get("/api/flows")
    if code == 200:  # the counts the API serves agree with the instances it serves
        (flow,) = [f for f in flows["flows"] if f["name"] == FLOW]
        statuses = Counter(i["status"] for i in instances.values())
        assert flow["counts"]["status"] == dict(statuses)
    return report, instances, lifecycle


def stop_and_check(demo: Demo, report: dict[str, Any]) -> None:
    assert demo.stop() == 0, demo.tail()
    out = demo.tail(12)
    assert "Traceback" not in demo.out.read_text()
    assert "orders placed" in out and "commands sent" in out  # the closing summary
    left = [name for name, pid in report["pids"].items() if name != "demo" and alive(pid)]
    assert not left, f"still running after the demo stopped: {left}"


def records_of(lifecycle: list[dict[str, Any]], kind: str) -> set[tuple[str, str]]:
    return {(r["key"], r.get("step", "")) for r in lifecycle if r["type"] == kind}


def test_observe_catches_every_lost_event_as_a_timed_out_step(
    tmp_path: Path, demos: list[Demo]
) -> None:
    demo = Demo(
        tmp_path,
        *("--mode", "observe", "--payments-on", "kafka", "--seed", "7", "--duration", "12"),
        *("--orders-per-second", "2", "--lose-rate", "0.1", "--slow-rate", "0.1"),
        *("--decline-rate", "0.1", "--settle", "40", "--linger"),
    )
    demos.append(demo)
    report, instances, lifecycle = run_and_read(demo)
    orders = report["orders"]
    lost = {(f["order"], f["step"]) for f in report["lost"]}
    slow = {(f["order"], f["step"]) for f in report["slow"]}
    assert len(orders) >= 20 and lost and slow and report["declined"], report
    timed_out = records_of(lifecycle, "step.timed_out")
    for order, step in lost:
        assert (order, step) in timed_out, f"lost {step} of {order} not caught"
        assert instances[order]["steps"][step]["status"] == "TIMED_OUT"
        assert instances[order]["status"] == "RUNNING"
    for order, step in slow:
        if not any(o == order for o, _ in lost):  # a slow event still ends its step, late
            assert (order, step) in timed_out
            if order not in report["declined"]:
                assert instances[order]["steps"][step].get("late") is True
    for order in report["declined"]:
        assert instances[order]["status"] == "FAILED"
    faulty = {o for o, _ in lost} | set(report["declined"])
    for order in set(orders) - faulty:
        assert instances[order]["status"] == "COMPLETED", (order, instances[order])
    completed = sum(i["status"] == "COMPLETED" for i in instances.values())
    assert completed > len(orders) / 2
    assert not records_of(lifecycle, "command.sent")  # observe only watches
    stop_and_check(demo, report)


def test_orchestrate_heals_every_loss_with_a_retry_and_compensates_every_decline(
    tmp_path: Path, demos: list[Demo]
) -> None:
    demo = Demo(
        tmp_path,
        *("--mode", "orchestrate", "--payments-on", "sqs", "--seed", "11", "--duration", "12"),
        *("--orders-per-second", "2", "--lose-rate", "0.2", "--slow-rate", "0.05"),
        *("--decline-rate", "0.2", "--settle", "40", "--linger"),
    )
    demos.append(demo)
    report, instances, lifecycle = run_and_read(demo)
    orders = report["orders"]
    lost = {(f["order"], f["step"]) for f in report["lost"]}
    assert len(orders) >= 20 and lost and report["declined"], report
    retried = {
        (r["key"], r["step"])
        for r in lifecycle
        if r["type"] == "command.sent" and r["action"] == "retry"
    }
    compensations = {
        r["key"]
        for r in lifecycle
        if r["type"] == "command.sent" and r["command"] == "ReleaseInventory"
    }
    for order, step in lost:
        assert (order, step) in retried, f"lost {step} of {order} not retried"
    assert {(h["order"], h["step"]) for h in report["healed"]} == lost
    for order in report["declined"]:
        assert instances[order]["status"] == "COMPENSATED", (order, instances[order])
        assert order in compensations
    for order in set(orders) - set(report["declined"]):
        assert instances[order]["status"] == "COMPLETED", (order, instances[order])
    completed = sum(i["status"] == "COMPLETED" for i in instances.values())
    assert completed > len(orders) / 2
    stop_and_check(demo, report)


@pytest.mark.parametrize("option", ["--web-port", "--kafka-port"])
def test_a_taken_port_stops_the_demo_with_one_clear_line(tmp_path: Path, option: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [SAGABRIDGE, "demo", "--duration", "5"]
        if option == "--kafka-port":
            args += ["--web-port", str(free_port())]
        started = time.monotonic()
        done = subprocess.run(
            [*args, option, str(port)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert done.returncode != 0
    assert time.monotonic() - started < 15
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"sagabridge demo: port {port} on 127.0.0.1 is in use ({option}); stop what listens "
        f"there or pick another port with {option} N"
    ], done.stderr
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert f"127.0.0.1:{port}" not in ps.stdout and f"--web-port {port}" not in ps.stdout


def test_a_broker_that_cannot_start_stops_the_demo_with_one_clear_line(tmp_path: Path) -> None:
    broken = tmp_path / "tansu"
    broken.write_text("#!/bin/sh\necho 'listener: address family not supported' >&2\nexit 3\n")
    broken.chmod(0o755)
    done = subprocess.run(
        [SAGABRIDGE, "demo", "--duration", "5", "--web-port", str(free_port())],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "CALF_TANSU_BIN": str(broken)},
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sagabridge demo: the embedded broker cannot"), (
        done.stderr
    )
    assert "Traceback" not in done.stderr + done.stdout
