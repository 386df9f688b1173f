"""Why a node agent refused a stream (exec, attach, a VM console), as the client should see it.

A websocket client library drops the body of a refused handshake ("Invalid response
status"); the agent's ``Status`` says what is wrong ("container not found", "cannot exec in a
stopped container", "the VM is not powered on"), so the node proxy asks again for the body
and relays that error instead.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import aiohttp
import orjson

from atoll.api import errors

MAX_BODY = 64 * 1024


def check_exec(pod: dict[str, Any], container: str) -> None:
    """Refuse an exec into a finished pod before reaching its node (as kubectl's own check)."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise errors.BadRequest(f"cannot exec into a container in a completed pod; current "
                                f"phase is {phase}")


async def handshake_error(session: aiohttp.ClientSession, url: str,
                          params: list[tuple[str, str]], protocols: tuple[str, ...],
                          ssl: Any, *, upgrade: bool = False) -> errors.ApiError | None:
    """The agent's error for this stream request, or None when it gives none.

    Without ``upgrade`` a plain GET is sent: the agent's stream endpoints check the pod and
    container first, then refuse a request that is not an upgrade, so nothing runs.  With
    ``upgrade`` (a VM console, where a plain GET reads the log) the handshake is repeated
    by hand; should it succeed this time, the connection is just closed.
    """
    headers: dict[str, str] = {}
    if upgrade:
        headers = {"Upgrade": "websocket", "Connection": "Upgrade",
                   "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
        if protocols:
            headers["Sec-WebSocket-Protocol"] = ", ".join(protocols)
    try:
        async with session.get(url, params=params, ssl=ssl, headers=headers,
                               timeout=aiohttp.ClientTimeout(total=10)) as resp:
            if resp.status < 400:
                return None
            body = await resp.content.read(MAX_BODY)
    except (aiohttp.ClientError, TimeoutError):
        return None
    try:
        status = orjson.loads(body)
    except ValueError:
        return None
    if not isinstance(status, dict) or status.get("kind") != "Status":
        return None
    err = errors.from_status(status, resp.status)
    if "Upgrade request required" in err.message:
        return None
    return err
