"""The content library: image files (kernels, initramfs, disks) stored by the Supervisor.

Content-addressed blobs, as an OCI registry keeps them: ``PUT`` streams a file in
(hashed on the way, checked against the digest in the URL, fsynced, renamed into
place), ``HEAD`` says whether it is there, ``GET`` serves it with ``sendfile``
and ``Range``.  Image objects (ClusterVirtualMachineImage, ...) refer to blobs
by digest, so any host's agent can fetch what a VM needs from any API server's
data dir.  Requests are authenticated like the rest of the API.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from pathlib import Path

from aiohttp import web

from atoll.api import errors

DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
PREFIX = "/content/v1/blobs/"
CHUNK = 1 << 20


class ContentLibrary:
    def __init__(self, directory: Path, max_blob_bytes: int = 64 << 30) -> None:
        self.dir = directory
        self.max_blob_bytes = max_blob_bytes
        (self.dir / "sha256").mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("PUT", PREFIX + "{digest}", self.put)
        router.add_route("HEAD", PREFIX + "{digest}", self.head)
        router.add_route("GET", PREFIX + "{digest}", self.get)

    def path(self, digest: str) -> Path:
        m = DIGEST.match(digest)
        if m is None:
            raise errors.BadRequest(f"{digest!r} is not a digest of the form sha256:<64 hex>")
        return self.dir / "sha256" / m.group(1)

    async def head(self, request: web.Request) -> web.StreamResponse:
        path = self.path(request.match_info["digest"])
        if not path.exists():
            raise errors.NotFound(f"blob {request.match_info['digest']} not found")
        return web.Response(headers={"Content-Length": str(path.stat().st_size),
                                     "Docker-Content-Digest": request.match_info["digest"]})

    async def get(self, request: web.Request) -> web.StreamResponse:
        path = self.path(request.match_info["digest"])
        if not path.exists():
            raise errors.NotFound(f"blob {request.match_info['digest']} not found")
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    async def put(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        path = self.path(digest)
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if path.exists():
                await request.content.read()  # drain what the client sends
                return web.json_response({"digest": digest, "size": path.stat().st_size},
                                         status=200)
            length = request.content_length
            if length is not None and length > self.max_blob_bytes:
                raise errors.RequestEntityTooLarge(
                    f"the blob is larger than the content library's limit "
                    f"({self.max_blob_bytes} bytes)")
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".upload-")
            hasher = hashlib.sha256()
            size = 0
            try:
                with os.fdopen(fd, "wb") as f:
                    async for chunk in request.content.iter_chunked(CHUNK):
                        size += len(chunk)
                        if size > self.max_blob_bytes:
                            raise errors.RequestEntityTooLarge(
                                f"the blob is larger than the content library's limit "
                                f"({self.max_blob_bytes} bytes)")
                        hasher.update(chunk)
                        await asyncio.to_thread(f.write, chunk)
                    await asyncio.to_thread(_sync, f)
                got = "sha256:" + hasher.hexdigest()
                if got != digest:
                    raise errors.BadRequest(f"the content's digest is {got}, not {digest}")
                os.rename(tmp, path)
                tmp = ""
            finally:
                if tmp:
                    os.unlink(tmp)
                self._locks.pop(digest, None)
        return web.json_response({"digest": digest, "size": size}, status=201)


def _sync(f: object) -> None:
    f.flush()  # type: ignore[attr-defined]
    os.fsync(f.fileno())  # type: ignore[attr-defined]
