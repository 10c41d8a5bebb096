"""Sinks: where commands go. Kafka topics are written by the Faust runtime; SQS queues here."""

from bridge.sinks.sqs import SqsSink

__all__ = ["SqsSink"]
