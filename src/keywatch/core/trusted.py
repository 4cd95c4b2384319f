"""Trusted networks: named CIDR lists (corporate egress, CI runners) that every key of a tenant treats as known.

    [detection.trusted.global]            # lists for every tenant
    corp-egress = ["203.0.113.0/24", "2001:db8:100::/48"]
    [detection.trusted.tenant.acme]       # lists for the keys of tenant acme only
    ci-runners = ["198.51.100.0/26"]

A request from a listed network is never a new IP: the IP baseline counts it under the list's name (reported
in the `trusted` evidence of the key's next usedFromNewIp alert) and does not learn it. A list holds at most
`MAX_NETWORKS` networks; a tenant has at most `MAX_LISTS` lists (global ones included).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

MAX_NETWORKS = 1024
MAX_LISTS = 64
_CACHE_RANGES = 4096  # ranges whose overlapping trusted networks are remembered

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """A network in CIDR form (a bare address is its /32 or /128); ValueError saying why not."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = ipaddress.ip_network(text.strip(), strict=False)
            raise ValueError(f"{text!r} has host bits set (the network is {loose})") from None
        raise ValueError(f"{text!r} is not an IP network in CIDR form, e.g. 198.51.100.0/24") from None


def _check_network(text: str) -> str:
    return str(parse_network(text))


Cidr = Annotated[str, AfterValidator(_check_network)]
ListName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
NetworkList = Annotated[list[Cidr], Field(max_length=MAX_NETWORKS)]


class TrustedConfig(BaseModel):
    """`[detection.trusted]`: global lists, and lists per tenant."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    global_: dict[ListName, NetworkList] = Field(default_factory=dict, alias="global", max_length=MAX_LISTS)
    tenant: dict[str, dict[ListName, NetworkList]] = Field(default_factory=dict)

    def for_tenant(self, tenant: str | None) -> TrustedNetworks:
        """The lists that apply to the keys of `tenant` (None: the global ones only)."""
        lists = dict(self.global_)
        for name, networks in self.tenant.get(tenant or "", {}).items():
            lists[name] = [*lists.get(name, []), *networks]
        return TrustedNetworks({name: tuple(parse_network(n) for n in nets) for name, nets in lists.items()})

    def describe(self) -> list[str]:
        """One line per list, naming it and how many networks it holds (for the start-up log)."""
        lines = [f"trusted networks: global list {name!r} holds {len(nets)}" for name, nets in self.global_.items()]
        for tenant, lists in sorted(self.tenant.items()):
            lines += [f"trusted networks: tenant {tenant!r} list {name!r} holds {len(n)}" for name, n in lists.items()]
        return lines


class TrustedNetworks:
    """Which trusted list (if any) an address is on; the lists overlapping a range are cached per range."""

    def __init__(self, lists: dict[str, tuple[Network, ...]]) -> None:
        self.lists = lists
        self._all = [(net, name) for name, nets in lists.items() for net in nets]
        self._by_range: dict[str, tuple[tuple[Network, str], ...]] = {}

    def list_of(self, ip: str, range_key: str) -> str | None:
        """The name of the first list holding `ip` (whose range is `range_key`), else None."""
        near = self._by_range.get(range_key)
        if near is None:
            if len(self._by_range) >= _CACHE_RANGES:
                self._by_range.clear()
            rng = ipaddress.ip_network(range_key)
            near = self._by_range[range_key] = tuple(
                (net, name) for net, name in self._all if net.version == rng.version and net.overlaps(rng)
            )
        if not near:
            return None
        addr = ipaddress.ip_address(ip)
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        for net, name in near:
            if addr.version == net.version and addr in net:
                return name
        return None
