"""A DNS server on the host's pod-facing address (UDP and TCP port 53): cluster names from
``records``, every other name forwarded to the host's own resolvers.

It binds with ``IP_FREEBIND`` (``host.sockets``), before the pod bridge carries the address.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from pathlib import Path

from dnslib import CNAME, QTYPE, RCODE, RR, SOA, SRV, TXT, A, DNSRecord

from atoll.agent.dns.records import ClusterRecords
from atoll.agent.host import sockets

log = logging.getLogger(__name__)
TTL = 5
FORWARD_TIMEOUT = 2.0
MAX_TCP_MESSAGE = 65535


def host_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    return [parts[1] for parts in (line.split() for line in lines)
            if len(parts) >= 2 and parts[0] == "nameserver"]


class ClusterDNS:
    def __init__(self, records: ClusterRecords, address: str, port: int = 53,
                 upstreams: list[str] | None = None) -> None:
        self.records = records
        self.address, self.port = address, port
        self.upstreams = upstreams if upstreams is not None else host_resolvers()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        udp = sockets.bound(socket.SOCK_DGRAM, self.address, self.port)
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp)
        tcp = sockets.bound(socket.SOCK_STREAM, self.address, self.port)
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp)
        log.info("cluster DNS on %s:%d (forwarding to %s)", self.address, self.port,
                 ", ".join(self.upstreams) or "nobody")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def resolve(self, data: bytes) -> bytes | None:
        """The reply to one query message (None: not a query we can parse)."""
        try:
            query = DNSRecord.parse(data)
        except Exception:  # dnslib raises several kinds on garbage
            return None
        if not query.questions:
            return None
        q = query.questions[0]
        qname = str(q.qname)
        if self.records.owns(qname):
            return self._local(query, qname, QTYPE[q.qtype]).pack()
        return await self._forward(query, data)

    def _local(self, query: DNSRecord, qname: str, qtype: str) -> DNSRecord:
        reply = query.reply()  # authoritative, recursion available
        answer = self.records.answer(qname, qtype)
        if not answer.exists:
            reply.header.rcode = RCODE.NXDOMAIN
        for rtype, value in answer.records:
            if rtype == "A":
                reply.add_answer(RR(qname, QTYPE.A, rdata=A(value), ttl=TTL))
            elif rtype == "CNAME":
                reply.add_answer(RR(qname, QTYPE.CNAME, rdata=CNAME(value), ttl=TTL))
            elif rtype == "TXT":
                reply.add_answer(RR(qname, QTYPE.TXT, rdata=TXT(value), ttl=TTL))
            elif rtype == "SRV":
                target, port = value
                reply.add_answer(RR(qname, QTYPE.SRV, rdata=SRV(0, 100, port, target), ttl=TTL))
        if not answer.records:  # NXDOMAIN or NODATA: the zone's SOA tells how long to cache
            domain = self.records.domain
            reply.add_auth(RR(domain, QTYPE.SOA, ttl=TTL, rdata=SOA(
                f"ns.dns.{domain}", f"hostmaster.{domain}", (1, 7200, 1800, 86400, TTL))))
        return reply

    async def _forward(self, query: DNSRecord, data: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        for upstream in self.upstreams:
            future: asyncio.Future[bytes] = loop.create_future()
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Reply(future), remote_addr=(upstream, 53))
            except OSError:
                continue
            try:
                transport.sendto(data)
                async with asyncio.timeout(FORWARD_TIMEOUT):
                    return await future
            except TimeoutError:
                continue
            finally:
                transport.close()
        reply = query.reply()
        reply.header.rcode = RCODE.SERVFAIL
        return reply.pack()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                reply = await self.resolve(await reader.readexactly(size))
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: ClusterDNS) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self.server.resolve(data)
        if reply is not None and self.transport is not None:
            if len(reply) > 512 and not DNSRecord.parse(data).ar:  # no EDNS: truncate
                record = DNSRecord.parse(reply)
                record.rr, record.header.tc = [], 1
                reply = record.pack()
            self.transport.sendto(reply, addr)


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, future: asyncio.Future[bytes]) -> None:
        self.future = future

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.future.done():
            self.future.set_result(data)
