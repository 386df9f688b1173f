"""The agent's HTTPS API answers failures as Kubernetes ``Status`` bodies, rendered in one
place from ``atoll.api.errors``; served here over plain HTTP, with fake lookups."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from atoll.agent.streams.server import AgentServer, Identity, Lookups


def _server(pods: dict[tuple[str, str], Any]) -> AgentServer:
    lookups = Lookups(pod=lambda ns, name: pods.get((ns, name)), vm=lambda uid: None,
                      stats=lambda: {"node": {"nodeName": "n1"}, "pods": []})
    return AgentServer(lookups, runtime=None, port=0,  # type: ignore[arg-type]
                       identity=Identity(Path("/nonexistent"), "n1", "192.0.2.1"))


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": message, "reason": reason, "code": code}
    if code in (403, 404):  # upstream always fills details for these (kubectl reads them)
        status["details"] = {}
    return status


async def _get(server: AgentServer, path: str, *, authorize: bool = False) -> tuple[int, Any]:
    if not authorize:  # the client certificate check needs TLS: let every client in here
        @web.middleware
        async def allow(request: web.Request, handler: Any) -> web.StreamResponse:
            return await handler(request)
        server._authorize = allow  # type: ignore[method-assign]
    async with TestClient(TestServer(server.app())) as client:
        resp = await client.get(path)
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def test_a_client_without_a_certificate_is_forbidden() -> None:
    code, body = await _get(_server({}), "/containerLogs/n/p/c", authorize=True)
    assert (code, body) == (403, _status(403, "Forbidden",
                                         "user '' may not use the agent API"))
    assert await _get(_server({}), "/healthz", authorize=True) == (200, "ok")


async def test_unknown_pods_and_vms_are_not_found() -> None:
    assert await _get(_server({}), "/containerLogs/n/p/c") == (
        404, _status(404, "NotFound", 'pod "p" not found on this node'))
    assert await _get(_server({}), "/portForward/n/p") == (
        404, _status(404, "NotFound", 'pod "p" not found on this node'))
    assert await _get(_server({}), "/vmConsole/uid-1") == (
        404, _status(404, "NotFound", "the VM is not on this node"))


async def test_a_container_not_started_yet_is_a_bad_request() -> None:
    worker = SimpleNamespace(attempts={}, pod={"status": {"phase": "Pending"}}, spec={})
    server = _server({("n", "p"): worker})
    assert await _get(server, "/containerLogs/n/p/c") == (400, _status(
        400, "BadRequest", 'container "c" in pod "p" is waiting to start: ContainerCreating'))
    assert await _get(server, "/portForward/n/p") == (
        400, _status(400, "BadRequest", 'pod "p" is not running'))
    assert await _get(_server({}), "/stats/summary") == (
        200, {"node": {"nodeName": "n1"}, "pods": []})


async def test_exec_and_attach_name_the_container_they_cannot_reach() -> None:
    """Refusals come before the upgrade, so the API server can relay them to the client."""
    meta = SimpleNamespace(name="c", id="cid")
    done = SimpleNamespace(meta=meta, exit={"exitCode": 0})
    worker = SimpleNamespace(attempts={"c": [done]}, pod={"status": {"phase": "Running"}},
                             spec={"containers": [{"name": "c"}]})
    server = _server({("n", "p"): worker, ("n", "q"): SimpleNamespace(attempts={}, spec={})})
    assert await _get(server, "/exec/n/p/c?command=true") == (400, _status(
        400, "BadRequest", 'cannot exec in a stopped container: container "c" in pod "p" is '
                           "not running"))
    assert await _get(server, "/attach/n/q/c") == (400, _status(
        400, "BadRequest", 'container not found ("c"): it has not started in pod "q" yet'))
