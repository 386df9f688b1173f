"""A DNS server on the host's pod-facing address (UDP and TCP port 53): cluster names (and the
reverse names of cluster addresses) from ``records``, every other name forwarded to the
host's own resolvers through a cache (``cache``), concurrent identical questions sharing one
upstream query.

Replies follow the client: its ID and question, an OPT record only when it sent one (with
its DO bit), cut to 512 bytes (or its EDNS0 buffer size) over UDP with TC set, keeping the
answers that fit, so it retries over TCP.  Hostile input never stops the server: garbage and
responses are dropped, a header that parses gets FORMERR/NOTIMP/BADVERS, and queries beyond
what it holds in flight are dropped or (upstream) SERVFAIL'd.

It binds with ``IP_FREEBIND`` (``host.sockets``), before the pod bridge carries the address.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import struct
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any

from dnslib import CLASS, CNAME, NS, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A, DNSHeader, DNSRecord

from atoll.agent.dns import wire
from atoll.agent.dns.cache import Cache, aged, cache_key
from atoll.agent.dns.forward import Forwarder, Upstream
from atoll.agent.dns.records import Answer, ClusterRecords
from atoll.agent.host import sockets

log = logging.getLogger(__name__)
TTL = 5
#: UDP queries waiting on upstream at most (more are dropped: the client retries)
MAX_PENDING = 10_000
#: TCP clients at most, and seconds a TCP connection may sit idle
MAX_TCP_CLIENTS = 256
TCP_IDLE = 10.0
#: CNAMEs followed for a cluster name (ExternalName to ExternalName...)
MAX_CHASE = 8

Result = bytes | None | Awaitable[bytes | None]


def host_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    return [parts[1] for parts in (line.split() for line in lines)
            if len(parts) >= 2 and parts[0] == "nameserver"]


def upstream(spec: str | Upstream) -> Upstream:
    """``host``, ``host:port``, ``[v6]:port`` or a (host, port) pair."""
    if isinstance(spec, tuple):
        return spec
    if spec.startswith("[") and "]:" in spec:
        host, port = spec[1:].split("]:")
        return host, int(port)
    if spec.count(":") == 1:
        host, port = spec.split(":")
        return host, int(port)
    return spec.strip("[]"), 53


class ClusterDNS:
    def __init__(self, records: ClusterRecords, address: str, port: int = 53,
                 upstreams: list[str | Upstream] | None = None) -> None:
        self.records = records
        self.address, self.port = address, port
        wanted = upstreams if upstreams is not None else host_resolvers()
        #: never ourselves: a host whose resolv.conf names this address would loop
        self.forwarder = Forwarder([u for u in map(upstream, wanted)
                                    if u != (address, port)])
        self.cache = Cache()
        #: replies dropped (garbage, responses, too much in flight)
        self.dropped = 0
        self._in_flight: dict[Any, asyncio.Task[DNSRecord | None]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _Udp | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_clients = 0

    @property
    def upstreams(self) -> list[Upstream]:
        return self.forwarder.upstreams

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        udp = sockets.bound(socket.SOCK_DGRAM, self.address, self.port)
        self._udp_protocol = _Udp(self)
        self._udp, _ = await loop.create_datagram_endpoint(lambda: self._udp_protocol, sock=udp)
        tcp = sockets.bound(socket.SOCK_STREAM, self.address, self.port)
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp)
        log.info("cluster DNS on %s:%d (forwarding to %s)", self.address, self.port,
                 ", ".join(f"{h}:{p}" for h, p in self.upstreams) or "nobody")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._udp_protocol is not None:
            for task in list(self._udp_protocol.tasks):
                task.cancel()
        for task in list(self._in_flight.values()):
            task.cancel()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def resolve(self, data: bytes, udp: bool = False) -> bytes | None:
        """The reply to one query message (None: dropped)."""
        result = self.handle(data, udp)
        return await result if inspect.isawaitable(result) else result  # type: ignore[return-value]

    def handle(self, data: bytes, udp: bool) -> Result:
        """The reply now (bytes, or None to drop) or, when it waits on upstream, a coroutine
        giving it: cluster names and cache hits never cost a task."""
        try:
            parsed = wire.parse(data)
            if not isinstance(parsed, DNSRecord):
                if parsed is None:
                    self.dropped += 1
                return parsed
            return self._answer(parsed, udp)
        except Exception:  # a bug must cost one query, not the server
            log.exception("cluster DNS failed on a query")
            return None

    def _answer(self, query: DNSRecord, udp: bool) -> Result:
        limit = wire.size_limit(query) if udp else wire.MAX_TCP_MESSAGE
        q = query.questions[0]
        qname = str(q.qname)
        if self.records.owns(qname):
            if q.qclass not in (CLASS.IN, 255) or q.qtype in (QTYPE.AXFR, QTYPE.IXFR):
                return wire.finish(wire.error(query, RCODE.REFUSED), query, limit)
            reply = wire.header_reply(query)
            target = self._local(reply, qname, QTYPE[q.qtype])
            if target is None:
                return wire.finish(reply, query, limit)
            return self._chase(reply, query, target, limit)
        key = cache_key(qname, q.qtype, q.qclass, wire.dnssec_ok(query))
        hit = self.cache.get(key)
        if hit is not None:
            return wire.finish(wire.for_client(hit, query), query, limit)
        return self._forwarded(key, query, limit)

    def _local(self, reply: DNSRecord, qname: str, qtype: str) -> str | None:
        """Fill ``reply`` for a cluster name; the CNAME's target when it must be followed."""
        answer = self.records.answer(qname, qtype)
        if not answer.exists:
            reply.header.rcode = RCODE.NXDOMAIN
        self._add(reply, qname, answer)
        if len(answer.records) == 1 and answer.records[0][0] == "CNAME" and \
                qtype not in ("CNAME", "ANY"):
            return str(answer.records[0][1])
        return None

    def _add(self, reply: DNSRecord, qname: str, answer: Answer) -> None:
        domain = self.records.domain
        for rtype, value in answer.records:
            reply.add_answer(RR(qname, getattr(QTYPE, rtype), ttl=TTL,
                                rdata=self._rdata(rtype, value)))
        for name, rtype, value in answer.extra:
            reply.add_ar(RR(name, getattr(QTYPE, rtype), ttl=TTL,
                            rdata=self._rdata(rtype, value)))
        if not answer.records:  # NXDOMAIN or NODATA: the zone's SOA tells how long to cache
            reply.add_auth(RR(answer.zone or domain, QTYPE.SOA, ttl=TTL, rdata=self._soa()))

    def _rdata(self, rtype: str, value: Any) -> Any:
        if rtype == "A":
            return A(value)
        if rtype == "CNAME":
            return CNAME(value)
        if rtype == "PTR":
            return PTR(value)
        if rtype == "TXT":
            return TXT(value)
        if rtype == "SRV":
            target, port = value
            return SRV(0, 100, port, target)
        if rtype == "NS":
            return NS(f"ns.dns.{self.records.domain}.")
        return self._soa()

    def _soa(self) -> SOA:
        domain = self.records.domain
        return SOA(f"ns.dns.{domain}.", f"hostmaster.{domain}.", (1, 7200, 1800, 86400, TTL))

    async def _chase(self, reply: DNSRecord, query: DNSRecord, target: str,
                     limit: int) -> bytes | None:
        """An ExternalName's CNAME with its target's records, as CoreDNS answers it."""
        q = query.questions[0]
        for _ in range(MAX_CHASE):
            if self.records.owns(target):
                step = DNSRecord(DNSHeader())
                following = self._local(step, target, QTYPE[q.qtype])
            else:
                key = cache_key(target, q.qtype, q.qclass, wire.dnssec_ok(query))
                found = self.cache.get(key)
                step = found if found is not None else await self._lookup(key, target)
                following = None
                if step is None or step.header.rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN):
                    break  # the CNAME alone: the client may ask on
            reply.rr.extend(step.rr)
            reply.header.rcode = step.header.rcode
            if following is None:
                if not step.rr:  # NXDOMAIN or NODATA at the end of the chain: its SOA
                    reply.auth = list(step.auth)
                break
            target = following
        return wire.finish(reply, query, limit)

    async def _forwarded(self, key: Any, query: DNSRecord, limit: int) -> bytes | None:
        found = await self._lookup(key, str(query.questions[0].qname))
        if found is None:
            return wire.finish(wire.error(query, RCODE.SERVFAIL), query, limit)
        return wire.finish(wire.for_client(found, query), query, limit)

    async def _lookup(self, key: Any, qname: str) -> DNSRecord | None:
        """The upstream answer to ``key``'s question (a copy of its own): one query in flight
        per question, whoever else asks meanwhile waits on it."""
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(key, qname))
            self._in_flight[key] = task
            task.add_done_callback(lambda t: self._in_flight.pop(key, None)
                                   if self._in_flight.get(key) is t else None)
        found = await asyncio.shield(task)
        return aged(found, 0) if found is not None else None

    async def _fetch(self, key: Any, qname: str) -> DNSRecord | None:
        _, qtype, qclass, do = key
        try:
            found = await self.forwarder.query(qname, qtype, qclass, do)
        except Exception:
            log.exception("forwarding %s failed", qname)
            return None
        if found is not None:
            self.cache.put(key, found)
        return found

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_clients >= MAX_TCP_CLIENTS:
            writer.close()
            return
        self._tcp_clients += 1
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE):
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    data = await reader.readexactly(size)
                result = self.handle(data, udp=False)
                reply = await result if inspect.isawaitable(result) else result
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)  # type: ignore[arg-type]
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except Exception:
            log.exception("cluster DNS TCP connection failed")
        finally:
            self._tcp_clients -= 1
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: ClusterDNS) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        result = self.server.handle(data, udp=True)
        if isinstance(result, bytes):
            self._send(result, addr)
        elif result is not None:
            if len(self.tasks) >= MAX_PENDING:
                self.server.dropped += 1
                if isinstance(result, Coroutine):
                    result.close()
                return
            task = asyncio.get_running_loop().create_task(self._later(result, addr))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _later(self, result: Awaitable[bytes | None], addr: tuple[str, int]) -> None:
        try:
            reply = await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cluster DNS failed on a query")
            return
        if reply is not None:
            self._send(reply, addr)

    def _send(self, reply: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP from a gone client: nothing to do
        log.debug("cluster DNS UDP: %s", exc)
