"""A channel reconnecting to a running guest agent (hello mode), a socketpair playing the guest:
it skips what was meant for an earlier host, learns the guest's containers, holds later frames
until they are adopted, and acknowledges exits."""

from __future__ import annotations

import asyncio
import socket
import struct

from atoll.agent.podvm.channel import Channel, GuestProc
from tests.agent.test_podvm_channel import frame, send
from tests.agent.test_podvm_portforward import recv_frame


async def hello_pair() -> tuple[Channel, socket.socket]:
    host, guest = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=host)
    guest.setblocking(False)
    return Channel(reader, writer, name="test", hello=True), guest


async def test_the_answer_to_the_hello_is_found_after_leftovers_and_lists_containers() -> None:
    channel, guest = await hello_pair()
    kind, nonce, _ = await recv_frame(guest)
    assert kind == b"Q" and nonce == channel.nonce != 0
    answer = (b"6.1.0 boot\n3 41 running\n4 42 exited 7\n5 43 signaled 9\nbogus line\n"
              b"next 9")
    out: list[bytes] = []
    await send(guest, b"\x00\x01tail of a frame for an earlier host" + struct.pack(">I", 5)
               + frame(b"Y", 0, b"6.1.0 boot")            # the unasked greeting: skipped
               + frame(b"Y", channel.nonce, answer)
               + frame(b"O", 3, b"kept for you\n") + frame(b"W", 3, b"exited 0"))
    assert await asyncio.wait_for(channel.ready, 5) == "6.1.0 boot"
    assert channel.guest_procs == [GuestProc(3, 41, None), GuestProc(4, 42, (7, 0)),
                                   GuestProc(5, 43, (137, 9))]
    await asyncio.sleep(0.2)  # not resumed yet: the output waits for its process
    assert channel.dropped == 1  # only the bogus line
    running = channel.adopt(channel.guest_procs[0], lambda _s, data: out.append(data))
    done = channel.adopt(channel.guest_procs[1])
    assert done.exited.result() == (7, 0) and running.started.result() == 41
    channel.resume()
    assert await asyncio.wait_for(running.exited, 5) == (0, 0)
    assert out == [b"kept for you\n"]
    acks = {(await recv_frame(guest))[:2] for _ in range(2)}
    assert acks == {(b"Z", 4), (b"Z", 3)}  # each exit received is acknowledged
    assert channel.process().id == 9  # above every id the guest holds
    channel.close("done")
    guest.close()


async def test_a_guest_that_never_answers_is_asked_again_and_flooding_ends_the_channel(
        monkeypatch) -> None:
    from atoll.agent.podvm import channel as channel_mod
    monkeypatch.setattr(channel_mod, "HELLO_EVERY", 0.1)
    monkeypatch.setattr(channel_mod, "SYNC_LIMIT", 1 << 20)
    channel, guest = await hello_pair()
    for _ in range(2):
        assert (await recv_frame(guest))[0] == b"Q"
    junk = b"Y" * 65536
    for _ in range(20):
        if channel.closed.is_set():
            break
        await send(guest, junk)
    await asyncio.wait_for(channel.closed.wait(), 5)
    assert not channel.ready.done() or channel.ready.exception() is not None
    guest.close()
