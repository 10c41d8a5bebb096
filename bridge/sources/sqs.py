"""SQS queues as a source: long-poll every queue, hand batches to Kafka, then delete them.

At-least-once: a message is deleted only after `handoff` (or `dead_letter`) returned, that is once
Kafka acknowledged it. While that takes, its visibility is extended, so a slow Kafka never lets
the message be received twice; if the handoff raises, the message comes back after its visibility
timeout and is tried again.

Poison messages: a message received more than `max_receives` times is handed off alone, and goes
to `dead_letter` only if that fails too. So a message that merely shared a batch with a poison
one, or lived through a Kafka outage, is not dead-lettered for its receive count.

The aiobotocore helpers at the bottom are shared with `bridge.sinks.sqs`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    ConnectionError as BotoConnectionError,
)

from bridge.errors import BrokerError, ConfigError
from bridge.sources.record import SourceRecord

__all__ = ["DeadLetterWrite", "Handoff", "SqsSource", "to_record"]

log = structlog.get_logger("sagabridge")

Handoff = Callable[[list[SourceRecord]], Awaitable[None]]
DeadLetterWrite = Callable[[SourceRecord, str], Awaitable[None]]

RECEIVE_MAX = 10  # SQS limit per ReceiveMessage and per *Batch call
PREFETCH = 2  # receives in flight per queue: the next batch is there when a handoff returns
BUFFERED_BATCHES = 8  # received, waiting for the handoff; beyond this the receivers wait
HANDOFF_MAX = 100  # records per handoff call
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 30.0
IDLE_PAUSE = 1.0  # between empty short polls (wait_time_seconds 0), so an idle queue is not spun on
RELEASE_TIMEOUT = 2.0  # how long close-down may spend making unfinished messages visible again

# Entry failures that no retry can fix: the receipt handle is gone (deleted, or received again).
_HANDLE_GONE = {"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"}


@dataclass(slots=True)
class _Held:
    """A message received and not deleted yet: its visibility must not run out meanwhile."""

    receipt: str
    receives: int
    record: SourceRecord
    visible_until: float  # monotonic; from before the ReceiveMessage call, to err early
    lost: bool = False  # SQS refused an extension: another consumer may have it by now


class SqsSource:
    """Polls SQS queues and hands their messages to Kafka; see the module docstring.

    `run()` resolves every queue first: a queue that does not exist, or that these credentials
    may not read, raises `BrokerError` naming it (a missing setting stops the worker; it does not
    wait). Errors after that (network, throttling, a queue deleted meanwhile) are logged and
    retried with backoff: a running worker never stops because of SQS.
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        region: str,
        queues: Sequence[str],
        wait_time_seconds: int,
        visibility_timeout: int,
        max_receives: int,
        handoff: Handoff,
        dead_letter: DeadLetterWrite,
    ) -> None:
        names = [q.removeprefix("sqs://") for q in queues]
        if not names or not all(names) or len(set(names)) != len(names):
            raise ConfigError(f"SQS source: queue names must be distinct and non-empty: {queues}")
        self.endpoint_url = endpoint_url
        self.region = region
        self.queues = names
        self.wait_time_seconds = wait_time_seconds
        self.visibility_timeout = visibility_timeout
        self.max_receives = max_receives
        self.handoff = handoff
        self.dead_letter = dead_letter
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._urls: dict[str, str] = {}

    async def open(self) -> None:
        """Connect and resolve every queue URL. `run()` does it first; call it to fail early."""
        if self._client is None:
            # Each queue holds PREFETCH long polls open; deletes and extensions need room too.
            pool = len(self.queues) * (PREFETCH + 2) + 4
            self._client = await open_client(
                self._stack, self.endpoint_url, self.region, pool, self.wait_time_seconds
            )
        missing = [q for q in self.queues if q not in self._urls]
        urls = await asyncio.gather(*(self._resolve(q) for q in missing), return_exceptions=True)
        problems: list[str] = []
        for queue, url in zip(missing, urls, strict=True):
            if isinstance(url, str):
                self._urls[queue] = url
            elif isinstance(url, ConfigError):
                raise url
            elif isinstance(url, BrokerError):
                problems.append(str(url))
            else:
                raise url
        if problems:
            raise BrokerError("; ".join(problems))

    async def _resolve(self, queue: str) -> str:
        delay = BACKOFF_FIRST
        while True:
            try:
                reply = await self._client.get_queue_url(QueueName=queue)
                return str(reply["QueueUrl"])
            except VENDOR_ERRORS as exc:
                if not is_transient(exc):
                    where = self.endpoint_url or f"AWS {self.region}"
                    raise broker_error(exc, f"SQS queue {queue!r} (at {where})") from None
                log.warning("sqs.resolve_failed", queue=queue, error=describe(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def run(self) -> None:
        """Poll every queue, one task each, until cancelled."""
        await self.open()
        pollers = [_QueuePoller(self, queue, self._urls[queue]) for queue in self.queues]
        tasks = [asyncio.create_task(p.run(), name=f"sqs-source:{p.queue}") for p in pollers]
        log.info("sqs.source_started", queues=self.queues)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a poller only ends on a bug: let it surface
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Close the client; cancel `run()` first."""
        self._client = None
        self._urls.clear()
        await self._stack.aclose()


class _QueuePoller:
    """One queue: PREFETCH receivers fill a small buffer; one forwarder hands it to Kafka and
    deletes what Kafka holds; one keeper extends the visibility of everything not deleted yet."""

    def __init__(self, source: SqsSource, queue: str, url: str) -> None:
        self.src = source
        self.client: Any = source._client
        self.queue = queue
        self.url = url
        self.vt = source.visibility_timeout
        self.held: dict[str, _Held] = {}  # receipt handle -> message, from receive to delete
        self.buffer: asyncio.Queue[list[_Held]] = asyncio.Queue(BUFFERED_BATCHES)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._receive()) for _ in range(PREFETCH)]
        tasks += [asyncio.create_task(self._forward()), asyncio.create_task(self._keep_visible())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._release()

    async def _receive(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            started = time.monotonic()
            try:
                reply = await self.client.receive_message(
                    QueueUrl=self.url,
                    MaxNumberOfMessages=RECEIVE_MAX,
                    WaitTimeSeconds=self.src.wait_time_seconds,
                    VisibilityTimeout=self.vt,
                    # Both spellings: AttributeNames is deprecated, but older servers only know it.
                    AttributeNames=["All"],
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except VENDOR_ERRORS as exc:
                report = log.warning if is_transient(exc) else log.error
                report(
                    "sqs.receive_failed",
                    queue=self.queue,
                    error=describe(exc),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_FIRST
            messages = reply.get("Messages") or []
            if not messages:
                if self.src.wait_time_seconds == 0:
                    await asyncio.sleep(IDLE_PAUSE)
                continue
            batch = []
            for message in messages:
                attrs = message.get("Attributes") or {}
                held = _Held(
                    receipt=message["ReceiptHandle"],
                    receives=int(attrs.get("ApproximateReceiveCount", 1)),
                    record=to_record(self.queue, message),
                    visible_until=started + self.vt,
                )
                self.held[held.receipt] = held
                batch.append(held)
            await self.buffer.put(batch)

    async def _forward(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            batch = await self.buffer.get()
            while len(batch) < HANDOFF_MAX and not self.buffer.empty():
                batch += self.buffer.get_nowait()
            if await self._hand_off(batch):
                delay = BACKOFF_FIRST
            else:
                # Kafka is failing: wait before receiving more, so that receive counts (which
                # decide what is poison) do not climb for the length of an outage.
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _hand_off(self, batch: list[_Held]) -> bool:
        """Hand a batch to Kafka and delete what it holds; False if the handoff failed."""
        src = self.src
        done: list[_Held] = []
        # Suspects first and one at a time: in a FIFO queue they are older than the rest of
        # their group, and alone, only their own failure can condemn them.
        for held in batch:
            if held.receives <= src.max_receives:
                continue
            try:
                await src.handoff([held.record])
            except Exception as exc:
                reason = (
                    f"received {held.receives} times (max_receives {src.max_receives}):"
                    f" poison message (last error: {_error_text(exc)})"
                )
                try:
                    await src.dead_letter(held.record, reason)
                except Exception as dlq_exc:
                    log.error(
                        "sqs.dead_letter_failed",
                        queue=self.queue,
                        message_id=held.record.default_id,
                        error=_error_text(dlq_exc),
                    )
                    self._forget([held])
                    continue
                log.warning(
                    "sqs.poison_message",
                    queue=self.queue,
                    message_id=held.record.default_id,
                    reason=reason,
                )
            done.append(held)
        fresh = [h for h in batch if h.receives <= src.max_receives]
        ok = True
        if fresh:
            try:
                await src.handoff([h.record for h in fresh])
                done += fresh
            except Exception as exc:
                ok = False
                log.warning(
                    "sqs.handoff_failed",
                    queue=self.queue,
                    messages=len(fresh),
                    error=_error_text(exc),
                    comes_back_in=self.vt,
                )
                self._forget(fresh)  # not deleted, not extended: back after the timeout
        await self._delete(done)
        return ok

    def _forget(self, batch: Iterable[_Held]) -> None:
        for held in batch:
            self.held.pop(held.receipt, None)

    async def _delete(self, batch: list[_Held]) -> None:
        try:
            failed = await self._batch_call("delete_message_batch", batch, {})
        finally:
            self._forget(batch)
        for held, code, text in failed:
            # The message comes back and is handed off again: the engine drops the duplicate.
            log.warning(
                "sqs.delete_failed",
                queue=self.queue,
                message_id=held.record.default_id,
                error=f"{code}: {text}",
            )

    async def _keep_visible(self) -> None:
        # Checked every quarter timeout, extended when less than half is left: an extension
        # can fail once and still be retried before the message shows up again.
        while True:
            await asyncio.sleep(max(self.vt / 4, 0.1))
            now = time.monotonic()
            due = [
                h for h in self.held.values() if not h.lost and h.visible_until - now < self.vt / 2
            ]
            if not due:
                continue
            failed = await self._batch_call(
                "change_message_visibility_batch", due, {"VisibilityTimeout": self.vt}
            )
            refused = {id(h) for h, _, _ in failed}
            for held in due:
                if id(held) not in refused:
                    held.visible_until = now + self.vt
            for held, code, text in failed:
                if held.receipt not in self.held:
                    continue  # deleted meanwhile
                if code in _HANDLE_GONE:
                    held.lost = True
                log.warning(
                    "sqs.visibility_extend_failed",
                    queue=self.queue,
                    message_id=held.record.default_id,
                    error=f"{code}: {text}",
                    may_be_received_again=held.lost,
                )

    async def _release(self) -> None:
        """On shutdown, make what was not deleted visible now rather than after the timeout."""
        if not self.held:
            return
        batch = list(self.held.values())
        self.held.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RELEASE_TIMEOUT):
                await self._batch_call(
                    "change_message_visibility_batch", batch, {"VisibilityTimeout": 0}, attempts=1
                )

    async def _batch_call(
        self, operation: str, batch: list[_Held], extra: Mapping[str, Any], attempts: int = 3
    ) -> list[tuple[_Held, str, str]]:
        """DeleteMessageBatch / ChangeMessageVisibilityBatch in concurrent chunks of 10, each
        retrying its failed entries; returns the entries that still failed, with why."""

        async def chunk(part: list[_Held]) -> list[tuple[_Held, str, str]]:
            pending = dict(enumerate(part))
            hopeless: list[tuple[_Held, str, str]] = []  # not worth another try
            failed: list[tuple[_Held, str, str]] = []  # failed in the last try
            delay = BACKOFF_FIRST
            for attempt in range(attempts):
                if attempt:
                    await asyncio.sleep(delay)
                    delay *= 2
                entries = [
                    {"Id": str(i), "ReceiptHandle": h.receipt, **extra} for i, h in pending.items()
                ]
                call = getattr(self.client, operation)
                try:
                    reply = await call(QueueUrl=self.url, Entries=entries)
                except VENDOR_ERRORS as exc:
                    failed = [(h, error_code(exc), describe(exc)) for h in pending.values()]
                    if not is_transient(exc):
                        break
                    continue
                failed = []
                retry: dict[int, _Held] = {}
                for entry in reply.get("Failed") or []:
                    index, code = int(entry["Id"]), entry.get("Code", "?")
                    why = (pending[index], code, entry.get("Message", ""))
                    if entry.get("SenderFault") or code in _HANDLE_GONE:
                        hopeless.append(why)
                    else:
                        failed.append(why)
                        retry[index] = pending[index]
                if not retry:
                    break
                pending = retry
            return hopeless + failed

        results = await asyncio.gather(*(chunk(part) for part in _chunked(batch, RECEIVE_MAX)))
        return [f for part in results for f in part]


def to_record(queue: str, message: Mapping[str, Any]) -> SourceRecord:
    """One received SQS message as a SourceRecord; an SNS notification is unwrapped."""
    attrs = message.get("Attributes") or {}
    body: str = message.get("Body") or ""
    sns = _sns_notification(body)
    if sns is not None:
        text, headers, sns_id = sns
        value = _bytes(text)
        default_id = sns_id or message["MessageId"]
    else:
        value = _bytes(body)
        headers = _attribute_headers(message.get("MessageAttributes") or {})
        default_id = message["MessageId"]
    group = attrs.get("MessageGroupId")
    sent = attrs.get("SentTimestamp")
    return SourceRecord(
        source=f"sqs://{queue}",
        value=value,
        headers=headers,
        key=group.encode() if group else None,
        timestamp_ms=int(sent) if sent else int(time.time() * 1000),
        default_id=default_id,
    )


def _bytes(text: str) -> bytes:
    # A lone surrogate (a JSON \ud800 escape) cannot be UTF-8: keep it, the codec will say so.
    return text.encode("utf-8", "surrogatepass")


def _attribute_headers(attributes: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    headers: list[tuple[str, bytes]] = []
    for name, attr in attributes.items():
        if "BinaryValue" in attr:
            headers.append((name, bytes(attr["BinaryValue"])))
        elif "StringValue" in attr:
            headers.append((name, _bytes(attr["StringValue"])))
    return headers


def _sns_notification(body: str) -> tuple[str, list[tuple[str, bytes]], str | None] | None:
    """(Message, attribute headers, SNS MessageId) if the body is an SNS envelope, else None."""
    # Cheap test first: most bodies are not SNS envelopes, and the codec parses them anyway.
    if '"Notification"' not in body or '"TopicArn"' not in body:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON after all: a raw body
    if not isinstance(doc, dict) or doc.get("Type") != "Notification" or "TopicArn" not in doc:
        return None
    message = doc.get("Message")
    if not isinstance(message, str):
        return None
    headers: list[tuple[str, bytes]] = []
    attributes = doc.get("MessageAttributes")
    for name, attr in (attributes if isinstance(attributes, dict) else {}).items():
        if not isinstance(attr, dict) or not isinstance(attr.get("Value"), str):
            continue
        text = attr["Value"]
        if attr.get("Type") == "Binary":  # SNS carries binary attributes base64-encoded
            try:
                headers.append((name, base64.b64decode(text, validate=True)))
                continue
            except (binascii.Error, ValueError):
                pass
        headers.append((name, _bytes(text)))
    sns_id = doc.get("MessageId")
    return message, headers, sns_id if isinstance(sns_id, str) and sns_id else None


def _chunked(items: Sequence[_Held], size: int) -> Iterator[list[_Held]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --- aiobotocore plumbing, shared with bridge.sinks.sqs ---------------------------------------

# What a call through aiobotocore can raise besides our own errors.
VENDOR_ERRORS: tuple[type[Exception], ...] = (
    ClientError,
    BotoCoreError,
    aiohttp.ClientError,
    OSError,  # includes TimeoutError
)

_THROTTLED = {
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "KMS.ThrottlingException",
}


async def open_client(
    stack: AsyncExitStack, endpoint_url: str | None, region: str, pool: int, wait_seconds: int = 0
) -> Any:
    """One long-lived SQS client, closed with `stack`."""
    config = AioConfig(
        max_pool_connections=max(pool, 10),
        read_timeout=wait_seconds + 30,  # a long poll holds the response for wait_seconds
        connect_timeout=10,
        retries={"mode": "standard", "max_attempts": 3},
    )
    try:
        return await stack.enter_async_context(
            get_session().create_client(
                "sqs", endpoint_url=endpoint_url, region_name=region, config=config
            )
        )
    except ValueError as exc:  # botocore's "Invalid endpoint"
        raise ConfigError(f"setting sqs_endpoint: {endpoint_url!r}: {exc}") from None
    except VENDOR_ERRORS as exc:
        raise broker_error(exc, "SQS client") from None


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


def describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        message = exc.response.get("Error", {}).get("Message") or ""
        return f"{error_code(exc)}: {message}" if message else error_code(exc)
    return _error_text(exc)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the network, a timeout, throttling, or a server-side failure."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or error_code(exc) in _THROTTLED
    if isinstance(exc, BotoCoreError):
        return isinstance(exc, BotoConnectionError | HTTPClientError)
    return isinstance(exc, aiohttp.ClientError | OSError)


def broker_error(exc: BaseException, what: str) -> BrokerError | ConfigError:
    """A vendor exception as the error sagabridge raises; `what` says what was being done."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigError(
            f"{what}: no usable AWS credentials ({exc}); set AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role"
        )
    if error_code(exc) in {"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"}:
        return BrokerError(f"{what} does not exist")
    return BrokerError(f"{what}: {describe(exc)}")
