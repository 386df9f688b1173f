"""``kubectl port-forward`` (SPDY) to a pod-VM: the same session as for runc pods, with each
connection dialled by the guest agent inside the guest instead of in the host's netns."""

from __future__ import annotations

import asyncio

from aiohttp import web

from atoll.agent.streams import portforward, portforward_ws


class GuestPortForwarder(portforward.PortForwarder):
    def __init__(self, ws: web.WebSocketResponse, dial: portforward_ws.Dial, pod: str) -> None:
        super().__init__(ws, None, None, pod)
        self._guest_dial = dial

    async def _dial(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await self._guest_dial(port)
