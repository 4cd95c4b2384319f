"""A tiny GeoLite2-style ASN and Country database pair, written at test time (never downloaded).

Networks (documentation and private ranges only):

    network            ASN     organisation          country
    192.0.2.0/24       64500   Example Hosting A     US
    198.51.100.0/24    64500   Example Hosting A     US    (second range of the same ASN)
    203.0.113.0/24     64501   Example Transit B     DE    (another ASN and country)
    10.0.0.0/8         64502   Example Private Net   US    (another ASN, known country)
    2001:db8::/32      64503   Example IPv6 C        FR
"""

from __future__ import annotations

from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

NETWORKS: list[tuple[str, int, str, str]] = [
    ("192.0.2.0/24", 64500, "Example Hosting A", "US"),
    ("198.51.100.0/24", 64500, "Example Hosting A", "US"),
    ("203.0.113.0/24", 64501, "Example Transit B", "DE"),
    ("10.0.0.0/8", 64502, "Example Private Net", "US"),
    ("2001:db8::/32", 64503, "Example IPv6 C", "FR"),
]


def write_test_geoip(dirpath: str | Path) -> tuple[Path, Path]:
    """Write `test-asn.mmdb` and `test-country.mmdb` into `dirpath`; return (asn_path, country_path)."""
    dirpath = Path(dirpath)
    asn = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN", description="keywatch test ASN")
    country = MMDBWriter(
        ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country", description="keywatch test Country"
    )
    for network, number, org, iso in NETWORKS:
        asn.insert_network(
            IPSet([network]), {"autonomous_system_number": number, "autonomous_system_organization": org}
        )
        country.insert_network(IPSet([network]), {"country": {"iso_code": iso, "names": {"en": iso}}})
    asn_path, country_path = dirpath / "test-asn.mmdb", dirpath / "test-country.mmdb"
    asn.to_db_file(str(asn_path))
    country.to_db_file(str(country_path))
    return asn_path, country_path
