"""The pipeline's own murmur2 partitioner (pipeline/partitioner.py) against aiokafka's, which the producers use."""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as kafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from keywatch.pipeline.partitioner import murmur2, partition_of


@given(st.binary(max_size=64))
def test_murmur2_equals_the_kafka_clients(data: bytes) -> None:
    """Every byte string hashes as aiokafka's murmur2 hashes it (all four tail lengths included)."""
    assert murmur2(data) == kafka_murmur2(data)


@given(st.text(max_size=40), st.integers(min_value=1, max_value=64))
def test_partition_of_is_kafkas_default_partitioner(subject: str, partitions: int) -> None:
    """A subject lands in the partition Kafka's default partitioner picks: positive murmur2 modulo the count."""
    raw = subject.encode()
    assert partition_of(raw, partitions) == (kafka_murmur2(raw) & 0x7FFFFFFF) % partitions


def test_pinned_hashes() -> None:
    """Pinned values (one input per tail length), so a change of both implementations at once is still seen."""
    inputs = (b"", b"a", b"ab", b"abc", b"abcd", b"acme/key_live_1")
    assert [murmur2(s) for s in inputs] == [275646681, 2731586172, 316155434, 479470107, 2971317748, 363134430]
