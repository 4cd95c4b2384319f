"""The adapter to faust and aiokafka; no detection logic lives here.

- `app`: the faust app: topics, the state table, the detect agent, health and the sink to Kafka;
- `ingest`: the ingest stage, a plain aiokafka consumer reading the input topics in batches beside faust;
- `delivery`: what to do when Kafka refuses a message (give up or retry with backoff);
- `lag`: the committed offsets and highwaters of the worker's two consumer groups;
- `kafka_internals`: every use of a faust or aiokafka private attribute.
"""
