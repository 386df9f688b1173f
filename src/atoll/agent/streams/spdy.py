"""SPDY/3.1 framing, the server side of a session: what `kubectl port-forward` speaks.

kubectl (client-go) multiplexes port-forward connections as SPDY streams, over
a websocket (subprotocol ``SPDY/3.1+portforward.k8s.io``, each binary message a
piece of the byte stream) or a raw upgraded connection.  This module turns such
a byte stream into stream events and writes frames back; ``portforward.py``
gives the streams their meaning.  Header blocks are zlib streams (one per
direction for the whole session) primed with the dictionary of the SPDY/3
draft.  Flow-control windows are not enforced: client-go's spdystream does not
either.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from dataclasses import dataclass, field
from typing import Awaitable, Callable

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = \
    1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_CANCEL = 1, 5
MAX_DATA = 1 << 16

#: the SPDY/3 header compression dictionary: these names, each with a 4-byte length...
_DICTIONARY_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base "
    "content-encoding content-language content-length content-location content-md5 "
    "content-range content-type date etag expect expires from host if-match if-modified-since "
    "if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
    "proxy-authenticate proxy-authorization range referer retry-after server te trailer "
    "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
).split() + ["200 OK"] + "version HTTP/1.1 url public set-cookie keep-alive origin".split()
#: ...then this text as it is
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 "
    "Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 "
    "Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, "
    "Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICTIONARY_WORDS) + \
    _DICTIONARY_TAIL.encode()


class ProtocolError(Exception):
    pass


def encode_headers(headers: dict[str, str]) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        n, v = name.lower().encode(), value.encode()
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


def decode_headers(block: bytes) -> dict[str, str]:
    try:
        (count,), pos = struct.unpack_from(">I", block), 4
        headers: dict[str, str] = {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", block, pos)
            name = block[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
            (v,) = struct.unpack_from(">I", block, pos)
            headers[name] = block[pos + 4:pos + 4 + v].decode()
            pos += 4 + v
        return headers
    except (struct.error, UnicodeDecodeError) as e:
        raise ProtocolError(f"bad header block: {e}") from None


@dataclass
class Stream:
    id: int
    headers: dict[str, str]
    #: data from the peer; None once it half-closed (FIN) or reset
    inbound: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    closed_here: bool = False


class Session:
    """One SPDY session over a byte stream: ``feed`` what arrives, ``send`` writes."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]],
                 on_stream: Callable[[Stream], None]) -> None:
        self._send = send
        self.on_stream = on_stream
        self.streams: dict[int, Stream] = {}
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 9,
                                         zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
        self._lock = asyncio.Lock()  # frames are written whole, one at a time

    # -- reading ---------------------------------------------------------------------------------
    async def feed(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 8:
            length = int.from_bytes(self._buffer[5:8], "big")
            if len(self._buffer) < 8 + length:
                return
            head, body = bytes(self._buffer[:8]), bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            await self._frame(head, body)

    async def _frame(self, head: bytes, body: bytes) -> None:
        flags = head[4]
        if head[0] & 0x80 == 0:  # data frame
            stream = self.streams.get(int.from_bytes(head[:4], "big") & 0x7FFFFFFF)
            if stream is not None:
                if body:
                    stream.inbound.put_nowait(body)
                if flags & FLAG_FIN:
                    stream.inbound.put_nowait(None)
            return
        kind = int.from_bytes(head[2:4], "big")
        if kind == SYN_STREAM:
            sid = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
            try:
                block = self._inflate.decompress(body[10:])
            except zlib.error as e:
                raise ProtocolError(f"header block does not inflate: {e}") from None
            stream = Stream(sid, decode_headers(block))
            self.streams[sid] = stream
            await self.reply(stream)
            if flags & FLAG_FIN:
                stream.inbound.put_nowait(None)
            self.on_stream(stream)
        elif kind == RST_STREAM:
            stream = self.streams.pop(int.from_bytes(body[:4], "big") & 0x7FFFFFFF, None)
            if stream is not None:
                stream.inbound.put_nowait(None)
        elif kind == PING:
            await self._write(self._control(PING, 0, body[:4]))
        elif kind == GOAWAY:
            for stream in self.streams.values():
                stream.inbound.put_nowait(None)
        elif kind == HEADERS:
            self._inflate.decompress(body[4:])  # keep the shared zlib stream in step
        # SETTINGS, WINDOW_UPDATE: nothing to do (no flow control, see above)

    # -- writing ---------------------------------------------------------------------------------
    @staticmethod
    def _control(kind: int, flags: int, body: bytes) -> bytes:
        return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(body)) + body

    async def _write(self, frame: bytes) -> None:
        async with self._lock:
            await self._send(frame)

    async def reply(self, stream: Stream) -> None:
        async with self._lock:
            block = self._deflate.compress(encode_headers({})) + \
                self._deflate.flush(zlib.Z_SYNC_FLUSH)
            await self._send(self._control(SYN_REPLY, 0, struct.pack(">I", stream.id) + block))

    async def data(self, stream: Stream, payload: bytes, fin: bool = False) -> None:
        if stream.closed_here:
            return
        for i in range(0, max(len(payload), 1), MAX_DATA):
            chunk = payload[i:i + MAX_DATA]
            last = fin and i + MAX_DATA >= len(payload)
            await self._write(struct.pack(">II", stream.id & 0x7FFFFFFF,
                                          ((FLAG_FIN if last else 0) << 24) | len(chunk)) + chunk)
        if fin:
            stream.closed_here = True

    async def close(self, stream: Stream) -> None:
        await self.data(stream, b"", fin=True)

    async def reset(self, stream: Stream, status: int = RST_CANCEL) -> None:
        stream.closed_here = True
        self.streams.pop(stream.id, None)
        await self._write(self._control(RST_STREAM, 0, struct.pack(">II", stream.id, status)))

    async def goaway(self) -> None:
        last = max(self.streams, default=0)
        await self._write(self._control(GOAWAY, 0, struct.pack(">II", last, 0)))
