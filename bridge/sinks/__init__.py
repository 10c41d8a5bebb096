"""Sinks: where commands go: Kafka topics (`kafka`) and SQS queues (`sqs`)."""

from bridge.sinks.sqs import SqsSink

__all__ = ["SqsSink"]
