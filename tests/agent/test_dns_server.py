"""The agent's cluster DNS over real UDP and TCP on a free local port, asked with dnslib's
client: the Kubernetes DNS specification's records (A, SRV, PTR, headless names), NODATA
for every other type of a name that exists, truncation, EDNS0, and hostile input."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord

from atoll.agent.dns.records import ClusterRecords
from atoll.agent.dns.server import ClusterDNS
from atoll.client.informer import Informer
from tests.client.fakes import feed
from tests.conftest import free_port

NS = "shop"


def service(name: str, cluster_ip: str, ports: list[dict] | None = None, **spec: object) -> dict:
    return {"metadata": {"name": name, "namespace": NS},
            "spec": {"clusterIP": cluster_ip, "ports": ports or [], **spec}}


def endpoint_slice(name: str, service: str, endpoints: list[tuple[str, str, bool]],
                   ports: list[dict] | None = None) -> dict:
    return {"metadata": {"name": name, "namespace": NS,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": ports or [],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready},
                           **({"hostname": host} if host else {})}
                          for ip, host, ready in endpoints]}


class Cluster:
    def __init__(self) -> None:
        self.services = Informer(None, "", "v1", "services")  # type: ignore[arg-type]
        self.slices = Informer(None, "discovery.k8s.io", "v1", "endpointslices")  # type: ignore
        self.cidrs = Informer(None, "networking.k8s.io", "v1", "servicecidrs")  # type: ignore
        self.records = ClusterRecords(self.services, self.slices, "cluster.local", self.cidrs,
                                      ["10.88.0.0/16"])
        feed(self.cidrs, {"metadata": {"name": "kubernetes"},
                          "spec": {"cidrs": ["10.96.0.0/16"]}})
        feed(self.services, service("web", "10.96.0.20", [{"name": "http", "port": 80}]))
        feed(self.services, service("db", "None", [{"name": "sql", "port": 5432}]))
        feed(self.slices, endpoint_slice("db-1", "db", [
            ("10.88.0.5", "db-0", True), ("10.88.0.6", "", True), ("10.88.0.7", "db-2", False)],
            [{"name": "sql", "port": 15432, "protocol": "TCP"}]))
        feed(self.services, service("empty", "None"))
        feed(self.services, {"metadata": {"name": "docs", "namespace": NS},
                             "spec": {"type": "ExternalName", "externalName": "web.shop.svc."
                                      "cluster.local"}})
        big = [(f"10.88.1.{i}", f"w{i}", True) for i in range(1, 61)]
        feed(self.services, service("wide", "None"))
        feed(self.slices, endpoint_slice("wide-1", "wide", big))


@pytest.fixture
async def dns() -> AsyncIterator[tuple[ClusterDNS, int]]:
    port = free_port()
    server = ClusterDNS(Cluster().records, "127.0.0.1", port, upstreams=[])
    await server.start()
    yield server, port
    await server.stop()


async def ask(port: int, name: str, qtype: str = "A", tcp: bool = False,
              edns: int | None = None, timeout: float = 5) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    raw = await asyncio.to_thread(q.send, "127.0.0.1", port, tcp=tcp, timeout=timeout)
    reply = DNSRecord.parse(raw)
    assert reply.header.id == q.header.id
    return reply


def rdata(reply: DNSRecord, qtype: str | None = None) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr if qtype is None or QTYPE[rr.rtype] == qtype)


def nodata(reply: DNSRecord) -> bool:
    return (reply.header.rcode == RCODE.NOERROR and not reply.rr
            and [QTYPE[rr.rtype] for rr in reply.auth] == ["SOA"])


async def test_services_headless_endpoints_and_srv(dns: tuple[ClusterDNS, int]) -> None:
    _, port = dns
    assert rdata(await ask(port, "WEB.shop.svc.cluster.local")) == ["10.96.0.20"]
    # a headless Service: its ready endpoints, each by hostname or its dashed address
    assert rdata(await ask(port, "db.shop.svc.cluster.local")) == ["10.88.0.5", "10.88.0.6"]
    assert rdata(await ask(port, "db-0.db.shop.svc.cluster.local")) == ["10.88.0.5"]
    assert rdata(await ask(port, "10-88-0-6.db.shop.svc.cluster.local")) == ["10.88.0.6"]
    gone = await ask(port, "db-2.db.shop.svc.cluster.local")  # not ready
    assert gone.header.rcode == RCODE.NXDOMAIN
    assert (await ask(port, "empty.shop.svc.cluster.local")).header.rcode == RCODE.NXDOMAIN
    srv = await ask(port, "_sql._tcp.db.shop.svc.cluster.local", "SRV", tcp=True)
    assert rdata(srv) == ["0 100 15432 10-88-0-6.db.shop.svc.cluster.local.",
                          "0 100 15432 db-0.db.shop.svc.cluster.local."]
    assert sorted(str(rr.rdata) for rr in srv.ar) == ["10.88.0.5", "10.88.0.6"]
    srv = await ask(port, "_http._tcp.web.shop.svc.cluster.local", "SRV")
    assert rdata(srv) == ["0 100 80 web.shop.svc.cluster.local."]
    assert [str(rr.rdata) for rr in srv.ar] == ["10.96.0.20"]
    assert rdata(await ask(port, "dns-version.cluster.local", "TXT")) == ['"1.0.1"']
    assert rdata(await ask(port, "10-88-0-9.shop.pod.cluster.local")) == ["10.88.0.9"]
    # an ExternalName to a cluster name: the CNAME and its target's address
    chased = await ask(port, "docs.shop.svc.cluster.local")
    assert rdata(chased) == ["10.96.0.20", "web.shop.svc.cluster.local."]
    soa = await ask(port, "cluster.local", "SOA")
    assert [QTYPE[rr.rtype] for rr in soa.rr] == ["SOA"]


async def test_ptr_for_cluster_ips_and_headless_endpoints(dns: tuple[ClusterDNS, int]) -> None:
    _, port = dns
    assert rdata(await ask(port, "20.0.96.10.in-addr.arpa", "PTR")) == \
        ["web.shop.svc.cluster.local."]
    assert rdata(await ask(port, "5.0.88.10.in-addr.arpa", "PTR")) == \
        ["db-0.db.shop.svc.cluster.local."]
    assert rdata(await ask(port, "6.0.88.10.in-addr.arpa", "PTR", tcp=True)) == \
        ["10-88-0-6.db.shop.svc.cluster.local."]
    # no record in the Service or pod ranges: ours, NXDOMAIN with the reverse zone's SOA
    for name in ("7.0.88.10.in-addr.arpa", "99.0.96.10.in-addr.arpa"):
        missing = await ask(port, name, "PTR")
        assert missing.header.rcode == RCODE.NXDOMAIN and missing.header.aa, name
        assert str(missing.auth[0].rname) == "in-addr.arpa."
    # a name that exists, another type: NODATA
    assert nodata(await ask(port, "20.0.96.10.in-addr.arpa", "A"))
    # elsewhere: not ours (forwarded; with no resolver, SERVFAIL)
    other = await ask(port, "8.8.8.8.in-addr.arpa", "PTR")
    assert other.header.rcode == RCODE.SERVFAIL and not other.header.aa


async def test_every_other_type_of_an_existing_name_is_nodata(
        dns: tuple[ClusterDNS, int]) -> None:
    _, port = dns
    for name in ("web.shop.svc.cluster.local", "db.shop.svc.cluster.local",
                 "db-0.db.shop.svc.cluster.local", "10-88-0-9.shop.pod.cluster.local",
                 "_sql._tcp.db.shop.svc.cluster.local", "dns-version.cluster.local",
                 "shop.svc.cluster.local", "cluster.local"):
        for qtype in ("AAAA", "MX", "TXT", "HTTPS"):
            if (name, qtype) == ("dns-version.cluster.local", "TXT"):
                continue
            reply = await ask(port, name, qtype)
            assert nodata(reply), (name, qtype, reply)
            assert str(reply.auth[0].rname) == "cluster.local."
    assert (await ask(port, "nothing.shop.svc.cluster.local", "AAAA")).header.rcode == \
        RCODE.NXDOMAIN


async def test_large_answers_truncate_over_udp_and_come_whole_over_tcp(
        dns: tuple[ClusterDNS, int]) -> None:
    _, port = dns
    name = "wide.shop.svc.cluster.local"
    udp = await ask(port, name)
    assert udp.header.tc and 0 < len(udp.rr) < 60  # what fits in 512 bytes
    assert len(udp.pack()) <= 512 and not udp.ar  # no OPT for a client that sent none
    big = await ask(port, name, edns=4096)  # a client with a large buffer gets it all
    assert not big.header.tc and len(big.rr) == 60
    assert [QTYPE[rr.rtype] for rr in big.ar] == ["OPT"]  # and our OPT back
    mid = await ask(port, name, edns=700)
    assert mid.header.tc and len(udp.rr) < len(mid.rr) < 60 and len(mid.pack()) <= 700
    tcp = await ask(port, name, tcp=True)
    assert not tcp.header.tc and len(tcp.rr) == 60
    srv_all = await ask(port, "_nothing._tcp.wide.shop.svc.cluster.local", "SRV")
    assert srv_all.header.rcode == RCODE.NXDOMAIN


def _header(qid: int, qdcount: int) -> bytes:
    return struct.pack("!6H", qid, 0x0100, qdcount, 0, 0, 0)


def _raw_udp(port: int, data: bytes, timeout: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


async def test_hostile_input_never_stops_the_server(dns: tuple[ClusterDNS, int]) -> None:
    server, port = dns
    assert await asyncio.to_thread(_raw_udp, port, b"\x00\x01garbage", 0.3) is None
    header_only = _header(7, 1) + b"\xff\xff\xff"  # a question that is not one
    reply = DNSRecord.parse(await asyncio.to_thread(_raw_udp, port, header_only))
    assert reply.header.id == 7 and reply.header.rcode == RCODE.FORMERR
    two = DNSRecord(DNSHeader(id=8), questions=[DNSQuestion("a.cluster.local"),
                                                 DNSQuestion("b.cluster.local")])
    reply = DNSRecord.parse(await asyncio.to_thread(_raw_udp, port, two.pack()))
    assert reply.header.rcode == RCODE.FORMERR
    none = DNSRecord(DNSHeader(id=9))
    reply = DNSRecord.parse(await asyncio.to_thread(_raw_udp, port, none.pack()))
    assert reply.header.rcode == RCODE.FORMERR
    response = DNSRecord.question("web.shop.svc.cluster.local").reply()
    assert await asyncio.to_thread(_raw_udp, port, response.pack(), 0.3) is None  # no loops
    notify = DNSRecord(DNSHeader(id=10, opcode=4), q=DNSQuestion("cluster.local"))
    reply = DNSRecord.parse(await asyncio.to_thread(_raw_udp, port, notify.pack()))
    assert reply.header.rcode == RCODE.NOTIMP
    future = DNSRecord.question("web.shop.svc.cluster.local")
    future.add_ar(EDNS0(version=1, udp_len=1232))
    reply = DNSRecord.parse(await asyncio.to_thread(_raw_udp, port, future.pack()))
    assert reply.header.rcode == 0 and (reply.ar[0].ttl >> 24) == 1  # BADVERS (16)

    def flood() -> int:
        """Thousands of queries, garbage among them, without reading the answers."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(3000):
                q = DNSRecord.question(f"n{i}.shop.svc.cluster.local") if i % 3 else \
                    None
                data = bytes(q.pack()) if q is not None else _header(i, 1) + b"\x07"
                s.sendto(data[: 12 + i % 40], ("127.0.0.1", port))
        return i
    await asyncio.to_thread(flood)
    # TCP: a connection that sends half a message, one that sends garbage, then a real one
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(struct.pack("!H", 300) + b"\x00" * 10)
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(struct.pack("!H", 5) + b"\x00" * 5)
    await writer.drain()
    assert await reader.read() == b""  # dropped, connection closed
    writer.close()
    assert rdata(await ask(port, "web.shop.svc.cluster.local", tcp=True)) == ["10.96.0.20"]
    # what the kernel dropped from the flood is lost; a stub resolver asks again
    for attempt in range(5):
        try:
            reply = await ask(port, "web.shop.svc.cluster.local", timeout=1)
            break
        except TimeoutError:
            continue
    assert rdata(reply) == ["10.96.0.20"]
    assert server.dropped > 0
