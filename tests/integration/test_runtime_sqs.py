"""The example flow as it is: payments on SQS, the rest on Kafka, through `sagabridge run`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from kafka_io import create_topics, produce_lines
from support import EXAMPLE, captured, declined, dispatched, placed, released, reserved
from test_runtime import FLOW, expected, retarget, summary
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
            for inst in want["instances"]:
                got = await asyncio.to_thread(
                    worker.wait_for,
                    FLOW,
                    inst["key"],
                    lambda body, inst=inst: summary(body) == summary(inst),
                )
                assert summary(got) == summary(inst)
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
