"""Moving files to and from the Supervisor's content library (see apiserver/contentlibrary.py).

Files are streamed in chunks both ways, never read into memory whole; the
digest is computed locally first so an upload the library already holds is
skipped (HEAD), and every download is verified before it is renamed into place.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import AsyncIterator, Callable

import aiohttp

from atoll.api import errors
from atoll.client.rest import ApiClient, error_from_response

CHUNK = 1 << 20
#: called with the number of bytes just moved
Progress = Callable[[int], None]


def digest_of(path: Path, progress: Progress | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return "sha256:" + h.hexdigest()


def blob_path(digest: str) -> str:
    return f"/content/v1/blobs/{digest}"


async def has(client: ApiClient, digest: str) -> bool:
    async with client.session.head(blob_path(digest)) as resp:
        if resp.status == 404:
            return False
        if resp.status >= 400:
            raise error_from_response(resp.status, await resp.read())
        return True


async def upload(client: ApiClient, path: Path, digest: str,
                 progress: Progress | None = None) -> None:
    """Send ``path`` (whose digest is ``digest``) unless the library already has it."""
    if await has(client, digest):
        if progress:
            progress(path.stat().st_size)
        return

    async def body() -> AsyncIterator[bytes]:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                if progress:
                    progress(len(chunk))
                yield chunk

    headers = {"Content-Type": "application/octet-stream",
               "Content-Length": str(path.stat().st_size)}
    async with client.session.put(blob_path(digest), data=body(), headers=headers,
                                  timeout=aiohttp.ClientTimeout(total=None)) as resp:
        if resp.status >= 400:
            raise error_from_response(resp.status, await resp.read())


async def download(client: ApiClient, digest: str, dest: Path,
                   progress: Progress | None = None) -> None:
    """Fetch a blob to ``dest`` (verified, then renamed into place)."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    h = hashlib.sha256()
    try:
        async with client.session.get(blob_path(digest),
                                      timeout=aiohttp.ClientTimeout(total=None,
                                                                    sock_read=120)) as resp:
            if resp.status >= 400:
                raise error_from_response(resp.status, await resp.read())
            with tmp.open("wb") as f:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    h.update(chunk)
                    f.write(chunk)
                    if progress:
                        progress(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        got = "sha256:" + h.hexdigest()
        if got != digest:
            raise errors.BadRequest(f"downloaded {digest} but its content is {got}")
        tmp.rename(dest)
    finally:
        tmp.unlink(missing_ok=True)
