"""DNS messages on the wire, as a server owes them to its clients: what of a datagram is a
query (garbage and responses dropped, a header that parses answered FORMERR, NOTIMP or
BADVERS), reply skeletons with the client's ID, question and RD bit, an OPT record only for
a client that sent one (its DO bit copied), and the cut to the client's size with TC set."""

from __future__ import annotations

from dnslib import EDNS0, OPCODE, QTYPE, RCODE, RR, DNSBuffer, DNSHeader, DNSRecord

MAX_TCP_MESSAGE = 65535
#: the largest UDP answer we send, whatever buffer a client claims
MAX_UDP_PAYLOAD = 4096
#: the buffer size our own OPT record advertises
UDP_PAYLOAD = 1232
BADVERS = 16


def parse(data: bytes) -> DNSRecord | bytes | None:
    """The query, an error reply to send as it is, or None to drop ``data``."""
    if len(data) < 12:
        return None
    header = DNSHeader.parse(DNSBuffer(data[:12]))
    if header.qr:
        return None  # a response: answering it could loop two servers
    if header.opcode != OPCODE.QUERY:
        return error_header(header, RCODE.NOTIMP)
    if header.q != 1:
        return error_header(header, RCODE.FORMERR)
    try:
        query = DNSRecord.parse(data)
    except Exception:  # dnslib raises several kinds on garbage
        return error_header(header, RCODE.FORMERR)
    opts = [rr for rr in query.ar if rr.rtype == QTYPE.OPT]
    if len(opts) > 1:
        return error_header(header, RCODE.FORMERR)
    if opts and (opts[0].ttl >> 16) & 0xFF != 0:  # an EDNS version we do not speak
        reply = error(query, RCODE.NOERROR)
        reply.add_ar(EDNS0(udp_len=UDP_PAYLOAD, ext_rcode=BADVERS >> 4))
        reply.header.rcode = BADVERS & 0xF
        return bytes(reply.pack())
    return query


def error_header(header: DNSHeader, rcode: int) -> bytes:
    return bytes(DNSRecord(DNSHeader(id=header.id, qr=1, opcode=header.opcode, rd=header.rd,
                                     ra=1, rcode=rcode)).pack())


def header_reply(query: DNSRecord) -> DNSRecord:
    """An authoritative reply skeleton: the query's ID, question and RD bit."""
    return DNSRecord(DNSHeader(id=query.header.id, qr=1, aa=1, ra=1, rd=query.header.rd),
                     questions=list(query.questions))


def error(query: DNSRecord, rcode: int) -> DNSRecord:
    reply = DNSRecord(DNSHeader(id=query.header.id, qr=1, ra=1, rd=query.header.rd,
                                rcode=rcode), questions=list(query.questions))
    return reply


def for_client(found: DNSRecord, query: DNSRecord) -> DNSRecord:
    """An upstream answer (a copy) as the reply to this client: its ID, question, RD bit."""
    found.header.id = query.header.id
    found.header.rd = query.header.rd
    found.questions = list(query.questions)
    return found


def opt_record(query: DNSRecord) -> RR | None:
    return next((rr for rr in query.ar if rr.rtype == QTYPE.OPT), None)


def dnssec_ok(query: DNSRecord) -> bool:
    opt = opt_record(query)
    return opt is not None and bool(opt.ttl & 0x8000)


def size_limit(query: DNSRecord) -> int:
    """The UDP reply size the client can take: 512, or its EDNS0 buffer (capped)."""
    opt = opt_record(query)
    return 512 if opt is None else max(512, min(opt.rclass, MAX_UDP_PAYLOAD))


def finish(reply: DNSRecord, query: DNSRecord, limit: int) -> bytes:
    """The wire reply: our OPT record if (and only if) the client sent one, cut to ``limit``
    bytes with TC set, keeping as many answers as fit (stub resolvers that never retry over
    TCP, busybox's, still get some)."""
    reply.ar = [rr for rr in reply.ar if rr.rtype != QTYPE.OPT]
    if opt_record(query) is not None:
        reply.add_ar(EDNS0(udp_len=UDP_PAYLOAD, flags="do" if dnssec_ok(query) else ""))
    data = bytes(reply.pack())
    if len(data) <= limit:
        return data
    answers = list(reply.rr)
    reply.header.tc = 1
    reply.auth = []
    reply.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    low, high = 0, len(answers)  # the most answers that fit
    while low < high:
        middle = (low + high + 1) // 2
        reply.rr = answers[:middle]
        if len(reply.pack()) <= limit:
            low = middle
        else:
            high = middle - 1
    reply.rr = answers[:low]
    return bytes(reply.pack())
