"""Kafka's default partitioner, as the producers use it: which keyed-topic partition a `<tenant>/<key_id>` is in.

Ingest sends each packed message to an explicit partition and faust's producer partitions forwards by their key
with the same function, so every event of a key meets that key's state. Written here in plain Python (Kafka's
Java `Utils.murmur2`) so that the pipeline needs no Kafka client; a unit test pins it to aiokafka's.
"""

from __future__ import annotations

import functools
import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def partition_of(subject: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2, made positive, modulo): the partition faust's producer and ingest put
    `subject` in. The hash is cached (murmur2 in Python costs ~6 µs; a key's subject repeats)."""
    return _positive_murmur2(subject) % partitions


@functools.lru_cache(maxsize=1 << 15)
def _positive_murmur2(subject: bytes) -> int:
    return murmur2(subject) & 0x7FFFFFFF


def murmur2(data: bytes) -> int:
    """The 32-bit MurmurHash2 of `data` with Kafka's seed (unsigned)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):  # the 4-byte blocks, little-endian
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = data[words * 4 :]
    if tail:
        h = ((h ^ int.from_bytes(tail, "little")) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)
