"""The agent's HTTPS API (kubelet's port 10250): logs, exec, attach, port-forward, VM consoles.

Only the API server talks to it: clients must present a certificate signed by the cluster CA
for the ``kube-apiserver-kubelet-client`` user (or a ``system:masters`` member).  ``kubectl
logs``/``exec``/``attach``/``port-forward`` reach it through the API server's pod
subresources.

The server sees the host through ``Lookups`` (a few callables the Agent provides), not the
Agent, and a failed request raises an ``atoll.api.errors.ApiError``: ``_render_errors`` is the
one place that turns it into a ``Status`` response.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from atoll.agent.pods import logs
from atoll.agent.pods.attempts import Attempt
from atoll.agent.pods.worker import PodWorker
from atoll.agent.podvm import exec_ws as podvm_exec
from atoll.agent.podvm import portforward as podvm_portforward
from atoll.agent.podvm.dispatch import HandlerRuntimes
from atoll.agent.podvm.runtime import HANDLER as POD_VM_HANDLER
from atoll.agent.podvm.runtime import PodVMRuntime
from atoll.agent.runtime.containers import ContainerRuntime
from atoll.agent.streams import attach, console, portforward, portforward_ws
from atoll.agent.streams.channels import PROTOCOLS
from atoll.agent.streams.exec_session import ExecSession
from atoll.agent.streams.tls import serving_cert
from atoll.agent.vms.worker import VMWorker
from atoll.api import errors

log = logging.getLogger(__name__)
ALLOWED_USERS = {"kube-apiserver-kubelet-client"}
ALLOWED_GROUPS = {"system:masters"}


@dataclass(frozen=True)
class Lookups:
    """What the server may find on this host, each looked up per request."""

    #: the pod worker of (namespace, name), or None
    pod: Callable[[str, str], PodWorker | None]
    #: the VM worker of a VM uid, or None
    vm: Callable[[str], VMWorker | None]
    #: the usage summary (``/stats/summary``)
    stats: Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Identity:
    """Who the server says it is: where its serving certificate lives, and for what name/IP."""

    pki_dir: Path
    node_name: str
    host_ip: str


def render(err: errors.ApiError) -> web.Response:
    """An ApiError as the ``Status`` response the API server relays to the client."""
    headers = {"Retry-After": str(err.retry_after)} if err.retry_after is not None else None
    return web.json_response(err.to_status(), status=err.code, headers=headers)


class AgentServer:
    def __init__(self, lookups: Lookups, runtime: ContainerRuntime, port: int,
                 identity: Identity) -> None:
        self.lookups = lookups
        self.runtime = runtime
        self.port = port
        self.identity = identity
        self.runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        """The routes, behind error rendering (outermost) and client authorization."""
        app = web.Application(middlewares=[self._render_errors, self._authorize])
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.container_logs)
        app.router.add_get("/exec/{ns}/{pod}/{container}", self.exec)
        app.router.add_get("/attach/{ns}/{pod}/{container}", self.attach)
        app.router.add_get("/vmConsole/{uid}", self.vm_console)
        app.router.add_get("/stats/summary", self.stats_summary)
        app.router.add_get("/portForward/{ns}/{pod}", self.port_forward)
        return app

    async def start(self, ca_pem: bytes) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert, key = serving_cert(self.identity.pki_dir, self.identity.node_name,
                                 self.identity.host_ip)
        ctx.load_cert_chain(cert, key)
        if ca_pem:
            ctx.load_verify_locations(cadata=ca_pem.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED
        site = web.TCPSite(self.runner, "0.0.0.0", self.port, ssl_context=ctx,
                           reuse_address=True)
        await site.start()
        log.info("agent API on port %d", self.port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @web.middleware
    async def _render_errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.ApiError as e:
            return render(e)

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        user, groups = "", set()
        for rdn in (peer or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    user = value
                elif key == "organizationName":
                    groups.add(value)
        if user not in ALLOWED_USERS and not groups & ALLOWED_GROUPS:
            raise errors.Forbidden(f"user {user!r} may not use the agent API")
        return await handler(request)

    def _pod(self, request: web.Request) -> PodWorker:
        ns, name = request.match_info["ns"], request.match_info["pod"]
        worker = self.lookups.pod(ns, name)
        if worker is None:
            raise errors.NotFound(f'pod "{name}" not found on this node')
        return worker

    def _attempt(self, request: web.Request,
                 previous: bool = False) -> tuple[PodWorker, Attempt]:
        """The pod's worker and the container's current (or previous) attempt."""
        name, container = request.match_info["pod"], request.match_info["container"]
        worker = self._pod(request)
        attempts = worker.attempts.get(container) or []
        if previous:
            wanted = attempts[-2] if len(attempts) >= 2 else None
        else:
            wanted = attempts[-1] if attempts else None
        if wanted is None:
            what = "previous terminated container" if previous else "container"
            raise errors.BadRequest(f'{what} "{container}" in pod "{name}" not found'
                                    if previous else f'container "{container}" in pod "{name}" '
                                    "is waiting to start: ContainerCreating")
        return worker, wanted

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        _, attempt = self._attempt(request, previous=q.get("previous") in ("true", "1"))
        try:
            opts = logs.LogOptions(
                follow=q.get("follow") in ("true", "1"),
                tail_lines=int(q["tailLines"]) if "tailLines" in q else None,
                since=_since(q), timestamps=q.get("timestamps") in ("true", "1"),
                limit_bytes=int(q["limitBytes"]) if "limitBytes" in q else None)
        except ValueError as e:
            raise errors.BadRequest(str(e)) from None
        path = Path(attempt.meta.log_path)
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        if path.is_file():
            async for chunk in logs.stream(path, opts, lambda: attempt.exit is not None):
                await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def port_forward(self, request: web.Request) -> web.StreamResponse:
        """Port-forward into the pod: kubectl's SPDY streams in a websocket, or the plain
        ``v4.channel.k8s.io`` channels with the ports in the query (official clients)."""
        ns, name = request.match_info["ns"], request.match_info["pod"]
        worker = self._pod(request)
        if (worker.pod.get("status") or {}).get("phase") != "Running" and \
                not any(a and a[-1].exit is None for a in worker.attempts.values()):
            raise errors.BadRequest(f'pod "{name}" is not running')
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        channels = portforward.PROTOCOL not in offered and \
            any(p in portforward_ws.PROTOCOLS for p in offered)
        ports: list[int] = []
        if channels:
            try:
                ports = portforward_ws.parse_ports(request.query.getall("ports", []))
            except portforward_ws.BadPorts as e:
                raise errors.BadRequest(str(e)) from None
        ws = web.WebSocketResponse(protocols=portforward_ws.PROTOCOLS if channels
                                   else (portforward.PROTOCOL,), max_msg_size=0)
        await ws.prepare(request)
        pod_vm = _pod_vm(worker)
        if pod_vm is not None:  # dialled by the guest agent, inside the guest
            vm_runtime, uid = pod_vm, worker.uid

            async def dial(port: int) -> Any:
                return await vm_runtime.open_port(uid, port)
            if channels:
                await portforward_ws.WebsocketPortForwarder(ws, dial, ports,
                                                            f"{ns}/{name}").run()
            else:
                await podvm_portforward.GuestPortForwarder(ws, dial, f"{ns}/{name}").run()
            await ws.close()
            return ws
        netns, ip = portforward.pod_network(worker.dir)
        if worker.spec.get("hostNetwork"):
            netns, ip = None, None
        if channels:
            await portforward_ws.WebsocketPortForwarder(
                ws, lambda port: portforward.dial(netns, ip, port), ports, f"{ns}/{name}").run()
        else:
            await portforward.PortForwarder(ws, netns, ip, f"{ns}/{name}").run()
        await ws.close()
        return ws

    async def stats_summary(self, request: web.Request) -> web.Response:
        """Usage of the node and its containers (what the metrics API reads)."""
        return web.json_response(self.lookups.stats())

    async def vm_console(self, request: web.Request) -> web.StreamResponse:
        """A VM's serial console: a websocket to attach, a plain GET for the log."""
        worker = self.lookups.vm(request.match_info["uid"])
        if worker is None:
            raise errors.NotFound("the VM is not on this node")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if not worker.qemu.running:
                raise errors.Conflict("the VM is not powered on")
            return await console.attach(request, worker.run / "console.sock")
        tail = request.query.get("tailLines")
        try:
            lines = int(tail) if tail is not None else None
        except ValueError:
            raise errors.BadRequest(f"tailLines must be an integer, not {tail!r}") from None
        data = await asyncio.to_thread(console.read_log, worker.run / "console.log", lines)
        return web.Response(body=data, content_type="text/plain")

    def _stream_attempt(self, request: web.Request) -> tuple[PodWorker, Attempt]:
        """The container an exec or attach reaches, as kubelet names the ones it cannot."""
        name, container = request.match_info["pod"], request.match_info["container"]
        worker = self._pod(request)
        attempts = worker.attempts.get(container) or []
        if not attempts:
            raise errors.BadRequest(f'container not found ("{container}"): it has not started '
                                    f'in pod "{name}" yet')
        return worker, attempts[-1]

    async def exec(self, request: web.Request) -> web.StreamResponse:
        worker, attempt = self._stream_attempt(request)
        if attempt.exit is not None:
            raise errors.BadRequest(f'cannot exec in a stopped container: container '
                                    f'"{attempt.meta.name}" in pod '
                                    f'"{request.match_info["pod"]}" is not running')
        q = request.query
        command = q.getall("command", [])
        if not command:
            raise errors.BadRequest("you must specify at least one command")
        tty = q.get("tty") in ("true", "1")
        want_stdin = q.get("stdin") in ("true", "1")
        pod_vm = worker.runtime.pod_vm_of(attempt.meta.id) \
            if isinstance(worker.runtime, HandlerRuntimes) else None
        if pod_vm is not None and (tty or want_stdin):
            raise errors.BadRequest("exec into a pod-VM supports neither a terminal nor stdin "
                                    "yet: leave out -i and -t")
        _require_upgrade(request)
        ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        if pod_vm is not None:  # through the guest agent
            await podvm_exec.serve(ws, pod_vm, attempt.meta.id, command)
            return ws
        runtime = self.runtime
        argv = [runtime.runc, "--root", str(runtime.runc_root), "exec", *(["-t"] if tty else []),
                attempt.meta.id, *command]
        session = ExecSession(ws, argv, tty=tty, stdin=want_stdin,
                              v5=ws.ws_protocol == "v5.channel.k8s.io")
        await session.run()
        return ws

    async def attach(self, request: web.Request) -> web.StreamResponse:
        """The container's output from now on, on the stdout/stderr channels, and with
        ``stdin=true`` the client's input into the container's stdin (containers with
        ``stdin: true``; ``stdinOnce`` closes it when the first session ends)."""
        worker, attempt = self._stream_attempt(request)
        want_stdin = request.query.get("stdin") in ("true", "1")
        if want_stdin and _pod_vm(worker) is not None:  # output only: it is the CRI log's
            raise errors.BadRequest("attach to a pod-VM supports no stdin yet: leave out -i")
        fifos = self.runtime.stdin_fifos(attempt.meta.id) if want_stdin else None
        if want_stdin and fifos is None:
            raise errors.BadRequest(f"stdin is not enabled for container {attempt.meta.name}: "
                                    "set stdin: true in its spec")
        spec = _container_spec(worker, attempt.meta.name)
        once = spec.get("stdinOnce") is True
        resize = self.runtime.resize_fifo(attempt.meta.id) if spec.get("tty") else None
        _require_upgrade(request)
        ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        await attach.stream(ws, attempt, fifos, once, resize)
        return ws


def _pod_vm(worker: PodWorker) -> PodVMRuntime | None:
    """The pod-VM runtime of a pod whose RuntimeClass handler is atoll-vm, else None."""
    runtime = worker.runtime
    if not isinstance(runtime, HandlerRuntimes) or worker.runtime_handler != POD_VM_HANDLER:
        return None
    vm = runtime.runtimes.get(POD_VM_HANDLER)
    return vm if isinstance(vm, PodVMRuntime) else None


def _require_upgrade(request: web.Request) -> None:
    """Refuse a stream request that is not a websocket upgrade (after the checks above it,
    so the API server can ask a plain GET why a handshake was refused)."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise errors.BadRequest("Upgrade request required: exec and attach need a websocket "
                                "(v5.channel.k8s.io)")


def _container_spec(worker: PodWorker, name: str) -> dict[str, Any]:
    for c in (worker.spec.get("containers") or []) + (worker.spec.get("initContainers") or []) \
            + (worker.spec.get("ephemeralContainers") or []):
        if c.get("name") == name:
            return c
    return {}


def _since(q: Any) -> dt.datetime | None:
    if "sinceSeconds" in q:
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=int(q["sinceSeconds"]))
    if "sinceTime" in q:
        return dt.datetime.fromisoformat(q["sinceTime"].replace("Z", "+00:00"))
    return None


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")
