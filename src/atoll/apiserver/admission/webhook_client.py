"""Calling one admission webhook: where it is, how its certificate is checked, one POST.

A ``url`` webhook is dialled as written; a ``service`` one at a ready backend of that Service
(``apiserver.proxy.resolve_service``), its certificate checked for the name
``<service>.<namespace>.svc`` as upstream does.  Certificates are verified against the
webhook's ``caBundle``, or the system roots when it has none.  Each call has its own deadline
(``timeoutSeconds``), also sent to the webhook as ``?timeout=Ns``, as upstream does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
from typing import Any, Callable

import aiohttp
import orjson

from atoll.api import errors

MAX_RESPONSE_BYTES = 3 * 1024 * 1024

#: (namespace, name, port) -> (ip, port) of one ready backend
Resolver = Callable[[str, str, str], tuple[str, int]]


class WebhookCallError(Exception):
    """The webhook could not be called, or answered something that is not a review:
    what ``failurePolicy`` decides about."""


class WebhookClient:
    def __init__(self, resolve: Resolver) -> None:
        self.resolve = resolve
        self._contexts: dict[bytes, ssl.SSLContext] = {}
        self._session: aiohttp.ClientSession | None = None

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, force_close=False),
                json_serialize=lambda o: orjson.dumps(o).decode())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def ssl_context(self, ca_bundle: Any) -> ssl.SSLContext:
        """A verifying context for the webhook's ``caBundle`` (base64 PEM), or system roots."""
        pem = b""
        if isinstance(ca_bundle, str) and ca_bundle:
            try:
                pem = base64.b64decode(ca_bundle)
            except (binascii.Error, ValueError):
                raise WebhookCallError("caBundle is not valid base64") from None
        ctx = self._contexts.get(pem)
        if ctx is None:
            ctx = ssl.create_default_context()
            if pem:
                try:
                    ctx = ssl.create_default_context(cadata=pem.decode("ascii", "replace"))
                except ssl.SSLError as e:
                    raise WebhookCallError(f"caBundle holds no usable certificate: {e}") from None
            if len(self._contexts) > 256:
                self._contexts.clear()
            self._contexts[pem] = ctx
        return ctx

    def target(self, client_config: dict[str, Any], timeout: int) -> tuple[str, str | None]:
        """The URL to POST to, and the host name the certificate must carry when that URL
        names an address instead."""
        suffix = f"?timeout={timeout}s"
        url = client_config.get("url")
        if isinstance(url, str) and url:
            return url + suffix, None
        service = client_config.get("service") or {}
        ns, name = str(service.get("namespace") or ""), str(service.get("name") or "")
        port = service.get("port") or 443
        try:
            ip, backend_port = self.resolve(ns, name, str(port))
        except errors.ApiError as e:
            raise WebhookCallError(f'failed to resolve service "{name}.{ns}.svc": '
                                   f"{e.message}") from None
        host = f"[{ip}]" if ":" in ip else ip
        path = service.get("path") or ""
        return f"https://{host}:{backend_port}{path}{suffix}", f"{name}.{ns}.svc"

    async def call(self, client_config: dict[str, Any], review: dict[str, Any],
                   timeout: int) -> dict[str, Any]:
        """POST the AdmissionReview; the decoded AdmissionReview answered."""
        url, server_name = self.target(client_config, timeout)
        ctx = self.ssl_context(client_config.get("caBundle"))
        shown = url.split("?", 1)[0]
        kwargs: dict[str, Any] = {}
        if server_name:
            kwargs["server_hostname"] = server_name
        try:
            async with asyncio.timeout(timeout):
                async with self._session_().post(
                        url, data=orjson.dumps(review), ssl=ctx, allow_redirects=False,
                        headers={"Content-Type": "application/json",
                                 "Accept": "application/json"}, **kwargs) as resp:
                    body = await resp.content.read(MAX_RESPONSE_BYTES + 1)
                    status = resp.status
        except TimeoutError:
            raise WebhookCallError(f'failed to call webhook: Post "{shown}": context deadline '
                                   "exceeded") from None
        except (aiohttp.ClientError, OSError, ssl.SSLError, ValueError) as e:
            raise WebhookCallError(f'failed to call webhook: Post "{shown}": '
                                   f"{_describe(e)}") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise WebhookCallError("the webhook's response is too large")
        if status < 200 or status >= 300:
            raise WebhookCallError(f"received invalid webhook response: the server responded "
                                   f"with the status code {status}")
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise WebhookCallError(f"received invalid webhook response: {e}") from None
        if not isinstance(answer, dict):
            raise WebhookCallError("received invalid webhook response: not an object")
        return answer


def _describe(e: BaseException) -> str:
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return f"tls: failed to verify certificate: {e.certificate_error}"
    if isinstance(e, aiohttp.ClientConnectorError):
        return f"dial tcp {e.host}:{e.port}: connect: {e.os_error.strerror or e.os_error}"
    return str(e) or type(e).__name__
