"""``pods/log``, ``pods/exec``, ``pods/attach``, ``pods/portforward`` and
``virtualmachines/console``: forwarded
to the host agent of the pod or VM.

As kube-apiserver does with kubelets: find the pod's node, its InternalIP and
agent port (``status.daemonEndpoints``), and call the agent's API with the
API server's own client certificate.  Logs stream straight through; exec is
a websocket on both sides (the channel protocol passes through untouched).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from atoll.api import errors
from atoll.api.kinds import ResourceType
from atoll.api.vmoperator.names import HOST_LABEL as VM_HOST_LABEL
from atoll.apiserver import streamcheck
from atoll.apiserver.objects import ObjectService
from atoll.apiserver.proxy import ResourceProxy
from atoll.apiserver.registry import Registry
from atoll.apiserver.routing import ResourcePath

EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")
PORT_FORWARD_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
#: kubectl's SPDY tunnel first, then the websocket channel forms other clients speak
PORT_FORWARD_PROTOCOLS = (PORT_FORWARD_PROTOCOL, "v4.channel.k8s.io", "v4.base64.channel.k8s.io")
#: the serial console's subprotocol (raw terminal bytes), for clients that must name one
CONSOLE_PROTOCOL = "console.atoll.dev"
LOG_PARAMS = ("follow", "tailLines", "sinceSeconds", "sinceTime", "timestamps", "previous",
              "limitBytes")


class NodeProxy:
    def __init__(self, svc: ObjectService, registry: Registry, client_cert: tuple[str, str]) -> None:
        self.svc = svc
        self.registry = registry
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # agents serve self-signed certificates, as kubelets do
        ctx.load_cert_chain(*client_cert)
        self.ssl = ctx
        self._session: aiohttp.ClientSession | None = None
        self.resource_proxy = ResourceProxy(svc, registry, self.session, ctx, self._agent_url)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None,
                                                                                sock_connect=5))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __call__(self, request: web.Request, rt: ResourceType,
                       path: ResourcePath) -> web.StreamResponse:
        if rt.kind == "VirtualMachine" and path.subresource == "console":
            return await self._vm_console(request, rt, path)
        if path.subresource == "proxy":
            return await self.resource_proxy(request, rt, path)
        if rt.kind != "Pod" or path.subresource not in ("log", "exec", "attach", "portforward"):
            raise errors.NotFound(f"the {path.subresource} subresource is not served")
        pod = self.svc.get(rt, path.namespace, path.name).obj
        if path.subresource == "portforward":
            return await self._port_forward(request, pod)
        container = self._container(pod, request.query.get("container", ""))
        base = self._agent_url((pod.get("spec") or {}).get("nodeName"), pod)
        target = f"/{path.namespace}/{path.name}/{container}"
        if path.subresource == "log":
            params = {k: v for k, v in request.query.items() if k in LOG_PARAMS}
            return await self._logs(request, f"{base}/containerLogs{target}", params)
        if path.subresource == "exec":
            streamcheck.check_exec(pod, container)
        return await self._exec(request, f"{base}/{path.subresource}{target}")

    def _container(self, pod: dict[str, Any], wanted: str) -> str:
        spec = pod.get("spec") or {}
        names = [c.get("name") for c in (spec.get("containers") or []) +
                 (spec.get("initContainers") or []) + (spec.get("ephemeralContainers") or [])]
        name = pod["metadata"]["name"]
        if wanted:
            if wanted not in names:
                raise errors.BadRequest(f"container {wanted} is not valid for pod {name}")
            return wanted
        regular = [c.get("name") for c in spec.get("containers") or []]
        if len(regular) == 1:
            return str(regular[0])
        raise errors.BadRequest(f"a container name must be specified for pod {name}, choose one "
                                f"of: [{' '.join(str(n) for n in regular)}]")

    async def _port_forward(self, request: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """kubectl's SPDY-in-websocket tunnel or the plain websocket channels (``ports`` in
        the query), relayed to the agent, which speaks both."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise errors.BadRequest("Upgrade request required: port-forward needs a websocket "
                                    f"({PORT_FORWARD_PROTOCOL})")
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        protocols = tuple(p for p in offered if p in PORT_FORWARD_PROTOCOLS) or \
            (PORT_FORWARD_PROTOCOL,)
        params = [("ports", v) for v in request.query.getall("ports", [])]
        base = self._agent_url((pod.get("spec") or {}).get("nodeName"), pod)
        meta = pod["metadata"]
        return await self._relay_websocket(request, f"{base}/portForward/{meta['namespace']}/"
                                                    f"{meta['name']}", params, protocols)

    async def _vm_console(self, request: web.Request, rt: ResourceType,
                          path: ResourcePath) -> web.StreamResponse:
        """The serial console: a websocket attaches, a plain GET reads the console log."""
        vm = self.svc.get(rt, path.namespace, path.name).obj
        host = (vm["metadata"].get("labels") or {}).get(VM_HOST_LABEL)
        url = f"{self._agent_url(host, vm)}/vmConsole/{vm['metadata']['uid']}"
        if request.headers.get("Upgrade", "").lower() == "websocket":
            # raw bytes; a browser must offer (and be answered) a subprotocol to send its token
            offered = [p.strip() for p in
                       request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
            protocols = (CONSOLE_PROTOCOL,) if CONSOLE_PROTOCOL in offered else ()
            return await self._relay_websocket(request, url, [], protocols, probe_upgrade=True)
        params = {k: v for k, v in request.query.items() if k == "tailLines"}
        return await self._logs(request, url, params)

    def _agent_url(self, node_name: str | None, obj: dict[str, Any]) -> str:
        if not node_name:
            raise errors.BadRequest(f"{obj.get('kind', 'object').lower()} "
                                    f"{obj['metadata']['name']} does not have a host assigned")
        node_rt = self.registry.lookup("", "v1", "nodes")
        assert node_rt is not None
        try:
            node = self.svc.get(node_rt, "", node_name).obj
        except errors.NotFound:
            raise errors.ServiceUnavailable(f'node "{node_name}" is not registered') from None
        status = node.get("status") or {}
        address = next((a.get("address") for a in status.get("addresses") or []
                        if a.get("type") == "InternalIP"), None)
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        if not address or not isinstance(port, int):
            raise errors.ServiceUnavailable(f'node "{node_name}" has no agent endpoint')
        host = f"[{address}]" if ":" in address else address
        return f"https://{host}:{port}"

    async def _logs(self, request: web.Request, url: str,
                    params: dict[str, str]) -> web.StreamResponse:
        try:
            upstream = await self.session().get(url, params=params, ssl=self.ssl)
        except aiohttp.ClientError as e:
            raise errors.ServiceUnavailable(f"cannot reach the node's agent: {e}") from None
        async with upstream:
            if upstream.status != 200:
                raise await _agent_error(upstream)
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    async def _exec(self, request: web.Request, url: str) -> web.StreamResponse:
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        protocols = [p for p in EXEC_PROTOCOLS if p in offered] or list(EXEC_PROTOCOLS)
        params = [(k, v) for k, v in request.query.items()
                  if k in ("command", "stdin", "stdout", "stderr", "tty", "container")]
        if request.headers.get("Upgrade", "").lower() != "websocket":
            # kubectl falls back to SPDY when the websocket upgrade failed: give it the
            # agent's reason (it shows "unable to upgrade connection: <message>")
            refused = await streamcheck.handshake_error(self.session(), url, params,
                                                        tuple(protocols), self.ssl)
            raise refused or errors.BadRequest("Upgrade request required: exec and attach "
                                               "need a websocket (v5.channel.k8s.io)")
        return await self._relay_websocket(request, url, params, tuple(protocols))

    async def _relay_websocket(self, request: web.Request, url: str,
                               params: list[tuple[str, str]],
                               protocols: tuple[str, ...], *,
                               probe_upgrade: bool = False) -> web.StreamResponse:
        """A websocket from the client, relayed message by message to one on the agent.
        A refused handshake is asked again for the agent's reason (``streamcheck``; with
        ``probe_upgrade`` as an upgrade, where a plain GET means something else)."""
        try:
            upstream = await self.session().ws_connect(url, params=params, ssl=self.ssl,
                                                       protocols=protocols, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as e:
            refused = await streamcheck.handshake_error(self.session(), url, params, protocols,
                                                        self.ssl, upgrade=probe_upgrade)
            raise refused or errors.BadRequest(f"the agent refused: {e.status} {e.message}") \
                from None
        except aiohttp.ClientError as e:
            raise errors.ServiceUnavailable(f"cannot reach the node's agent: {e}") from None
        ws = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol
                                   else protocols, max_msg_size=0)
        await ws.prepare(request)
        tasks = [asyncio.create_task(_pipe(ws, upstream)), asyncio.create_task(_pipe(upstream, ws))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        await upstream.close()
        await ws.close()
        return ws


async def _pipe(source: Any, sink: Any) -> None:
    """Copy websocket messages from ``source`` to ``sink``, then close ``sink``."""
    async for msg in source:
        if msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
    await sink.close()


async def _agent_error(resp: aiohttp.ClientResponse) -> errors.ApiError:
    try:
        body = await resp.json(content_type=None)
        return errors.from_status(body, resp.status)
    except (ValueError, aiohttp.ClientError):
        return errors.ServiceUnavailable(f"the node's agent answered {resp.status}")
