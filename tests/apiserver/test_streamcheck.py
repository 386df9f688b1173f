"""The node proxy asks a refused stream again for the agent's reason: a plain GET for exec and
attach (the agent refuses non-upgrades after its checks), a repeated handshake for a VM
console (where a plain GET reads the log)."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from atoll.api import errors
from atoll.apiserver import streamcheck


async def _agent(request: web.Request) -> web.StreamResponse:
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    if request.path == "/exec":
        if request.query.get("container") == "stopped":
            return web.json_response(errors.BadRequest("cannot exec in a stopped container")
                                     .to_status(), status=400)
        return web.json_response(errors.BadRequest("Upgrade request required").to_status(),
                                 status=400)
    if not upgrade:
        return web.Response(text="console log")
    return web.json_response(errors.Conflict("the VM is not powered on").to_status(), status=409)


async def test_the_agents_reason_comes_back() -> None:
    app = web.Application()
    app.router.add_get("/{tail:.*}", _agent)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        url = str(server.make_url("/"))
        refused = await streamcheck.handshake_error(session, url + "exec",
                                                    [("container", "stopped")], (), True)
        assert isinstance(refused, errors.BadRequest)
        assert refused.message == "cannot exec in a stopped container"
        # the agent had no other objection than the missing upgrade: nothing to relay
        assert await streamcheck.handshake_error(session, url + "exec",
                                                 [("container", "running")], (), True) is None
        console = await streamcheck.handshake_error(session, url + "vmConsole/u", [], (),
                                                    True, upgrade=True)
        assert isinstance(console, errors.Conflict) and "not powered on" in console.message
        assert await streamcheck.handshake_error(session, url + "vmConsole/u", [], (),
                                                 True) is None  # a 200 log, not a reason
        assert await streamcheck.handshake_error(session, "http://127.0.0.1:1/x", [], (),
                                                 True) is None  # an agent away: no reason


def test_a_completed_pod_is_refused_before_its_node() -> None:
    streamcheck.check_exec({"status": {"phase": "Running"}}, "c")
    try:
        streamcheck.check_exec({"status": {"phase": "Succeeded"}}, "c")
    except errors.BadRequest as e:
        assert "completed pod; current phase is Succeeded" in e.message
    else:
        raise AssertionError("not refused")
