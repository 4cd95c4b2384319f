"""Geoip2Lookup against a tiny generated GeoLite2-style database pair."""

from __future__ import annotations

from pathlib import Path

import pytest

from keywatch.geo import UNKNOWN, GeoInfo, Geoip2Lookup, StaticGeoLookup


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("192.0.2.5", GeoInfo(64500, "Example Hosting A", "US")),
        ("203.0.113.9", GeoInfo(64501, "Example Transit B", "DE")),
        ("10.200.0.1", GeoInfo(64502, "Example Private Net", "US")),
        ("2001:db8:1::1", GeoInfo(64503, "Example IPv6 C", "FR")),
        ("8.8.8.8", UNKNOWN),
    ],
)
def test_lookup_reads_asn_and_country(geoip_paths: tuple[Path, Path], ip: str, expected: GeoInfo) -> None:
    """ASN, organisation and country come from the two databases; unknown addresses are UNKNOWN."""
    asn, country = geoip_paths
    with Geoip2Lookup(asn_db=asn, country_db=country) as geo:
        assert geo.lookup(ip, ip) == expected


def test_lookup_is_cached_per_range(geoip_paths: tuple[Path, Path]) -> None:
    """Addresses of one range are looked up once; the cache keeps at most cache_size ranges."""
    asn, country = geoip_paths
    with Geoip2Lookup(asn_db=asn, country_db=country, cache_size=2) as geo:
        geo.lookup("192.0.2.1", "192.0.2.0/24")
        geo.lookup("192.0.2.2", "192.0.2.0/24")
        assert (geo.hits, geo.misses) == (1, 1)
        geo.lookup("198.51.100.1", "198.51.100.0/24")
        geo.lookup("203.0.113.1", "203.0.113.0/24")
        geo.lookup("192.0.2.3", "192.0.2.0/24")
        assert geo.misses == 4


def test_asn_only_database(geoip_paths: tuple[Path, Path]) -> None:
    """With only the ASN database, country is unknown."""
    with Geoip2Lookup(asn_db=geoip_paths[0]) as geo:
        assert geo.lookup("192.0.2.5", "r") == GeoInfo(64500, "Example Hosting A", None)


def test_needs_a_database() -> None:
    """A lookup without any database is a configuration error."""
    with pytest.raises(ValueError, match="needs an ASN database"):
        Geoip2Lookup()


def test_static_lookup_prefers_most_specific_network() -> None:
    """The in-memory lookup answers from the longest matching prefix."""
    geo = StaticGeoLookup({"10.0.0.0/8": GeoInfo(1, "a", "US"), "10.1.0.0/16": GeoInfo(2, "b", "DE")})
    assert geo.lookup("10.1.2.3", "r").asn == 2
    assert geo.lookup("10.2.2.3", "r").asn == 1
    assert geo.lookup("2001:db8::1", "r") == UNKNOWN
