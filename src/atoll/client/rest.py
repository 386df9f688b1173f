"""An async Kubernetes REST client: requests, typed errors, watches.

Errors come back as the ``api.errors`` classes parsed from the server's
``Status``, so callers write ``except errors.Conflict``.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import aiohttp
import orjson

from atoll.api import errors
from atoll.client.kubeconfig import ClientConfig

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def resource_path(group: str, version: str, plural: str, namespace: str = "", name: str = "",
                  subresource: str = "") -> str:
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    if name:
        base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
    return base


class ApiClient:
    """One logical API endpoint; ``config.server`` may list several (``https://a,https://b``):
    a server that refuses connections is left for the next, as clients of an HA control
    plane behind no load balancer need."""

    def __init__(self, config: ClientConfig, *, user_agent: str = "atoll") -> None:
        self.config = config
        self.user_agent = user_agent
        self.servers = [s.strip().rstrip("/") for s in config.server.split(",") if s.strip()]
        if not self.servers:
            raise ValueError("no API server address")
        self._current = 0
        self._session: aiohttp.ClientSession | None = None

    @property
    def server(self) -> str:
        return self.servers[self._current]

    async def _fail_over(self, failed: str) -> None:
        """Move on from ``failed`` (once, however many requests noticed it at the same time)."""
        if len(self.servers) < 2 or self.server != failed:
            return
        self._current = (self._current + 1) % len(self.servers)
        old, self._session = self._session, None
        if old is not None:
            await old.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": self.user_agent, "Accept": JSON}
            if self.config.token:
                headers["Authorization"] = f"Bearer {self.config.token}"
            # every informer holds one connection for its watch: the controller manager alone
            # runs dozens, and requests must never queue behind them
            connector = aiohttp.TCPConnector(ssl=self.config.ssl_context, limit=256)
            self._session = aiohttp.ClientSession(
                base_url=self.server, headers=headers, connector=connector,
                json_serialize=lambda o: orjson.dumps(o).decode())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: Any = None, content_type: str = JSON,
                      headers: dict[str, str] | None = None, timeout: float = 60.0) -> Any:
        data = orjson.dumps(body) if body is not None else None
        hdrs = {"Content-Type": content_type} if data is not None else {}
        if headers:
            hdrs.update(headers)
        for attempt in range(len(self.servers)):
            server = self.server
            try:
                async with self.session.request(method, path, params=_params(params), data=data,
                                                headers=hdrs,
                                                timeout=aiohttp.ClientTimeout(total=timeout)
                                                ) as resp:
                    raw = await resp.read()
                    break
            except aiohttp.ClientConnectorError:
                # nothing was sent: safe to try the next server, whatever the method
                if attempt == len(self.servers) - 1:
                    raise
                await self._fail_over(server)
        if resp.status >= 400:
            raise error_from_response(resp.status, raw)
        if not raw:
            return None
        return orjson.loads(raw)

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: Any, **params: Any) -> Any:
        return await self.request("POST", path, body=body, params=params)

    async def update(self, path: str, body: Any, **params: Any) -> Any:
        return await self.request("PUT", path, body=body, params=params)

    async def patch(self, path: str, body: Any, *, content_type: str = MERGE_PATCH,
                    **params: Any) -> Any:
        return await self.request("PATCH", path, body=body, content_type=content_type,
                                  params=params)

    async def delete(self, path: str, body: Any = None, **params: Any) -> Any:
        return await self.request("DELETE", path, body=body, params=params)

    async def watch(self, path: str, *, resource_version: str, timeout_seconds: int = 300,
                    headers: dict[str, str] | None = None,
                    **params: Any) -> AsyncIterator[dict[str, Any]]:
        """Yield watch events; an ERROR event is raised as its ApiError (e.g. Expired)."""
        query = {"watch": "true", "resourceVersion": resource_version,
                 "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds), **params}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        server = self.server
        try:
            resp_cm = await self.session.get(path, params=_params(query), headers=headers,
                                             timeout=timeout)
        except aiohttp.ClientConnectorError:
            await self._fail_over(server)  # the informer's retry goes to the next server
            raise
        async with resp_cm as resp:
            if resp.status >= 400:
                raise error_from_response(resp.status, await resp.read())
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    if event.get("type") == "ERROR":
                        raise errors.from_status(event.get("object") or {})
                    yield event


def _params(params: dict[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    out = {}
    for k, v in params.items():
        if v is None:
            continue
        out[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def error_from_response(status: int, raw: bytes) -> errors.ApiError:
    try:
        body = orjson.loads(raw)
        if isinstance(body, dict) and body.get("kind") == "Status":
            return errors.from_status(body, status)
    except orjson.JSONDecodeError:
        pass
    return errors.from_status({"code": status, "message": raw[:200].decode(errors="replace")},
                              status)


async def sleep_or(event: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early when ``event`` is set; True if it was set."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False
