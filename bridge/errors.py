"""The errors sagabridge raises. Adapters translate vendor exceptions into these at the boundary."""

from __future__ import annotations


class SagabridgeError(Exception):
    """Base of every error sagabridge raises on purpose."""


class ConfigError(SagabridgeError):
    """A setting is missing or wrong; the message names the setting."""


class FlowError(SagabridgeError):
    """One or more flow files are invalid; ``problems`` holds one `file:line: field: what` each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class DecodeError(SagabridgeError):
    """A message's bytes could not be turned into a payload; the message says why."""


class EncodeError(SagabridgeError):
    """A command could not be turned into bytes for its sink."""


class BrokerError(SagabridgeError):
    """A broker (Kafka or SQS) refused or failed a request."""
