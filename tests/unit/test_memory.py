"""release_free_memory gives freed heap pages back (glibc, as on the worker's images and this machine); states stay
out of the cyclic collector's way (tune_gc, gc=False structs)."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import msgspec

from keywatch.config import Settings
from keywatch.contract.events import RequestRecord
from keywatch.core import catalog
from keywatch.core.codec import decode_state, encode_state
from keywatch.core.ip_baseline import IpState, RangeSeen
from keywatch.core.state import KeyState
from keywatch.memory import GC_THRESHOLDS, release_free_memory, tune_gc
from keywatch.pipeline.ingest import Accepted, IngestStep, Topics
from keywatch.runtime import make_engine
from keywatch.sinks.base import MemorySink
from tests.integration.kafka_helpers import build


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_freed_state_sized_blocks_go_back_to_the_os() -> None:
    base = _rss()
    # what the table does to the heap: ~1 KB values, most of them replaced (freed) while some stay
    blobs = [b"".join((b"x" * (900 + i % 200), b"")) for i in range(200_000)]
    kept = blobs[::10]
    del blobs
    held = _rss() - base
    took = release_free_memory()
    released = held - (_rss() - base)
    assert took is not None
    assert took < 5.0
    assert len(kept) == 20_000
    assert released > held / 4, f"held {held} bytes, released {released}"


def test_encoded_states_hold_only_their_own_bytes() -> None:
    """The table keeps one encoded state per key: each must cost about its length, not the encoder's buffer
    (orjson's own output kept ~8 KB for a ~850 B state; msgspec's keeps ~45 % more than it wrote)."""
    ranges = {f"10.0.{i}.0/24": RangeSeen(i, i + 1, 1, None, None) for i in range(40)}
    state = KeyState("acme", "key_live_1", detectors={"ip": IpState(ranges, {}, {})})
    size = len(encode_state(state))
    assert 500 < size < 2000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [encode_state(state) for _ in range(1000)]
        per_state = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_state < size + 128, f"{per_state:.0f} bytes held per {size}-byte state"


def _structs(value: object) -> list[msgspec.Struct]:
    """Every struct in a decoded state's tree."""
    found: list[msgspec.Struct] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, msgspec.Struct):
            found.append(item)
            stack.extend(getattr(item, f) for f in item.__struct_fields__)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


def test_decoded_states_are_not_tracked_by_the_collector() -> None:
    """Every state struct is declared gc=False: a decoded key's or tenant's state adds no struct (and no dict of
    them) for the cyclic collector to walk. Checked on the states of a few keys' lives and their tenant's."""
    ingest = IngestStep(MemorySink(), Topics("requests", "lifecycle"))
    states: dict[str, KeyState] = {}
    engine = make_engine(Settings())
    for phase in build(8):
        for topic, items in (("lifecycle", phase.lifecycle), ("requests", phase.requests)):
            for key, value in items:
                verdict = ingest.route(topic, key, value)
                assert isinstance(verdict, Accepted)
                record = verdict.record
                subject = record.subject
                if isinstance(record, RequestRecord):
                    outcome = engine.on_request(states.get(subject), record)
                else:
                    outcome = engine.on_lifecycle(states.get(subject), record)
                states[subject] = outcome.state
                for fwd in outcome.forwards:
                    states[fwd.subject] = engine.on_forward(states.get(fwd.subject), fwd).state
    assert any(s.is_tenant for s in states.values())
    structs = 0
    for state in states.values():
        decoded = decode_state(encode_state(state))
        for struct in _structs([decoded.registry, decoded.detectors]):
            structs += 1
            assert not gc.is_tracked(struct), type(struct).__name__
    assert structs > 100
    for spec in catalog.specs():
        if spec.state is not None:
            assert spec.state.__struct_config__.gc is False, spec.name


def test_tune_gc_freezes_start_up_once_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        frozen = gc.get_freeze_count()
        assert frozen > 1000
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
        tune_gc()
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
