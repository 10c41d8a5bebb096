"""The Kafka and SQS clients the demo's services share: plain aiokafka and aiobotocore.

Vendor errors become `BrokerError` here. Each service is the only instance of itself, so its
consumer reads every partition of its topics directly instead of joining a consumer group (a
first join on the embedded broker waits the whole rebalance timeout).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.session import get_session
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from botocore.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    BotoCoreError,
    ClientError,
)

from bridge.errors import BrokerError

log = logging.getLogger("sagabridge.demo")

Handler = Callable[[str, dict[str, Any]], Awaitable[None]]  # (topic or queue, payload)
REGION = "us-east-1"
# Dummy credentials: the demo's SQS is moto's server on loopback; nothing ever reaches AWS.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
SQS_WAIT_S = 1  # long polls stay short, so a stop never waits long for one


def _decode(raw: bytes | str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw or b"")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class KafkaBus:
    def __init__(self, bootstrap: str, partitions: dict[str, int]) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions  # topic -> partition count, from provisioning
        self._producer: AIOKafkaProducer | None = None
        self._consumers: list[AIOKafkaConsumer] = []

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks=1, enable_idempotence=False
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise BrokerError(
                f"the services cannot reach Kafka at {self.bootstrap}: {exc}"
            ) from None

    async def send(self, topic: str, key: str, value: dict[str, Any]) -> None:
        assert self._producer is not None
        try:
            await self._producer.send_and_wait(topic, json.dumps(value).encode(), key=key.encode())
        except KafkaError as exc:
            raise BrokerError(f"cannot produce to {topic}: {exc}") from None

    async def consumer(self, topics: list[str]) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            raise BrokerError(f"cannot read {', '.join(topics)}: {exc}") from None
        consumer.assign(
            [TopicPartition(t, p) for t in topics for p in range(self.partitions.get(t, 1))]
        )
        self._consumers.append(consumer)
        return consumer

    async def consume(self, topics: list[str], handle: Handler) -> None:
        """Hand every JSON record of `topics` to `handle`, until cancelled."""
        consumer = await self.consumer(topics)
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500)
            except KafkaError as exc:
                log.warning("kafka read failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for tp, records in batches.items():
                for record in records:
                    value = _decode(record.value)
                    if value is not None:
                        await _handled(handle, tp.topic, value)

    async def stop(self) -> None:
        for consumer in self._consumers:
            await consumer.stop()
        if self._producer is not None:
            await self._producer.stop()


class SqsBus:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._urls: dict[str, str] = {}

    async def start(self) -> None:
        self._client = await self._stack.enter_async_context(
            get_session().create_client(
                "sqs", endpoint_url=self.endpoint, region_name=REGION, **CREDENTIALS
            )
        )

    async def create_queues(self, names: list[str]) -> None:
        for name in names:
            try:
                answer = await self._client.create_queue(QueueName=name)
            except (BotoCoreError, ClientError) as exc:
                raise BrokerError(f"cannot create the SQS queue {name}: {exc}") from None
            self._urls[name] = answer["QueueUrl"]

    async def send(self, queue: str, value: dict[str, Any]) -> None:
        try:
            await self._client.send_message(
                QueueUrl=self._urls[queue], MessageBody=json.dumps(value)
            )
        except (BotoCoreError, ClientError) as exc:
            raise BrokerError(f"cannot send to the SQS queue {queue}: {exc}") from None

    async def consume(self, queue: str, handle: Handler) -> None:
        """Hand every JSON message of `queue` to `handle`, then delete it; until cancelled."""
        url = self._urls[queue]
        while True:
            try:
                answer = await self._client.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=SQS_WAIT_S
                )
                messages = answer.get("Messages") or []
                for m in messages:
                    value = _decode(m.get("Body"))
                    if value is not None:
                        await _handled(handle, queue, value)
                if messages:
                    entries = [
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ]
                    await self._client.delete_message_batch(QueueUrl=url, Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                log.warning("sqs read of %s failed: %s", queue, exc)
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        await self._stack.aclose()


async def _handled(handle: Handler, where: str, value: dict[str, Any]) -> None:
    """A service that fails on one message logs it and goes on, as a real one would."""
    try:
        await handle(where, value)
    except BrokerError as exc:
        log.warning("handling a message of %s failed: %s", where, exc)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("a message of %s is not what the service expects: %r", where, exc)
