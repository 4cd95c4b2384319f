"""IP geography for the detectors: ASN, organisation and country of an address.

`GeoLookup` is the narrow interface the detection core sees. `Geoip2Lookup` reads MaxMind GeoLite2/GeoIP2
databases (ASN plus Country or City); `StaticGeoLookup` is an in-memory table for tests and small setups.
Lookups are cached per range (e.g. an IPv4 /24): every address of a range is assumed to share ASN and country,
which is what the IP baseline compares anyway, and it keeps lookups off the per-request path.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import geoip2.database
import geoip2.errors

# Organisation names end up in the state changelog: keep them short.
MAX_ORG_CHARS = 64


@dataclass(frozen=True, slots=True)
class GeoInfo:
    """What is known about where an address is; any part may be unknown."""

    asn: int | None = None
    org: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2


UNKNOWN = GeoInfo()


class GeoLookup(Protocol):
    """Answers where an address is. `range_key` is the address's range, usable as a cache key."""

    def lookup(self, ip: str, range_key: str) -> GeoInfo:
        """ASN, organisation and country of `ip` (UNKNOWN parts when the databases do not say)."""
        ...


class Geoip2Lookup:
    """GeoLite2-ASN and GeoLite2-Country (or -City) databases, with an LRU cache per range."""

    def __init__(
        self,
        *,
        asn_db: str | Path | None = None,
        country_db: str | Path | None = None,
        cache_size: int = 4096,
    ) -> None:
        if asn_db is None and country_db is None:
            raise ValueError("Geoip2Lookup needs an ASN database, a Country/City database, or both")
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self._asn = geoip2.database.Reader(str(asn_db)) if asn_db is not None else None
        self._country = geoip2.database.Reader(str(country_db)) if country_db is not None else None
        self._country_is_city = self._country is not None and "City" in self._country.metadata().database_type
        self._cache: OrderedDict[str, GeoInfo] = OrderedDict()
        self._cache_size = cache_size
        self.hits = 0
        self.misses = 0

    def lookup(self, ip: str, range_key: str) -> GeoInfo:
        """ASN, organisation and country of `ip`, cached by `range_key`."""
        cached = self._cache.get(range_key)
        if cached is not None:
            self.hits += 1
            self._cache.move_to_end(range_key)
            return cached
        self.misses += 1
        info = self._read(ip)
        self._cache[range_key] = info
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return info

    def _read(self, ip: str) -> GeoInfo:
        asn: int | None = None
        org: str | None = None
        country: str | None = None
        if self._asn is not None:
            try:
                found = self._asn.asn(ip)
            except (geoip2.errors.AddressNotFoundError, ValueError):
                pass
            else:
                asn = found.autonomous_system_number
                org = found.autonomous_system_organization
                org = org[:MAX_ORG_CHARS] if org else None
        if self._country is not None:
            try:
                place = self._country.city(ip) if self._country_is_city else self._country.country(ip)
            except (geoip2.errors.AddressNotFoundError, ValueError):
                pass
            else:
                country = place.country.iso_code or place.registered_country.iso_code
        return GeoInfo(asn=asn, org=org, country=country)

    def close(self) -> None:
        """Close the database files."""
        for reader in (self._asn, self._country):
            if reader is not None:
                reader.close()

    def __enter__(self) -> Geoip2Lookup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StaticGeoLookup:
    """An in-memory table of networks, for tests and for small fixed setups without MaxMind data."""

    def __init__(self, table: dict[str, GeoInfo]) -> None:
        # Longest prefix first, so the most specific network wins.
        nets = [(ipaddress.ip_network(net), info) for net, info in table.items()]
        self._nets = sorted(nets, key=lambda item: item[0].prefixlen, reverse=True)

    def lookup(self, ip: str, range_key: str) -> GeoInfo:
        """The info of the most specific network containing `ip`, else UNKNOWN."""
        addr = ipaddress.ip_address(ip)
        for net, info in self._nets:
            if addr.version == net.version and addr in net:
                return info
        return UNKNOWN
