"""Where an input goes: the input-topic partition that owns its state.

Kafka's default partitioner (murmur2 of the key bytes), so the partition that holds a key's
state can be found again by anyone who knows the key, including Faust's table router.
"""

from __future__ import annotations

from typing import Any

from bridge.codecs.fastjson import dumps
from bridge.engine.inputs import Input, entity_of
from bridge.engine.wire import entity_key
from bridge.sinks.kafka import partition_for_bytes


def partition_for(key: str, partitions: int) -> int:
    return partition_for_bytes(key.encode(), partitions)


def target_of(inp: Input, partitions: int) -> tuple[str, int]:
    """(state key, partition) of the state `inp` applies to."""
    flow, key, alias = entity_of(inp)
    ek = entity_key(flow, key, alias)
    return ek, partition_for(ek, partitions)


def encode_batch(inputs: list[Any]) -> bytes:
    """One input-topic message: a micro-batch of wire inputs for one partition."""
    return dumps({"i": inputs})
