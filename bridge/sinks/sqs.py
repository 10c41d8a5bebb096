"""Commands to SQS queues: SendMessageBatch per queue, standard and FIFO.

`send` returns only once SQS accepted every command, and raises `BrokerError` otherwise, so the
caller stores no state for a batch whose commands are not all out. A command sent twice carries
the same id: a FIFO queue drops the copy (MessageDeduplicationId = command id) and a receiver of
a standard queue can, using the `command_id` attribute.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import structlog

from bridge.codecs import Codec, JsonCodec
from bridge.engine.effects import Command
from bridge.errors import BrokerError, ConfigError, EncodeError
from bridge.sources.sqs import (
    RECEIVE_MAX,
    VENDOR_ERRORS,
    broker_error,
    describe,
    error_code,
    is_transient,
    open_client,
)

__all__ = ["SqsSink"]

log = structlog.get_logger("sagabridge")

BATCH_BYTES = 256 * 1024  # per SendMessageBatch: AWS allows 1 MiB since 2025, older servers 256 KiB
ATTEMPTS = 4  # per chunk: the first send and three retries of what failed
BACKOFF_FIRST = 0.1
IN_FLIGHT = 16  # concurrent SendMessageBatch calls per sink
FIFO_LANES = 8  # concurrent sequences of calls per FIFO queue, each holding whole groups
MAX_ATTRIBUTES = 10  # SQS limit per message

# MessageGroupId: 1-128 printable ASCII characters, no space.
_GROUP_ID = re.compile(r"[!-~]{1,128}")
_NO_QUEUE = {"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"}


class SqsSink:
    """Sends command envelopes to `sqs://QUEUE` destinations; one client for the sink's life."""

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        region: str,
        codecs: Mapping[str, Codec] | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.codecs = dict(codecs or {})  # by destination, sqs://QUEUE; JSON when absent
        self._json = JsonCodec()
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._urls: dict[str, str] = {}
        self._slots = asyncio.Semaphore(IN_FLIGHT)

    async def send(self, commands: Sequence[Command]) -> None:
        """Send every command; return once SQS accepted all of them.

        Raises `EncodeError` before sending anything if a command cannot be encoded, and
        `BrokerError` if SQS did not accept some command (others may have been sent).
        """
        by_queue: dict[str, list[dict[str, Any]]] = {}
        for command in commands:
            queue = _queue_of(command.to)
            entries = by_queue.setdefault(queue, [])
            entries.append(self._entry(command, queue, len(entries)))
        if not by_queue:
            return
        if self._client is None:
            self._client = await open_client(
                self._stack, self.endpoint_url, self.region, IN_FLIGHT + 4
            )
        results = await asyncio.gather(
            *(self._send_queue(queue, entries) for queue, entries in by_queue.items()),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, BrokerError | ConfigError):
                raise error
        if errors:
            raise errors[0] if len(errors) == 1 else BrokerError("; ".join(map(str, errors)))

    async def close(self) -> None:
        self._client = None
        self._urls.clear()
        await self._stack.aclose()

    def _entry(self, command: Command, queue: str, index: int) -> dict[str, Any]:
        env = command.envelope
        codec = self.codecs.get(command.to, self._json)
        ours = {"command_id": env["command_id"], "flow": env["flow"], "key": env["key"]}
        body, headers = codec.encode(env, {k: str(v) for k, v in ours.items()})
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise EncodeError(
                f"{command.to}: the codec writes binary, but an SQS body is text;"
                " use json or cloudevents for SQS destinations"
            ) from None
        # SQS refuses empty attribute values.
        attributes = {
            name: {"DataType": "String", "StringValue": value}
            for name, value in headers.items()
            if value
        }
        if len(attributes) > MAX_ATTRIBUTES:
            raise EncodeError(
                f"{command.to}: {len(attributes)} message attributes, SQS allows"
                f" {MAX_ATTRIBUTES}: {', '.join(sorted(attributes))}"
            )
        entry: dict[str, Any] = {
            "Id": str(index),
            "MessageBody": text,
            "MessageAttributes": attributes,
        }
        if queue.endswith(".fifo"):
            entry["MessageGroupId"] = _group_id(str(env["key"]))
            entry["MessageDeduplicationId"] = str(env["command_id"])
        return entry

    async def _url(self, queue: str) -> str:
        url = self._urls.get(queue)
        if url is None:
            try:
                reply = await self._client.get_queue_url(QueueName=queue)
            except VENDOR_ERRORS as exc:
                raise broker_error(exc, f"SQS queue {queue!r}") from None
            url = self._urls[queue] = str(reply["QueueUrl"])
        return url

    async def _send_queue(self, queue: str, entries: list[dict[str, Any]]) -> None:
        url = await self._url(queue)
        if not queue.endswith(".fifo"):
            chunks = _chunks(entries)
            await asyncio.gather(*(self._send_chunk(queue, url, chunk) for chunk in chunks))
            return
        # SQS keeps a group's order within a batch and across calls sent one after the other,
        # not across concurrent calls: each group goes into one lane, sent in order.
        lanes: dict[int, list[dict[str, Any]]] = {}
        for entry in entries:
            lane = zlib.crc32(entry["MessageGroupId"].encode()) % FIFO_LANES
            lanes.setdefault(lane, []).append(entry)
        await asyncio.gather(*(self._send_in_order(queue, url, lane) for lane in lanes.values()))

    async def _send_in_order(self, queue: str, url: str, entries: list[dict[str, Any]]) -> None:
        for chunk in _chunks(entries):
            await self._send_chunk(queue, url, chunk)

    async def _send_chunk(self, queue: str, url: str, chunk: list[dict[str, Any]]) -> None:
        pending = chunk
        problem = ""
        delay = BACKOFF_FIRST
        for attempt in range(ATTEMPTS):
            if attempt:
                log.warning(
                    "sqs.send_retry",
                    queue=queue,
                    commands=len(pending),
                    error=problem,
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay *= 2
            try:
                async with self._slots:
                    reply = await self._client.send_message_batch(QueueUrl=url, Entries=pending)
            except VENDOR_ERRORS as exc:
                if not is_transient(exc):
                    if error_code(exc) in _NO_QUEUE:  # deleted since: look it up again next time
                        self._urls.pop(queue, None)
                    raise broker_error(exc, f"sending to SQS queue {queue!r}") from None
                problem = describe(exc)
                continue
            failed = reply.get("Failed") or []
            if not failed:
                return
            by_id = {entry["Id"]: entry for entry in pending}
            hopeless = [f for f in failed if f.get("SenderFault")]
            if hopeless:  # the request itself is wrong: sending it again cannot help
                raise BrokerError(_rejected(queue, hopeless, by_id, len(chunk)))
            pending = [by_id[f["Id"]] for f in failed]
            problem = _rejected(queue, failed, by_id, len(chunk))
        raise BrokerError(f"{problem} (after {ATTEMPTS} attempts)")


def _queue_of(to: str) -> str:
    scheme, sep, queue = to.partition("://")
    if scheme != "sqs" or not sep or not queue:
        raise ConfigError(f"{to!r} is not an SQS destination (sqs://QUEUE)")
    return queue


def _group_id(key: str) -> str:
    """The key itself when SQS accepts it as a group id, else a stable digest of it: what
    matters is that one key always maps to one group."""
    if _GROUP_ID.fullmatch(key):
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _size(entry: Mapping[str, Any]) -> int:
    size = len(entry["MessageBody"].encode("utf-8"))
    for name, attr in entry["MessageAttributes"].items():
        size += len(name) + len(attr["DataType"]) + len(attr["StringValue"].encode("utf-8"))
    return size


def _chunks(entries: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """At most ten entries and BATCH_BYTES per call; a bigger single entry goes alone (and SQS
    says why it is refused)."""
    chunk: list[dict[str, Any]] = []
    used = 0
    for entry in entries:
        size = _size(entry)
        if chunk and (len(chunk) == RECEIVE_MAX or used + size > BATCH_BYTES):
            yield chunk
            chunk, used = [], 0
        chunk.append(entry)
        used += size
    if chunk:
        yield chunk


def _rejected(
    queue: str, failed: list[dict[str, Any]], by_id: Mapping[str, dict[str, Any]], total: int
) -> str:
    first = failed[0]
    attribute = by_id[first["Id"]]["MessageAttributes"].get("command_id", {})
    command_id = attribute.get("StringValue", "?")
    return (
        f"SQS queue {queue!r} refused {len(failed)} of {total} commands, e.g. {command_id}:"
        f" {first.get('Code', '?')}: {first.get('Message', '')}"
    )
