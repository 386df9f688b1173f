"""Startup, liveness and readiness probes (exec, tcpSocket, httpGet), per container.

Each probe of a running container is a task that checks every
``periodSeconds`` after ``initialDelaySeconds``, counting consecutive
results against ``successThreshold``/``failureThreshold`` as kubelet does:
readiness changes wake the pod worker (the status changes); a liveness or
startup failure kills the container, and its restart policy takes over.
Liveness and readiness wait for the startup probe to succeed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import aiohttp

from atoll.agent.pods.attempts import Attempt
from atoll.agent.runtime.interface import PodRuntime

log = logging.getLogger(__name__)


class ProbeRunner:
    """The probes of one pod.  It is told what it needs (not given the worker): how to wake
    the worker, the runtime to exec in and signal, and the pod's IP as it is now."""

    def __init__(self, *, key: str, runtime: PodRuntime, wake: Callable[[], None],
                 pod_ip: Callable[[], str],
                 event: Callable[[str, str, str], None] | None = None) -> None:
        self.key = key
        #: records an Event about the pod (type, reason, message), as kubelet's prober does
        self.event = event or (lambda type_, reason, message: None)
        self.runtime = runtime
        self.wake = wake
        self.pod_ip = pod_ip
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._started: dict[str, asyncio.Event] = {}
        self._ready: dict[str, bool] = {}
        self._has_readiness: dict[str, bool] = {}

    def started(self, name: str) -> bool:
        ev = self._started.get(name)
        return ev is None or ev.is_set()

    def ready(self, name: str) -> bool:
        if not self.started(name):
            return False
        if self._has_readiness.get(name):
            return self._ready.get(name, False)
        return True

    def start(self, container: dict[str, Any], attempt: Attempt) -> None:
        name = container["name"]
        self.forget(name)
        started = asyncio.Event()
        self._started[name] = started
        if not isinstance(container.get("startupProbe"), dict):
            started.set()
        self._has_readiness[name] = isinstance(container.get("readinessProbe"), dict)
        tasks = []
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(kind)
            if isinstance(probe, dict):
                tasks.append(asyncio.create_task(self._loop(kind, probe, container, attempt)))
        self._tasks[name] = tasks

    def forget(self, name: str) -> None:
        for t in self._tasks.pop(name, []):
            t.cancel()
        self._ready.pop(name, None)
        self._started.pop(name, None)

    def stop(self) -> None:
        for name in list(self._tasks):
            self.forget(name)

    async def _loop(self, kind: str, probe: dict[str, Any], container: dict[str, Any],
                    attempt: Attempt) -> None:
        name = container["name"]
        period = max(1, _int(probe.get("periodSeconds"), 10))
        success_needed = max(1, _int(probe.get("successThreshold"), 1))
        failure_limit = max(1, _int(probe.get("failureThreshold"), 3))
        started = self._started[name]
        if kind != "startupProbe":
            await started.wait()
        await asyncio.sleep(max(0, _int(probe.get("initialDelaySeconds"), 0)))
        successes = failures = 0
        label = _LABELS[kind]
        while attempt.exit is None:
            ok, detail = await self._check(probe, container, attempt)
            if attempt.exit is not None:
                return  # the container ended while the probe ran: nothing to report
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if not ok:
                self.event("Warning", "Unhealthy", f"{label} probe failed: {detail}".rstrip())
            if kind == "startupProbe":
                if ok:
                    started.set()
                    self.wake()
                    return
                if failures >= failure_limit:
                    self._kill(attempt, f"startup probe failed {failures} times", label)
                    return
            elif kind == "livenessProbe":
                if failures >= failure_limit:
                    self._kill(attempt, f"liveness probe failed {failures} times", label)
                    return
            else:
                before = self._ready.get(name, False)
                if successes >= success_needed:
                    self._ready[name] = True
                elif failures >= failure_limit:
                    self._ready[name] = False
                if self._ready.get(name, False) != before:
                    self.wake()
            await asyncio.sleep(period)

    def _kill(self, attempt: Attempt, why: str, label: str) -> None:
        log.info("pod %s container %s: %s, killing it", self.key, attempt.meta.name, why)
        self.event("Normal", "Killing", f"Container {attempt.meta.name} failed "
                                        f"{label.lower()} probe, will be restarted")
        self.runtime.signal(attempt.meta.id, signal.SIGKILL)

    async def _check(self, probe: dict[str, Any], container: dict[str, Any],
                     attempt: Attempt) -> tuple[bool, str]:
        """(healthy, what went wrong in kubelet's words)."""
        timeout = max(1, _int(probe.get("timeoutSeconds"), 1))
        try:
            if isinstance(probe.get("exec"), dict):
                command = [str(c) for c in probe["exec"].get("command") or []]
                if not command:
                    return False, "no command given"
                code, output = await self.runtime.exec(attempt.meta.id, command,
                                                       timeout=timeout)
                text = output.decode(errors="replace") if isinstance(output, bytes) \
                    else str(output or "")
                return code == 0, text[:1024] or f"command exited with {code}"
            if isinstance(probe.get("tcpSocket"), dict):
                spec = probe["tcpSocket"]
                host = spec.get("host") or self.pod_ip()
                port = _port(spec.get("port"), container)
                try:
                    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                       timeout)
                except (OSError, asyncio.TimeoutError) as e:
                    return False, f"dial tcp {host}:{port}: {_why(e)}"
                writer.close()
                return True, ""
            if isinstance(probe.get("httpGet"), dict):
                return await self._http(probe["httpGet"], container, timeout)
        except asyncio.TimeoutError:
            return False, f"command timed out after {timeout}s"
        except (OSError, ValueError, aiohttp.ClientError) as e:
            return False, _why(e)
        return False, "probe handler not supported (grpc)"  # never healthy

    async def _http(self, spec: dict[str, Any], container: dict[str, Any],
                    timeout: int) -> tuple[bool, str]:
        scheme = str(spec.get("scheme") or "HTTP").lower()
        host = spec.get("host") or self.pod_ip()
        port = _port(spec.get("port"), container)
        path = str(spec.get("path") or "/")
        headers = {str(h.get("name")): str(h.get("value")) for h in spec.get("httpHeaders") or []
                   if isinstance(h, dict)}
        headers.setdefault("User-Agent", "kube-probe/1.37")
        url = f"{scheme}://{host}:{port}{path}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
                async with s.get(url, headers=headers, ssl=False, allow_redirects=False) as r:
                    if 200 <= r.status < 400:
                        return True, ""
                    return False, f"HTTP probe failed with statuscode: {r.status}"
        except (OSError, asyncio.TimeoutError, aiohttp.ClientConnectorError) as e:
            return False, f'Get "{url}": dial tcp {host}:{port}: {_why(e)}'
        except aiohttp.ClientError as e:
            return False, f'Get "{url}": {_why(e)}'


_LABELS = {"startupProbe": "Startup", "livenessProbe": "Liveness", "readinessProbe": "Readiness"}


def _why(e: BaseException) -> str:
    """An error as a short reason (kubelet's Go errors read "connect: connection refused")."""
    if isinstance(e, asyncio.TimeoutError):
        return "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    if isinstance(e, aiohttp.ClientConnectorError) and e.os_error is not None:
        e = e.os_error
    if isinstance(e, OSError) and e.errno:
        return f"connect: {os.strerror(e.errno).lower()}"
    return str(e) or type(e).__name__


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _port(value: Any, container: dict[str, Any]) -> int:
    if isinstance(value, int):
        return value
    for p in container.get("ports") or []:
        if p.get("name") == value and isinstance(p.get("containerPort"), int):
            return p["containerPort"]
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ValueError(f"unknown port {value!r}")
