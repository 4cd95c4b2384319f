"""KEYWATCH_CHANGELOG_COMPRESSION: zstd by default, a clear error when the codec's library is missing, a clear
error for a codec Kafka does not know (the broker side is tests/integration/test_changelog_batches.py)."""

from __future__ import annotations

import pytest
from aiokafka import codec as codecs

from keywatch.config import ConfigError, Settings, load_settings
from keywatch.runtime import make_engine
from keywatch.stream.app import create_app
from keywatch.stream.kafka_internals import CODECS, changelog_batch, codec_available


def test_default_is_zstd_and_every_codec_is_installed() -> None:
    """zstd unless told otherwise; cramjam (a dependency) brings snappy, lz4 and zstd."""
    assert load_settings().changelog_compression == "zstd"
    assert all(codec_available(c) for c in CODECS)


@pytest.mark.parametrize("value", ["LZ4", "brotli", ""])
def test_an_unknown_codec_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("KEYWATCH_CHANGELOG_COMPRESSION", value)
    with pytest.raises(ConfigError, match="KEYWATCH_CHANGELOG_COMPRESSION"):
        load_settings()


def test_a_codec_whose_library_is_missing_stops_the_app_at_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without cramjam, zstd is an error before anything connects (not a failure at the first state write)."""
    monkeypatch.setattr(codecs, "has_zstd", lambda: False)
    settings = Settings(app_id="codec-unit", metrics_port=0)
    with pytest.raises(ConfigError, match=r"KEYWATCH_CHANGELOG_COMPRESSION is zstd.*cramjam"):
        create_app(settings, make_engine(settings))
    create_app(settings.model_copy(update={"changelog_compression": "gzip"}), make_engine(settings))


class _Accumulator:
    _batch_size = 4096


class _Producer:
    _message_accumulator = _Accumulator()


@pytest.mark.parametrize("codec", CODECS)
def test_a_batch_holds_what_the_producer_batch_size_allows(codec: str) -> None:
    """The batch takes the producer's batch size: records until it is full, then None (the caller sends it)."""
    batch = changelog_batch(_Producer(), codec)
    taken = 0
    while batch.append(key=b"acme/k", value=bytes(range(256)) * 2, timestamp=None) is not None:
        taken += 1
    assert 4 <= taken <= 8
