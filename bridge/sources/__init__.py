"""Sources: where events come from, each delivering `SourceRecord`s: Kafka topics (`kafka`) and
SQS queues (`sqs`)."""

from bridge.sources.record import SourceRecord
from bridge.sources.sqs import DeadLetterWrite, Handoff, SqsSource

__all__ = ["DeadLetterWrite", "Handoff", "SourceRecord", "SqsSource"]
