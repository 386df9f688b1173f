"""The web console's weight and first load with a large namespace, in headless Chromium.

    .venv/bin/python bench/webui.py [--vms 1000] [--pods 5000] [--runs 3]

1. Weight: every file the console page loads (the page, its modules and stylesheet, xterm.js),
   raw and gzip-compressed, beside the 1 MB (compressed) budget.
2. First load: an `atoll server` on a scratch data dir holds one namespace with ``--vms``
   VirtualMachines and ``--pods`` pods (objects only: no hosts run them, so the figure is the
   API and the page, not QEMU). A fresh browser context signs in with a token and opens the
   namespace; the time runs from navigation to both tables holding every row (the lists
   fetched, the watches opened, the DOM built), ``--runs`` times. Beside it, in the same run,
   the same two lists fetched with a bare HTTP client (what any client pays for the data).
Chromium runs in a network namespace of its own with the server's port forwarded into it, as in
tests/e2e/test_webui.py (Chromium fails requests in flight when host interfaces change).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
from atoll import webui  # noqa: E402
from bench._up import api_server  # noqa: E402
from tests.conftest import kubectl_binary  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
NS = "bench-ui"
BATCH = 500
BUDGET = 1 << 20


def weight() -> tuple[int, int, int]:
    """(files, raw bytes, gzip bytes) of the page's static files and the vendored xterm.js."""
    files = [p for p in (ROOT / "src/atoll/webui/static").rglob("*") if p.is_file()]
    files += [webui.server.vendor_root() / rel for rel in webui.server.VENDOR_FILES.values()]
    files = [p for p in files if p.exists()]
    raw = sum(p.stat().st_size for p in files)
    packed = sum(len(gzip.compress(p.read_bytes(), 9)) for p in files)
    return len(files), raw, packed


def kubectl(kc: Path, *args: str, input: str | None = None) -> str:
    out = subprocess.run([kubectl_binary(), "--kubeconfig", str(kc), *args], input=input,
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise SystemExit(f"kubectl {' '.join(args[:3])}: {out.stderr}")
    return out.stdout


def fill(kc: Path, vms: int, pods: int) -> None:
    """The namespace's objects, created in batches of ``BATCH`` (a List per kubectl call)."""
    kubectl(kc, "create", "namespace", NS)

    def vm(i: int) -> dict[str, Any]:
        return {"apiVersion": "vmoperator.vmware.com/v1alpha3", "kind": "VirtualMachine",
                "metadata": {"name": f"vm-{i:05d}", "namespace": NS, "labels": {"app": "bench"}},
                "spec": {"className": "best-effort-small", "imageName": "tiny",
                         "powerState": "PoweredOff"}}

    def pod(i: int) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"pod-{i:05d}", "namespace": NS, "labels": {"app": "bench"}},
                "spec": {"nodeName": "bench-nowhere", "containers": [
                    {"name": "c", "image": "busybox", "command": ["sleep", "1d"]}]}}
    for make, count in ((vm, vms), (pod, pods)):
        for start in range(0, count, BATCH):
            items = [make(i) for i in range(start, min(count, start + BATCH))]
            kubectl(kc, "create", "-f", "-", "-o", "name",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def bare_lists(port: int, token: str, ca: Path) -> float:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    started = time.perf_counter()
    for path in (f"/apis/vmoperator.vmware.com/v1alpha6/namespaces/{NS}/virtualmachines",
                 f"/api/v1/namespaces/{NS}/pods"):
        req = urllib.request.Request(f"https://127.0.0.1:{port}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, context=ctx, timeout=60) as r:
            json.loads(r.read())
    return time.perf_counter() - started


class Netns:
    """A network namespace for the browser with 127.0.0.1:<port> relayed to the server."""

    def __init__(self, port: int) -> None:
        self.name = f"atoll-uibench-{os.getpid()}"
        self.port = port
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        from tests.e2e.test_webui import _relay, _setns
        self._relay = _relay
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(there)
            self.srv = socket.create_server(("127.0.0.1", port))
            _setns(home)
        finally:
            os.close(home)
            os.close(there)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.port))
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._relay, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.srv.close()
        subprocess.run(["ip", "netns", "delete", self.name], check=False)


def browser_loads(port: int, token: str, runs: int, vms: int, pods: int,
                  work: Path) -> list[float]:
    from playwright.sync_api import sync_playwright

    ns = Netns(port)
    wrapper = work / "chromium"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns.name} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    times = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(wrapper), args=["--no-sandbox"])
            for _ in range(runs):
                ctx = browser.new_context(ignore_https_errors=True)
                page = ctx.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"https://127.0.0.1:{port}/ui/")
                page.get_by_label("Bearer token").fill(token)
                page.get_by_role("button", name="Sign in").click()
                page.get_by_role("button", name="Sign out").wait_for()
                started = time.perf_counter()
                page.goto(f"https://127.0.0.1:{port}/ui/#/ns/{NS}")
                page.wait_for_function(
                    "([v, p]) => document.querySelectorAll('#vms tbody tr').length >= v && "
                    "document.querySelectorAll('#pods tbody tr').length >= p",
                    arg=[vms, pods], timeout=120_000, polling=50)
                times.append(time.perf_counter() - started)
                if errors:
                    raise SystemExit(f"the page failed: {errors}")
                ctx.close()
            browser.close()
    finally:
        ns.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    files, raw, packed = weight()
    print(f"console weight: {files} files, {raw / 1024:.0f} KiB raw, {packed / 1024:.0f} KiB "
          f"gzip (budget {BUDGET >> 10} KiB compressed)")
    if not CHROMIUM.exists():
        raise SystemExit("chromium is not installed (bash scripts/setup.sh)")
    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    with api_server(work / "server") as port:
        kc = work / "server" / "admin.kubeconfig"
        started = time.perf_counter()
        fill(kc, args.vms, args.pods)
        print(f"created {args.vms} VMs and {args.pods} pods in "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
        kubectl(kc, "-n", NS, "create", "serviceaccount", "viewer")
        kubectl(kc, "create", "clusterrolebinding", "bench-ui-admin",
                "--clusterrole=cluster-admin", f"--serviceaccount={NS}:viewer")
        token = kubectl(kc, "-n", NS, "create", "token", "viewer").strip()
        ca = work / "server" / "pki" / "ca.crt"
        loads, bares = [], []
        for _ in range(args.runs):
            bares.append(bare_lists(port, token, ca))
        loads = browser_loads(port, token, args.runs, args.vms, args.pods, work)
    subprocess.run(["rm", "-rf", str(work)], check=False)
    print(f"\nfirst load of a namespace with {args.vms} VMs and {args.pods} pods, "
          f"{args.runs} runs (s: median, max)")
    print(f"  console (sign-in done -> both tables full)  {statistics.median(loads):6.2f} "
          f"{max(loads):6.2f}")
    print(f"  bare HTTP GET of the same two lists         {statistics.median(bares):6.2f} "
          f"{max(bares):6.2f}")


if __name__ == "__main__":
    main()
