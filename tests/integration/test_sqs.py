"""SqsSource and SqsSink against a real SQS server: ElasticMQ started for this module
(brokers/elasticmq.sh), or the server SAGABRIDGE_TEST_SQS_ENDPOINT names."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from servers import start_elasticmq, stop_elasticmq

from bridge.codecs import CloudEventsCodec
from bridge.engine.effects import Command
from bridge.errors import BrokerError
from bridge.runtime.embedded import free_port
from bridge.sinks.sqs import SqsSink
from bridge.sources.record import SourceRecord
from bridge.sources.sqs import SqsSource, to_record

pytestmark = pytest.mark.sqs

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "brokers" / "elasticmq.sh"
REGION = "us-east-1"


@pytest.fixture
async def sqs(endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "sqs", endpoint_url=endpoint, region_name=REGION
    ) as client:
        yield client


async def new_queue(sqs: Any, fifo: bool = False) -> tuple[str, str]:
    name = f"t-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
    attributes = {"FifoQueue": "true"} if fifo else {}
    reply = await sqs.create_queue(QueueName=name, Attributes=attributes)
    return name, reply["QueueUrl"]


async def queue_depth(sqs: Any, url: str) -> int:
    """Messages in the queue, visible or not."""
    reply = await sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    return sum(int(v) for v in reply["Attributes"].values())


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = check()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


class Collector:
    """The handoff and dead_letter callbacks, recording what they were given and when."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[SourceRecord]]] = []
        self.dead: list[tuple[SourceRecord, str]] = []

    @property
    def records(self) -> list[SourceRecord]:
        return [r for _, batch in self.calls for r in batch]

    async def handoff(self, records: list[SourceRecord]) -> None:
        self.calls.append((time.monotonic(), records))

    async def dead_letter(self, record: SourceRecord, reason: str) -> None:
        self.dead.append((record, reason))


def make_source(endpoint: str, queues: list[str], sink: Collector, **options: Any) -> SqsSource:
    settings: dict[str, Any] = {"wait_time_seconds": 1, "visibility_timeout": 2, "max_receives": 5}
    settings.update(options)
    return SqsSource(
        endpoint_url=endpoint,
        region=REGION,
        queues=queues,
        handoff=sink.handoff,
        dead_letter=sink.dead_letter,
        **settings,
    )


@contextlib.asynccontextmanager
async def running(source: SqsSource) -> AsyncIterator[None]:
    task = asyncio.create_task(source.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.close()


def sns_body(message: str, message_id: str, attributes: dict[str, Any]) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": "arn:aws:sns:us-east-1:000000000000:payments",
            "Message": message,
            "Timestamp": "2026-01-01T10:00:00.000Z",
            "SignatureVersion": "1",
            "MessageAttributes": attributes,
        }
    )


def command(to: str, key: str, n: int, name: str = "ReserveInventory") -> Command:
    return Command(
        to=to,
        envelope={
            "command_id": f"{uuid.uuid4().hex[:24]}{n:08x}",
            "name": name,
            "flow": "order-fulfilment",
            "key": key,
            "step": "reserve",
            "action": "invoke",
            "attempt": 1,
            "issued_at": "2026-01-01T10:00:00Z",
            "payload": {"order_id": key, "n": n},
        },
    )


async def receive_all(sqs: Any, url: str, expected: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(messages) < expected and time.monotonic() < deadline:
        reply = await sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=30,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages += reply.get("Messages", [])
    return messages


# --- source -------------------------------------------------------------------------------------


async def test_raw_and_sns_messages_become_source_records(endpoint: str, sqs: Any) -> None:
    name, url = await new_queue(sqs)
    before = int(time.time() * 1000)
    raw = await sqs.send_message(
        QueueUrl=url,
        MessageBody='{"eventType": "payment.captured", "orderId": "o-1"}',
        MessageAttributes={
            "trace": {"DataType": "String", "StringValue": "abc"},
            "amount": {"DataType": "Number", "StringValue": "12.5"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
        },
    )
    await sqs.send_message(
        QueueUrl=url,
        MessageBody=sns_body(
            '{"eventType": "payment.captured", "orderId": "o-2"}',
            "sns-id-2",
            {
                "trace": {"Type": "String", "Value": "def"},
                "blob": {"Type": "Binary", "Value": base64.b64encode(b"\x01\x02").decode()},
            },
        ),
    )
    # Looks like an SNS envelope but is not JSON: passed through as a raw body.
    broken = '{"Type": "Notification", "TopicArn": "arn", "Message": '
    broken_sent = await sqs.send_message(QueueUrl=url, MessageBody=broken)
    after = int(time.time() * 1000)

    sink = Collector()
    async with running(make_source(endpoint, [f"sqs://{name}"], sink)):
        await eventually(lambda: len(sink.records) >= 3)
        await eventually(lambda: _empty(sqs, url))

    by_id = {r.default_id: r for r in sink.records}
    assert len(sink.records) == 3
    plain = by_id[raw["MessageId"]]
    assert plain.source == f"sqs://{name}"
    assert plain.value == b'{"eventType": "payment.captured", "orderId": "o-1"}'
    assert dict(plain.headers) == {"trace": b"abc", "amount": b"12.5", "blob": b"\x00\xff"}
    assert plain.key is None
    assert before - 1000 <= plain.timestamp_ms <= after + 1000

    wrapped = by_id["sns-id-2"]
    assert wrapped.value == b'{"eventType": "payment.captured", "orderId": "o-2"}'
    assert dict(wrapped.headers) == {"trace": b"def", "blob": b"\x01\x02"}
    assert wrapped.key is None

    assert by_id[broken_sent["MessageId"]].value == broken.encode()
    assert sink.dead == []


async def _empty(sqs: Any, url: str) -> bool:
    return await queue_depth(sqs, url) == 0


async def test_fifo_messages_carry_the_group_as_key_in_order(endpoint: str, sqs: Any) -> None:
    name, url = await new_queue(sqs, fifo=True)
    for seq in range(15):
        await sqs.send_message(
            QueueUrl=url,
            MessageBody=json.dumps({"seq": seq}),
            MessageGroupId=f"order-{seq % 2}",
            MessageDeduplicationId=f"d-{seq}",
        )
    sink = Collector()
    async with running(make_source(endpoint, [f"sqs://{name}"], sink)):
        await eventually(lambda: len(sink.records) >= 15)
        await eventually(lambda: _empty(sqs, url))

    for group in (0, 1):
        records = [r for r in sink.records if r.key == f"order-{group}".encode()]
        seqs = [json.loads(r.value or b"")["seq"] for r in records]
        assert seqs == [s for s in range(15) if s % 2 == group]


async def test_messages_stay_until_the_handoff_returns(endpoint: str, sqs: Any) -> None:
    name, url = await new_queue(sqs)
    sent = await sqs.send_message(QueueUrl=url, MessageBody='{"n": 1}')
    sink = Collector()
    failures: list[float] = []

    async def handoff(records: list[SourceRecord]) -> None:
        if not failures:
            failures.append(time.monotonic())
            raise RuntimeError("kafka is down")
        await sink.handoff(records)

    source = make_source(endpoint, [name], sink, visibility_timeout=1)
    source.handoff = handoff
    async with running(source):
        await eventually(lambda: bool(failures))
        # Not deleted: the message is still in the queue, invisible for now.
        assert await queue_depth(sqs, url) == 1
        await eventually(lambda: bool(sink.calls))
        await eventually(lambda: _empty(sqs, url))

    # It came back once its visibility timeout (1 s) ran out, and only then.
    (at, records), *more = sink.calls
    assert not more
    assert [r.default_id for r in records] == [sent["MessageId"]]
    assert at - failures[0] >= 0.8


async def test_a_slow_handoff_keeps_the_message_invisible(endpoint: str, sqs: Any) -> None:
    name, url = await new_queue(sqs)
    sent = await sqs.send_message(QueueUrl=url, MessageBody='{"n": 1}')
    sink = Collector()
    started = asyncio.Event()

    async def slow(records: list[SourceRecord]) -> None:
        started.set()
        await asyncio.sleep(4.5)  # more than two visibility timeouts
        await sink.handoff(records)

    source = make_source(endpoint, [name], sink, visibility_timeout=2)
    source.handoff = slow
    async with running(source):
        await asyncio.wait_for(started.wait(), 10)
        # Another consumer polling meanwhile must not see it.
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            reply = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
            assert reply.get("Messages", []) == []
        await eventually(lambda: bool(sink.calls))
        await eventually(lambda: _empty(sqs, url))
        await asyncio.sleep(2.5)  # what was not extended would be back by now

    assert [r.default_id for r in sink.records] == [sent["MessageId"]]


async def test_poison_messages_are_dead_lettered_and_deleted(endpoint: str, sqs: Any) -> None:
    name, url = await new_queue(sqs)
    await sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "0", "MessageBody": '{"poison": true}'},
            {"Id": "1", "MessageBody": '{"poison": false}'},
        ],
    )
    sink = Collector()
    attempts: list[list[bytes | None]] = []

    async def handoff(records: list[SourceRecord]) -> None:
        attempts.append([r.value for r in records])
        if any(r.value == b'{"poison": true}' for r in records):
            raise ValueError("cannot route this")
        await sink.handoff(records)

    source = make_source(endpoint, [name], sink, visibility_timeout=1, max_receives=1)
    source.handoff = handoff
    async with running(source):
        await eventually(lambda: bool(sink.dead))
        await eventually(lambda: _empty(sqs, url))

    (record, reason), *more = sink.dead
    assert not more
    assert record.value == b'{"poison": true}'
    assert reason.startswith("received 2 times (max_receives 1): poison message")
    assert "ValueError: cannot route this" in reason
    # The good message reached Kafka exactly once, even when it shared a failed batch.
    assert [r.value for r in sink.records] == [b'{"poison": false}']


async def test_a_missing_queue_is_a_clear_error(endpoint: str, sqs: Any) -> None:
    source = make_source(endpoint, ["sqs://no-such-queue-x"], Collector())
    try:
        with pytest.raises(BrokerError, match=r"'no-such-queue-x'.*does not exist"):
            await asyncio.wait_for(source.run(), 10)
    finally:
        await source.close()


async def test_the_source_outlives_its_server(endpoint: str) -> None:
    """A server of its own, stopped and started again (empty: ElasticMQ keeps queues in memory)."""
    port = free_port()
    own = await asyncio.to_thread(start_elasticmq, port)
    try:
        async with get_session().create_client("sqs", endpoint_url=own, region_name=REGION) as sqs:
            name, url = await new_queue(sqs)
            await sqs.send_message(QueueUrl=url, MessageBody='{"n": 1}')
        sink = Collector()
        async with running(make_source(own, [name], sink)):
            await eventually(lambda: len(sink.records) == 1)
            await asyncio.to_thread(stop_elasticmq, port)
            await asyncio.sleep(1)  # connection refused meanwhile
            await asyncio.to_thread(start_elasticmq, port)
            async with get_session().create_client(
                "sqs", endpoint_url=own, region_name=REGION
            ) as sqs:
                await asyncio.sleep(1)  # the queue does not exist meanwhile
                await sqs.create_queue(QueueName=name)
                await sqs.send_message(QueueUrl=url, MessageBody='{"n": 2}')
                await eventually(lambda: len(sink.records) == 2, timeout=20)
        assert [r.value for r in sink.records] == [b'{"n": 1}', b'{"n": 2}']
    finally:
        await asyncio.to_thread(stop_elasticmq, port)


def test_a_binary_sns_attribute_that_is_not_base64_stays_text() -> None:
    body = sns_body("x", "sns-1", {"bad": {"Type": "Binary", "Value": "%%%"}})
    record = to_record("q", {"MessageId": "m", "Body": body, "Attributes": {"SentTimestamp": "5"}})
    assert record.headers == [("bad", b"%%%")]
    assert (record.value, record.default_id, record.timestamp_ms) == (b"x", "sns-1", 5)


# --- sink ---------------------------------------------------------------------------------------


async def test_sink_sends_to_a_standard_queue(endpoint: str, sqs: Any) -> None:
    name, url = await new_queue(sqs)
    commands = [command(f"sqs://{name}", f"o-{n}", n) for n in range(3)]
    sink = SqsSink(endpoint_url=endpoint, region=REGION)
    try:
        await sink.send(commands)
    finally:
        await sink.close()

    messages = await receive_all(sqs, url, 3)
    got = {json.loads(m["Body"])["command_id"]: m for m in messages}
    assert len(messages) == 3
    for cmd in commands:
        message = got[cmd.envelope["command_id"]]
        assert json.loads(message["Body"]) == cmd.envelope
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        assert attributes == {
            "command_id": cmd.envelope["command_id"],
            "flow": "order-fulfilment",
            "key": cmd.envelope["key"],
        }


async def test_sink_sends_to_a_fifo_queue_once_per_command(endpoint: str, sqs: Any) -> None:
    name, url = await new_queue(sqs, fifo=True)
    to = f"sqs://{name}"
    first, second = command(to, "o-42", 1), command(to, "o 43/ü", 2)
    sink = SqsSink(endpoint_url=endpoint, region=REGION)
    try:
        await sink.send([first, second])
        await sink.send([first])  # re-sent after a crash: same id, dropped by SQS
    finally:
        await sink.close()

    messages = await receive_all(sqs, url, 2)
    # Whatever else is there would be visible now: the two received stay invisible for 30 s.
    extra = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert not extra.get("Messages")
    assert len(messages) == 2
    by_id = {m["Attributes"]["MessageDeduplicationId"]: m for m in messages}
    one = by_id[first.envelope["command_id"]]
    assert one["Attributes"]["MessageGroupId"] == "o-42"
    assert json.loads(one["Body"]) == first.envelope
    # A key SQS would refuse as a group id becomes a stable digest of it.
    two = by_id[second.envelope["command_id"]]
    assert two["Attributes"]["MessageGroupId"].startswith("sha256:")
    assert two["MessageAttributes"]["key"]["StringValue"] == "o 43/ü"


async def test_sink_batches_more_than_ten_commands(endpoint: str, sqs: Any) -> None:
    standard, standard_url = await new_queue(sqs)
    fifo, fifo_url = await new_queue(sqs, fifo=True)
    commands = [command(f"sqs://{standard}", f"o-{n}", n) for n in range(25)]
    commands += [command(f"sqs://{fifo}", "o-1", n) for n in range(23)]
    sink = SqsSink(endpoint_url=endpoint, region=REGION)
    try:
        await sink.send(commands)
    finally:
        await sink.close()

    got = await receive_all(sqs, standard_url, 25)
    assert sorted(json.loads(m["Body"])["payload"]["n"] for m in got) == list(range(25))
    # One group: SQS hands it out in the order sent, across the three batches.
    ordered: list[int] = []
    while len(ordered) < 23:
        batch = await receive_all(sqs, fifo_url, 1)
        assert batch
        ordered += [json.loads(m["Body"])["payload"]["n"] for m in batch]
        await sqs.delete_message_batch(
            QueueUrl=fifo_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
    assert ordered == list(range(23))


async def test_sink_to_source_round_trip_with_a_codec(endpoint: str, sqs: Any) -> None:
    name, url = await new_queue(sqs, fifo=True)
    to = f"sqs://{name}"
    codec = CloudEventsCodec()
    sent = command(to, "o-7", 7)
    sink = SqsSink(endpoint_url=endpoint, region=REGION, codecs={to: codec})
    try:
        await sink.send([sent])
    finally:
        await sink.close()

    collected = Collector()
    async with running(make_source(endpoint, [to], collected)):
        await eventually(lambda: bool(collected.records))
        await eventually(lambda: _empty(sqs, url))
    (record,) = collected.records
    assert record.key == b"o-7"
    decoded = codec.decode(record.value, dict(record.headers))
    assert decoded.payload == sent.envelope
    assert decoded.event_id == sent.envelope["command_id"]


class FlakyBatches:
    """A stand-in client whose SendMessageBatch fails entry "1" the first `failures` times."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[list[str]] = []

    async def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        self.calls.append([e["Id"] for e in Entries])
        if self.failures and any(e["Id"] == "1" for e in Entries):
            self.failures -= 1
            failed = [{"Id": "1", "SenderFault": False, "Code": "InternalError", "Message": "busy"}]
            return {"Successful": [e for e in Entries if e["Id"] != "1"], "Failed": failed}
        return {"Successful": Entries}


@pytest.mark.parametrize("failures", [1, 10])
async def test_sink_retries_failed_entries_then_raises(failures: int) -> None:
    sink = SqsSink(endpoint_url=None, region=REGION)
    sink._client = client = FlakyBatches(failures)
    sink._urls["q"] = "http://sqs/q"
    commands = [command("sqs://q", f"o-{n}", n) for n in range(3)]
    if failures == 1:
        await sink.send(commands)
        assert client.calls == [["0", "1", "2"], ["1"]]
    else:
        with pytest.raises(BrokerError, match=r"refused 1 of 3 commands.*InternalError: busy"):
            await sink.send(commands)
        assert client.calls == [["0", "1", "2"], ["1"], ["1"], ["1"]]


async def test_sink_to_a_missing_queue_raises(endpoint: str) -> None:
    sink = SqsSink(endpoint_url=endpoint, region=REGION)
    try:
        with pytest.raises(BrokerError, match=r"'no-such-queue-y'.*does not exist"):
            await sink.send([command("sqs://no-such-queue-y", "o-1", 1)])
    finally:
        await sink.close()
