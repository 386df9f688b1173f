"""HTTP/1.1 hygiene below the application: head limits, parse errors, logging, headers.

aiohttp's defaults differ from Go's ``net/http`` in ways a hostile client can
use: an 8 KiB line limit answered with a 400 whose text echoes the request,
a traceback in the log for every malformed request (an unauthenticated log
flood), and a ``Server: Python/3.x aiohttp/3.x`` banner.  Here, as kube-apiserver
behaves:

- a request head (request line and headers) may be 1 MiB (Go's
  ``DefaultMaxHeaderBytes``) in all; past that it is answered 431 with a
  ``Status`` body;
- other malformed requests get a short ``400 Bad Request`` that echoes nothing;
- each client address is logged once a minute at most, one line, no traceback;
- every response head is scrubbed (``headers.scrub``) just before it is written.

This leans on aiohttp internals (``RequestHandler``, ``_ErrInfo``); aiohttp is
pinned, and tests/security/test_protocol.py exercises each path.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

from atoll.api import errors
from atoll.apiserver import headers

log = logging.getLogger("atoll.apiserver.http")

#: Go's http.DefaultMaxHeaderBytes (1 MiB), plus the 4 KiB slack net/http allows
MAX_HEADER_BYTES = (1 << 20) + 4096
#: a bound on the number of header fields (Go has only the byte bound; no client sends this many)
MAX_HEADERS = 10_000
#: one log line per client address per this many seconds
LOG_INTERVAL_SECONDS = 60.0
#: client addresses remembered for rate limiting (oldest forgotten first)
LOG_MEMORY = 4096


class ClientLog:
    """Logs protocol errors at most once per interval per source address, never a traceback."""

    def __init__(self, interval: float = LOG_INTERVAL_SECONDS, memory: int = LOG_MEMORY) -> None:
        self.interval = interval
        self.memory = memory
        #: address -> (when last logged, how many were suppressed since)
        self._seen: collections.OrderedDict[str, tuple[float, int]] = collections.OrderedDict()

    def note(self, remote: str, what: str) -> None:
        now = time.monotonic()
        last = self._seen.get(remote)
        if last is not None and now - last[0] < self.interval:
            self._seen[remote] = (last[0], last[1] + 1)
            return
        suppressed = last[1] if last is not None else 0
        self._seen[remote] = (now, 0)
        self._seen.move_to_end(remote)
        while len(self._seen) > self.memory:
            self._seen.popitem(last=False)
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        log.warning("malformed HTTP request from %s: %s%s", remote, what, more)


CLIENT_LOG = ClientLog()


def _status_response(err: errors.ApiError) -> web.Response:
    resp = web.Response(status=err.code, body=orjson.dumps(err.to_status()),
                        content_type="application/json")
    resp.headers["Server"] = headers.SERVER
    resp.force_close()
    return resp


def too_large() -> errors.ApiError:
    err = errors.BadRequest("Request Header Fields Too Large: the request line and headers may "
                            f"be at most {MAX_HEADER_BYTES} bytes")
    err.code, err.reason = 431, "RequestHeaderFieldsTooLarge"
    return err


class HeadTooLarge(BadHttpMessage):
    """The request head passed ``MAX_HEADER_BYTES``."""

    code = 431


class Protocol(RequestHandler):
    """aiohttp's connection handler with Go's head limit and quiet, echo-free errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(max_line_size=MAX_HEADER_BYTES, max_field_size=MAX_HEADER_BYTES,
                      max_headers=MAX_HEADERS)
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._last_payload: StreamReader | None = None
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        in_head = (self._payload_parser is None and not self._upgraded
                   and (self._last_payload is None or self._last_payload.is_eof()))
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a head was completed (or refused) in this chunk
            if in_head and self._head_too_large(data, self._request_count - before):
                return
            self._head_bytes = 0
            self._last_payload = self._messages[-1][1] if self._messages else None
            return
        if not in_head:
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEADER_BYTES:
            self._refused = True
            exc = HeadTooLarge("request head too large")
            self._messages.append((_ErrInfo(status=431, exc=exc, message=""), EMPTY_PAYLOAD))
            self._request_count += 1
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    def _head_too_large(self, data: bytes, completed: int) -> bool:
        """A head that ended in this chunk but was over the limit in all (many fields, each
        under aiohttp's own limits, arriving at once): its parsed request becomes the 431,
        whatever followed it on the connection is dropped."""
        end = data.find(b"\r\n\r\n")
        if self._head_bytes + (end + 4 if end >= 0 else len(data)) <= MAX_HEADER_BYTES:
            return False
        first = len(self._messages) - completed
        if first < 0 or isinstance(self._messages[first][0], _ErrInfo):
            return False  # aiohttp refused it already (a line over its limit)
        while len(self._messages) > first:
            self._messages.pop()
        self._refused = True
        exc = HeadTooLarge("request head too large")
        self._messages.append((_ErrInfo(status=431, exc=exc, message=""), EMPTY_PAYLOAD))
        return True

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # a response was begun: the connection is broken
            raise ConnectionError("response already started; cannot send an error")
        remote = request.remote or "unknown"
        if isinstance(exc, (LineTooLong, HeadTooLarge)) or (
                isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc)):
            CLIENT_LOG.note(remote, "request head too large (431)")
            return _status_response(too_large())
        if status < 500:
            CLIENT_LOG.note(remote, f"{type(exc).__name__ if exc else 'bad request'} ({status})")
            resp = web.Response(status=400, text="400 Bad Request",
                                headers={"Server": headers.SERVER})
            resp.force_close()
            return resp
        # not the client's doing (the error middleware answers everything a request causes)
        log.error("internal error on a connection from %s", remote, exc_info=exc)
        return _status_response(errors.InternalError("Internal error occurred"))


class Server(web.Server):
    """A ``web.Server`` whose connections are ``Protocol``s."""

    def __call__(self) -> RequestHandler:
        return Protocol(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """``web.AppRunner`` serving through ``Server``; responses are scrubbed before writing."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        app.on_response_prepare.append(_scrub)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return Server(base.request_handler, request_factory=base.request_factory,
                      handler_cancellation=base.handler_cancellation, loop=base._loop,
                      **base._kwargs)


async def _scrub(request: web.Request, response: web.StreamResponse) -> None:
    headers.scrub(response.headers)
