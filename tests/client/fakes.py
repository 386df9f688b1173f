"""A fake API client and clock for reconcile unit tests, as kopf's tests use: no server, no host.

``FakeClient`` keeps objects by path, records every call, and raises the API's error types
(NotFound, Conflict) as the real client would.  ``feed`` puts an object into an informer's
cache as a watch event would, so a controller built on a factory of the fake client sees it.
"""

from __future__ import annotations

import copy
from typing import Any

from atoll.api import errors
from atoll.client.informer import Informer


class FakeClock:
    def __init__(self, now: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeClient:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        #: paths whose next write raises this error once (Conflict, a server error, ...)
        self.fail_next: dict[str, Exception] = {}

    def _check(self, verb: str, path: str) -> None:
        self.calls.append((verb, path))
        exc = self.fail_next.pop(path, None)
        if exc is not None:
            raise exc

    async def get(self, path: str, **params: Any) -> Any:
        self._check("GET", path)
        if path not in self.objects:
            raise errors.NotFound(f"{path} not found")
        return copy.deepcopy(self.objects[path])

    async def create(self, path: str, body: Any, **params: Any) -> Any:
        self._check("POST", path)
        name = body["metadata"]["name"]
        if f"{path}/{name}" in self.objects:
            raise errors.AlreadyExists(f'"{name}" already exists', name=name)
        self.objects[f"{path}/{name}"] = copy.deepcopy(body)
        return body

    async def update(self, path: str, body: Any, **params: Any) -> Any:
        self._check("PUT", path)
        self.objects[path] = copy.deepcopy(body)
        return body

    async def patch(self, path: str, body: Any, **params: Any) -> Any:
        self._check("PATCH", path)
        if path not in self.objects:
            raise errors.NotFound(f"{path} not found")
        return self.objects[path]

    async def delete(self, path: str, body: Any = None, **params: Any) -> Any:
        self._check("DELETE", path)
        if self.objects.pop(path, None) is None:
            raise errors.NotFound(f"{path} not found")
        return {"kind": "Status", "status": "Success"}

    async def close(self) -> None:
        pass


def feed(informer: Informer, obj: dict[str, Any], kind: str = "ADDED") -> None:
    """Deliver ``obj`` to the informer as its watch would, and mark the cache synced."""
    informer._on_event({"type": kind, "object": obj})
    informer.synced.set()
