"""`kubectl port-forward`: TCP connections from the user's machine to ports inside a pod.

Each forwarded connection is a pair of SPDY streams from kubectl with the same
``requestID``: ``streamType: data`` carries the bytes, ``streamType: error``
carries a message back if the port cannot be reached.  As kubelet does, the
connection is made inside the pod's network namespace to ``localhost:<port>``,
so ports a pod binds only to loopback work too.  One connection failing does
not end the session; the session ends when kubectl goes away.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import os
import socket
from typing import Any

from aiohttp import WSMsgType, web

from atoll.agent.streams.spdy import ProtocolError, Session, Stream

log = logging.getLogger(__name__)
PROTOCOL = "SPDY/3.1+portforward.k8s.io"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
#: one thread for entering namespaces: setns changes only the calling thread, and a
#: thread of its own is never caught half-way by other work
_netns_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                      thread_name_prefix="netns-dial")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _dial_in_netns(netns: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to 127.0.0.1:port made inside ``netns`` (a socket keeps the
    namespace it was created in)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns, os.O_RDONLY)
    try:
        _setns(target)
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
    sock.settimeout(None)
    return sock


class PortForwarder:
    def __init__(self, ws: web.WebSocketResponse, netns: str | None, pod_ip: str | None,
                 pod: str) -> None:
        self.ws = ws
        self.netns = netns
        self.pod_ip = pod_ip
        self.pod = pod
        self.session = Session(self._send, self._on_stream)
        self.pending: dict[str, dict[str, Stream]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def _send(self, frame: bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(frame)

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY:
                    await self.session.feed(msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        except ProtocolError as e:
            log.warning("port-forward to %s: %s", self.pod, e)
        finally:
            for t in list(self.tasks):
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def _on_stream(self, stream: Stream) -> None:
        headers = {k.lower(): v for k, v in stream.headers.items()}
        request = headers.get("requestid", "")
        kind = headers.get("streamtype", "")
        pair = self.pending.setdefault(request, {})
        pair[kind] = stream
        if {"data", "error"} <= set(pair):
            del self.pending[request]
            task = asyncio.get_running_loop().create_task(
                self._forward(pair["data"], pair["error"], headers.get("port", "")))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _forward(self, data: Stream, error: Stream, port_text: str) -> None:
        try:
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            await self._fail(data, error, f"invalid port {port_text!r}")
            return
        try:
            reader, writer = await self._dial(port)
        except OSError as e:
            await self._fail(data, error, f"error forwarding port {port} to pod {self.pod}: "
                                          f"failed to connect to localhost:{port} inside the "
                                          f"pod: {e.strerror or e}")
            return
        up = asyncio.create_task(self._upstream(data, writer))
        try:
            while chunk := await reader.read(65536):
                await self.session.data(data, chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            up.cancel()
            writer.close()
            await self.session.close(data)
            await self.session.close(error)

    async def _upstream(self, data: Stream, writer: asyncio.StreamWriter) -> None:
        """kubectl's bytes to the pod; its half-close becomes ours."""
        try:
            while (chunk := await data.inbound.get()) is not None:
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass

    async def _fail(self, data: Stream, error: Stream, message: str) -> None:
        log.info("port-forward to %s: %s", self.pod, message)
        await self.session.data(error, message.encode(), fin=True)
        await self.session.close(data)

    async def _dial(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await dial(self.netns, self.pod_ip, port)


async def dial(netns: str | None, pod_ip: str | None,
               port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``port`` of a pod: inside its network namespace (so loopback-only
    listeners are reached, as kubelet does), at its IP, or on the host for host-network pods."""
    loop = asyncio.get_running_loop()
    if netns:
        sock = await loop.run_in_executor(_netns_thread, _dial_in_netns, netns, port, 5.0)
        return await asyncio.open_connection(sock=sock)
    if not pod_ip:  # a host-network pod: its ports are the host's
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5.0)
    return await asyncio.wait_for(asyncio.open_connection(pod_ip, port), 5.0)


def pod_network(pod_dir: Any) -> tuple[str | None, str | None]:
    """(netns path, pod IP) from the pod's network.json, or (None, None) for host network."""
    import json
    from pathlib import Path

    try:
        info = json.loads((Path(pod_dir) / "network.json").read_text())
    except (OSError, ValueError):
        return None, None
    netns = info.get("netns")
    return (f"/run/netns/{netns}" if netns else None), info.get("ip")
