"""Where keywatch's output goes: the Kafka topics in the worker, memory in tests, files in replay."""

from keywatch.sinks.base import Channel, MemorySink, Sink

__all__ = ["Channel", "MemorySink", "Sink"]
