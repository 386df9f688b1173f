"""Forwarding and its cache against a real local upstream (a tiny dnslib server on another
port): TTLs honoured and lowered, negative answers for their SOA's minimum, failures never
kept, one upstream query for many identical ones, TCP when upstream truncates, SERVFAIL in
time when upstream is silent."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, SOA, A, DNSRecord

from atoll.agent.dns.cache import Cache, cache_key
from atoll.agent.dns.records import ClusterRecords
from atoll.agent.dns.server import ClusterDNS
from atoll.client.informer import Informer
from tests.client.fakes import FakeClock, feed
from tests.conftest import free_port


@dataclass
class Upstream:
    """Answers from ``zone``: name -> (rcode, [(type, value, ttl)], SOA (ttl, minimum))."""

    zone: dict[str, tuple[int, list[tuple[str, str, int]], tuple[int, int] | None]]
    delay: float = 0.0
    silent: bool = False
    udp_queries: int = 0
    tcp_queries: int = 0
    seen: list[str] = field(default_factory=list)

    def reply(self, data: bytes, udp: bool) -> bytes | None:
        q = DNSRecord.parse(data)
        name = str(q.q.qname).rstrip(".").lower()
        self.seen.append(name)
        rcode, records, soa = self.zone.get(name, (RCODE.NXDOMAIN, [], (600, 60)))
        reply = q.reply(aa=0)
        reply.header.rcode = rcode
        for rtype, value, ttl in records:
            reply.add_answer(RR(q.q.qname, getattr(QTYPE, rtype), ttl=ttl, rdata=A(value)))
        if soa is not None:
            reply.add_auth(RR("example.", QTYPE.SOA, ttl=soa[0], rdata=SOA(
                "ns.example.", "h.example.", (1, 2, 3, 4, soa[1]))))
        out = reply.pack()
        if udp and len(out) > 512:
            reply.rr, reply.header.tc = [], 1
            out = reply.pack()
        return bytes(out)

    async def start(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        upstream = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                upstream.udp_queries += 1
                if not upstream.silent:
                    loop.call_later(upstream.delay, self.transport.sendto,  # type: ignore
                                    upstream.reply(data, True), addr)

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            data = await reader.readexactly(size)
            self.tcp_queries += 1
            out = self.reply(data, False) or b""
            writer.write(struct.pack("!H", len(out)) + out)
            await writer.drain()
            writer.close()

        self._udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", port))
        self._tcp = await asyncio.start_server(tcp, "127.0.0.1", port)

    def stop(self) -> None:
        self._udp.close()
        self._tcp.close()


ZONE = {
    "a.example": (RCODE.NOERROR, [("A", "192.0.2.1", 120), ("A", "192.0.2.2", 60)], None),
    "long.example": (RCODE.NOERROR, [("A", "192.0.2.3", 86400)], None),
    "nodata.example": (RCODE.NOERROR, [], (900, 30)),
    "bare-nx.example": (RCODE.NXDOMAIN, [], None),
    "broken.example": (RCODE.SERVFAIL, [], None),
    "refused.example": (RCODE.REFUSED, [], None),
    "many.example": (RCODE.NOERROR, [("A", f"192.0.2.{i}", 300) for i in range(1, 41)], None),
}


@dataclass
class Setup:
    server: ClusterDNS
    port: int
    upstream: Upstream
    clock: FakeClock


def no_services() -> ClusterRecords:
    """No Service but ``shop/ext``, an ExternalName for ``a.example``."""
    services = Informer(None, "", "v1", "services")  # type: ignore[arg-type]
    feed(services, {"metadata": {"name": "ext", "namespace": "shop"},
                    "spec": {"type": "ExternalName", "externalName": "a.example"}})
    return ClusterRecords(services, Informer(None, "discovery.k8s.io", "v1",  # type: ignore
                                             "endpointslices"))


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    upstream, up_port, port = Upstream(dict(ZONE)), free_port(), free_port()
    await upstream.start(up_port)
    server = ClusterDNS(no_services(), "127.0.0.1", port, upstreams=[f"127.0.0.1:{up_port}"])
    clock = FakeClock(1000.0)
    server.cache.clock = clock
    await server.start()
    yield Setup(server, port, upstream, clock)
    await server.stop()
    upstream.stop()


async def ask(port: int, name: str, qtype: str = "A", tcp: bool = False,
              do: bool | None = None, timeout: float = 5) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    if do is not None:
        q.add_ar(EDNS0(udp_len=1232, flags="do" if do else ""))
    reply = DNSRecord.parse(await asyncio.to_thread(q.send, "127.0.0.1", port, tcp=tcp,
                                                    timeout=timeout))
    assert reply.header.id == q.header.id  # every client its own ID
    assert str(reply.q.qname) == str(q.q.qname)  # and its own question, in its case
    return reply


async def test_answers_are_cached_for_their_ttl_and_served_with_it_lowered(setup: Setup) -> None:
    s = setup
    first = await ask(s.port, "a.example")
    assert sorted(str(rr.rdata) for rr in first.rr) == ["192.0.2.1", "192.0.2.2"]
    s.clock.advance(20)
    again = await ask(s.port, "A.EXAMPLE")  # the same question in another case
    assert s.upstream.udp_queries == 1
    assert sorted(rr.ttl for rr in again.rr) == [40, 100]
    assert (s.server.cache.hits, s.server.cache.misses) == (1, 1)
    s.clock.advance(41)  # the smallest TTL is over
    await ask(s.port, "a.example")
    assert s.upstream.udp_queries == 2
    # a huge TTL is kept an hour at most
    await ask(s.port, "long.example")
    s.clock.advance(3599)
    assert (await ask(s.port, "long.example")).rr[0].ttl == 86400 - 3599
    s.clock.advance(2)
    await ask(s.port, "long.example")
    assert s.upstream.seen.count("long.example") == 2
    # the DO bit is part of the question: another entry, and only its askers get OPT back
    with_do = await ask(s.port, "a.example", do=True)
    assert with_do.ar and with_do.ar[0].rtype == QTYPE.OPT and with_do.ar[0].ttl & 0x8000
    assert s.upstream.seen.count("a.example") == 3
    assert not (await ask(s.port, "a.example")).ar


async def test_negative_answers_for_the_soa_minimum_failures_never(setup: Setup) -> None:
    s = setup
    for _ in range(2):
        assert (await ask(s.port, "gone.example")).header.rcode == RCODE.NXDOMAIN
        nodata = await ask(s.port, "nodata.example", "A")
        assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr
    assert s.upstream.seen.count("gone.example") == s.upstream.seen.count("nodata.example") == 1
    s.clock.advance(31)  # nodata's SOA minimum is 30 s, gone's 60 s
    await ask(s.port, "gone.example")
    await ask(s.port, "nodata.example")
    assert s.upstream.seen.count("gone.example") == 1
    assert s.upstream.seen.count("nodata.example") == 2
    # no SOA, no time to keep it; SERVFAIL and REFUSED are passed on and asked again
    for name, rcode in (("bare-nx.example", RCODE.NXDOMAIN), ("broken.example", RCODE.SERVFAIL),
                        ("refused.example", RCODE.REFUSED)):
        for _ in range(2):
            assert (await ask(s.port, name)).header.rcode == rcode
        assert s.upstream.seen.count(name) == 2, name


async def test_an_external_name_comes_with_its_targets_records(setup: Setup) -> None:
    s = setup
    reply = await ask(s.port, "ext.shop.svc.cluster.local")
    assert [(QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.rr] == [
        ("CNAME", "a.example."), ("A", "192.0.2.1"), ("A", "192.0.2.2")]
    assert reply.header.aa and reply.header.rcode == RCODE.NOERROR
    only = await ask(s.port, "ext.shop.svc.cluster.local", "CNAME")
    assert [QTYPE[rr.rtype] for rr in only.rr] == ["CNAME"]
    await ask(s.port, "a.example")  # the target's answer is the cache's
    assert s.upstream.seen == ["a.example"] and s.server.cache.hits == 1


async def test_identical_questions_share_one_upstream_query(setup: Setup) -> None:
    s = setup
    s.upstream.delay = 0.5
    replies = await asyncio.gather(*(ask(s.port, "a.example") for _ in range(20)))
    assert all(len(r.rr) == 2 for r in replies)
    assert s.upstream.udp_queries == 1
    assert len({r.header.id for r in replies}) > 1


async def test_upstream_truncation_goes_to_tcp_and_is_cut_for_udp_clients(setup: Setup) -> None:
    s = setup
    udp = await ask(s.port, "many.example")
    assert s.upstream.tcp_queries == 1  # the whole answer fetched over TCP
    assert udp.header.tc and 0 < len(udp.rr) < 40  # what fits in 512 bytes for this client
    whole = await ask(s.port, "many.example", tcp=True)
    assert not whole.header.tc and len(whole.rr) == 40
    assert s.upstream.tcp_queries == 1 and s.server.cache.hits == 1


async def test_a_silent_upstream_is_a_servfail_within_the_clients_timeout(setup: Setup) -> None:
    s = setup
    s.upstream.silent = True
    reply = await ask(s.port, "a.example", timeout=3)
    assert reply.header.rcode == RCODE.SERVFAIL
    s.upstream.silent = False
    assert (await ask(s.port, "a.example")).header.rcode == RCODE.NOERROR  # not cached


async def test_a_dead_first_resolver_falls_through_to_the_next() -> None:
    upstream, up_port, port = Upstream(dict(ZONE)), free_port(), free_port()
    await upstream.start(up_port)
    dead = Upstream({}, silent=True)
    dead_port = free_port()
    await dead.start(dead_port)
    server = ClusterDNS(no_services(), "127.0.0.1", port,
                        upstreams=[("127.0.0.1", dead_port), f"127.0.0.1:{up_port}"])
    await server.start()
    try:
        reply = await ask(port, "a.example", timeout=3)
        assert reply.header.rcode == RCODE.NOERROR and len(reply.rr) == 2
        assert dead.udp_queries == 1
    finally:
        await server.stop()
        upstream.stop()
        dead.stop()


def test_the_cache_is_a_bounded_lru() -> None:
    cache = Cache(capacity=2, clock=FakeClock(0.0))

    def record(name: str) -> DNSRecord:
        r = DNSRecord.question(name).reply()
        r.add_answer(RR(name, QTYPE.A, ttl=60, rdata=A("192.0.2.9")))
        return r
    keys = [cache_key(n, QTYPE.A, 1, False) for n in ("x.", "y.", "z.")]
    cache.put(keys[0], record("x."))
    cache.put(keys[1], record("y."))
    assert cache.get(keys[0]) is not None  # x is now the most recent
    cache.put(keys[2], record("z."))
    assert len(cache) == 2 and cache.get(keys[1]) is None and cache.get(keys[0]) is not None
