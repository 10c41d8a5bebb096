"""The worker's web port: the HTTP API of docs/api.md, /metrics and the dashboard.

Any worker answers for the group: a key's instance is read from the worker that owns it
(Faust's router), a search or a count asks every worker of the group for its part (`local=1`)
and merges. Operator actions become inputs on the input topic, ordered with the events.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import ClientError, ClientTimeout, web
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.exceptions import SameNode
from faust.web import Request, Response, View
from yarl import URL

from bridge.api.flows import flows_document
from bridge.api.index import InstanceIndex
from bridge.api.metrics import CONTENT_TYPE, Metrics, lag_by_topic
from bridge.api.openapi import document
from bridge.api.query import BadRequest, encode_cursor, parse_action, parse_search
from bridge.engine.apply import flow_for
from bridge.engine.inputs import Action
from bridge.engine.simulator import instance_view
from bridge.engine.state import Instance
from bridge.engine.wire import entity_key, input_to_wire
from bridge.runtime.processor import decode_state
from bridge.runtime.routing import encode_batch, partition_for

if TYPE_CHECKING:
    from bridge.runtime.app import Runtime

log = structlog.get_logger("sagabridge")
STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
PEER_TIMEOUT_S = 5.0
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def now_ms() -> int:
    return int(time.time() * 1000)


def _ident(url: URL) -> tuple[str, int]:
    return (url.host or "", int(url.port or 80))


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _package_version() -> str:
    try:
        return version("sagabridge")
    except PackageNotFoundError:
        return "0"


class WebApi:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.index = InstanceIndex(runtime.catalog)
        self.metrics = Metrics(runtime.catalog, self.index, now_ms)
        self.openapi = json.dumps(
            document(_package_version(), sorted(runtime.catalog.latest))
        ).encode()
        self._dlq_reader: AIOKafkaConsumer | None = None

    # -- what this worker holds ---------------------------------------------------------------

    def instance(self, flow_name: str, key: str) -> dict[str, Any] | None:
        """The instance as `simulate` prints it, if this worker holds it."""
        raw = self.rt.store.get(entity_key(flow_name, key, None))
        if raw is None:
            return None
        state = decode_state(raw)
        if not isinstance(state, Instance) or state.status is None:
            return None
        flow = flow_for(self.rt.catalog, flow_name, state)
        assert flow is not None
        return instance_view(flow, state)

    def versions_of(self, flow: str) -> list[Any]:
        return [f for f in self.rt.catalog if f.name == flow]

    # -- the group ----------------------------------------------------------------------------

    def is_self(self, url: URL) -> bool:
        """Whether `url` is this worker's web address (as the partition assignor names it)."""
        return _ident(url) == _ident(URL(str(self.rt.app.conf.canonical_url)))

    def peers(self) -> list[URL]:
        """Web addresses of the group's other workers, as the partition assignor knows them."""
        try:
            hosts = self.rt.app.router.tables_metadata()
        except Exception:  # no assignment yet: this worker is alone as far as it knows
            return []
        urls = (URL(str(host)) for host in sorted(hosts))
        return [url for url in urls if not self.is_self(url)]

    async def ask_peers(self, path: str, query: dict[str, str]) -> tuple[list[Any], bool]:
        """GET `path` with `local=1` from every other worker; (answers, some worker failed)."""
        peers = self.peers()
        if not peers:
            return [], False
        client = self.rt.app.http_client
        timeout = ClientTimeout(total=PEER_TIMEOUT_S)

        async def one(base: URL) -> Any:
            url = base.with_path(path).with_query({**query, "local": "1"})
            async with client.get(url, timeout=timeout) as resp:
                if resp.status != 200:
                    raise ClientError(f"{url} answered {resp.status}")
                return await resp.json()

        results = await asyncio.gather(*(one(p) for p in peers), return_exceptions=True)
        answers = [r for r in results if not isinstance(r, BaseException)]
        for peer, r in zip(peers, results, strict=True):
            if isinstance(r, BaseException):
                log.warning("api.peer_unavailable", peer=str(peer), error=str(r))
        return answers, len(answers) < len(peers)

    # -- batches ------------------------------------------------------------------------------

    async def refresh_gauges(self) -> None:
        """Lag and DLQ size need a broker round trip: read them now and then, not per scrape."""
        source = self.rt.source
        if source is not None:
            lags = await source.lag()
            for topic, lag in lag_by_topic(lags).items():
                self.metrics.consumer_lag.labels(topic).set(lag)
        try:
            if self._dlq_reader is None:
                self._dlq_reader = AIOKafkaConsumer(**self.rt.client)
                await self._dlq_reader.start()
            reader = self._dlq_reader
            parts = reader.partitions_for_topic(self.rt.settings.dlq_topic)
            if parts is None:
                await reader._client.force_metadata_update()
                parts = reader.partitions_for_topic(self.rt.settings.dlq_topic) or set()
            tps = [TopicPartition(self.rt.settings.dlq_topic, p) for p in parts]
            if tps:
                ends = await reader.end_offsets(tps)
                starts = await reader.beginning_offsets(tps)
                self.metrics.dlq_size.set(sum(ends[tp] - starts[tp] for tp in tps))
        except Exception as exc:  # a gauge that lags is better than a worker that stops
            log.warning("metrics.refresh_failed", error=str(exc))

    async def close(self) -> None:
        if self._dlq_reader is not None:
            await self._dlq_reader.stop()
            self._dlq_reader = None

    # -- actions ------------------------------------------------------------------------------

    def authorize(self, request: Request) -> tuple[int, str] | None:
        token = self.rt.settings.api_token
        if token:
            given = request.headers.get("Authorization", "")
            if not given.startswith("Bearer ") or not hmac.compare_digest(
                given.removeprefix("Bearer ").strip().encode(), token.encode()
            ):
                return 401, "actions need 'Authorization: Bearer <token>' (the --api-token)"
            return None
        if not _loopback(self.rt.settings.web_host):
            return (
                403,
                f"actions are off: the API listens on {self.rt.settings.web_host}, beyond "
                "loopback, and no --api-token is set",
            )
        return None

    async def send_action(self, act: Action) -> None:
        ek = entity_key(act.flow, act.key, None)
        p = partition_for(ek, self.rt.partitions)
        sent = await self.rt.sink.send(
            self.rt.settings.input_topic, encode_batch([input_to_wire(act)]), partition=p
        )
        await self.rt.sink.acknowledged([sent])

    # -- routes -------------------------------------------------------------------------------

    def install(self) -> None:
        api = self
        app = self.rt.app
        catalog = self.rt.catalog

        def unknown_flow(view: View, flow: str) -> Response:
            return view.json(
                {"error": f"no flow named {flow!r}", "flows": sorted(catalog.latest)}, status=404
            )

        async def owner_answer(
            view: View, request: Request, flow: str, key: str
        ) -> Response | None:
            """The owner's answer when another worker owns the key; None when it is us."""
            ek = entity_key(flow, key, None).encode()
            try:
                return await app.router.route_req(api.rt.table.name, ek, view.web, request)
            except SameNode:
                return None
            except Exception:  # no owner known: the group is (re)balancing
                return view.json({"error": "the worker group is rebalancing; retry"}, status=503)

        @app.page("/healthz")
        class Health(View):
            async def get(self, request: Request) -> Response:
                ready = api.rt.recovered()
                body = {
                    "status": "ok" if ready else "starting",
                    "partitions": sorted(api.rt.indexed),
                    "flows": sorted(f"{f.name} v{f.version}" for f in catalog),
                    "uptime_s": round(time.time() - api.rt.started_at, 1),
                }
                return self.json(body, status=200 if ready else 503)

        @app.page("/api/openapi.json")
        class OpenApi(View):
            async def get(self, request: Request) -> Response:
                return self.bytes(api.openapi, content_type="application/json")

        @app.page("/metrics")
        class MetricsView(View):
            async def get(self, request: Request) -> Response:
                return self.bytes(api.metrics.render(), content_type=CONTENT_TYPE)

        @app.page("/api/flows")
        class Flows(View):
            async def get(self, request: Request) -> Response:
                now = now_ms()
                local = {name: [api.index.counts(name, now)] for name in catalog.latest}
                partial = False
                workers = 1
                if request.query.get("local") != "1":
                    answers, partial = await api.ask_peers("/api/flows", {})
                    workers += len(answers)
                    for answer in answers:
                        for f in answer.get("flows", []):
                            local.setdefault(f["name"], []).append(f["counts"])
                return self.json(
                    {
                        "flows": flows_document(catalog, local),
                        "workers": workers,
                        "partial": partial,
                    }
                )

        @app.page("/api/flows/{flow}/instances")
        class Instances(View):
            async def get(self, request: Request, flow: str) -> Response:
                if flow not in catalog.latest:
                    return unknown_flow(self, flow)
                params = {k: request.query[k] for k in request.query}
                try:
                    q = parse_search(params, api.versions_of(flow))
                except BadRequest as exc:
                    return self.json({"error": str(exc)}, status=400)
                now = now_ms()
                found, more = api.index.search(flow, q, now)
                items = [s.view(now) for s in found]
                partial = False
                if params.get("local") != "1":
                    forward = {k: v for k, v in params.items() if k != "local"}
                    answers, partial = await api.ask_peers(request.url.path, forward)
                    for answer in answers:
                        items.extend(answer.get("items", []))
                        more = more or answer.get("next_cursor") is not None
                    items.sort(key=lambda i: str(i["key"]))
                    more = more or len(items) > q.limit
                    items = items[: q.limit]
                cursor = encode_cursor(str(items[-1]["key"])) if more and items else None
                return self.json({"items": items, "next_cursor": cursor, "partial": partial})

        @app.page("/api/flows/{flow}/instances/{key}")
        class InstanceView(View):
            async def get(self, request: Request, flow: str, key: str) -> Response:
                if flow not in catalog.latest:
                    return unknown_flow(self, flow)
                routed = await owner_answer(self, request, flow, key)
                if routed is not None:
                    return routed
                found = api.instance(flow, key)
                if found is None:
                    return self.json(
                        {"error": f"no instance of {flow} with key {key!r}"}, status=404
                    )
                return self.json(found)

        @app.page("/api/flows/{flow}/instances/{key}/actions")
        class Actions(View):
            async def post(self, request: Request, flow: str, key: str) -> Response:
                refused = api.authorize(request)
                if refused is not None:
                    return self.json({"error": refused[1]}, status=refused[0])
                if flow not in catalog.latest:
                    return unknown_flow(self, flow)
                try:
                    body = await request.json()
                except ValueError:
                    return self.json({"error": "body: not JSON"}, status=400)
                try:
                    req = parse_action(body, api.versions_of(flow))
                except BadRequest as exc:
                    return self.json({"error": str(exc)}, status=400)
                exists = await api.instance_exists(self, request, flow, key)
                if exists is not True:
                    return (
                        exists
                        if exists is not False
                        else self.json(
                            {"error": f"no instance of {flow} with key {key!r}"}, status=404
                        )
                    )
                user = request.headers.get("X-Sagabridge-User", "").strip()[:100] or "api"
                by = f"{user}@{getattr(request, 'remote', None) or 'unknown'}"
                act = Action(
                    flow, key, now_ms(), req.action, req.step, by, req.reason, uuid.uuid4().hex
                )
                await api.send_action(act)
                log.info("action.requested", flow=flow, key=key, action=req.action, by=by)
                body = {
                    "accepted": True,
                    "id": act.id,
                    "action": req.action,
                    "step": req.step,
                    "by": by,
                }
                return self.json(body, status=202)

        @app.page("/")
        class Dashboard(View):
            async def get(self, request: Request) -> Response:
                return self.bytes((STATIC / "index.html").read_bytes(), content_type="text/html")

        @app.page("/static/{name}")
        class Static(View):
            async def get(self, request: Request, name: str) -> Response:
                path = (STATIC / name).resolve()
                if path.parent != STATIC or not path.is_file():
                    return self.json({"error": f"no file {name!r}"}, status=404)
                content_type = _TYPES.get(path.suffix, "application/octet-stream")
                return self.bytes(path.read_bytes(), content_type=content_type)

    async def instance_exists(
        self, view: View, request: Request, flow: str, key: str
    ) -> bool | Response:
        """Whether the instance exists, asking its owner; a Response when the owner cannot say."""
        ek = entity_key(flow, key, None).encode()
        app = self.rt.app
        try:
            owner = app.router.key_store(self.rt.table.name, ek)
        except Exception:
            return view.json({"error": "the worker group is rebalancing; retry"}, status=503)
        if self.is_self(owner):
            return self.instance(flow, key) is not None
        url = owner.with_path(f"/api/flows/{flow}/instances/{key}")
        try:
            async with app.http_client.get(
                url, timeout=ClientTimeout(total=PEER_TIMEOUT_S)
            ) as resp:
                if resp.status in (200, 404):
                    return resp.status == 200
        except (ClientError, TimeoutError):
            pass
        return view.json({"error": "the worker that owns this key did not answer"}, status=503)


def json_errors() -> Callable[..., Awaitable[web.StreamResponse]]:
    """aiohttp's own 404/405 pages are text; under /api the client gets JSON like elsewhere."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if not request.path.startswith("/api/") or exc.status < 400:
                raise
            reason = {404: "no such path; see /api/openapi.json", 405: "method not allowed"}
            return web.json_response(
                {"error": reason.get(exc.status, exc.reason)},
                status=exc.status,
                headers={k: v for k, v in exc.headers.items() if k == "Allow"},
            )
        except Exception as exc:
            log.exception("api.error", path=request.path)
            return web.json_response({"error": f"internal error: {type(exc).__name__}"}, status=500)

    return middleware
