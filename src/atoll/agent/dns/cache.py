"""The cache of forwarded answers, as CoreDNS's ``cache`` plugin keeps one: a bounded LRU of
upstream replies by question (and DNSSEC-OK bit), each kept for its smallest TTL (capped),
negative ones (NXDOMAIN, NODATA) for their SOA's minimum (capped lower), served with their
TTLs lowered by the time they spent here.  Failures (SERVFAIL, REFUSED...) and truncated
replies are never kept: the next client asks upstream again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from dnslib import QTYPE, RCODE, RR, DNSHeader, DNSRecord

#: how many answers at most, how long a positive and a negative one at most (seconds)
CAPACITY = 10_000
MAX_TTL = 3600
MAX_NEGATIVE_TTL = 300

Key = tuple[str, int, int, bool]  # qname lowercased, qtype, qclass, DO bit


@dataclass
class _Entry:
    record: DNSRecord
    stored: float
    expires: float


def cache_key(qname: str, qtype: int, qclass: int, do: bool) -> Key:
    return (qname.rstrip(".").lower(), qtype, qclass, do)


def lifetime(record: DNSRecord) -> int:
    """Seconds ``record`` may be cached (0: not at all), RFC 2308 for negative answers."""
    rcode = record.header.rcode
    if record.header.tc or rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN):
        return 0
    if rcode == RCODE.NOERROR and record.rr:
        ttls = [rr.ttl for rr in (*record.rr, *record.auth, *record.ar) if rr.rtype != QTYPE.OPT]
        return max(0, min(min(ttls), MAX_TTL))
    soas = [rr for rr in record.auth if rr.rtype == QTYPE.SOA]
    if not soas:
        return 0  # a negative answer without SOA says nothing of how long it holds
    return max(0, min(soas[0].ttl, soas[0].rdata.times[-1], MAX_NEGATIVE_TTL))


def aged(record: DNSRecord, age: int) -> DNSRecord:
    """A copy of ``record`` (the caller may change its header and question) with every TTL
    lowered by ``age`` seconds; OPT records (whose TTL field holds flags) kept as they are."""
    def rrs(section: list[RR]) -> list[RR]:
        return [rr if rr.rtype == QTYPE.OPT else
                RR(rr.rname, rr.rtype, rr.rclass, max(0, rr.ttl - age), rr.rdata)
                for rr in section]
    header = DNSHeader(id=record.header.id, bitmap=record.header.bitmap)
    return DNSRecord(header, questions=list(record.questions), rr=rrs(record.rr),
                     auth=rrs(record.auth), ar=rrs(record.ar))


class Cache:
    def __init__(self, capacity: int = CAPACITY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.clock = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        #: lookups answered from here, and not
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> DNSRecord | None:
        entry = self._entries.get(key)
        now = self.clock()
        if entry is None or now >= entry.expires:
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return aged(entry.record, int(now - entry.stored))

    def put(self, key: Key, record: DNSRecord) -> None:
        ttl = lifetime(record)
        if ttl <= 0:
            return
        now = self.clock()
        self._entries[key] = _Entry(aged(record, 0), now, now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
