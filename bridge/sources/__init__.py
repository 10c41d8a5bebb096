"""Sources: where events come from. Kafka topics are read by the Faust runtime; SQS queues here."""

from bridge.sources.sqs import DeadLetterWrite, Handoff, SqsSource

__all__ = ["DeadLetterWrite", "Handoff", "SqsSource"]
