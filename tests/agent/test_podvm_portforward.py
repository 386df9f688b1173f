"""Port-forwarding into pod-VMs: connections the guest agent dials to the guest's loopback.

The host side against a hostile guest (a socketpair plays it), then the real agent in a real
QEMU (TCG here) reaching a listener bound to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest

from atoll.agent.podvm import tcp
from atoll.agent.podvm.channel import HEADER, Channel
from atoll.agent.podvm.runtime import PodVMRuntime
from tests.agent.test_podvm_runtime import Image, container, qemu_running, spec

needs_qemu = pytest.mark.skipif(
    not (shutil.which("qemu-system-x86_64") and shutil.which("gcc")
         and os.path.exists("/usr/lib/qemu/virtiofsd") and os.geteuid() == 0),
    reason="needs root, QEMU with virtiofsd and gcc")


async def pair() -> tuple[Channel, socket.socket]:
    host, guest = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=host)
    guest.setblocking(False)
    return Channel(reader, writer, name="test"), guest


def frame(kind: bytes, sid: int, data: bytes = b"") -> bytes:
    return HEADER.pack(len(data), kind, sid) + data


async def recv_frame(guest: socket.socket) -> tuple[bytes, int, bytes]:
    loop = asyncio.get_running_loop()

    async def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = await loop.sock_recv(guest, n - len(buf))
            assert chunk, "the host closed the channel"
            buf += chunk
        return buf
    size, kind, sid = HEADER.unpack(await asyncio.wait_for(exactly(HEADER.size), 5))
    return kind, sid, await exactly(size) if size else b""


async def open_stream(channel: Channel, guest: socket.socket, answer: bytes,
                      data: bytes = b"") -> tuple[asyncio.Task, int]:
    opening = asyncio.create_task(channel.open_tcp(8080))
    kind, sid, port = await recv_frame(guest)
    assert (kind, port) == (b"T", b"8080")
    await asyncio.get_running_loop().sock_sendall(guest, frame(answer, sid, data))
    return opening, sid


async def test_streams_carry_bytes_both_ways_within_their_windows() -> None:
    channel, guest = await pair()
    loop = asyncio.get_running_loop()
    try:
        opening, sid = await open_stream(channel, guest, b"U", b"111 Connection refused")
        with pytest.raises(OSError, match="Connection refused") as refused:
            await opening
        assert refused.value.errno == 111
        opening, sid = await open_stream(channel, guest, b"N")
        reader, writer = await opening
        # host to guest: frames of at most CHUNK, never more than WINDOW unacknowledged
        writer.write(b"x" * (tcp.WINDOW + 100))
        drained = asyncio.create_task(writer.drain())
        got = 0
        while got < tcp.WINDOW:
            kind, fsid, data = await recv_frame(guest)
            assert (kind, fsid) == (b"D", sid) and len(data) <= tcp.CHUNK
            got += len(data)
        assert got == tcp.WINDOW
        await drained  # what is left is under the high-water mark
        await loop.sock_sendall(guest, frame(b"A", sid, b"100"))
        assert await recv_frame(guest) == (b"D", sid, b"x" * 100)
        writer.write_eof()
        assert await recv_frame(guest) == (b"H", sid, b"")
        # guest to host: each read is acknowledged, EOF on the guest's half-close
        await loop.sock_sendall(guest, frame(b"D", sid, b"hello") + frame(b"H", sid))
        assert await reader.read(100) == b"hello"
        assert await recv_frame(guest) == (b"A", sid, b"5")
        assert await reader.read(100) == b""
        await loop.sock_sendall(guest, frame(b"C", sid))
        # frames for streams that are gone, or nonsense acks, are dropped; the channel goes on
        opening, sid2 = await open_stream(channel, guest, b"N")
        await opening
        before = channel.dropped
        await loop.sock_sendall(guest, frame(b"D", 999, b"?") + frame(b"A", sid2, b"lots"))
        await asyncio.sleep(0)
        for _ in range(50):
            if channel.dropped >= before + 2:
                break
            await asyncio.sleep(0.05)
        assert channel.dropped == before + 2 and not channel.closed.is_set()
    finally:
        channel.close("done")
        guest.close()


async def test_a_guest_overrunning_its_window_loses_the_stream_not_the_channel() -> None:
    channel, guest = await pair()
    loop = asyncio.get_running_loop()
    try:
        opening, sid = await open_stream(channel, guest, b"N")
        reader, _ = await opening
        flood = frame(b"D", sid, b"y" * tcp.CHUNK)
        await loop.sock_sendall(guest, flood * (tcp.WINDOW // tcp.CHUNK + 1))
        assert await recv_frame(guest) == (b"C", sid, b"")  # reset, told to the guest
        with pytest.raises(ConnectionResetError):
            while await reader.read(65536):
                pass
        assert not channel.closed.is_set()
        # a channel that closes fails the streams still open
        opening, sid = await open_stream(channel, guest, b"N")
        reader, writer = await opening
        channel.close("the guest went away")
        with pytest.raises(ConnectionResetError):
            await reader.read(10)
        with pytest.raises(ConnectionResetError):
            writer.write(b"late")
        with pytest.raises(OSError):
            await channel.open_tcp(80)
    finally:
        channel.close("done")
        guest.close()


@pytest.fixture
def net_image(tmp_path: Path) -> Image:
    layer = tmp_path / "layer"
    (layer / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", layer / "bin" / "busybox")
    for applet in ("sh", "echo", "cat", "sleep", "mkdir", "httpd", "nc", "seq"):
        (layer / "bin" / applet).symlink_to("busybox")
    return Image([layer])


async def connect_when_listening(runtime: PodVMRuntime, uid: str, port: int):
    deadline = time.monotonic() + 60
    while True:
        try:
            return await runtime.open_port(uid, port)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)  # the container's listener is still starting


async def http_get(runtime: PodVMRuntime, uid: str, path: str) -> bytes:
    reader, writer = await connect_when_listening(runtime, uid, 8080)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    body = b""
    while chunk := await asyncio.wait_for(reader.read(65536), 60):
        body += chunk
    writer.close()
    return body


@needs_qemu
async def test_port_forward_reaches_a_loopback_listener_in_the_guest(
        tmp_path: Path, net_image: Image) -> None:
    pods, uid = tmp_path / "pods", str(uuid.uuid4())
    (pods / uid).mkdir(parents=True)
    (pods / uid / "admitted.json").write_text(json.dumps({"uid": uid, "spec": {}}))
    runtime = PodVMRuntime(tmp_path / "podvm", accel="tcg")
    try:
        web = container(pods, uid, "web")
        await runtime.run(web, net_image, spec(
            "sh", "-c", "mkdir -p /www; echo served-on-guest-loopback > /www/index.html; "
            "exec httpd -f -p 127.0.0.1:8080 -h /www"))
        echo = container(pods, uid, "echo")
        await runtime.run(echo, net_image, spec(
            "sh", "-c", "while :; do nc -l -p 8081 -e cat; done"))
        page = await http_get(runtime, uid, "/index.html")
        assert page.startswith(b"HTTP/1.") and b"served-on-guest-loopback" in page
        # many streams at once
        pages = await asyncio.gather(*(http_get(runtime, uid, "/index.html") for _ in range(8)))
        assert all(b"served-on-guest-loopback" in p for p in pages)
        # a large echo through `cat`: windows both ways, then our half-close ends it
        reader, writer = await connect_when_listening(runtime, uid, 8081)
        payload = os.urandom(1 << 20)

        async def upload() -> None:
            for i in range(0, len(payload), 50000):
                writer.write(payload[i:i + 50000])
                await writer.drain()
            writer.write_eof()
        sending = asyncio.create_task(upload())
        back = bytearray()
        while chunk := await asyncio.wait_for(reader.read(65536), 120):
            back += chunk
        await sending
        assert bytes(back) == payload
        writer.close()
        # nothing listens on 9: refused, as the guest says
        with pytest.raises(ConnectionRefusedError, match="refused"):
            await runtime.open_port(uid, 9)
        assert runtime.vms[uid].alive
        for meta in (web, echo):
            await runtime.stop(meta.id, 0)
            await runtime.remove(meta.id)
        with pytest.raises(ConnectionRefusedError):
            await runtime.open_port(uid, 8080)
    finally:
        await runtime.close()
    assert not qemu_running(uid)
