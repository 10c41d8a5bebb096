"""`sagabridge run` on real brokers gives what `sagabridge simulate` gives for the same stream."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka_io import create_topics, produce_lines, read_topic
from support import (
    EXAMPLE,
    T0,
    captured,
    declined,
    dispatched,
    out_of_stock,
    placed,
    released,
    reserved,
)
from workers import Worker, wait_shared

from bridge.engine.simulator import Simulator
from bridge.engine.timefmt import iso, parse_time
from bridge.flow import load_compiled

pytestmark = pytest.mark.kafka
FLOW = "order-fulfilment"


def flow_file(tmp_path: Path, uid: str, mode: str = "orchestrate") -> tuple[Path, list[str]]:
    """The example flow on topics of its own (payments moved from SQS to Kafka)."""
    text = EXAMPLE.read_text().replace("mode: observe", f"mode: {mode}")
    text = text.replace("sqs://payments-events", "kafka://payments.events")
    text = text.replace("sqs://payments-commands", "kafka://payments.commands")
    topics = [
        "orders.events",
        "inventory.events",
        "payments.events",
        "shipping.events",
        "inventory.commands",
        "payments.commands",
        "shipping.commands",
    ]
    for t in topics:
        text = text.replace(f"kafka://{t}", f"kafka://{t}.{uid}")
    path = tmp_path / f"flow-{uid}.yaml"
    path.write_text(text)
    return path, [f"{t}.{uid}" for t in topics]


def retarget(lines: list[dict[str, Any]], uid: str, base_ms: int) -> list[dict[str, Any]]:
    shift = base_ms - int(T0.timestamp() * 1000)
    out = []
    for line in lines:
        source = line["source"].replace("sqs://payments-events", "kafka://payments.events")
        out.append({**line, "source": f"{source}.{uid}", "at": iso(parse_time(line["at"]) + shift)})  # type: ignore[operator]
    return out


def expected(flow: Path, lines: list[dict[str, Any]]) -> dict[str, Any]:
    sim = Simulator(load_compiled([flow]))
    for n, line in enumerate(lines):
        sim.feed_line(json.dumps(line), f"line {n}")
    return sim.result()


def summary(inst: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": inst["status"],
        "steps": {n: (s["status"], s["attempts"]) for n, s in inst["steps"].items()},
    }


def assert_states(worker: Worker, want: dict[str, Any]) -> None:
    """Every instance of `want` (simulate's document) reaches its status and steps there."""
    for inst in want["instances"]:
        got = worker.wait_for(
            FLOW, inst["key"], lambda body, inst=inst: summary(body) == summary(inst)
        )
        assert summary(got) == summary(inst)


def stream(key: str) -> list[dict[str, Any]]:
    """Five orders with different fates, interleaved by time."""
    o = lambda n: f"{key}-{n}"  # noqa: E731
    return [
        placed(0, o(1)),
        reserved(0.1, o(1)),
        captured(0.2, o(1), f"p{o(1)}"),
        dispatched(0.3, f"p{o(1)}"),  # completes
        placed(0.4, o(2)),
        reserved(0.5, o(2)),
        declined(0.6, o(2)),
        released(0.7, o(2)),  # compensated
        placed(0.8, o(3)),
        out_of_stock(0.9, o(3)),  # failed
        reserved(1.0, o(4)),
        placed(1.1, o(4)),  # out of order
        placed(1.2, o(5)),
        reserved(1.3, o(5)),
        reserved(1.4, o(5)),  # duplicate
    ]


async def test_run_gives_what_simulate_gives(bootstrap: str, tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:8]
    flow, topics = flow_file(tmp_path, uid)
    await create_topics(bootstrap, topics)
    lines = retarget(stream(f"o{uid}"), uid, int(time.time() * 1000))
    want = expected(flow, lines)
    worker = Worker(flow, bootstrap, f"sb-{uid}", tmp_path).start()
    try:
        worker.wait_ready()
        await produce_lines(bootstrap, lines)
        assert_states(worker, want)
        commands = [
            r
            for t in topics
            if t.split(".")[1] == "commands"
            for r in await read_topic(bootstrap, t)
        ]
        sent = Counter(
            (
                json.loads(r.value)["command_id"],
                json.loads(r.value)["name"],
                json.loads(r.value)["action"],
                r.topic.split(".")[0],
            )
            for r in commands
        )
        want_sent = Counter(
            (
                c["command_id"],
                c["name"],
                c["action"],
                c["to"].removeprefix("kafka://").split(".")[0],
            )
            for c in want["commands"]
        )
        assert set(sent) == set(want_sent)
        for r in commands:
            headers = dict(r.headers)
            envelope = json.loads(r.value)
            assert headers["command_id"].decode() == envelope["command_id"]
            assert headers["traceparent"].decode().startswith("00-" + envelope["command_id"])
            assert r.key.decode() == envelope["key"]
        lifecycle = await read_topic(bootstrap, "sagabridge.lifecycle")
        mine = [json.loads(r.value) for r in lifecycle]
        keys = {i["key"] for i in want["instances"]}
        got_types = Counter(
            (x["key"], x["type"]) for x in mine if x["key"] in keys and x["flow"] == FLOW
        )
        want_types = Counter((x["key"], x["type"]) for x in want["lifecycle"])
        assert got_types == want_types
    finally:
        assert worker.stop() == 0


async def test_bad_messages_go_to_the_dlq_and_the_worker_goes_on(
    bootstrap: str, tmp_path: Path
) -> None:
    uid = uuid.uuid4().hex[:8]
    flow, topics = flow_file(tmp_path, uid, mode="observe")
    await create_topics(bootstrap, topics)
    orders = f"kafka://orders.events.{uid}"
    now = iso(int(time.time() * 1000))
    bad = [
        {"at": now, "source": orders, "value": "{not json"},
        {"at": now, "source": orders, "value": {"type": "OrderPlaced", "order": {"items": []}}},
        {"at": now, "source": orders, "value": "[1, 2]"},
    ]
    good = retarget([placed(0, f"k{uid}")], uid, int(time.time() * 1000))
    worker = Worker(flow, bootstrap, f"sb-{uid}", tmp_path).start()
    try:
        worker.wait_ready()
        await produce_lines(bootstrap, bad + good)
        worker.wait_for(FLOW, f"k{uid}", lambda b: b["status"] == "RUNNING")
        dlq = [
            r
            for r in await read_topic(bootstrap, "sagabridge.dlq")
            if dict(r.headers).get("sagabridge.source") == orders.encode()
        ]
        reasons = sorted(dict(r.headers)["sagabridge.error"].decode() for r in dlq)
        assert len(reasons) == 3, reasons
        assert any("cannot decode" in r and "not valid JSON" in r for r in reasons)
        assert any("has no key at $.order.id" in r for r in reasons)
        assert any("not a JSON object" in r for r in reasons)
        originals = {r.value for r in dlq}
        assert b"{not json" in originals  # the original bytes, untouched
    finally:
        assert worker.stop() == 0


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
async def test_a_killed_worker_resumes_with_the_same_decisions(
    bootstrap: str, tmp_path: Path, store: str
) -> None:
    uid = uuid.uuid4().hex[:8]
    flow, topics = flow_file(tmp_path, uid)
    await create_topics(bootstrap, topics)
    lines = retarget(stream(f"c{uid}") + stream(f"d{uid}"), uid, int(time.time() * 1000))
    want = expected(flow, lines)
    args = ("--state-dir", str(tmp_path / "state")) if store == "rocksdb" else ()
    worker = Worker(flow, bootstrap, f"sb-{uid}", tmp_path, args=args).start()
    worker.wait_ready()
    half = len(lines) // 2
    await produce_lines(bootstrap, lines[:half])
    worker.wait_for(FLOW, f"c{uid}-2", lambda b: True)
    worker.stop(signal.SIGKILL)
    await produce_lines(bootstrap, lines[half:])
    worker = Worker(flow, bootstrap, f"sb-{uid}", tmp_path, args=args).start()
    try:
        worker.wait_ready()
        assert_states(worker, want)
        commands = [
            json.loads(r.value)
            for t in topics
            if t.split(".")[1] == "commands"
            for r in await read_topic(bootstrap, t)
        ]
        by_id: dict[str, set[tuple[str, str, int]]] = {}
        for c in commands:
            by_id.setdefault(c["command_id"], set()).add((c["name"], c["action"], c["attempt"]))
        # a command sent again after the crash carries the same id, and nothing else differs
        assert all(len(v) == 1 for v in by_id.values())
        got = {(c["key"], c["name"], c["action"], c["attempt"], c["command_id"]) for c in commands}
        assert got == {
            (c["key"], c["name"], c["action"], c["attempt"], c["command_id"])
            for c in want["commands"]
        }
        assert len(commands) >= len(got)  # some were sent twice: before and after the kill
    finally:
        assert worker.stop() == 0


async def test_a_deadline_fires_within_a_second(bootstrap: str, tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:8]
    flow, topics = flow_file(tmp_path, uid, mode="observe")
    flow.write_text(flow.read_text().replace("deadline: 30s", "deadline: 2s"))
    await create_topics(bootstrap, topics)
    worker = Worker(flow, bootstrap, f"sb-{uid}", tmp_path).start()
    try:
        worker.wait_ready()
        await produce_lines(
            bootstrap, retarget([placed(0, f"t{uid}")], uid, int(time.time() * 1000))
        )
        inst = worker.wait_for(
            FLOW, f"t{uid}", lambda b: b["steps"]["reserve"]["status"] == "TIMED_OUT"
        )
        activated = parse_time(inst["steps"]["reserve"]["activated_at"])
        timed_out = next(h for h in inst["history"] if h["type"] == "step.timed_out")
        late_by = parse_time(timed_out["at"]) - activated - 2_000  # type: ignore[operator]
        assert 0 <= late_by <= 1_000, late_by
    finally:
        assert worker.stop() == 0


async def test_two_workers_share_the_partitions_and_answer_for_each_other(
    bootstrap: str, tmp_path: Path
) -> None:
    uid = uuid.uuid4().hex[:8]
    flow, topics = flow_file(tmp_path, uid, mode="observe")
    await create_topics(bootstrap, topics)
    keys = [f"w{uid}-{n}" for n in range(12)]
    base = int(time.time() * 1000)
    first = Worker(flow, bootstrap, f"sb-{uid}", tmp_path).start()
    second = Worker(flow, bootstrap, f"sb-{uid}", tmp_path)
    try:
        first.wait_ready(partitions=4)
        await produce_lines(
            bootstrap, retarget([placed(n * 0.01, k) for n, k in enumerate(keys)], uid, base)
        )
        for k in keys:
            first.wait_for(FLOW, k, lambda b: b["status"] == "RUNNING")
        second.start()
        wait_shared(first, second, partitions=4)  # the group rebalances onto both workers
        await produce_lines(
            bootstrap, retarget([reserved(1 + n * 0.01, k) for n, k in enumerate(keys)], uid, base)
        )
        for k in keys:  # either worker answers for any key, state intact across the move
            for w in (first, second):
                w.wait_for(FLOW, k, lambda b: b["steps"]["reserve"]["status"] == "DONE")
        assert second.stop() == 0
        first.wait_ready(partitions=4)
        for k in keys:
            body = first.wait_for(FLOW, k, lambda b: b["steps"]["pay"]["status"] == "ACTIVE")
            assert body["steps"]["reserve"]["status"] == "DONE"
    finally:
        second.stop()
        assert first.stop() == 0


PAYMENT_SCHEMA = {
    "type": "record",
    "name": "PaymentEvent",
    "fields": [
        {"name": "eventType", "type": "string"},
        {"name": "eventId", "type": "string"},
        {"name": "orderId", "type": "string"},
        {"name": "paymentId", "type": ["null", "string"], "default": None},
    ],
}


async def test_avro_sources_decode_and_a_wrong_schema_is_dead_lettered(
    bootstrap: str, tmp_path: Path
) -> None:
    import io

    import fastavro
    from aiokafka import AIOKafkaProducer

    uid = uuid.uuid4().hex[:8]
    flow, topics = flow_file(tmp_path, uid, mode="observe")
    await create_topics(bootstrap, topics)
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "payment.avsc").write_text(json.dumps(PAYMENT_SCHEMA))
    config = tmp_path / "sagabridge.yaml"
    config.write_text(
        f"topics_dir: {tmp_path}\n"
        f"sources:\n  kafka://payments.events.{uid}:\n"
        "    {format: avro, schema_file: schemas/payment.avsc}\n"
    )
    key = f"a{uid}"
    buf = io.BytesIO()
    event = {"eventType": "payment.captured", "eventId": "c1", "orderId": key, "paymentId": "p1"}
    fastavro.schemaless_writer(buf, fastavro.parse_schema(PAYMENT_SCHEMA), event)
    worker = Worker(flow, bootstrap, f"sb-{uid}", tmp_path, config=config).start()
    try:
        worker.wait_ready()
        now = int(time.time() * 1000)
        await produce_lines(bootstrap, retarget([placed(0, key), reserved(0.1, key)], uid, now))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            # JSON where Avro is expected: the wrong schema for this source
            await producer.send_and_wait(f"payments.events.{uid}", b'{"eventType": "x"}')
            await producer.send_and_wait(f"payments.events.{uid}", buf.getvalue())
        finally:
            await producer.stop()
        worker.wait_for(FLOW, key, lambda b: b["steps"]["pay"]["status"] == "DONE")
        source = f"kafka://payments.events.{uid}".encode()
        dlq = [
            r
            for r in await read_topic(bootstrap, "sagabridge.dlq")
            if dict(r.headers).get("sagabridge.source") == source
        ]
        assert len(dlq) == 1
        assert dlq[0].value == b'{"eventType": "x"}'
        assert dict(dlq[0].headers)["sagabridge.error"].decode().startswith("cannot decode")
    finally:
        assert worker.stop() == 0


def test_status_shows_an_instance_from_any_worker(bootstrap: str, tmp_path: Path) -> None:
    import asyncio
    import subprocess

    from workers import SAGABRIDGE

    uid = uuid.uuid4().hex[:8]
    flow, topics = flow_file(tmp_path, uid, mode="observe")
    asyncio.run(create_topics(bootstrap, topics))
    worker = Worker(flow, bootstrap, f"sb-{uid}", tmp_path).start()
    key = f"s{uid}"
    try:
        worker.wait_ready()
        now = int(time.time() * 1000)
        asyncio.run(produce_lines(bootstrap, retarget([placed(0, key)], uid, now)))
        worker.wait_for(FLOW, key, lambda b: True)

        def status(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [SAGABRIDGE, "status", FLOW, *args, "--url", worker.url],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )

        shown = status(key)
        assert shown.returncode == 0, shown.stderr
        assert "RUNNING" in shown.stdout and "reserve" in shown.stdout
        assert json.loads(status(key, "--json").stdout)["steps"]["reserve"]["status"] == "ACTIVE"
        missing = status("nope")
        assert missing.returncode == 1 and "no instance" in missing.stderr
        assert worker.get("no-such-flow", "x")[0] == 404
    finally:
        assert worker.stop() == 0


def test_run_refuses_bad_input_with_a_message(tmp_path: Path) -> None:
    import subprocess

    from workers import SAGABRIDGE

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SAGABRIDGE, "run", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            check=False,
        )

    no_bootstrap = run("--flows", str(EXAMPLE))
    assert no_bootstrap.returncode == 2 and "setting bootstrap" in no_bootstrap.stderr
    unreachable = run("--flows", str(EXAMPLE), "--bootstrap", "127.0.0.1:1")
    assert unreachable.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in unreachable.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("flow: x\n")
    bad_flow = run("--flows", str(bad), "--bootstrap", "127.0.0.1:1")
    assert bad_flow.returncode == 1 and f"{bad}:1: key: required" in bad_flow.stderr
    for result in (no_bootstrap, unreachable, bad_flow):
        assert "Traceback" not in result.stderr


def test_embedded_runs_a_broker_of_its_own_and_stops_it(tmp_path: Path) -> None:
    import subprocess

    from workers import FAST_GROUP, SAGABRIDGE

    from bridge.runtime.embedded import free_port

    port = free_port()
    flow, _ = flow_file(tmp_path, uuid.uuid4().hex[:8])  # Kafka only: no SQS here
    env = {**os.environ, **FAST_GROUP}
    log = (tmp_path / "embedded.log").open("wb")
    proc = subprocess.Popen(
        [SAGABRIDGE, "run", "--embedded", "--flows", str(flow), "--web-port", str(port)],
        stdout=log,
        stderr=log,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if json.loads(r.read())["status"] == "ok":
                        break
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        else:
            raise AssertionError((tmp_path / "embedded.log").read_text()[-3000:])
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert children, "the embedded broker runs as a child of the worker"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        for pid in children:  # the broker went with it
            assert (
                not Path(f"/proc/{pid}").exists()
                or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
            )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_embedded_refuses_sqs_flows_without_an_sqs_endpoint(tmp_path: Path) -> None:
    import subprocess

    from workers import SAGABRIDGE

    result = subprocess.run(
        [SAGABRIDGE, "run", "--embedded", "--flows", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "setting sqs_endpoint" in result.stderr and "Traceback" not in result.stderr
