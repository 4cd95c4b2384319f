"""The production store: the worker keeps its table in RocksDB (rocksdict) and finds it again after a restart."""

from __future__ import annotations

from collections.abc import Callable

from keywatch.contract.alerts import Alert
from tests.factories import as_bytes, lifecycle_dict
from tests.integration.kafka_helpers import WorkerProcess, collect, produce, read_all


async def test_rocksdb_store_keeps_state_across_restart(worker_factory: Callable[..., WorkerProcess]) -> None:
    """With KEYWATCH_STORE=rocksdb:// a key's creation time survives a restart and shows in the revoke alert."""
    worker = worker_factory(extra_env={"KEYWATCH_STORE": "rocksdb://"})
    worker.start()
    await worker.wait_ready()
    created = lifecycle_dict(key_id="k_rocks", ts="2026-01-05T10:00:00Z")
    await produce(worker.bootstrap, worker.topics["lifecycle"], [(None, as_bytes(created))])
    await collect(worker.bootstrap, worker.topics["alerts"], until=lambda m: len(m) >= 1)
    worker.stop()
    assert any(worker.data_dir.rglob("*.sst")) or any(worker.data_dir.rglob("CURRENT")), "no RocksDB files"

    worker.start()
    await worker.wait_ready()
    revoked = lifecycle_dict(type="apiKey.revoked", key_id="k_rocks", ts="2026-01-05T12:00:00Z")
    await produce(worker.bootstrap, worker.topics["lifecycle"], [(None, as_bytes(revoked))])
    got = await collect(worker.bootstrap, worker.topics["alerts"], until=lambda m: len(m) >= 2)
    alerts = [Alert.model_validate_json(v) for _, v in got]
    revoke = next(a for a in alerts if a.type == "apiKey.revoked")
    assert revoke.data.evidence["key_age_seconds"] == 7200.0
    assert await read_all(worker.bootstrap, worker.topics["dlq"]) == []  # every state read and write succeeded
