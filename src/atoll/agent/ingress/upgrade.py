"""HTTP/1.1 Upgrade (websockets and the like) through the router, as ingress-nginx passes it:
the request head goes to the endpoint with its ``Connection: Upgrade`` and ``Upgrade``
headers, and once the endpoint answers 101 the two connections are joined as raw byte
streams, both ways, until either side closes.  The router never reads the frames.

An endpoint that declines (any status but 101) is answered as an ordinary response."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from aiohttp import web

log = logging.getLogger(__name__)
#: the endpoint's response head, and a declined upgrade's body, are bounded
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
#: bytes queued towards a slow peer before the other side stops being read
HIGH_WATER = 1024 * 1024
CHUNK = 64 * 1024


def wants_upgrade(headers: Mapping[str, str]) -> bool:
    tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    return "upgrade" in tokens and bool(headers.get("Upgrade"))


class BadGateway(Exception):
    """The endpoint did not answer with a usable HTTP response."""


def _head(request: web.Request, headers: Mapping[str, str]) -> bytes:
    lines = [f"{request.method} {request.raw_path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["Connection: Upgrade", f"Upgrade: {request.headers['Upgrade']}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse(head: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    try:
        status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        version, status, *reason = status_line.split(" ", 2)
        if not version.startswith("HTTP/1.") or not status.isdigit():
            raise ValueError(status_line)
        fields = []
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise ValueError(line)
            fields.append((name, value.strip()))
        return int(status), (reason[0] if reason else ""), fields
    except ValueError as e:
        raise BadGateway(f"not an HTTP response head: {e}") from e


async def _body(reader: asyncio.StreamReader, fields: list[tuple[str, str]]) -> bytes:
    """A declined upgrade's body: by length, by chunks, or to the end, bounded."""
    got = {k.lower(): v for k, v in fields}
    if "content-length" in got:
        n = int(got["content-length"]) if got["content-length"].isdigit() else -1
        if not 0 <= n <= MAX_BODY:
            raise BadGateway("bad or oversized Content-Length")
        return await reader.readexactly(n)
    if "chunked" in got.get("transfer-encoding", "").lower():
        out = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return out
            if len(out) + size > MAX_BODY:
                raise BadGateway("oversized body")
            out += await reader.readexactly(size)
            await reader.readexactly(2)
    return await reader.read(MAX_BODY)


class _ToEndpoint:
    """Stands in for aiohttp's websocket reader on the client's connection: every byte the
    client sends after the head goes straight to the endpoint, with back-pressure."""

    def __init__(self, writer: asyncio.StreamWriter, client: asyncio.BaseTransport) -> None:
        self.writer, self.client = writer, client
        self._draining: asyncio.Task[None] | None = None

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.writer.is_closing():
            return False, b""
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > HIGH_WATER and self._draining is None:
            self.client.pause_reading()  # type: ignore[attr-defined]
            self._draining = asyncio.get_running_loop().create_task(self._drain())
        return False, b""

    async def _drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._draining = None
            if not self.client.is_closing():
                self.client.resume_reading()  # type: ignore[attr-defined]

    def feed_eof(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


async def relay(request: web.Request, target: tuple[str, int], headers: Mapping[str, str],
                hop_by_hop: frozenset[str]) -> web.StreamResponse:
    """Pass an upgrade request to ``target``; on 101, join the two connections."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*target, limit=MAX_HEAD), 5)
    except (OSError, asyncio.TimeoutError) as e:
        raise BadGateway(f"cannot connect: {e}") from e
    try:
        writer.write(_head(request, headers))
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.TimeoutError, OSError) as e:
            raise BadGateway(f"no response head: {e!r}") from e
        status, reason, fields = _parse(head)
        kept = [(k, v) for k, v in fields if k.lower() not in hop_by_hop
                and k.lower() != "content-length"]
        if status != 101:
            try:
                body = await asyncio.wait_for(_body(reader, fields), 60)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                    asyncio.TimeoutError, OSError) as e:
                raise BadGateway(f"bad body: {e!r}") from e
            response = web.Response(status=status, reason=reason or None, body=body)
            for k, v in kept:
                response.headers.add(k, v)
            return response
        upgrade = next((v for k, v in fields if k.lower() == "upgrade"),
                       request.headers["Upgrade"])
        response = web.StreamResponse(status=101, reason=reason or None)
        for k, v in kept:
            response.headers.add(k, v)
        response.headers["Connection"] = "Upgrade"
        response.headers["Upgrade"] = upgrade
        response.force_close()
        await response.prepare(request)
        client: Any = request.transport
        if client is None:
            return response
        request.protocol.set_parser(_ToEndpoint(writer, client))  # type: ignore[arg-type]
        await _to_client(reader, response)
        return response
    finally:
        if not writer.is_closing():
            writer.close()


async def _to_client(reader: asyncio.StreamReader, response: web.StreamResponse) -> None:
    """The endpoint's bytes to the client until the endpoint closes (or the client does)."""
    try:
        while data := await reader.read(CHUNK):
            await response.write(data)
    except (ConnectionError, OSError, RuntimeError) as e:
        log.debug("upgraded connection ended: %r", e)
