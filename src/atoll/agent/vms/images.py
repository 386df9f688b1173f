"""The host's cache of content-library blobs (kernels, initramfs, disk images).

A VM's files are fetched from the Supervisor once per host and kept by digest
in ``<agent data dir>/vmimages/blobs/sha256/<hex>``; two VMs asking for the same
blob at the same time share one download.  A file only ever appears there after
its digest was verified (client/content.py renames it into place), so a present
file is a good one.  Cached blobs back VMs' copy-on-write disks, so they stay
while the agent runs (no eviction yet).
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from atoll.client import content
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class BlobCache:
    def __init__(self, client: ApiClient, directory: Path) -> None:
        self.client = client
        self.dir = directory / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._inflight: dict[str, asyncio.Task[Path]] = {}

    def path(self, digest: str) -> Path:
        return self.dir / digest.removeprefix("sha256:")

    async def ensure(self, digest: str, size: int = 0) -> Path:
        """The local path of ``digest``, downloaded first if this host lacks it.

        ``size`` (0: unknown) is what the image object claims; the digest decides,
        so a differing size is only logged.  A caller cancelled while waiting does
        not cancel the download others may be waiting for."""
        if not DIGEST.match(digest):
            raise ValueError(f"{digest!r} is not a sha256 digest")
        path = self.path(digest)
        if not path.exists():
            task = self._inflight.get(digest)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._fetch(digest, path),
                                                              name=f"fetch {digest[:19]}")
                self._inflight[digest] = task
                task.add_done_callback(lambda t: self._forget(digest, t))
            await asyncio.shield(task)
        actual = path.stat().st_size
        if size and actual != size:
            log.warning("%s is %d bytes, its image says %d", digest, actual, size)
        return path

    def _forget(self, digest: str, task: asyncio.Task[Path]) -> None:
        if self._inflight.get(digest) is task:
            del self._inflight[digest]
        if not task.cancelled() and task.exception() is not None:
            log.warning("fetching %s failed: %s", digest, task.exception())

    async def _fetch(self, digest: str, path: Path) -> Path:
        log.info("fetching %s from the content library", digest)
        await content.download(self.client, digest, path)
        return path
