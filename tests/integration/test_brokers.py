"""The brokers themselves work, checked with plain clients before sagabridge is put on them.

Kafka: Tansu always (bridge.runtime.embedded), plus the broker that SAGABRIDGE_TEST_BOOTSTRAP names
(Apache Kafka 4 from brokers/kafka.sh in CI). SQS: only when SAGABRIDGE_TEST_SQS_ENDPOINT names a
server (ElasticMQ from brokers/elasticmq.sh); without it these tests are not collected at all, so
a run without the server cannot pass them by skipping.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

EXTERNAL_BOOTSTRAP = os.environ.get("SAGABRIDGE_TEST_BOOTSTRAP", "")
SQS_ENDPOINT = os.environ.get("SAGABRIDGE_TEST_SQS_ENDPOINT", "")

MESSAGES = 100
PARTITIONS = 3


@pytest.mark.kafka
async def test_kafka_partitions_produce_consume_commit(bootstrap: str) -> None:
    uid = uuid.uuid4().hex[:12]
    topic, group = f"brokers-check-{uid}", f"brokers-check-{uid}"

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            sends = [
                await producer.send(
                    topic,
                    key=f"saga-{i % 10}".encode(),
                    value=json.dumps({"seq": i}).encode(),
                )
                for i in range(MESSAGES)
            ]
            placed = await asyncio.gather(*sends)
        finally:
            await producer.stop()
        # Ten keys over three partitions: the broker must really have several partitions.
        assert {meta.partition for meta in placed} == set(range(PARTITIONS))

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            # Small timeouts: Tansu holds a group's first join for the whole rebalance timeout.
            rebalance_timeout_ms=3000,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await consumer.start()
        received: list[tuple[bytes, int]] = []
        try:
            deadline = time.monotonic() + 20
            while len(received) < MESSAGES and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    received += [(r.key, json.loads(r.value)["seq"]) for r in records]
            await consumer.commit()
        finally:
            await consumer.stop()

        assert sorted(seq for _, seq in received) == list(range(MESSAGES))
        # One key lives on one partition, so its messages come back in the order sent.
        by_key: dict[bytes, list[int]] = defaultdict(list)
        for key, seq in received:
            by_key[key].append(seq)
        assert all(seqs == sorted(seqs) for seqs in by_key.values())

        # After reading everything, the group's offset on a partition is one past its last record.
        expected = {TopicPartition(topic, p): 0 for p in range(PARTITIONS)}
        for meta in placed:
            tp = TopicPartition(topic, meta.partition)
            expected[tp] = max(expected[tp], meta.offset + 1)
        # Partitions named: Tansu cannot answer an OffsetFetch for all of a group's offsets.
        committed = await admin.list_consumer_group_offsets(group, partitions=list(expected))
        assert {tp: meta.offset for tp, meta in committed.items()} == expected
    finally:
        await admin.close()


if SQS_ENDPOINT:
    from aiobotocore.session import get_session

    @pytest.fixture
    async def sqs() -> AsyncIterator[Any]:
        session = get_session()
        async with session.create_client(
            "sqs",
            region_name="us-east-1",
            endpoint_url=SQS_ENDPOINT,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        ) as client:
            yield client

    async def _receive_all(sqs: Any, url: str, expected: int) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while len(messages) < expected and time.monotonic() < deadline:
            reply = await sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
            )
            messages += reply.get("Messages", [])
        return messages

    async def _delete_all(sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            reply = await sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages[start : start + 10])
                ],
            )
            assert not reply.get("Failed")

    @pytest.mark.sqs
    async def test_sqs_standard_queue(sqs: Any) -> None:
        url = (await sqs.create_queue(QueueName=f"brokers-check-{uuid.uuid4().hex[:12]}"))[
            "QueueUrl"
        ]
        try:
            for start in range(0, 20, 10):
                reply = await sqs.send_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "MessageBody": json.dumps({"seq": i})}
                        for i in range(start, start + 10)
                    ],
                )
                assert len(reply["Successful"]) == 10
            await sqs.send_message(
                QueueUrl=url,
                MessageBody=json.dumps({"seq": 20}),
                MessageAttributes={"kind": {"DataType": "String", "StringValue": "last"}},
            )

            messages = await _receive_all(sqs, url, 21)
            assert sorted(json.loads(m["Body"])["seq"] for m in messages) == list(range(21))
            last = next(m for m in messages if json.loads(m["Body"])["seq"] == 20)
            assert last["MessageAttributes"]["kind"]["StringValue"] == "last"

            await _delete_all(sqs, url, messages)
            attrs = await sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
            assert attrs["Attributes"] == {
                "ApproximateNumberOfMessages": "0",
                "ApproximateNumberOfMessagesNotVisible": "0",
            }
        finally:
            await sqs.delete_queue(QueueUrl=url)

    @pytest.mark.sqs
    async def test_sqs_fifo_queue(sqs: Any) -> None:
        url = (
            await sqs.create_queue(
                QueueName=f"brokers-check-{uuid.uuid4().hex[:12]}.fifo",
                Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"},
            )
        )["QueueUrl"]
        try:
            for seq in range(10):
                await sqs.send_message(
                    QueueUrl=url,
                    MessageBody=json.dumps({"seq": seq}),
                    MessageGroupId="saga-1",
                    MessageDeduplicationId=f"cmd-{seq}",
                )
            # A resend with the same deduplication id is dropped within the 5-minute window.
            await sqs.send_message(
                QueueUrl=url,
                MessageBody=json.dumps({"seq": 3}),
                MessageGroupId="saga-1",
                MessageDeduplicationId="cmd-3",
            )

            messages = await _receive_all(sqs, url, 10)
            assert [json.loads(m["Body"])["seq"] for m in messages] == list(range(10))
            await _delete_all(sqs, url, messages)
            again = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
            assert not again.get("Messages")
        finally:
            await sqs.delete_queue(QueueUrl=url)
