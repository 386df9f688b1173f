"""SPDY/3.1 framing as kubectl's spdystream writes it."""

from __future__ import annotations

import asyncio
import struct
import zlib

from atoll.agent.streams import spdy


def syn_stream(deflate, sid: int, headers: dict[str, str], fin: bool = False) -> bytes:
    block = deflate.compress(spdy.encode_headers(headers)) + deflate.flush(zlib.Z_SYNC_FLUSH)
    body = struct.pack(">IIBB", sid, 0, 0, 0) + block
    return struct.pack(">HHI", 0x8003, spdy.SYN_STREAM, ((1 if fin else 0) << 24) | len(body)) \
        + body


def test_streams_data_ping_and_replies() -> None:
    async def run() -> None:
        sent: list[bytes] = []
        streams: list[spdy.Stream] = []

        async def send(frame: bytes) -> None:
            sent.append(frame)
        session = spdy.Session(send, streams.append)
        deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 9,
                                   zlib.Z_DEFAULT_STRATEGY, spdy.DICTIONARY)
        wire = syn_stream(deflate, 1, {"streamtype": "error", "port": "80", "requestid": "0"}) + \
            syn_stream(deflate, 3, {"streamtype": "data", "port": "80", "requestid": "0"}) + \
            struct.pack(">II", 3, 5) + b"hello" + struct.pack(">II", 3, 1 << 24) + \
            struct.pack(">HHII", 0x8003, spdy.PING, 4, 7)
        for i in range(0, len(wire), 7):  # the byte stream arrives in arbitrary pieces
            await session.feed(wire[i:i + 7])
        assert [s.headers["streamtype"] for s in streams] == ["error", "data"]
        assert await streams[1].inbound.get() == b"hello"
        assert await streams[1].inbound.get() is None  # FIN
        kinds = [struct.unpack(">HH", f[:4])[1] for f in sent]
        assert kinds == [spdy.SYN_REPLY, spdy.SYN_REPLY, spdy.PING]
        inflate = zlib.decompressobj(zdict=spdy.DICTIONARY)
        assert spdy.decode_headers(inflate.decompress(sent[0][12:])) == {}
        await session.data(streams[1], b"x" * 70000, fin=True)
        frames = sent[3:]
        assert [len(f) - 8 for f in frames] == [65536, 70000 - 65536]
        assert frames[-1][4] == spdy.FLAG_FIN and frames[0][4] == 0
    asyncio.run(run())


def test_dictionary_is_the_spdy3_one() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options")
    assert spdy.DICTIONARY.endswith(b"enq=0.")
