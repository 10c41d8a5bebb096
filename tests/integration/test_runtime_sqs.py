"""The example flow as it is: payments on SQS, the rest on Kafka, through `sagabridge run`."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from kafka_io import create_topics, produce_lines, read_topic
from support import EXAMPLE, captured, declined, dispatched, placed, released, reserved
from test_runtime import FLOW, assert_states, expected, retarget
from workers import Worker

pytestmark = [pytest.mark.kafka, pytest.mark.sqs]
TOPICS = [
    "orders.events",
    "inventory.events",
    "shipping.events",
    "inventory.commands",
    "shipping.commands",
]


def flow_file(tmp_path: Path, uid: str) -> tuple[Path, list[str]]:
    text = EXAMPLE.read_text().replace("mode: observe", "mode: orchestrate")
    for q in ("payments-events", "payments-commands"):
        text = text.replace(f"sqs://{q}", f"sqs://{q}-{uid}")
    for t in TOPICS:
        text = text.replace(f"kafka://{t}", f"kafka://{t}.{uid}")
    path = tmp_path / f"flow-{uid}.yaml"
    path.write_text(text)
    return path, [f"{t}.{uid}" for t in TOPICS]


def lines_for(uid: str, key: str) -> list[dict[str, Any]]:
    stream = [
        placed(0, f"{key}-1"),
        reserved(0.1, f"{key}-1"),
        captured(0.2, f"{key}-1", f"p{key}1"),
        dispatched(0.3, f"p{key}1"),
        placed(0.4, f"{key}-2"),
        reserved(0.5, f"{key}-2"),
        declined(0.6, f"{key}-2"),
        released(0.9, f"{key}-2"),
    ]
    out = []
    for line in retarget(stream, uid, int(time.time() * 1000)):
        if line["source"].startswith("kafka://payments-events"):
            line = {**line, "source": f"sqs://payments-events-{uid}"}
        out.append(line)
    return out


async def test_payments_on_sqs_reach_the_same_states_as_simulate(
    bootstrap: str, endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    uid = uuid.uuid4().hex[:8]
    flow, topics = flow_file(tmp_path, uid)
    await create_topics(bootstrap, topics)
    lines = lines_for(uid, f"q{uid}")
    want = expected(flow, lines)
    async with get_session().create_client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1"
    ) as sqs:
        events_url = (await sqs.create_queue(QueueName=f"payments-events-{uid}"))["QueueUrl"]
        commands_url = (await sqs.create_queue(QueueName=f"payments-commands-{uid}"))["QueueUrl"]
        worker = Worker(
            flow,
            bootstrap,
            f"sb-{uid}",
            tmp_path,
            args=("--sqs-endpoint", endpoint),
            AWS_ACCESS_KEY_ID="x",
            AWS_SECRET_ACCESS_KEY="x",
            SAGABRIDGE_SQS__WAIT_TIME_SECONDS="1",
        ).start()
        try:
            worker.wait_ready()
            for line in lines:  # in time order, each on its own bus
                if line["source"].startswith("sqs://"):
                    await sqs.send_message(
                        QueueUrl=events_url, MessageBody=json.dumps(line["value"])
                    )
                else:
                    await produce_lines(bootstrap, [line])
            await asyncio.to_thread(assert_states, worker, want)
            received: list[dict[str, Any]] = []
            for _ in range(10):
                answer = await sqs.receive_message(
                    QueueUrl=commands_url,
                    MaxNumberOfMessages=10,
                    MessageAttributeNames=["All"],
                    WaitTimeSeconds=1,
                )
                received += answer.get("Messages") or []
            envelopes = [json.loads(m["Body"]) for m in received]
            want_sqs = {c["command_id"] for c in want["commands"] if c["to"].startswith("sqs://")}
            assert {e["command_id"] for e in envelopes} == want_sqs
            for m, e in zip(received, envelopes, strict=True):
                assert m["MessageAttributes"]["command_id"]["StringValue"] == e["command_id"]
                assert e["name"] == "CapturePayment"
            depth = await sqs.get_queue_attributes(
                QueueUrl=events_url, AttributeNames=["ApproximateNumberOfMessages"]
            )
            assert depth["Attributes"]["ApproximateNumberOfMessages"] == "0"  # all deleted
        finally:
            assert worker.stop() == 0


class DeleteHoldingProxy:
    """An HTTP proxy in front of the SQS server that passes every call through except deletes:
    those it holds unanswered and never forwards. A worker behind it hands its messages to Kafka,
    then waits on the delete: the moment a crash between receive and delete leaves behind."""

    def __init__(self, upstream: str) -> None:
        target = urllib.parse.urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.held: list[str] = []  # receipt handles of the deletes held back
        self._lock = threading.Lock()
        self._closing = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects

            def do_POST(self) -> None:
                proxy._handle(self)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def holding(self) -> int:
        with self._lock:
            return len(self.held)

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        action = (req.headers.get("X-Amz-Target") or "").rpartition(".")[2]
        if action in ("DeleteMessage", "DeleteMessageBatch"):  # botocore speaks SQS's JSON API
            doc = json.loads(body)
            receipts = [e["ReceiptHandle"] for e in doc.get("Entries") or [doc]]
            with self._lock:
                self.held += receipts
            self._closing.wait()
            req.close_connection = True
            return  # never answered, never forwarded: the messages stay in flight
        skip = {"host", "connection", "content-length"}
        headers = {k: v for k, v in req.headers.items() if k.lower() not in skip}
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(req.command, req.path, body, headers)
            resp = conn.getresponse()
            data = resp.read()
            req.send_response(resp.status)
            skip = {"connection", "content-length", "transfer-encoding", "server", "date"}
            for k, v in resp.getheaders():
                if k.lower() not in skip:
                    req.send_header(k, v)
            req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            req.wfile.write(data)
        except OSError:  # the worker was killed during a long poll
            req.close_connection = True
        finally:
            conn.close()

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()


async def queue_depth(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names))["Attributes"]
    return int(attrs[names[0]]), int(attrs[names[1]])


async def wait_committed(bootstrap: str, group: str, topic: str, timeout: float = 30) -> None:
    """Until `group` committed every record of `topic`. Faust flushes the table changelog before
    it commits, so a worker killed after this replays nothing from `topic` when it restarts.
    Offsets are counted from the records read, not from the end offsets Tansu reports."""
    ends: dict[int, int] = {}
    for r in await read_topic(bootstrap, topic):
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    tps = [TopicPartition(topic, p) for p in sorted(ends)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    got: dict[int, int] = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
            got = {tp.partition: om.offset for tp, om in offsets.items()}
            if all(got.get(p, -1) >= end for p, end in ends.items()):
                return
            await asyncio.sleep(0.3)
    finally:
        await admin.close()
    raise AssertionError(f"{group} never committed {topic} to its end: {got} < {ends}")


def pay_applied(inst: dict[str, Any]) -> bool:
    return bool(inst["steps"]["pay"]["status"] != "ACTIVE")


async def test_a_worker_killed_between_receive_and_delete_applies_each_message_once(
    bootstrap: str, endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL while SQS messages are handed to Kafka (some applied) but not deleted: they come
    back after the visibility timeout, each is applied once, the copies already applied are
    recorded as duplicates, nothing is lost and the queue ends empty."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    uid = uuid.uuid4().hex[:8]
    flow, topics = flow_file(tmp_path, uid)
    await create_topics(bootstrap, topics)
    keys = [f"k{uid}-{n}" for n in range(6)]
    head, payments, tail = [], [], []
    for n, k in enumerate(keys):
        head += [placed(0.1 * n, k), reserved(1 + 0.1 * n, k)]
        payments.append(
            captured(2 + 0.1 * n, k, f"p{k}") if n % 2 == 0 else declined(2 + 0.1 * n, k)
        )
        tail.append(dispatched(3 + 0.1 * n, f"p{k}") if n % 2 == 0 else released(3 + 0.1 * n, k))
    queue = f"sqs://payments-events-{uid}"
    lines = [
        {**line, "source": queue} if line["source"].startswith("kafka://payments") else line
        for line in retarget(head + payments + tail, uid, int(time.time() * 1000))
    ]
    head, payments, tail = lines[:12], lines[12:18], lines[18:]
    want = expected(flow, lines)
    app_id = f"sb-{uid}"
    env = {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "SAGABRIDGE_SQS__WAIT_TIME_SECONDS": "1",
        "SAGABRIDGE_SQS__VISIBILITY_TIMEOUT": "2",
    }
    proxy = DeleteHoldingProxy(endpoint)
    worker = Worker(flow, bootstrap, app_id, tmp_path, args=("--sqs-endpoint", proxy.url), **env)
    async with get_session().create_client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1"
    ) as sqs:
        url = (await sqs.create_queue(QueueName=f"payments-events-{uid}"))["QueueUrl"]
        await sqs.create_queue(QueueName=f"payments-commands-{uid}")

        async def send(batch: list[dict[str, Any]]) -> None:
            entries = [
                {"Id": str(n), "MessageBody": json.dumps(line["value"])}
                for n, line in enumerate(batch)
            ]
            sent = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
            assert not sent.get("Failed"), sent

        try:
            worker.start()
            await asyncio.to_thread(worker.wait_ready)
            await produce_lines(bootstrap, head)
            for k in keys:  # every instance waits for its payment
                await asyncio.to_thread(
                    worker.wait_for, FLOW, k, lambda b: b["steps"]["pay"]["status"] == "ACTIVE"
                )
            # A first burst: the worker hands (part of) it to Kafka, then hangs on the delete.
            await send(payments[:4])
            deadline = time.monotonic() + 30
            while not proxy.holding():
                assert time.monotonic() < deadline, "the worker never deleted:\n" + worker.tail()
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # the forwarder waits on this delete: nothing else comes
            handed = proxy.holding()
            applied: list[str] = []
            while len(applied) < handed:  # Kafka has them: the engine applies them
                assert time.monotonic() < deadline, f"{applied} of {handed}:\n{worker.tail()}"
                applied = [k for k in keys if pay_applied(worker.get(FLOW, k)[1])]
                await asyncio.sleep(0.2)
            assert set(applied) <= set(keys[:4]), applied
            # A second burst is received behind the blocked handoff: never handed to Kafka.
            await send(payments[4:])
            while await queue_depth(sqs, url) != (0, 6):
                assert time.monotonic() < deadline, await queue_depth(sqs, url)
                await asyncio.sleep(0.2)
            await wait_committed(bootstrap, app_id, f"{app_id}.input")
            # At the kill: the handed-off ones applied (at least one), and all six in flight.
            assert [k for k in keys if pay_applied(worker.get(FLOW, k)[1])] == applied
            assert len(applied) == handed >= 1, (applied, handed)
            assert await queue_depth(sqs, url) == (0, 6)
            assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
        finally:
            worker.stop(signal.SIGKILL)
            proxy.close()

        # Same app id, same state (recovered from the changelog); SQS now reached directly.
        worker = Worker(flow, bootstrap, app_id, tmp_path, args=("--sqs-endpoint", endpoint), **env)
        worker.start()
        try:
            await asyncio.to_thread(worker.wait_ready)
            for k in keys:  # the six messages came back after their visibility timeout
                await asyncio.to_thread(worker.wait_for, FLOW, k, pay_applied)
            await produce_lines(bootstrap, tail)
            await asyncio.to_thread(assert_states, worker, want)
            deadline = time.monotonic() + 20
            while await queue_depth(sqs, url) != (0, 0):  # all deleted, nothing in flight
                assert time.monotonic() < deadline, await queue_depth(sqs, url)
                await asyncio.sleep(0.2)

            ids = {line["value"]["orderId"]: line["value"]["eventId"] for line in payments}
            redelivered = {ids[k] for k in applied}
            # On the input topic: twice what was applied before the kill (the first copy, then
            # the one that came back), once the rest: every message arrived, none was lost.
            handoffs = Counter(
                wire[4]
                for r in await read_topic(bootstrap, f"{app_id}.input")
                for wire in json.loads(r.value)["i"]
                if wire[0] == "e" and wire[4] in ids.values()
            )
            assert handoffs == Counter(ids.values()) + Counter(redelivered)
            # Each applied once: the lifecycle of an uninterrupted run, give or take
            # event.duplicate records, which the copies that came back must have.
            mine = [
                json.loads(r.value)
                for r in await read_topic(bootstrap, "sagabridge.lifecycle")
                if r.key and r.key.decode() in keys
            ]
            mine = [x for x in mine if x["flow"] == FLOW and x["key"] in keys]
            got_types = Counter(
                (x["key"], x["type"]) for x in mine if x["type"] != "event.duplicate"
            )
            assert got_types == Counter((x["key"], x["type"]) for x in want["lifecycle"])
            # (Faust may deliver input records again after a restart, before its first commit:
            # those are duplicates too, so other messages may have some as well.)
            dups = {(x["key"], x["id"]) for x in mine if x["type"] == "event.duplicate"}
            assert {(k, ids[k]) for k in applied} <= dups, dups
            for k in applied:  # and the instance's history says so
                history = worker.get(FLOW, k)[1]["history"]
                assert ids[k] in [h["id"] for h in history if h["type"] == "event.duplicate"]
            dlq = await read_topic(bootstrap, "sagabridge.dlq")
            assert not [
                r for r in dlq if dict(r.headers).get("sagabridge.source") == queue.encode()
            ]
            # Every input record was consumed: a skipped one would hold its partition's commits.
            await wait_committed(bootstrap, app_id, f"{app_id}.input")
        finally:
            assert worker.stop() == 0
