"""The web console in a real headless Chromium (Playwright, Debian's chromium) against the
session platform: signing in with ServiceAccount tokens, RBAC deciding what each person
sees, hostile strings rendered as text, a pod's logs and exec terminal, a VM's serial
console, and the strict headers of every /ui/ answer.  Screenshots of each page go to
tests/artifacts/webui/ (not in git); no page may log an error or throw.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import TEST_NODE, Platform, wait_until
from tests.e2e.test_pods import phase, pod_yaml, wait_pod
from tests.e2e import test_vms
from tests.e2e.test_vms import power, vm_yaml, wait_console, wait_vm

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "webui"
EVIL_ANNOTATION = "<script>window.__pwned=1</script>"
EVIL_MARKUP = "<img src=x onerror=window.__pwned=1>"

if not CHROMIUM.exists():
    pytest.skip("chromium is not installed (bash scripts/setup.sh installs Debian's chromium)",
                allow_module_level=True)
tiny_image = test_vms.tiny_image  # the session's tiny VM image, built once
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(pip install -e '.[test]')")
expect = sync_api.expect


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _setns(fd: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")


def _relay(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture(scope="module")
def browser_netns(platform: Platform) -> Iterator[str]:
    """A network namespace of the browser's own, with the API server's port forwarded into it
    on 127.0.0.1: Chromium fails requests in flight (ERR_NETWORK_CHANGED) whenever a host
    interface changes, and pods and tests on this machine add and remove them all the time."""
    name = f"atoll-ui-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    listener: list[socket.socket] = []

    def serve() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(there)
            srv = socket.create_server(("127.0.0.1", platform.port))
            _setns(home)
        finally:
            os.close(home)
            os.close(there)
        listener.append(srv)
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", platform.port))
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_relay, args=(a, b), daemon=True).start()
    try:
        threading.Thread(target=serve, daemon=True).start()
        wait_until("the browser's port forward", lambda: listener)
        yield name
    finally:
        for srv in listener:
            srv.close()
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture(scope="module")
def browser(browser_netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    wrapper = tmp_path_factory.mktemp("chromium") / "chromium"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {browser_netns} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(wrapper), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def tenant(platform: Platform) -> Iterator[dict[str, str]]:
    """A namespace with an editor (ServiceAccount, RoleBinding edit) and hostile strings in
    it; another namespace the editor holds no role in; an administrator's token."""
    ns, other = f"ui-{uuid.uuid4().hex[:6]}", f"ui-other-{uuid.uuid4().hex[:6]}"
    admin_binding = f"{ns}-admin"
    platform.kubectl("create", "namespace", ns)
    platform.kubectl("create", "namespace", other)
    platform.kubectl("annotate", "namespace", ns, f"evil={EVIL_ANNOTATION}")
    platform.kubectl("-n", ns, "create", "serviceaccount", "editor")
    platform.kubectl("-n", ns, "create", "serviceaccount", "boss")
    platform.kubectl("-n", ns, "create", "rolebinding", "editor", "--clusterrole=edit",
                     f"--serviceaccount={ns}:editor")
    platform.kubectl("create", "clusterrolebinding", admin_binding, "--clusterrole=cluster-admin",
                     f"--serviceaccount={ns}:boss")
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "hostile", "namespace": ns},
        "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": ns},
        "reason": "Hostile", "message": f"{EVIL_MARKUP} {EVIL_ANNOTATION}", "type": "Warning",
        "source": {"component": "test"}}))
    tokens = {who: platform.kubectl("-n", ns, "create", "token", who).stdout.strip()
              for who in ("editor", "boss")}
    yield {"ns": ns, "other": other, **tokens}
    platform.kubectl("delete", "clusterrolebinding", admin_binding, check=False)
    platform.kubectl("delete", "namespace", ns, other, "--wait=false", check=False)


class Console:
    """A page with everything it logs or throws collected, signed in with a token."""

    def __init__(self, browser: Any, platform: Platform, **context: Any) -> None:
        self.context = browser.new_context(ignore_https_errors=True, **context)
        self.page = self.context.new_page()
        self.base = platform.url + "/ui/"
        self.problems: list[str] = []
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        self.page.on("console", lambda m: self.problems.append(f"console: {m.text}")
                     if m.type == "error" else None)

    def sign_in(self, token: str) -> Any:
        page = self.page
        page.goto(self.base)
        page.get_by_label("Bearer token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        return page

    def go(self, route: str) -> Any:
        self.page.goto(self.base + "#/" + route)
        return self.page

    def close(self) -> None:
        self.context.close()
        assert not self.problems, self.problems


@pytest.fixture
def console(browser: Any, platform: Platform) -> Iterator[Any]:
    made: list[Console] = []

    def open_(**context: Any) -> Console:
        made.append(Console(browser, platform, **context))
        return made[-1]
    yield open_
    for c in made:
        pwned = c.page.evaluate("window.__pwned")
        assert pwned is None, "a hostile string ran as script"
        c.close()


def _get(platform: Platform, path: str, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    """A request without any client certificate: what a browser with no credentials gets."""
    ctx = ssl.create_default_context(cafile=str(platform.data_dir / "pki" / "ca.crt"))
    ctx.check_hostname = False

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None
    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(urllib.request.Request(platform.url + path, headers=headers or {}),
                         timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_static_files_are_public_with_strict_headers(platform: Platform) -> None:
    status, headers, body = _get(platform, "/ui/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert f"wss://127.0.0.1:{platform.port}" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer" and headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"
    assert b"<script type=\"module\" src=\"/ui/js/main.js\"" in body
    status, headers, _ = _get(platform, "/ui")
    assert status == 301 and headers["Location"] == "/ui/"
    status, headers, body = _get(platform, "/ui/js/api.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert headers["Cache-Control"] == "no-cache" and "Content-Security-Policy" in headers
    assert _get(platform, "/ui/js/api.js", {"If-None-Match": headers["ETag"]})[0] == 304
    assert _get(platform, "/ui/vendor/xterm/xterm.mjs")[0] == 200
    for path in ("/ui/nothing.js", "/ui/vendor/xterm/xterm.js.map", "/ui/%2e%2e/%2e%2e/app.py"):
        status, headers, _ = _get(platform, path)
        assert status == 404 and "Content-Security-Policy" in headers, path
    # nothing else became public
    for path in ("/api/v1/namespaces", "/apis/tenancy.atoll.dev/v1/projects", "/uix", "/"):
        assert _get(platform, path)[0] == 401, path


def test_editor_sees_only_their_namespace_and_hostile_strings_stay_text(
        console: Any, tenant: dict[str, str]) -> None:
    c = console()
    page = c.sign_in(tenant["editor"])
    expect(page.get_by_text(f"system:serviceaccount:{tenant['ns']}:editor")).to_be_visible()
    rows = page.locator("#namespaces tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(tenant["ns"])
    shot(page, "namespaces-editor")
    page.get_by_role("link", name=tenant["ns"]).click()
    expect(page.locator("#about")).to_contain_text(f"evil={EVIL_ANNOTATION}")
    expect(page.locator("#events")).to_contain_text(EVIL_MARKUP)
    expect(page.locator("#pods .live")).to_have_text("live")
    assert page.locator("img").count() == 0 and page.locator("main script").count() == 0
    shot(page, "namespace-editor")
    page = c.go("hosts")
    expect(page.locator("#hosts")).to_contain_text("You may not list hosts")
    shot(page, "hosts-editor")
    page = c.go(f"ns/{tenant['other']}")
    expect(page.locator("#about")).to_contain_text("You hold no role here")
    expect(page.locator("#pods")).to_contain_text("You may not list pods")


def test_admin_sees_every_namespace_and_the_hosts(console: Any, tenant: dict[str, str]) -> None:
    page = console().sign_in(tenant["boss"])
    for ns in (tenant["ns"], tenant["other"], "kube-system"):
        expect(page.get_by_role("link", name=ns, exact=True)).to_be_visible()
    expect(page.locator("#namespaces .live")).to_have_text("live")
    page.get_by_label("Filter namespaces").fill("ui-other")
    expect(page.locator("#namespaces tbody tr")).to_have_count(1)
    shot(page, "namespaces-admin")
    page.get_by_role("link", name="Hosts").click()
    host = page.locator("#hosts tbody tr", has_text=TEST_NODE)
    expect(host).to_contain_text("True")
    shot(page, "hosts-admin")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Bearer token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_narrow_screen(console: Any, tenant: dict[str, str]) -> None:
    c = console(viewport={"width": 390, "height": 844})
    c.sign_in(tenant["editor"])
    page = c.go(f"ns/{tenant['ns']}")
    expect(page.locator("#pods .live")).to_have_text("live")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "namespace-narrow")


def test_pod_logs_and_exec_terminal(platform: Platform, console: Any,
                                    tenant: dict[str, str]) -> None:
    ns = tenant["ns"]
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        ns, "chatty", "for i in 1 2 3; do echo line-$i; done; sleep 3600", restart="Always"))
    wait_pod(platform, ns, "chatty", phase("Running"))
    c = console()
    c.sign_in(tenant["editor"])
    page = c.go(f"ns/{ns}")
    page.get_by_role("link", name="chatty").click()
    expect(page.locator("#containers")).to_contain_text("running")
    page.get_by_role("button", name="Show logs").click()
    expect(page.locator("#log-text")).to_contain_text("line-3")
    page.get_by_role("button", name="Open terminal").click()
    expect(page.locator("#terminal [role=status]")).to_have_text("connected")
    page.locator("#terminal .xterm").click()
    page.keyboard.type("echo hi-$((40+2))")
    page.keyboard.press("Enter")
    expect(page.locator("#terminal .xterm-rows")).to_contain_text("hi-42")
    shot(page, "pod")


def test_exec_websocket_takes_the_token_as_a_subprotocol(platform: Platform,
                                                         tenant: dict[str, str]) -> None:
    """What the browser does, without one: no Authorization header, no client certificate."""
    import asyncio
    import base64
    import concurrent.futures

    import aiohttp

    ns = tenant["ns"]
    platform.kubectl("apply", "-f", "-", input=pod_yaml(ns, "quiet", "sleep 3600",
                                                      restart="Always"))
    wait_pod(platform, ns, "quiet", phase("Running"))
    ctx = ssl.create_default_context(cafile=str(platform.data_dir / "pki" / "ca.crt"))
    ctx.check_hostname = False
    url = f"{platform.url}/api/v1/namespaces/{ns}/pods/quiet/exec?command=echo&command=via-ws" \
          "&stdout=true"

    async def run(token: str) -> tuple[str, bytes]:
        proto = "base64url.bearer.authorization.k8s.io." + \
            base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(url, ssl=ctx, protocols=("v4.channel.k8s.io", proto)) as ws:
                out = b""
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == b"\x01":
                        out += msg.data[1:]
                return ws.protocol or "", out

    def in_thread(token: str) -> tuple[str, bytes]:  # Playwright holds this thread's loop
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, run(token)).result(timeout=60)

    protocol, out = in_thread(tenant["editor"])
    assert protocol == "v4.channel.k8s.io" and out == b"via-ws\n"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        in_thread("not-a-token")
    assert refused.value.status == 401


def test_vm_page_console_and_power(platform: Platform, console: Any, tenant: dict[str, str],
                                   tiny_image: str) -> None:
    ns = tenant["ns"]
    platform.kubectl("apply", "-f", "-", input=vm_yaml(ns, "webvm", tiny_image))
    wait_vm(platform, ns, "webvm", power("PoweredOn"), what="PoweredOn")
    wait_console(platform, ns, "webvm", "marker-webvm")
    c = console()
    c.sign_in(tenant["editor"])
    page = c.go(f"ns/{ns}")
    page.get_by_role("link", name="webvm").click()
    expect(page.locator("#overview")).to_contain_text("PoweredOn")
    expect(page.locator("#overview")).to_contain_text("best-effort-xsmall")
    expect(page.locator("#yaml pre")).to_contain_text("kind: VirtualMachine")
    page.get_by_role("button", name="Open console").click()
    expect(page.locator("#console [role=status]")).to_have_text("connected")
    page.locator("#console .xterm").click()
    page.keyboard.press("Enter")
    page.keyboard.type("echo answer-$((6*7))")
    page.keyboard.press("Enter")
    expect(page.locator("#console .xterm-rows")).to_contain_text("answer-42")
    shot(page, "vm")
    page.get_by_role("button", name="Close console").click()
    page.get_by_role("button", name="Power off").click()
    wait_vm(platform, ns, "webvm", power("PoweredOff"), what="PoweredOff")
    expect(page.locator("#overview dd").first).to_contain_text("PoweredOff")
