"""The host end of the pod-VM agent channel against a hostile guest (a socketpair plays it)."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from atoll.agent.podvm.channel import HEADER, MAX_DATA, Channel, ChannelClosed


async def pair() -> tuple[Channel, socket.socket]:
    host, guest = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=host)
    guest.setblocking(False)
    return Channel(reader, writer, name="test"), guest


def frame(kind: bytes, pid: int, data: bytes = b"") -> bytes:
    return HEADER.pack(len(data), kind, pid) + data


async def send(guest: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(guest, data)


async def test_ready_output_and_exit_are_delivered() -> None:
    channel, guest = await pair()
    out: list[tuple[str, bytes]] = []
    proc = channel.process(lambda stream, data: out.append((stream, data)))
    await send(guest, frame(b"Y", 0, b"6.1.0 boot") + frame(b"S", proc.id, b"42")
               + frame(b"O", proc.id, b"hello\n") + frame(b"E", proc.id, b"oops\n")
               + frame(b"W", proc.id, b"signaled 15"))
    assert await asyncio.wait_for(channel.ready, 5) == "6.1.0 boot"
    assert await asyncio.wait_for(proc.started, 5) == 42
    assert await asyncio.wait_for(proc.exited, 5) == (143, 15)
    assert out == [("stdout", b"hello\n"), ("stderr", b"oops\n")]
    channel.close("done")
    guest.close()


async def test_garbage_frames_are_dropped_and_the_channel_goes_on() -> None:
    channel, guest = await pair()
    proc = channel.process()
    await send(guest, frame(b"Z", 7, b"x" * 100)            # unknown type
               + frame(b"O", 999, b"not ours")              # unknown process
               + frame(b"S", proc.id, b"-1; rm -rf /")      # not a pid
               + frame(b"W", proc.id, b"exited lots")       # not an exit
               + frame(b"S", proc.id, b"7") + frame(b"S", proc.id, b"8")  # twice
               + frame(b"W", proc.id, b"exited 3") + frame(b"W", proc.id, b"exited 4"))
    assert await asyncio.wait_for(proc.exited, 5) == (3, 0)
    assert proc.started.result() == 7
    assert channel.dropped >= 5 and not channel.closed.is_set()
    channel.close("done")
    guest.close()


async def test_an_oversized_frame_closes_the_channel_and_fails_its_processes() -> None:
    channel, guest = await pair()
    proc = channel.process()
    await send(guest, struct.pack(">IcI", MAX_DATA + 1, b"O", proc.id))
    await asyncio.wait_for(channel.closed.wait(), 5)
    assert "oversized" in channel.close_reason
    with pytest.raises(ChannelClosed):
        await proc.exited
    with pytest.raises(ChannelClosed):
        channel.process()
    guest.close()


async def test_a_flood_does_not_starve_the_event_loop() -> None:
    channel, guest = await pair()
    proc = channel.process(lambda stream, data: None)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def flood() -> None:
        chunk = frame(b"O", proc.id, b"y" * 4096) * 64
        for _ in range(100):  # 26 MB of output frames
            await send(guest, chunk)
    task = asyncio.create_task(ticker())
    await asyncio.wait_for(flood(), 60)
    stop.set()
    await task
    assert ticks > 100 and not channel.closed.is_set()
    channel.close("done")
    guest.close()


async def test_a_guest_stalled_mid_frame_blocks_nothing_and_a_closed_one_ends_it() -> None:
    channel, guest = await pair()
    proc = channel.process()
    await send(guest, HEADER.pack(100, b"O", proc.id) + b"only part")
    await asyncio.sleep(0.05)
    assert not channel.closed.is_set() and not proc.exited.done()  # the loop is free meanwhile
    guest.close()
    await asyncio.wait_for(channel.closed.wait(), 5)
    with pytest.raises(ChannelClosed):
        await proc.exited


async def test_a_guest_that_stops_reading_makes_writes_time_out(monkeypatch) -> None:
    monkeypatch.setattr("atoll.agent.podvm.channel.WRITE_TIMEOUT", 0.5)
    channel, guest = await pair()
    with pytest.raises(ChannelClosed):
        for _ in range(10000):  # the socket buffers fill, then drain() waits and times out
            await channel.send(b"R", 1, b"a" * 60000)
    assert channel.closed.is_set()
    guest.close()
