"""The wire form of a key's state, as the table and its changelog keep it: the one place that encodes and
decodes state.

Format 2 (this one): MessagePack of `[2, tenant, key_id, registry, {detector: state}, suppressed, episodes,
ticks]`, every struct as an array of its fields (names live in the code, not on the wire); each detector's slot
is decoded with the state type its spec declares, a slot of a detector no longer registered is kept as it
was. A trailing field added to a struct later must have a default: states written before it still load.

A slot is the MessagePack of its state, or a MessagePack bin holding the state's JSON (same arrays): the rate
baseline's slot is written that way, because its 48 hour-of-day levels and spreads are short decimals (rounded
to 3 places) that MessagePack writes as 9-byte doubles and JSON in 4-6 characters, exactly and with ints and
floats told apart (548 -> ~360 B for a quiet key). Either form of any slot is read.

Format 1 (keywatch before typed state): a JSON object `{"t", "k", "r", "d", "s"}` with the detectors' state
as letter-keyed dicts under the slots `ip`, `rate`, `err`, `rev`. It is read (and written back as format 2):
an upgrade keeps every key's baseline, open episodes and suppressions.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from keywatch.core import catalog
from keywatch.core.error_burst import ErrorBurstState, ErrorEpisode, Seen
from keywatch.core.ip_baseline import AsnSeen, CountrySeen, IpState, RangeSeen
from keywatch.core.rate_baseline import NAME as RATE
from keywatch.core.rate_baseline import RateEpisode, RateState
from keywatch.core.revoked_use import RevokedUseState
from keywatch.core.state import KeyRegistryEntry, KeyState

FORMAT = 2


class _Wire(msgspec.Struct, array_like=True, gc=False):
    format: int
    tenant: str
    key_id: str
    registry: KeyRegistryEntry
    slots: dict[str, msgspec.Raw] = {}
    suppressed: dict[str, int] = {}
    episodes: dict[str, list[str]] = {}
    ticks: dict[str, int] = {}


_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
_wire_decoder = msgspec.msgpack.Decoder(_Wire)
_slot_decoders: dict[str, tuple[msgspec.msgpack.Decoder[Any], msgspec.json.Decoder[Any]]] = {}
_decoders_of = [-1]
JSON_SLOTS = frozenset({RATE})  # detectors whose slot is written as JSON (see the module's docstring)
_BIN = frozenset(b"\xc4\xc5\xc6")  # MessagePack bin 8/16/32: a slot holding JSON


def _decoders() -> dict[str, tuple[msgspec.msgpack.Decoder[Any], msgspec.json.Decoder[Any]]]:
    if _decoders_of[0] != catalog.version():
        _slot_decoders.clear()
        for spec in catalog.specs():
            if spec.state is not None:
                _slot_decoders[spec.name] = (msgspec.msgpack.Decoder(spec.state), msgspec.json.Decoder(spec.state))
        _decoders_of[0] = catalog.version()
    return _slot_decoders


def _decode_slot(decoders: tuple[msgspec.msgpack.Decoder[Any], msgspec.json.Decoder[Any]], slot: msgspec.Raw) -> Any:
    if memoryview(slot)[0] in _BIN:
        return decoders[1].decode(msgspec.msgpack.decode(slot))
    return decoders[0].decode(slot)


def encode_state(state: KeyState) -> bytes:
    """A key's state as the table keeps it (format 2), in a bytes object of its own size.

    The encoder's output keeps the buffer it grew while writing (~1.45 x the state, measured with tracemalloc);
    the table holds one value per key for as long as the key lives, so it is copied into an exactly sized object
    (joining it with b"" copies; ~0.1 µs).
    """
    detectors = state.detectors
    if not JSON_SLOTS.isdisjoint(detectors):
        detectors = {
            name: _json_encoder.encode(slot) if name in JSON_SLOTS and isinstance(slot, msgspec.Struct) else slot
            for name, slot in detectors.items()
        }
    encoded = _encoder.encode(
        (
            FORMAT,
            state.tenant,
            state.key_id,
            state.registry,
            detectors,
            state.suppressed,
            state.episodes,
            state.ticks,
        )
    )
    return b"".join((encoded, b""))


def decode_state(raw: bytes) -> KeyState:
    """A key's state from the table (format 2, or format 1 written by an earlier keywatch)."""
    if raw[:1] == b"{":
        return _from_format_1(orjson.loads(raw))
    wire = _wire_decoder.decode(raw)
    decoders = _decoders()
    detectors: dict[str, Any] = {}
    for name, slot in wire.slots.items():
        decoder = decoders.get(name)
        detectors[name] = _decode_slot(decoder, slot) if decoder is not None else slot
    return KeyState(wire.tenant, wire.key_id, wire.registry, detectors, wire.suppressed, wire.episodes, wire.ticks)


def peek(raw: bytes) -> tuple[KeyRegistryEntry, dict[str, int]]:
    """The registry entry and the ticks of a stored state, without decoding the detectors' parts (for indexes
    rebuilt from the whole table)."""
    if raw[:1] == b"{":
        return KeyRegistryEntry.from_dict(orjson.loads(raw).get("r") or {}), {}
    wire = _wire_decoder.decode(raw)
    return wire.registry, wire.ticks


# -- format 1 ----------------------------------------------------------------------------------------------

_OLD_SUPPRESSION = {"nip": "usedfromnewip", "rev": "usedafterrevoke"}


def _from_format_1(data: dict[str, Any]) -> KeyState:
    registry = data.get("r")
    state = KeyState(data["t"], data["k"], KeyRegistryEntry.from_dict(registry) if registry else KeyRegistryEntry())
    old: dict[str, Any] = data.get("d") or {}
    if "ip" in old:
        state.detectors["ip"] = _ip_1(old["ip"])
    if "rate" in old:
        rate = state.detectors["rate"] = _rate_1(old["rate"])
        if rate.episode is not None:
            state.episodes["requestspike"] = [str(rate.episode.start_minute)]
    if "err" in old:
        errors = state.detectors["errors"] = _errors_1(old["err"])
        for code, episode in errors.episodes.items():
            state.episodes[f"4xxcluster|{code}"] = [code, str(episode.start_minute)]
    if "rev" in old:
        n, q, f, last = (old["rev"][k] for k in ("n", "q", "f", "l"))
        state.detectors["revoked"] = RevokedUseState(n, q, f, last)
    for key, until in (data.get("s") or {}).items():
        code, sep, discriminator = key.partition("|")
        state.suppressed[_OLD_SUPPRESSION.get(code, code) + sep + discriminator] = until
    return state


def _ip_1(st: dict[str, Any]) -> IpState:
    return IpState(
        ranges={k: RangeSeen(*v) for k, v in st["r"].items()},
        asns={k: AsnSeen(*v) for k, v in st["a"].items()},
        countries={k: CountrySeen(*v) for k, v in st["c"].items()},
        learned=bool(st.get("L")),
        swept_s=st.get("g", 0),
    )


def _rate_1(st: dict[str, Any]) -> RateState:
    episode = st.get("ep")
    return RateState(
        minute=st["m"],
        first_minute=st["o"],
        counts=st["b"],
        level=st["l"],
        spread=st["d"],
        minutes=st["n"],
        hour_level=st["h"],
        hour_spread=st["hd"],
        hour_updates=st["hn"],
        expected=st["e"],
        expected_spread=st["s"],
        threshold=st["t"],
        peak=st.get("pk", 0.0),
        episode=RateEpisode(*episode) if episode is not None else None,
        late_dropped=st.get("x", 0),
    )


def _errors_1(st: dict[str, Any]) -> ErrorBurstState:
    return ErrorBurstState(
        minute=st["m"],
        buckets=st["b"],
        window=st["w"],
        usual_errors=[float(v) for v in st["be"]],
        usual_total=float(st["bt"]),
        active_minutes=st["bn"],
        paths={k: Seen(*v) for k, v in st["p"].items()},
        ips={k: Seen(*v) for k, v in st["i"].items()},
        episodes={k: ErrorEpisode(*v) for k, v in (st.get("ep") or {}).items()},
        late_dropped=st.get("x", 0),
    )
