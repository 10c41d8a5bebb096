"""Parameters of the HTTP API, checked before anything runs: a bad one is a 400 that says why."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from bridge.api.index import INSTANCE_STATUSES, Search
from bridge.engine.inputs import ActionName
from bridge.flow.compiled import CompiledFlow

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
ACTIONS = ("retry", "skip", "terminate")
SEARCH_PARAMS = frozenset({"status", "step", "overdue", "key_prefix", "limit", "cursor", "local"})


class BadRequest(ValueError):
    """A request the API refuses, with the message the client sees."""


def encode_cursor(last_key: str) -> str:
    raw = json.dumps({"after": last_key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = data["after"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise BadRequest(
            "cursor: not a cursor this API handed out; use next_cursor from the last page"
        ) from exc
    if not isinstance(after, str):
        raise BadRequest("cursor: not a cursor this API handed out")
    return after


def parse_search(params: Mapping[str, str], flows: list[CompiledFlow]) -> Search:
    """The search of GET /api/flows/{flow}/instances; `flows` are the flow's loaded versions."""
    unknown = sorted(set(params) - SEARCH_PARAMS)
    if unknown:
        raise BadRequest(
            f"unknown parameter {unknown[0]!r}; use status, step, overdue, key_prefix, "
            "limit, cursor"
        )
    statuses: set[str] = set()
    if params.get("status"):
        for s in params["status"].split(","):
            name = s.strip().upper()
            if name not in INSTANCE_STATUSES:
                raise BadRequest(
                    f"status: {s.strip()!r} is not an instance status; "
                    f"use one of {', '.join(INSTANCE_STATUSES)}"
                )
            statuses.add(name)
    step = params.get("step") or None
    if step is not None:
        names = sorted({t.name for f in flows for t in f.steps})
        if step not in names:
            raise BadRequest(f"step: {step!r} is not a step of this flow; steps: {names}")
    overdue: bool | None = None
    if "overdue" in params and params["overdue"] != "":
        text = params["overdue"].lower()
        if text not in ("true", "false", "1", "0"):
            raise BadRequest(f"overdue: {params['overdue']!r} is not true or false")
        overdue = text in ("true", "1")
    limit = DEFAULT_LIMIT
    if params.get("limit"):
        try:
            limit = int(params["limit"])
        except ValueError:
            raise BadRequest(f"limit: {params['limit']!r} is not a whole number") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit: {limit} is out of range; use 1 to {MAX_LIMIT}")
    after = decode_cursor(params["cursor"]) if params.get("cursor") else None
    return Search(
        statuses=frozenset(statuses),
        step=step,
        overdue=overdue,
        key_prefix=params.get("key_prefix", ""),
        after=after,
        limit=limit,
    )


@dataclass(frozen=True, slots=True)
class ActionRequest:
    action: ActionName
    step: str | None
    reason: str


def parse_action(body: Any, flows: list[CompiledFlow]) -> ActionRequest:
    """The body of POST .../actions."""
    if not isinstance(body, dict):
        raise BadRequest('body: a JSON object like {"action": "retry", "step": "pay"}')
    unknown = sorted(set(body) - {"action", "step", "reason"})
    if unknown:
        raise BadRequest(f"body: unknown field {unknown[0]!r}; use action, step, reason")
    action = body.get("action")
    if action not in ACTIONS:
        raise BadRequest(f"action: {action!r} is not an action; use retry, skip or terminate")
    action = cast(ActionName, action)
    step = body.get("step")
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise BadRequest("reason: must be a string")
    if len(reason) > 500:
        raise BadRequest("reason: at most 500 characters")
    if action == "terminate":
        if step is not None and not isinstance(step, str):
            raise BadRequest("step: must be a string")
        return ActionRequest(action, None, reason)
    if not isinstance(step, str) or not step:
        raise BadRequest(f"step: {action} needs the name of a step")
    names = sorted({t.name for f in flows for t in f.steps})
    if step not in names:
        raise BadRequest(f"step: {step!r} is not a step of this flow; steps: {names}")
    return ActionRequest(action, step, reason)
