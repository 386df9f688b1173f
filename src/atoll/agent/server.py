"""The agent's HTTPS API (kubelet's port 10250): container logs and exec, for the API server.

Only the API server talks to it: clients must present a certificate signed by
the cluster CA for the ``kube-apiserver-kubelet-client`` user (or a
``system:masters`` member).  ``kubectl logs`` and ``kubectl exec`` reach it
through the API server's ``pods/log`` and ``pods/exec`` subresources.

Exec speaks the Kubernetes channel protocol over a websocket
(``v5.channel.k8s.io``, ``v4.channel.k8s.io``): every binary message starts
with its channel (0 stdin, 1 stdout, 2 stderr, 3 the final Status, 4 terminal
resize, 255 close a stream).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import json
import logging
import os
import signal
import ssl
import struct
import termios
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from atoll.agent import logs, portforward

if TYPE_CHECKING:
    from atoll.agent.agent import Agent
    from atoll.agent.podworker import Attempt

log = logging.getLogger(__name__)
ALLOWED_USERS = {"kube-apiserver-kubelet-client"}
ALLOWED_GROUPS = {"system:masters"}
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


class AgentServer:
    def __init__(self, agent: "Agent", port: int) -> None:
        self.agent = agent
        self.port = port
        self.runner: web.AppRunner | None = None

    async def start(self, ca_pem: bytes) -> None:
        app = web.Application(middlewares=[self._authorize])
        app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.container_logs)
        app.router.add_get("/exec/{ns}/{pod}/{container}", self.exec)
        app.router.add_get("/attach/{ns}/{pod}/{container}", self.attach)
        app.router.add_get("/vmConsole/{uid}", self.vm_console)
        app.router.add_get("/stats/summary", self.stats_summary)
        app.router.add_get("/portForward/{ns}/{pod}", self.port_forward)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert, key = _serving_cert(self.agent.settings.data_dir / "pki", self.agent.settings.name,
                                  self.agent.settings.host_ip)
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
            return _status(403, "Forbidden", f"user {user!r} may not use the agent API")
        return await handler(request)

    def _attempt(self, request: web.Request, previous: bool = False) -> "Attempt | web.Response":
        ns, name, container = (request.match_info["ns"], request.match_info["pod"],
                               request.match_info["container"])
        worker = next((w for w in self.agent.workers.values()
                       if w.pod["metadata"].get("namespace") == ns
                       and w.pod["metadata"].get("name") == name), None)
        if worker is None:
            return _status(404, "NotFound", f'pod "{name}" not found on this node')
        attempts = worker.attempts.get(container) or []
        wanted = attempts[-2] if previous else (attempts[-1] if attempts else None)
        if previous and len(attempts) < 2:
            wanted = None
        if wanted is None:
            what = "previous terminated container" if previous else "container"
            return _status(400, "BadRequest", f'{what} "{container}" in pod "{name}" not found'
                           if previous else f'container "{container}" in pod "{name}" is '
                           "waiting to start: ContainerCreating")
        return wanted

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        attempt = self._attempt(request, previous=q.get("previous") in ("true", "1"))
        if isinstance(attempt, web.Response):
            return attempt
        try:
            opts = logs.LogOptions(
                follow=q.get("follow") in ("true", "1"),
                tail_lines=int(q["tailLines"]) if "tailLines" in q else None,
                since=_since(q), timestamps=q.get("timestamps") in ("true", "1"),
                limit_bytes=int(q["limitBytes"]) if "limitBytes" in q else None)
        except ValueError as e:
            return _status(400, "BadRequest", str(e))
        path = Path(attempt.meta.log_path)
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        if path.is_file():
            async for chunk in logs.stream(path, opts, lambda: attempt.exit is not None):
                await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def port_forward(self, request: web.Request) -> web.StreamResponse:
        """`kubectl port-forward`: SPDY streams in a websocket, connections inside the pod."""
        ns, name = request.match_info["ns"], request.match_info["pod"]
        worker = next((w for w in self.agent.workers.values()
                       if w.pod["metadata"].get("namespace") == ns
                       and w.pod["metadata"].get("name") == name), None)
        if worker is None:
            return _status(404, "NotFound", f'pod "{name}" not found on this node')
        if (worker.pod.get("status") or {}).get("phase") != "Running" and \
                not any(a and a[-1].exit is None for a in worker.attempts.values()):
            return _status(400, "BadRequest", f'pod "{name}" is not running')
        ws = web.WebSocketResponse(protocols=(portforward.PROTOCOL,), max_msg_size=0)
        await ws.prepare(request)
        netns, ip = portforward.pod_network(worker.dir)
        if worker.spec.get("hostNetwork"):
            netns, ip = None, None
        await portforward.PortForwarder(ws, netns, ip, f"{ns}/{name}").run()
        await ws.close()
        return ws

    async def stats_summary(self, request: web.Request) -> web.Response:
        """Usage of the node and its containers (what the metrics API reads)."""
        return web.json_response(self.agent.stats.summary(self.agent.settings.name))

    async def vm_console(self, request: web.Request) -> web.StreamResponse:
        """A VM's serial console: a websocket to attach, a plain GET for the log."""
        from atoll.agent import vmconsole

        worker = self.agent.vms.workers.get(request.match_info["uid"])
        if worker is None:
            return _status(404, "NotFound", "the VM is not on this node")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if not worker.qemu.running:
                return _status(409, "Conflict", "the VM is not powered on")
            return await vmconsole.attach(request, worker.run / "console.sock")
        tail = request.query.get("tailLines")
        try:
            lines = int(tail) if tail is not None else None
        except ValueError:
            return _status(400, "BadRequest", f"tailLines must be an integer, not {tail!r}")
        data = await asyncio.to_thread(vmconsole.read_log, worker.run / "console.log", lines)
        return web.Response(body=data, content_type="text/plain")

    async def exec(self, request: web.Request) -> web.StreamResponse:
        attempt = self._attempt(request)
        if isinstance(attempt, web.Response):
            return attempt
        if attempt.exit is not None:
            return _status(400, "BadRequest", "cannot exec in a container that is not running")
        q = request.query
        command = q.getall("command", [])
        if not command:
            return _status(400, "BadRequest", "you must specify at least one command")
        ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        tty = q.get("tty") in ("true", "1")
        want_stdin = q.get("stdin") in ("true", "1")
        runtime = self.agent.runtime
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
        attempt = self._attempt(request)
        if isinstance(attempt, web.Response):
            return attempt
        want_stdin = request.query.get("stdin") in ("true", "1")
        fifos = self.agent.runtime.stdin_fifos(attempt.meta.id) if want_stdin else None
        if want_stdin and fifos is None:
            return _status(400, "BadRequest", f"stdin is not enabled for container "
                                              f"{attempt.meta.name}: set stdin: true in its spec")
        once = self._container_spec(request, attempt.meta.name).get("stdinOnce") is True
        ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        channels = {b"stdout": STDOUT, b"stderr": STDERR}
        path = Path(attempt.meta.log_path)
        # where "from now on" starts: before any input, so its answer is not missed
        start = path.stat().st_size if path.is_file() else None
        reader = asyncio.create_task(_drain_client(ws) if fifos is None else
                                     _feed_stdin(ws, fifos, once))
        try:
            if path.is_file():
                async for stream_name, text in logs.follow_records(
                        path, lambda: attempt.exit is not None or reader.done(), start):
                    if ws.closed:
                        break
                    await ws.send_bytes(bytes([channels.get(stream_name, STDOUT)]) + text)
            if not ws.closed:
                await ws.send_bytes(bytes([ERROR]) + json.dumps(
                    {"metadata": {}, "status": "Success"}).encode())
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await ws.close()
        return ws

    def _container_spec(self, request: web.Request, name: str) -> dict[str, Any]:
        ns, pod = request.match_info["ns"], request.match_info["pod"]
        for w in self.agent.workers.values():
            if w.pod["metadata"].get("namespace") == ns and w.pod["metadata"].get("name") == pod:
                for c in (w.spec.get("containers") or []) + (w.spec.get("initContainers") or []):
                    if c.get("name") == name:
                        return c
        return {}


async def _drain_client(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what an attach client sends, to notice when it goes away."""
    async for _ in ws:
        pass


async def _feed_stdin(ws: web.WebSocketResponse, fifos: tuple[Path, Path], once: bool) -> None:
    """Channel 0 into the container's stdin FIFO until the client closes its stdin (v5's
    close message) or goes away; then, for ``stdinOnce``, the container's stdin ends."""
    data_fifo, close_fifo = fifos
    try:  # non-blocking open: a FIFO whose shim is gone has no reader (ENXIO), not a hang
        fd = os.open(data_fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        async for _ in ws:
            pass
        return
    os.set_blocking(fd, True)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, payload = msg.data[0], msg.data[1:]
            if channel == STDIN and payload:
                await asyncio.to_thread(_write_all, fd, payload)
            elif channel == CLOSE and payload[:1] == bytes([STDIN]):
                break
    finally:
        os.close(fd)
        if once:
            await asyncio.to_thread(_close_stdin, close_fifo)
    async for _ in ws:  # keep noticing the client until it leaves
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _close_stdin(close_fifo: Path) -> None:
    try:
        fd = os.open(close_fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # the container is gone already
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)


class ExecSession:
    """One ``runc exec`` wired to a websocket with the channel protocol."""

    def __init__(self, ws: web.WebSocketResponse, argv: list[str], *, tty: bool, stdin: bool,
                 v5: bool) -> None:
        self.ws = ws
        self.argv = argv
        self.tty = tty
        self.want_stdin = stdin
        self.v5 = v5
        self.master = -1

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.tty:
            self.master, slave = os.openpty()
            proc = await asyncio.create_subprocess_exec(*self.argv, stdin=slave, stdout=slave,
                                                        stderr=slave, start_new_session=True)
            os.close(slave)
            os.set_blocking(self.master, False)
            outputs = [self._pump_fd(self.master, STDOUT)]
        else:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE if self.want_stdin
                else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            outputs = [self._pump_stream(proc.stdout, STDOUT),
                       self._pump_stream(proc.stderr, STDERR)]
        reader = loop.create_task(self._read_client(proc))
        await asyncio.gather(*outputs)
        code = await proc.wait()
        reader.cancel()
        if self.master >= 0:
            os.close(self.master)
        await self._send(ERROR, json.dumps(_exit_status(code, self.argv)).encode())
        await self.ws.close()

    async def _send(self, channel: int, data: bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(bytes([channel]) + data)

    async def _pump_stream(self, stream: asyncio.StreamReader | None, channel: int) -> None:
        if stream is None:
            return
        while True:
            data = await stream.read(32768)
            if not data:
                return
            await self._send(channel, data)

    async def _pump_fd(self, fd: int, channel: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            ready = loop.create_future()
            loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
            try:
                await ready
            finally:
                loop.remove_reader(fd)
            try:
                data = os.read(fd, 32768)
            except BlockingIOError:
                continue
            except OSError:  # EIO: the terminal's other side closed
                return
            if not data:
                return
            await self._send(channel, data)

    async def _read_client(self, proc: asyncio.subprocess.Process) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, payload = msg.data[0], msg.data[1:]
            if channel == STDIN:
                if self.tty and self.master >= 0:
                    os.write(self.master, payload)
                elif proc.stdin is not None:
                    proc.stdin.write(payload)
                    await proc.stdin.drain()
            elif channel == RESIZE and self.tty and self.master >= 0:
                try:
                    size = json.loads(payload)
                    fcntl.ioctl(self.master, termios.TIOCSWINSZ,
                                struct.pack("HHHH", int(size["Height"]), int(size["Width"]), 0, 0))
                    os.kill(proc.pid, signal.SIGWINCH)
                except (ValueError, KeyError, OSError):
                    continue
            elif channel == CLOSE and payload[:1] == bytes([STDIN]):
                if self.tty and self.master >= 0:
                    os.write(self.master, b"\x04")
                elif proc.stdin is not None:
                    proc.stdin.close()


def _exit_status(code: int, argv: list[str]) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    command = argv[argv.index("exec") + 1:]
    command = command[1:] if command and command[0] == "-t" else command
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"{command[1:]}, exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def _since(q: Any) -> dt.datetime | None:
    if "sinceSeconds" in q:
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=int(q["sinceSeconds"]))
    if "sinceTime" in q:
        return dt.datetime.fromisoformat(q["sinceTime"].replace("Z", "+00:00"))
    return None


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    return web.json_response(body, status=code)


def _serving_cert(directory: Path, name: str, ip: str) -> tuple[Path, Path]:
    """A self-signed serving certificate, as kubelet makes when none is given."""
    cert_path, key_path = directory / "agent.crt", directory / "agent.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    import ipaddress

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}@atoll-agent")])
    now = dt.datetime.now(dt.timezone.utc)
    sans: list[x509.GeneralName] = [x509.DNSName(name)]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
    except ValueError:
        pass
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256()))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
