"""The addresses a LoadBalancerPool holds, read from its ``spec.addresses`` (ranges
``a-b`` and CIDRs).  Shared by the controller that hands them out and the hosts that answer
ARP for them: a host announces nothing outside a pool."""

from __future__ import annotations

import ipaddress
from typing import Any

#: a pool larger than this is refused (its addresses are listed to allocate from)
MAX_POOL = 65536


class PoolError(ValueError):
    """A pool's addresses cannot be read; the message names the entry."""


def addresses(pool: dict[str, Any]) -> list[ipaddress.IPv4Address]:
    out: list[ipaddress.IPv4Address] = []
    for i, entry in enumerate((pool.get("spec") or {}).get("addresses") or []):
        where = f"spec.addresses[{i}]"
        try:
            if "-" in str(entry):
                first, last = (ipaddress.IPv4Address(p.strip()) for p in str(entry).split("-", 1))
                if last < first:
                    raise PoolError(f"{where}: {entry!r} ends before it starts")
                span = [ipaddress.IPv4Address(n) for n in range(int(first), int(last) + 1)] \
                    if int(last) - int(first) < MAX_POOL else None
            else:
                net = ipaddress.IPv4Network(str(entry), strict=False)
                span = list(net.hosts() if net.prefixlen < 31 else net) \
                    if net.num_addresses <= MAX_POOL else None
        except ValueError as e:
            raise PoolError(f"{where}: {entry!r} is not an IPv4 range or CIDR ({e})") from None
        if span is None or len(out) + len(span) > MAX_POOL:
            raise PoolError(f"{where}: pools hold at most {MAX_POOL} addresses")
        out += span
    return sorted(set(out))


def holds(pool: dict[str, Any], ip: str) -> bool:
    """Whether ``ip`` is one of ``pool``'s addresses, without listing them (a host asks this
    on every Service event).  An entry that cannot be read holds nothing."""
    try:
        address = ipaddress.IPv4Address(ip)
    except ValueError:
        return False
    for entry in (pool.get("spec") or {}).get("addresses") or []:
        try:
            if "-" in str(entry):
                first, last = (ipaddress.IPv4Address(p.strip()) for p in str(entry).split("-", 1))
                if first <= address <= last:
                    return True
            else:
                net = ipaddress.IPv4Network(str(entry), strict=False)
                if address in net and (net.prefixlen >= 31 or address not in (
                        net.network_address, net.broadcast_address)):
                    return True
        except ValueError:
            continue
    return False
