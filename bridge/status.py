"""`sagabridge status`: fetch one instance from a worker's HTTP API and show it to a person."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

from bridge.errors import SagabridgeError
from bridge.summary import _styled


def fetch_instance(url: str, flow: str, key: str, timeout: float = 10.0) -> dict[str, Any]:
    path = (
        f"/api/flows/{urllib.parse.quote(flow, safe='')}/instances/"
        f"{urllib.parse.quote(key, safe='')}"
    )
    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=timeout) as resp:
            found: dict[str, Any] = json.loads(resp.read())
            return found
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise SagabridgeError(f"{flow} {key}: {message} (HTTP {exc.code})") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SagabridgeError(f"cannot reach a worker at {url}: {reason}") from None


def render_instance(inst: dict[str, Any], console: Console) -> None:
    title = f"{inst['flow']} v{inst['version']}  {inst['key']}  {_styled(inst['status'])}"
    if inst.get("reason"):
        title += f"  ({inst['reason']})"
    steps = Table(title=title)
    for col in ("step", "status", "attempts", "activated", "ended / due"):
        steps.add_column(col)
    for name, s in inst["steps"].items():
        steps.add_row(
            name,
            _styled(s["status"]),
            str(s["attempts"]),
            s.get("activated_at", ""),
            s.get("ended_at") or s.get("due_at") or s.get("retry_at") or "",
        )
    console.print(steps)
    history = Table(title="History")
    for col in ("at", "what", "step", "detail"):
        history.add_column(col)
    for h in inst["history"]:
        detail = {k: v for k, v in h.items() if k not in ("at", "type", "step")}
        history.add_row(
            h["at"], h["type"], h.get("step", ""), ", ".join(f"{k}={v}" for k, v in detail.items())
        )
    console.print(history)
