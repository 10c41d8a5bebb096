"""Run real `sagabridge run` workers as subprocesses, and talk to them like a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bridge.runtime.embedded import free_port

SAGABRIDGE = str(Path(sys.executable).parent / "sagabridge")
TANSU: set[str] = set()  # bootstrap addresses of Tansu brokers (see producer_batch_bytes)
# Small group timeouts: a first join on Tansu otherwise waits the whole rebalance timeout.
FAST_GROUP = {
    "SAGABRIDGE_GROUP_SESSION_TIMEOUT": "6",
    "SAGABRIDGE_GROUP_REBALANCE_TIMEOUT": "3",
    "SAGABRIDGE_GROUP_HEARTBEAT_INTERVAL": "1",
    "SAGABRIDGE_TICK_MS": "100",
    "SAGABRIDGE_INPUT_PARTITIONS": "4",
}


class Worker:
    def __init__(
        self,
        flows: Path,
        bootstrap: str,
        app_id: str,
        log_dir: Path,
        port: int | None = None,
        config: Path | None = None,
        args: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.flows = flows
        self.bootstrap = bootstrap
        self.app_id = app_id
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"worker-{self.port}.log"
        self.env = {**os.environ, **FAST_GROUP, "SAGABRIDGE_APP_ID": app_id, **env}
        if bootstrap in TANSU:
            self.env["SAGABRIDGE_PRODUCER_BATCH_BYTES"] = "1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.args = (*args, *(["--config", str(config)] if config else []))

    def start(self) -> Worker:
        cmd = [
            SAGABRIDGE,
            "run",
            "--flows",
            str(self.flows),
            "--bootstrap",
            self.bootstrap,
            "--web-port",
            str(self.port),
            *self.args,
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=out,
                env=self.env,
                cwd=self.log.parent,
                start_new_session=True,
            )
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                found: dict[str, Any] = json.loads(resp.read())
                return found
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def wait_ready(self, timeout: float = 60, partitions: int | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.tail()}")
            h = self.health()
            if (
                h
                and h["status"] == "ok"
                and (partitions is None or len(h["partitions"]) == partitions)
            ):
                return h
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout} s:\n{self.tail()}")

    def get(self, flow: str, key: str) -> tuple[int, dict[str, Any]]:
        url = f"{self.url}/api/flows/{flow}/instances/{key}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def wait_for(self, flow: str, key: str, check: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            code, body = self.get(flow, key)
            if code == 200:
                last = body
                if check(body):
                    return body
            time.sleep(0.2)
        raise AssertionError(f"{flow}/{key} never satisfied the check; last: {last}\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def wait_shared(first: Worker, second: Worker, partitions: int, timeout: float = 60) -> None:
    """Until the two workers of one group each hold some of the `partitions` input partitions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = [h["partitions"] if h else [] for h in (first.health(), second.health())]
        if all(held) and len(held[0]) + len(held[1]) == partitions:
            return
        time.sleep(0.3)
    raise AssertionError(f"no rebalance:\n{first.tail()}\n{second.tail()}")
