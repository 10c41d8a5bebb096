"""sagabridge: track sagas across Kafka and SQS events, and orchestrate them step by step.

What users import lives here; `tests/test_exported_members.py` pins the list.
"""

from __future__ import annotations

from bridge.engine import (
    Action,
    Command,
    Event,
    Instance,
    Lifecycle,
    Matcher,
    Message,
    Simulator,
    Tick,
    apply,
    command_id,
)
from bridge.errors import (
    BrokerError,
    ConfigError,
    DecodeError,
    EncodeError,
    FlowError,
    SagabridgeError,
)
from bridge.flow import CompiledFlow, compile_flow, load_compiled, load_flows

__all__ = [
    "Action",
    "BrokerError",
    "Command",
    "CompiledFlow",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "Event",
    "FlowError",
    "Instance",
    "Lifecycle",
    "Matcher",
    "Message",
    "SagabridgeError",
    "Simulator",
    "Tick",
    "apply",
    "command_id",
    "compile_flow",
    "load_compiled",
    "load_flows",
]
