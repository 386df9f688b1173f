"""The web console's routes: ``/ui/`` (the page), its static files, ``/ui/vendor/`` (xterm.js).

Static files only, each answer with a strict Content-Security-Policy (scripts and
styles from this origin; ``<style>`` elements that xterm.js creates carry the
page's per-response nonce, which the page stamps on them) and the usual
hardening headers.  The page carries no data: signing in, reading and watching
all happen through the normal API with the user's own credentials, so there is
nothing here for RBAC to guard; ``authn`` lets these paths through unsigned and
``system:public-info-viewer`` grants them, as it does ``/healthz``.

xterm.js comes from npm (``package.json`` pins it; ``scripts/setup.sh`` installs it
next to this module, outside git); only the few files the console needs are served.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

from aiohttp import web

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
SETUP_COMMAND = "bash scripts/setup.sh"
#: what /ui/vendor/ serves: its path -> the file under node_modules
VENDOR_FILES = {
    "xterm/xterm.mjs": "@xterm/xterm/lib/xterm.mjs",
    "xterm/xterm.css": "@xterm/xterm/css/xterm.css",
    "xterm/addon-fit.mjs": "@xterm/addon-fit/lib/addon-fit.mjs",
}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".svg": "image/svg+xml"}
#: a Host header fit to name in the policy (anything else: no explicit wss: source)
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def vendor_root() -> Path:
    """Where npm put the vendored packages (``ATOLL_UI_VENDOR`` overrides, for packagers)."""
    return Path(os.environ.get("ATOLL_UI_VENDOR") or HERE / "node_modules")


def xterm_installed() -> bool:
    return all((vendor_root() / p).is_file() for p in VENDOR_FILES.values())


def policy(request: web.Request, nonce: str = "") -> str:
    styles = f"'self' 'nonce-{nonce}'" if nonce else "'self'"
    connect = "'self'"
    if _HOST.match(request.host or ""):
        connect += f" wss://{request.host}"
    return ("default-src 'self'; script-src 'self'; style-src " + styles + "; img-src 'self'; "
            "font-src 'self'; connect-src " + connect + "; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")


def headers(request: web.Request, *, cache: str, nonce: str = "") -> dict[str, str]:
    return {"Content-Security-Policy": policy(request, nonce),
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Resource-Policy": "same-origin",
            "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
            "Cache-Control": cache}


class _Files:
    """File bytes and their ETags, read once per modification."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[float, bytes, str]] = {}

    def read(self, path: Path) -> tuple[bytes, str]:
        mtime = path.stat().st_mtime
        hit = self._cache.get(path)
        if hit is None or hit[0] != mtime:
            body = path.read_bytes()
            hit = (mtime, body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
            self._cache[path] = hit
        return hit[1], hit[2]


_files = _Files()


def _not_found(request: web.Request) -> web.Response:
    return web.Response(status=404, text="not found\n",
                        headers=headers(request, cache="no-store"))


def _serve(request: web.Request, path: Path) -> web.Response:
    body, etag = _files.read(path)
    h = headers(request, cache="no-cache")  # revalidated by ETag: names carry no version
    h["ETag"] = etag
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=h)
    h["Content-Type"] = CONTENT_TYPES[path.suffix]
    return web.Response(body=body, headers=h)


async def _redirect(request: web.Request) -> web.Response:
    return web.Response(status=301, headers={**headers(request, cache="no-store"),
                                             "Location": "/ui/"})


async def _index(request: web.Request) -> web.Response:
    nonce = secrets.token_urlsafe(18)
    text = (STATIC / "index.html").read_text()
    text = text.replace("{{nonce}}", nonce).replace(
        "{{xterm}}", "installed" if xterm_installed() else "missing").replace(
        "{{setup}}", SETUP_COMMAND)
    h = headers(request, cache="no-store", nonce=nonce)  # a fresh nonce every time
    h["Content-Type"] = CONTENT_TYPES[".html"]
    return web.Response(text=text, headers=h, content_type=None)


async def _static(request: web.Request) -> web.Response:
    rel = request.match_info["path"]
    root = STATIC.resolve()
    path = (root / rel).resolve()
    if (not path.is_relative_to(root) or path.suffix not in CONTENT_TYPES
            or path.name == "index.html" or any(p.startswith(".") for p in Path(rel).parts)
            or not path.is_file()):
        return _not_found(request)
    return _serve(request, path)


async def _vendor(request: web.Request) -> web.Response:
    target = VENDOR_FILES.get(request.match_info["path"])
    if target is None:
        return _not_found(request)
    path = vendor_root() / target
    if not path.is_file():
        return web.Response(status=404, text=f"xterm.js is not installed: run {SETUP_COMMAND}\n",
                            headers=headers(request, cache="no-store"))
    return _serve(request, path)


def routes(router: web.UrlDispatcher) -> None:
    router.add_get("/ui", _redirect)
    router.add_get("/ui/", _index)
    router.add_get("/ui/vendor/{path:.+}", _vendor)
    router.add_get("/ui/{path:.+}", _static)
