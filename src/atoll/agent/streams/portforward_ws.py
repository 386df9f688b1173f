"""Port-forward over plain websockets: the ``v4.channel.k8s.io`` form the official clients speak
(Python's ``portforward``, client-go's websocket dialer) beside kubectl's SPDY tunnel.

The ports come in the ``ports`` query parameter (``?ports=80&ports=8080`` or ``80,8080``).  Port
number *i* gets channel ``2i`` for its data and ``2i+1`` for errors; every message starts with
its channel byte, and the first message the server sends on each channel is the port number as
two little-endian bytes, as kubelet does.  One connection per port is made inside the pod's
network namespace when the session opens; one that cannot be made says why on its error channel,
and the session ends when every port's connection has ended (as kubelet's), or the client leaves.
``v4.base64.channel.k8s.io`` carries the same frames as text: the channel as an ASCII digit,
the payload base64-encoded.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
from typing import Awaitable, Callable

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)
BINARY_PROTOCOL = "v4.channel.k8s.io"
BASE64_PROTOCOL = "v4.base64.channel.k8s.io"
PROTOCOLS = (BINARY_PROTOCOL, BASE64_PROTOCOL)
#: a session may not open more ports than this (each holds a connection into the pod)
MAX_PORTS = 64

Dial = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class BadPorts(ValueError):
    """The ``ports`` parameter is missing or names something that is not a port."""


def parse_ports(values: list[str]) -> list[int]:
    ports: list[int] = []
    for value in values:
        for text in value.split(","):
            text = text.strip()
            if not text.isdigit() or not 0 < int(text) < 65536:
                raise BadPorts(f"invalid port {text!r}: ports must be 1-65535")
            ports.append(int(text))
    if not ports:
        raise BadPorts("at least one port must be given (the ports query parameter)")
    if len(ports) > MAX_PORTS:
        raise BadPorts(f"at most {MAX_PORTS} ports may be forwarded in one session")
    return ports


class WebsocketPortForwarder:
    def __init__(self, ws: web.WebSocketResponse, dial: Dial, ports: list[int],
                 pod: str) -> None:
        self.ws = ws
        self.dial = dial
        self.ports = ports
        self.pod = pod
        self.base64 = ws.ws_protocol == BASE64_PROTOCOL
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self._send_lock = asyncio.Lock()

    async def _send(self, channel: int, payload: bytes) -> None:
        async with self._send_lock:
            if self.ws.closed:
                return
            if self.base64:
                await self.ws.send_str(str(channel) + base64.b64encode(payload).decode())
            else:
                await self.ws.send_bytes(bytes([channel]) + payload)

    async def run(self) -> None:
        for i, port in enumerate(self.ports):
            marker = struct.pack("<H", port)
            await self._send(2 * i, marker)
            await self._send(2 * i + 1, marker)
        # connect first, so nothing the client sends early is dropped
        readers = await asyncio.gather(*(self._connect(i, port)
                                         for i, port in enumerate(self.ports)))
        pumps = [asyncio.create_task(self._pump(i, reader))
                 for i, reader in enumerate(readers) if reader is not None]
        client = asyncio.create_task(self._from_client())
        try:  # as kubelet: the session ends once every port's connection has (or the client)
            await asyncio.wait([client, asyncio.ensure_future(asyncio.gather(*pumps))],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            client.cancel()
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in self.writers.values():
                writer.close()

    async def _connect(self, index: int, port: int) -> asyncio.StreamReader | None:
        try:
            reader, writer = await self.dial(port)
        except OSError as e:
            message = (f"error forwarding port {port} to pod {self.pod}: failed to connect to "
                       f"localhost:{port} inside the pod: {e.strerror or e}")
            log.info("port-forward to %s: %s", self.pod, message)
            await self._send(2 * index + 1, message.encode())
            return None
        self.writers[index] = writer
        return reader

    async def _pump(self, index: int, reader: asyncio.StreamReader) -> None:
        """What the pod's port says, to the port's data channel."""
        try:
            while chunk := await reader.read(65536):
                await self._send(2 * index, chunk)
        except (ConnectionError, OSError):
            pass

    async def _from_client(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY and msg.data:
                channel, payload = msg.data[0], msg.data[1:]
            elif msg.type == WSMsgType.TEXT and msg.data:
                if not msg.data[0].isdigit():
                    continue
                channel = int(msg.data[0])
                try:
                    payload = base64.b64decode(msg.data[1:]) if self.base64 \
                        else msg.data[1:].encode()
                except ValueError:
                    continue
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                return
            else:
                continue
            index, is_error = divmod(channel, 2)
            writer = self.writers.get(index)
            if is_error or writer is None or not payload:
                continue  # clients write nothing on error channels; a port not yet open drops
            try:
                writer.write(payload)
                await writer.drain()
            except (ConnectionError, OSError):
                self.writers.pop(index, None)
