"""Moving files to and from the Supervisor's content library (see apiserver/contentlibrary.py).

Files are streamed in chunks both ways, never read into memory whole, and disk
work (reading, hashing, writing, fsync) runs in threads so an agent's event
loop keeps its heartbeats.  An upload the library already holds is skipped
(HEAD first); a download is verified before it is renamed into place, and an
interrupted one resumes from its partial file with a ``Range`` request.

Failures are ``api.errors`` (the server's Status), ``TransferError`` (an
``OSError``: the connection broke) or ``DigestMismatch`` (a ``ValueError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import AsyncIterator, BinaryIO, Callable

import aiohttp

from atoll.client.rest import ApiClient, error_from_response

CHUNK = 1 << 20
#: called with the number of bytes just hashed or moved
Progress = Callable[[int], None]
#: no byte for this long means the transfer is stuck (a whole transfer may take hours)
SOCK_READ_SECONDS = 120


class TransferError(OSError):
    """The connection to the API server failed during a transfer."""


class DigestMismatch(ValueError):
    """The bytes received are not the blob that was asked for."""


def blob_path(digest: str) -> str:
    return f"/content/v1/blobs/{digest}"


def digest_of(path: Path, progress: Progress | None = None) -> str:
    """``sha256:<hex>`` of a file, read in chunks (blocking: run it in a thread)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return "sha256:" + h.hexdigest()


@contextlib.asynccontextmanager
async def _transfer_errors() -> AsyncIterator[None]:
    """aiohttp's disconnects and timeouts as TransferError, so callers catch OSError."""
    try:
        yield
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        if isinstance(e, TransferError):
            raise
        raise TransferError(f"content library: {type(e).__name__}: {e}") from e


async def has(client: ApiClient, digest: str) -> bool:
    """Whether the library holds ``digest``."""
    async with _transfer_errors():
        async with client.session.head(blob_path(digest)) as resp:
            if resp.status == 404:
                return False
            if resp.status >= 400:  # a HEAD answer has no Status body: say what we know
                raise error_from_response(resp.status, f"{resp.status} {resp.reason}".encode())
            return True


async def upload(client: ApiClient, path: Path, progress: Progress | None = None, *,
                 digest: str | None = None) -> str:
    """Send ``path`` unless the library already has it; its digest.

    ``digest`` saves hashing the file again when the caller already knows it."""
    if digest is None:
        digest = await asyncio.to_thread(digest_of, path)
    size = path.stat().st_size
    if await has(client, digest):
        if progress:
            progress(size)
        return digest

    async def body() -> AsyncIterator[bytes]:
        with path.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                if progress:
                    progress(len(chunk))
                yield chunk

    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=SOCK_READ_SECONDS)
    async with _transfer_errors():
        async with client.session.put(blob_path(digest), data=body(), headers=headers,
                                      timeout=timeout) as resp:
            if resp.status >= 400:
                raise error_from_response(resp.status, await resp.read())
    return digest


async def download(client: ApiClient, digest: str, dest: Path,
                   progress: Progress | None = None) -> None:
    """Fetch a blob to ``dest``: verified, fsynced, then renamed into place.

    The partial file ``.<dest name>.part`` beside ``dest`` is locked while in use
    (two processes fetching the same blob take turns, the second finds ``dest``)
    and kept if the connection breaks, so the next call continues where this one
    stopped."""
    if dest.exists():
        return
    part = dest.with_name(f".{dest.name}.part")
    with await _open_locked(part) as f:
        if dest.exists():  # fetched by whoever held the lock before us
            part.unlink()
            return
        h = hashlib.sha256()
        have = await asyncio.to_thread(_hash_existing, f, h)
        if progress and have:
            progress(have)
        h = await _fetch_into(client, digest, f, h, have, progress)
        got = "sha256:" + h.hexdigest()
        if got != digest and have:  # the partial file was not this blob's prefix: once more
            await asyncio.to_thread(_truncate, f)
            h = await _fetch_into(client, digest, f, hashlib.sha256(), 0, progress)
            got = "sha256:" + h.hexdigest()
        if got != digest:
            part.unlink()
            raise DigestMismatch(f"downloaded {digest} but its content is {got}")
        await asyncio.to_thread(_sync, f)
        part.rename(dest)
    await asyncio.to_thread(_sync_dir, dest.parent)


async def _fetch_into(client: ApiClient, digest: str, f: BinaryIO, h: "hashlib._Hash",
                      have: int, progress: Progress | None) -> "hashlib._Hash":
    """GET the blob from byte ``have`` on (all of it when the partial file is no use)."""
    headers = {"Range": f"bytes={have}-"} if have else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=SOCK_READ_SECONDS)
    async with _transfer_errors():
        async with client.session.get(blob_path(digest), headers=headers,
                                      timeout=timeout) as resp:
            if have and resp.status in (200, 416):
                # 200: the server sent it all; 416: the partial file is as long as the blob
                # or longer, so it is not a prefix we can trust: start again either way
                await asyncio.to_thread(_truncate, f)
                h = hashlib.sha256()
            if not (have and resp.status == 416):
                if resp.status >= 400:
                    raise error_from_response(resp.status, await resp.read())
                await _stream(resp, f, h, progress)
                return h
    return await _fetch_into(client, digest, f, h, 0, progress)


async def _stream(resp: aiohttp.ClientResponse, f: BinaryIO, h: "hashlib._Hash",
                  progress: Progress | None) -> None:
    batch = bytearray()
    async for chunk in resp.content.iter_any():
        batch += chunk
        if len(batch) >= CHUNK:
            await asyncio.to_thread(_write, f, h, bytes(batch))
            if progress:
                progress(len(batch))
            batch.clear()
    if batch:
        await asyncio.to_thread(_write, f, h, bytes(batch))
        if progress:
            progress(len(batch))


async def _open_locked(part: Path) -> BinaryIO:
    """``part`` opened for appending and exclusively flock'ed.

    Polled, so a cancelled caller never leaves a thread blocked; opened again if the
    file we locked was renamed or removed while we waited."""
    while True:
        f = part.open("a+b")
        try:
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.2)
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(f.fileno()).st_ino == part.stat().st_ino:
                    return f
        except BaseException:
            f.close()
            raise
        f.close()


def _hash_existing(f: BinaryIO, h: "hashlib._Hash") -> int:
    f.seek(0)
    n = 0
    while chunk := f.read(CHUNK):
        h.update(chunk)
        n += len(chunk)
    return n


def _truncate(f: BinaryIO) -> None:
    f.seek(0)
    f.truncate()


def _write(f: BinaryIO, h: "hashlib._Hash", data: bytes) -> None:
    h.update(data)
    f.write(data)  # the file is in append mode: always at the end


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
