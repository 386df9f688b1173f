"""Asking the host's resolvers: one query of our own per question (a fresh ID and source
port, EDNS0 with our buffer size), checked against the question before it is believed,
retried over TCP when the UDP answer comes truncated, the resolvers tried in order within
one deadline, so a dead resolver costs the client a SERVFAIL, never a hang."""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct

from dnslib import EDNS0, RCODE, DNSHeader, DNSQuestion, DNSRecord

log = logging.getLogger(__name__)
#: seconds for all resolvers together: a SERVFAIL reaches clients before their own
#: time-outs (glibc's is 5 s, many stub resolvers' 2 s)
DEADLINE = 1.8
#: upstream questions in flight at most (each holds a socket); beyond, SERVFAIL at once
MAX_CONCURRENT = 1000
#: the UDP payload we advertise upstream (the DNS flag day's size, no fragments)
UDP_PAYLOAD = 1232

Upstream = tuple[str, int]


class Forwarder:
    def __init__(self, upstreams: list[Upstream], deadline: float = DEADLINE,
                 max_concurrent: int = MAX_CONCURRENT) -> None:
        self.upstreams = upstreams
        self.deadline = deadline
        self.max_concurrent = max_concurrent
        self.in_flight = 0
        #: questions sent upstream (UDP and TCP)
        self.sent = 0

    async def query(self, qname: str, qtype: int, qclass: int, do: bool) -> DNSRecord | None:
        """The first resolver's answer to the question, None when none answered in time."""
        if self.in_flight >= self.max_concurrent or not self.upstreams:
            return None
        self.in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + self.deadline
            for i, upstream in enumerate(self.upstreams):
                budget = (end - loop.time()) / (len(self.upstreams) - i)
                if budget <= 0:
                    break
                try:
                    async with asyncio.timeout(budget):
                        reply = await self._ask(upstream, qname, qtype, qclass, do)
                except (TimeoutError, OSError, ValueError) as e:
                    log.debug("resolver %s:%d on %s: %r", *upstream, qname, e)
                    continue
                if reply is not None:
                    return reply
            return None
        finally:
            self.in_flight -= 1

    async def _ask(self, upstream: Upstream, qname: str, qtype: int, qclass: int,
                   do: bool) -> DNSRecord | None:
        query = _question(qname, qtype, qclass, do, edns=True)
        reply = await self._udp(upstream, query)
        if reply.header.rcode == RCODE.FORMERR and not reply.ar:  # no EDNS there: plain
            query = _question(qname, qtype, qclass, do, edns=False)
            reply = await self._udp(upstream, query)
        if reply.header.tc:
            reply = await self._tcp(upstream, query)
        return reply

    async def _udp(self, upstream: Upstream, query: DNSRecord) -> DNSRecord:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[DNSRecord] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Reply(future, query), remote_addr=upstream)
        try:
            self.sent += 1
            transport.sendto(query.pack())
            return await future
        finally:
            transport.close()

    async def _tcp(self, upstream: Upstream, query: DNSRecord) -> DNSRecord:
        reader, writer = await asyncio.open_connection(*upstream)
        try:
            self.sent += 1
            data = query.pack()
            writer.write(struct.pack("!H", len(data)) + data)
            await writer.drain()
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            reply = DNSRecord.parse(await reader.readexactly(size))
            if not _matches(query, reply):
                raise ValueError("a TCP answer to another question")
            return reply
        except asyncio.IncompleteReadError as e:
            raise OSError("resolver closed the connection") from e
        finally:
            writer.close()


def _question(qname: str, qtype: int, qclass: int, do: bool, edns: bool) -> DNSRecord:
    record = DNSRecord(DNSHeader(id=secrets.randbits(16), rd=1),
                       q=DNSQuestion(qname, qtype, qclass))
    if edns:
        record.add_ar(EDNS0(udp_len=UDP_PAYLOAD, flags="do" if do else ""))
    return record


def _matches(query: DNSRecord, reply: DNSRecord) -> bool:
    """``reply`` answers ``query``: same ID, a response, the same question (any case)."""
    if reply.header.id != query.header.id or not reply.header.qr or len(reply.questions) != 1:
        return False
    q, r = query.questions[0], reply.questions[0]
    return (str(r.qname).lower() == str(q.qname).lower() and r.qtype == q.qtype
            and r.qclass == q.qclass)


class _Reply(asyncio.DatagramProtocol):
    """The first datagram that answers the question; anything else (late, spoofed,
    garbage) is ignored."""

    def __init__(self, future: asyncio.Future[DNSRecord], query: DNSRecord) -> None:
        self.future, self.query = future, query

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.future.done():
            return
        try:
            reply = DNSRecord.parse(data)
        except Exception:  # dnslib raises several kinds on garbage
            return
        if _matches(self.query, reply):
            self.future.set_result(reply)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: no resolver
        if not self.future.done():
            self.future.set_exception(OSError(str(exc)))
