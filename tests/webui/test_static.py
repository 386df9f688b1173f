"""The console's static routes on their own (no API server): headers, the nonce, what is
served and what is not, and a missing xterm.js."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from atoll import webui


@pytest.fixture
async def client() -> TestClient:
    app = web.Application()
    webui.routes(app.router)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_page_has_a_fresh_nonce_and_strict_headers(client: TestClient) -> None:
    first, second = await client.get("/ui/"), await client.get("/ui/")
    nonces = []
    for resp in (first, second):
        assert resp.status == 200
        csp = resp.headers["Content-Security-Policy"]
        nonce = re.search(r"'nonce-([A-Za-z0-9_-]+)'", csp).group(1)
        assert f'nonce="{nonce}"' in await resp.text()
        assert "unsafe" not in csp and "frame-ancestors 'none'" in csp
        nonces.append(nonce)
    assert nonces[0] != nonces[1]
    assert first.headers["X-Frame-Options"] == "DENY"


async def test_only_static_files_are_served(client: TestClient) -> None:
    ok = await client.get("/ui/js/dom.js")
    assert ok.status == 200 and ok.headers["Content-Type"].startswith("text/javascript")
    for path in ("/ui/index.html", "/ui/vendor/xterm/package.json", "/ui/js", "/ui/.hidden.js",
                 "/ui/vendor/xterm/xterm.js.map"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 404, path
        assert "Content-Security-Policy" in resp.headers, path
    for path in ("/ui/%2e%2e/__init__.py", "/ui/js/%2e%2e/%2e%2e/server.py",
                 "/ui/..%2fserver.py"):  # dot segments never reach a file outside static/
        resp = await client.get(URL(path, encoded=True), allow_redirects=False)
        assert resp.status == 404, path
    moved = await client.get("/ui", allow_redirects=False)
    assert moved.status == 301 and moved.headers["Location"] == "/ui/"


async def test_without_xterm_the_page_says_how_to_install_it(
        client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATOLL_UI_VENDOR", str(tmp_path))
    page = await (await client.get("/ui/")).text()
    assert '<meta name="atoll-xterm" content="missing">' in page
    resp = await client.get("/ui/vendor/xterm/xterm.mjs")
    assert resp.status == 404
    assert "xterm.js is not installed: run bash scripts/setup.sh" in await resp.text()


def test_no_module_parses_html() -> None:
    static = Path(webui.__file__).parent / "static"
    for path in static.rglob("*.js"):
        text = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{path.name} uses {sink}"
