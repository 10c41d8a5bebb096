"""The HTTP API of docs/api.md on a running worker: what a monitoring user and an operator see."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka_io import create_topics, produce_lines, read_topic
from prometheus_client.parser import text_string_to_metric_families
from support import placed
from test_runtime import FLOW, expected, flow_file, retarget, stream
from workers import Worker, wait_shared

pytestmark = pytest.mark.kafka


def call(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(raw) if "json" in ctype else raw.decode(), ctype
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        ctype = exc.headers.get("Content-Type", "")
        return exc.code, json.loads(raw) if "json" in ctype else raw.decode(), ctype


class Running:
    def __init__(self, worker: Worker, uid: str, topics: list[str], sim: dict[str, Any]) -> None:
        self.worker = worker
        self.uid = uid
        self.topics = topics
        self.sim = sim
        self.key = f"api{uid}"

    def url(self, path: str) -> str:
        return self.worker.url + path

    def k(self, n: int) -> str:
        return f"{self.key}-{n}"


@pytest.fixture(scope="module")
def running(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("api")
    uid = uuid.uuid4().hex[:8]
    flow, topics = flow_file(tmp, uid)
    asyncio.run(create_topics(bootstrap, topics))
    base = int(time.time() * 1000)
    lines = retarget(stream(f"api{uid}"), uid, base)
    sim = expected(flow, lines)
    worker = Worker(flow, bootstrap, f"sb-{uid}", tmp, args=("--api-token", "s3cret")).start()
    try:
        worker.wait_ready()
        bad = {"at": lines[-1]["at"], "source": f"kafka://orders.events.{uid}", "value": "{oops"}
        asyncio.run(produce_lines(bootstrap, [*lines, bad]))
        for inst in sim["instances"]:
            worker.wait_for(FLOW, inst["key"], lambda b, i=inst: b["status"] == i["status"])
        yield Running(worker, uid, topics, sim)
    finally:
        assert worker.stop() == 0, worker.tail()


def test_flows_list_the_definition_and_counts_by_status_and_step(running: Running) -> None:
    code, body, _ = call(running.url("/api/flows"))
    assert code == 200, body
    (flow,) = body["flows"]
    assert flow["name"] == FLOW and flow["versions"] == [1] and flow["key"] == "order_id"
    steps = {s["name"]: s for s in flow["steps"]}
    assert steps["pay"]["after"] == ["reserve"]
    assert steps["reserve"]["command"] == {
        "name": "ReserveInventory",
        "to": f"kafka://inventory.commands.{running.uid}",
    }
    assert steps["reserve"]["done"] == ["InventoryReserved"]
    assert steps["ship"]["compensate"] is None
    want: dict[str, int] = {}
    for inst in running.sim["instances"]:
        want[inst["status"]] = want.get(inst["status"], 0) + 1
    assert flow["counts"]["status"] == want
    assert flow["counts"]["total"] == len(running.sim["instances"])
    active_pay = sum(
        1
        for i in running.sim["instances"]
        if i["status"] == "RUNNING" and i["steps"]["pay"]["status"] == "ACTIVE"
    )
    assert flow["counts"]["steps"]["pay"]["active"] == active_pay
    assert flow["counts"]["steps"]["reserve"]["failed"] == 1
    assert body["workers"] == 1 and body["partial"] is False


def test_search_filters_and_pages_through_every_instance(running: Running) -> None:
    mine = sorted(i["key"] for i in running.sim["instances"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        q = "limit=2&key_prefix=" + running.key + (f"&cursor={cursor}" if cursor else "")
        code, body, _ = call(running.url(f"/api/flows/{FLOW}/instances?{q}"))
        assert code == 200, body
        seen += [i["key"] for i in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == mine and pages == 3

    code, body, _ = call(running.url(f"/api/flows/{FLOW}/instances?status=RUNNING,FAILED"))
    want = {i["key"] for i in running.sim["instances"] if i["status"] in ("RUNNING", "FAILED")}
    assert {i["key"] for i in body["items"]} == want
    code, body, _ = call(running.url(f"/api/flows/{FLOW}/instances?step=pay"))
    assert {i["key"] for i in body["items"]} == {running.k(4), running.k(5)}
    assert all(i["active"] == ["pay"] for i in body["items"])
    code, body, _ = call(running.url(f"/api/flows/{FLOW}/instances?overdue=true"))
    assert code == 200 and body["items"] == []  # no deadline has passed yet


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("status=SLEEPING", "status: 'SLEEPING' is not an instance status"),
        ("step=fly", "step: 'fly' is not a step of this flow"),
        ("limit=0", "limit: 0 is out of range"),
        ("limit=ten", "limit: 'ten' is not a whole number"),
        ("overdue=maybe", "overdue: 'maybe' is not true or false"),
        ("cursor=!!", "cursor: not a cursor this API handed out"),
        ("colour=red", "unknown parameter 'colour'"),
    ],
)
def test_bad_search_parameters_are_400_with_the_reason(
    running: Running, query: str, says: str
) -> None:
    code, body, ctype = call(running.url(f"/api/flows/{FLOW}/instances?{query}"))
    assert code == 400 and "json" in ctype
    assert says in body["error"]


def test_unknown_flows_keys_and_paths_are_json_404s(running: Running) -> None:
    code, body, _ = call(running.url("/api/flows/nope/instances/o-1"))
    assert code == 404 and body["flows"] == [FLOW] and "no flow named 'nope'" in body["error"]
    code, body, _ = call(running.url(f"/api/flows/{FLOW}/instances/never-seen"))
    assert code == 404 and "never-seen" in body["error"]
    code, body, _ = call(running.url("/api/flows/nope/instances"))
    assert code == 404
    code, body, ctype = call(running.url("/api/nothing/here"))
    assert code == 404 and "json" in ctype and "error" in body
    code, body, ctype = call(running.url("/api/flows"), method="DELETE")
    assert code == 405 and "json" in ctype


def test_instance_shows_steps_with_timings_and_history(running: Running) -> None:
    code, body, _ = call(running.url(f"/api/flows/{FLOW}/instances/{running.k(1)}"))
    assert code == 200 and body["status"] == "COMPLETED"
    assert body["steps"]["reserve"]["activated_at"] <= body["steps"]["reserve"]["ended_at"]
    kinds = [h["type"] for h in body["history"]]
    assert "event" in kinds and "command.sent" in kinds, kinds


def test_actions_need_the_token_and_reasonable_bodies(running: Running) -> None:
    url = running.url(f"/api/flows/{FLOW}/instances/{running.k(5)}/actions")
    auth = {"Authorization": "Bearer s3cret"}
    code, body, _ = call(url, "POST", {"action": "terminate"})
    assert code == 401 and "Bearer" in body["error"]
    code, body, _ = call(url, "POST", {"action": "terminate"}, {"Authorization": "Bearer no"})
    assert code == 401
    cases = [
        ({"action": "explode"}, "action: 'explode' is not an action"),
        ({"action": "retry"}, "step: retry needs the name of a step"),
        ({"action": "skip", "step": "fly"}, "step: 'fly' is not a step"),
        ({"action": "retry", "step": "pay", "when": "now"}, "unknown field 'when'"),
        (["retry"], "body: a JSON object"),
    ]
    for payload, says in cases:
        code, body, _ = call(url, "POST", payload, auth)
        assert code == 400 and says in body["error"], (payload, body)
    missing = running.url(f"/api/flows/{FLOW}/instances/never-seen/actions")
    code, body, _ = call(missing, "POST", {"action": "terminate"}, auth)
    assert code == 404


def test_retry_goes_through_the_input_topic_and_sends_the_next_attempt(running: Running) -> None:
    key = running.k(4)
    url = running.url(f"/api/flows/{FLOW}/instances/{key}/actions")
    headers = {"Authorization": "Bearer s3cret", "X-Sagabridge-User": "ana"}
    code, body, _ = call(
        url, "POST", {"action": "retry", "step": "pay", "reason": "stuck"}, headers
    )
    assert code == 202, body
    assert body["accepted"] is True and body["by"] == "ana@127.0.0.1" and body["id"]
    inst = running.worker.wait_for(FLOW, key, lambda b: b["steps"]["pay"]["attempts"] == 2)
    action = [h for h in inst["history"] if h["type"] == "action"]
    assert action and action[-1]["by"] == "ana@127.0.0.1" and action[-1]["reason"] == "stuck"
    commands = asyncio.run(read_topic(running.worker.bootstrap, f"payments.commands.{running.uid}"))
    retries = [
        json.loads(r.value)
        for r in commands
        if json.loads(r.value)["key"] == key and json.loads(r.value)["action"] == "retry"
    ]
    assert len(retries) == 1 and retries[0]["attempt"] == 2


def test_terminate_ends_the_instance_and_is_recorded_with_who_asked(running: Running) -> None:
    key = running.k(5)
    url = running.url(f"/api/flows/{FLOW}/instances/{key}/actions")
    code, _, _ = call(url, "POST", {"action": "terminate"}, {"Authorization": "Bearer s3cret"})
    assert code == 202
    inst = running.worker.wait_for(FLOW, key, lambda b: b["status"] == "TERMINATED")
    assert any(h["type"] == "action" and h["by"] == "api@127.0.0.1" for h in inst["history"])


def scrape(running: Running) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    code, text, ctype = call(running.url("/metrics"))
    assert code == 200 and ctype.startswith("text/plain")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def test_metrics_parse_as_prometheus_text_and_count_what_happened(running: Running) -> None:
    samples = scrape(running)

    def value(series: str, **labels: str) -> float:
        return samples.get((series, frozenset(labels.items())), 0.0)

    source = f"kafka://orders.events.{running.uid}"
    assert (
        value("sagabridge_events_total", source=source, event="OrderPlaced", outcome="applied") == 5
    )
    inventory = f"kafka://inventory.events.{running.uid}"
    dup = value(
        "sagabridge_events_total", source=inventory, event="InventoryReserved", outcome="duplicate"
    )
    assert dup == 1
    assert value("sagabridge_instances", flow=FLOW, status="COMPLETED") >= 1
    sent = value("sagabridge_commands_total", flow=FLOW, name="ReserveInventory", action="invoke")
    assert sent == 5
    assert any(name == "sagabridge_step_duration_seconds_bucket" for name, _ in samples)
    dead = value("sagabridge_dlq_messages_total", source=source)
    assert dead == 1 == value("sagabridge_events_total", source=source, event="", outcome="dlq")
    deadline = time.monotonic() + 15
    while value("sagabridge_dlq_size") < 1:  # read from the broker every 5 s
        assert time.monotonic() < deadline, "sagabridge_dlq_size never counted the dead letter"
        time.sleep(0.5)
        samples = scrape(running)


def test_openapi_document_describes_every_route(running: Running) -> None:
    code, doc, _ = call(running.url("/api/openapi.json"))
    assert code == 200 and doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/healthz",
        "/api/flows",
        "/api/flows/{flow}/instances",
        "/api/flows/{flow}/instances/{key}",
        "/api/flows/{flow}/instances/{key}/actions",
        "/metrics",
    }


def test_actions_are_refused_beyond_loopback_without_a_token(
    bootstrap: str, tmp_path: Path
) -> None:
    uid = uuid.uuid4().hex[:8]
    flow, topics = flow_file(tmp_path, uid)
    asyncio.run(create_topics(bootstrap, topics))
    worker = Worker(flow, bootstrap, f"sb-{uid}", tmp_path, args=("--web-host", "0.0.0.0")).start()
    try:
        worker.wait_ready()
        url = worker.url + f"/api/flows/{FLOW}/instances/x/actions"
        code, body, _ = call(url, "POST", {"action": "terminate"})
        assert code == 403 and "--api-token" in body["error"]
    finally:
        assert worker.stop() == 0


def test_search_and_counts_span_the_workers_of_the_group(bootstrap: str, tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:8]
    flow, topics = flow_file(tmp_path, uid, mode="observe")
    asyncio.run(create_topics(bootstrap, topics))
    keys = sorted(f"g{uid}-{n:02d}" for n in range(12))

    first = Worker(flow, bootstrap, f"sb-{uid}", tmp_path).start()
    second = Worker(flow, bootstrap, f"sb-{uid}", tmp_path).start()
    try:
        wait_shared(first, second, partitions=4)
        base = int(time.time() * 1000)
        lines = [placed(n * 0.01, k) for n, k in enumerate(keys)]
        asyncio.run(produce_lines(bootstrap, retarget(lines, uid, base)))
        for k in keys:
            first.wait_for(FLOW, k, lambda b: b["status"] == "RUNNING")
        for w in (first, second):
            code, body, _ = call(w.url + f"/api/flows/{FLOW}/instances?limit=5&key_prefix=g{uid}")
            assert code == 200 and body["partial"] is False
            got = [i["key"] for i in body["items"]]
            cursor = body["next_cursor"]
            while cursor:
                q = f"limit=5&key_prefix=g{uid}&cursor={cursor}"
                code, body, _ = call(w.url + f"/api/flows/{FLOW}/instances?{q}")
                got += [i["key"] for i in body["items"]]
                cursor = body["next_cursor"]
            assert got == keys
            code, body, _ = call(w.url + "/api/flows")
            assert body["workers"] == 2 and body["flows"][0]["counts"]["status"]["RUNNING"] == 12
        # Each worker holds only its part, so some keys live on the other worker: an action
        # posted to either one reaches the owner through the input topic.
        for k in keys[:4]:
            url = first.url + f"/api/flows/{FLOW}/instances/{k}/actions"
            code, body, _ = call(url, "POST", {"action": "terminate", "reason": "test"})
            assert code == 202, body
        for k in keys[:4]:
            second.wait_for(FLOW, k, lambda b: b["status"] == "TERMINATED")
    finally:
        second.stop()
        assert first.stop() == 0


def test_schemathesis_finds_no_server_errors(running: Running) -> None:
    """Property-based requests generated from /api/openapi.json: no 5xx, answers as documented."""
    st = str(Path(sys.executable).parent / "schemathesis")
    result = subprocess.run(
        [
            st,
            "run",
            running.url("/api/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance",
            "--max-examples",
            "40",
            "--seed",
            "7",
            "-H",
            "Authorization: Bearer s3cret",
            "--request-timeout",
            "10",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_an_ended_instance_leaves_after_its_retention(bootstrap: str, tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:8]
    flow, topics = flow_file(tmp_path, uid)
    asyncio.run(create_topics(bootstrap, topics))
    env = {"SAGABRIDGE_ENDED_RETENTION_S": "3"}
    worker = Worker(flow, bootstrap, f"sb-{uid}", tmp_path, **env).start()
    try:
        worker.wait_ready()
        # Stamped now: retention counts from the event time at which an instance ended.
        lines = retarget(stream(f"r{uid}"), uid, int(time.time() * 1000))
        asyncio.run(produce_lines(bootstrap, lines))
        done = worker.wait_for(FLOW, f"r{uid}-1", lambda b: b["status"] == "COMPLETED")
        assert done["ended_at"]
        deadline = time.monotonic() + 30
        while worker.get(FLOW, f"r{uid}-1")[0] != 404:
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.2)
        code, body, _ = call(worker.url + f"/api/flows/{FLOW}/instances?key_prefix=r{uid}")
        assert code == 200, body
        keys = {i["key"] for i in body["items"]}
        assert f"r{uid}-1" not in keys and f"r{uid}-5" in keys  # running ones stay
    finally:
        assert worker.stop() == 0
