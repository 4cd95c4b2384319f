"""The worker's processing steps without a framework, written against a `Sink` and a mapping (no faust, no Kafka
client), so tests and benchmarks run them with a function call.

- `wire`: the keyed topic's wire format (tags, compact entries, packed messages, forwards);
- `ingest`: validate, redact and pack input records, or dead-letter them (`IngestStep`);
- `detect`: keyed messages through the engine against the state table, batched (`DetectStep`);
- `state_store`: a key's table value to and from its typed state (through `core/codec.py`);
- `keycap`: the bound on keys with state per partition, and the eviction order;
- `partitioner`: Kafka's default partitioner over `<tenant>/<key_id>`;
- `ticks`: per-partition watermarks and the index of keys with a pending tick;
- `processor`: `Processor`, ingest and detect wired together for the worker and the tests.
"""
