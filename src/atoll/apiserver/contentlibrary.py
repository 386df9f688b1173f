"""The content library: image files (kernels, initramfs, disks) stored by the Supervisor.

Content-addressed blobs, as an OCI registry keeps them: ``PUT`` streams a file in
(hashed on the way, checked against the digest in the URL, fsynced, renamed into
place), ``HEAD`` says whether it is there, ``GET`` serves it with ``sendfile``
and ``Range``.  Image objects (ClusterVirtualMachineImage, ...) refer to blobs
by digest, so any host's agent can fetch what a VM needs from the API server.
Requests pass the API's authentication middleware like every other request, and
every error is a ``Status`` (raised as ``api.errors``, rendered by apiserver/errors.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from aiohttp import web

from atoll.api import errors

log = logging.getLogger("atoll.apiserver.content")

DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
PREFIX = "/content/v1/blobs/"
#: bytes handed to the writer thread at a time (hashing and writing leave the event loop)
WRITE_BATCH = 1 << 20
#: upload temp files older than this at start-up were left by a server that died mid-upload
STALE_UPLOAD_SECONDS = 3600
DEFAULT_MAX_BLOB_BYTES = 64 << 30


class ContentLibrary:
    """Blobs under ``directory/sha256/<hex>``; uploads land in ``directory/.upload-*`` first."""

    def __init__(self, directory: Path, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.dir = directory
        self.max_blob_bytes = max_blob_bytes
        (self.dir / "sha256").mkdir(parents=True, exist_ok=True)
        self._remove_stale_uploads()

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("PUT", PREFIX + "{digest}", self.put)
        router.add_route("HEAD", PREFIX + "{digest}", self.head)
        router.add_route("GET", PREFIX + "{digest}", self.get)

    def path(self, digest: str) -> Path:
        """Where ``digest`` lives; a 400 for anything but ``sha256:<64 lowercase hex>``."""
        m = DIGEST.match(digest)
        if m is None:
            raise errors.BadRequest(f"{digest!r} is not a digest of the form sha256:<64 hex>")
        return self.dir / "sha256" / m.group(1)

    def _existing(self, request: web.Request) -> tuple[str, Path, int]:
        digest = request.match_info["digest"]
        path = self.path(digest)
        try:
            return digest, path, path.stat().st_size
        except FileNotFoundError:
            raise errors.NotFound(f"blob {digest} not found") from None

    async def head(self, request: web.Request) -> web.StreamResponse:
        digest, _path, size = self._existing(request)
        return web.Response(headers={"Content-Length": str(size),
                                     "Content-Type": "application/octet-stream",
                                     "Docker-Content-Digest": digest})

    async def get(self, request: web.Request) -> web.StreamResponse:
        digest, path, _size = self._existing(request)
        # FileResponse answers Range/If-Range and uses sendfile where the transport allows
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream",
                                               "Docker-Content-Digest": digest,
                                               "Cache-Control": "max-age=31536000, immutable"})

    async def put(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        path = self.path(digest)
        length = request.content_length
        if length is not None and length > self.max_blob_bytes:
            raise self._too_large()
        if path.exists():
            await self._drain(request)
            return self._stored(digest, path.stat().st_size, created=False)
        size = await self._receive(request, digest, path)
        return self._stored(digest, size, created=True)

    def _stored(self, digest: str, size: int, *, created: bool) -> web.Response:
        return web.json_response({"digest": digest, "size": size},
                                 status=201 if created else 200,
                                 headers={"Location": PREFIX + digest,
                                          "Docker-Content-Digest": digest})

    def _too_large(self) -> errors.ApiError:
        return errors.RequestEntityTooLarge(
            f"the blob is larger than the content library's limit ({self.max_blob_bytes} bytes)")

    async def _drain(self, request: web.Request) -> None:
        """Read and drop a body we already hold, so the client sees our answer, not a reset."""
        seen = 0
        async for chunk in request.content.iter_any():
            seen += len(chunk)
            if seen > self.max_blob_bytes:
                raise self._too_large()

    async def _receive(self, request: web.Request, digest: str, path: Path) -> int:
        """Stream the body to a temp file, hashing it; rename into place only if it matches."""
        fd, tmp_name = tempfile.mkstemp(dir=self.dir, prefix=".upload-")
        tmp: Path | None = Path(tmp_name)
        hasher = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                batch = bytearray()
                async for chunk in request.content.iter_any():
                    size += len(chunk)
                    if size > self.max_blob_bytes:
                        raise self._too_large()
                    batch += chunk
                    if len(batch) >= WRITE_BATCH:
                        await asyncio.to_thread(_write, f, hasher, bytes(batch))
                        batch.clear()
                await asyncio.to_thread(_write, f, hasher, bytes(batch))
                await asyncio.to_thread(_sync, f)
            got = "sha256:" + hasher.hexdigest()
            if got != digest:
                raise errors.BadRequest(f"the content's digest is {got}, not {digest}; "
                                        f"nothing was stored")
            os.rename(tmp, path)
            tmp = None
            await asyncio.to_thread(_sync_dir, path.parent)
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        log.info("stored %s (%d bytes)", digest, size)
        return size

    def _remove_stale_uploads(self) -> None:
        cutoff = time.time() - STALE_UPLOAD_SECONDS
        for leftover in self.dir.glob(".upload-*"):
            try:
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
            except OSError:
                pass


def _write(f: BinaryIO, hasher: "hashlib._Hash", data: bytes) -> None:
    hasher.update(data)  # hashlib drops the GIL for large buffers
    f.write(data)


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def _sync_dir(directory: Path) -> None:
    """The rename is durable only once the directory's entry is on disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
