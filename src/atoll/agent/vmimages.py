"""The host's cache of content-library blobs (kernels, initramfs, disk images).

A VM's files are fetched from the Supervisor once per host and kept by digest;
two VMs asking for the same blob at the same time share one download.  Cached
blobs are the backing files of VMs' copy-on-write disks, so they stay while
the agent runs (no eviction yet).
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
        """The local path of ``digest``, downloaded first if this host lacks it."""
        if not DIGEST.match(digest):
            raise ValueError(f"{digest!r} is not a sha256 digest")
        path = self.path(digest)
        if path.exists() and (not size or path.stat().st_size == size):
            return path
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(digest, path))
            self._inflight[digest] = task
            task.add_done_callback(lambda _t: self._inflight.pop(digest, None))
        return await asyncio.shield(task)

    async def _fetch(self, digest: str, path: Path) -> Path:
        log.info("fetching %s from the content library", digest)
        await content.download(self.client, digest, path)
        return path
