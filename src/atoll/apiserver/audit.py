"""Audit log: every mutating request, who made it, what it touched, and how it ended.

One ``audit.k8s.io/v1`` Event per line (JSON), at upstream's ``Metadata``
level: user, impersonator, verb, object reference, source address, user agent,
response code, timestamps; never bodies, so Secrets do not end up in the log.
Appended, flushed and fsynced in batches by a writer thread, so the file
survives restarts and crashes and the request path never waits on the disk.
Denied and failed requests are logged too: they are what an auditor looks for.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from atoll.api import errors
from atoll.api.timestamps import rfc3339

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

#: the current request's audit annotations (admission webhooks add theirs here); None outside
#: an audited request
ANNOTATIONS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "audit_annotations", default=None)


def annotate(key: str, value: str) -> None:
    """Add an annotation to the audit event of the request being served, if any."""
    current = ANNOTATIONS.get()
    if current is not None:
        current.setdefault(key, value)


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name="audit-log", daemon=True)
        self._thread.start()

    def record(self, event: dict[str, Any]) -> None:
        self._queue.put(orjson.dumps(event) + b"\n")

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _write_loop(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                batch = [item]
                while True:  # write what has piled up in one go
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._queue.put(None)
                        break
                    batch.append(nxt)
                try:
                    os.write(fd, b"".join(batch))
                    os.fsync(fd)
                except OSError as err:
                    log.error("audit log %s: %s", self.path, err)
        finally:
            os.close(fd)

    def middleware(self):
        @web.middleware
        async def audit(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                        ) -> web.StreamResponse:
            if request.method not in MUTATING:
                return await handler(request)
            received = rfc3339(digits=6)
            code = 500
            annotations: dict[str, str] = {}
            token = ANNOTATIONS.set(annotations)
            try:
                response = await handler(request)
                code = response.status
                return response
            except errors.ApiError as err:
                code = err.code
                raise
            except web.HTTPException as err:
                code = err.status
                raise
            finally:
                ANNOTATIONS.reset(token)
                event = self._event(request, received, code)
                if annotations:
                    event["annotations"] = annotations
                self.record(event)

        return audit

    @staticmethod
    def _event(request: web.Request, received: str, code: int) -> dict[str, Any]:
        user = request.get("user")
        a = request.get("attributes")
        event: dict[str, Any] = {
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": str(uuid.uuid4()), "stage": "ResponseComplete",
            "requestURI": str(request.rel_url), "verb": a.verb if a else request.method.lower(),
            "user": user.to_dict() if user else {"username": "system:anonymous"},
            "sourceIPs": [request.remote or ""],
            "userAgent": request.headers.get("User-Agent", ""),
            "responseStatus": {"metadata": {}, "code": code},
            "requestReceivedTimestamp": received, "stageTimestamp": rfc3339(digits=6)}
        by = request.get("impersonated_by")
        if by is not None:
            event["impersonatedUser"] = event["user"]
            event["user"] = by.to_dict()
        if a is not None and a.resource_request:
            ref = {"resource": a.resource, "namespace": a.namespace, "name": a.name,
                   "apiGroup": a.api_group, "apiVersion": a.api_version,
                   "subresource": a.subresource}
            event["objectRef"] = {k: v for k, v in ref.items() if v}
        return event
