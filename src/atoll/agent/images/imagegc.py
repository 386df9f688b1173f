"""Image garbage collection as kubelet's image manager does it.

When the filesystem holding the image store is fuller than ``high_percent``, images no
container on this host uses (running or exited, as kubelet counts them) are removed,
least recently used first, until usage is at ``low_percent`` or nothing unused is left;
then the layers no remaining image names.  An image younger than ``min_age`` (pulled for
a container about to start) and the built-in busybox are never removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from atoll.agent.images.store import BUSYBOX_REF, ImageStore, normalize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GCSettings:
    #: percent of the image filesystem in use that starts a collection (kubelet: 85)
    high_percent: int = 85
    #: percent a collection frees down to (kubelet: 80)
    low_percent: int = 80
    #: seconds an unused image is kept at least (kubelet's minimum-image-gc-age: 2 minutes)
    min_age: float = 120.0
    #: seconds between checks (kubelet: 5 minutes)
    period: float = 300.0


def disk_usage_percent(path: os.PathLike[str] | str) -> float:
    st = os.statvfs(path)
    if not st.f_blocks:
        return 0.0
    return 100.0 * (1.0 - st.f_bavail / st.f_blocks)


class ImageGC:
    def __init__(self, store: ImageStore, settings: GCSettings,
                 in_use: Callable[[], Iterable[str]],
                 last_used: dict[str, float] | None = None,
                 usage: Callable[[], float] | None = None) -> None:
        """``in_use`` gives the image refs and ids of this host's containers."""
        self.store = store
        self.settings = settings
        self.in_use = in_use
        self.last_used = last_used if last_used is not None else {}
        self.usage = usage or (lambda: disk_usage_percent(store.root))

    async def run(self) -> None:
        while True:
            try:
                used = set(self.in_use())  # read on the loop: the agent's state lives there
                await asyncio.to_thread(self.collect, False, used)
            except Exception:
                log.exception("image garbage collection failed")
            await asyncio.sleep(self.settings.period)

    def collect(self, force: bool = False, in_use: Iterable[str] | None = None) -> list[str]:
        """One pass; the image ids removed."""
        if not force and self.usage() <= self.settings.high_percent:
            return []
        used: set[str] = set()
        for item in self.in_use() if in_use is None else in_use:
            used.add(item)
            try:
                used.add(normalize(item))
            except ValueError:
                pass
        groups: dict[str, list[dict]] = {}
        for record in self.store.records():
            groups.setdefault(str(record.get("id")), []).append(record)
        now = time.time()
        candidates = []
        for image_id, records in groups.items():
            refs = {r["ref"] for r in records}
            repo_digests = {d for r in records for d in r.get("repoDigests") or []}
            if image_id in used or refs & used or repo_digests & used or BUSYBOX_REF in refs:
                continue
            first_seen = min(self._mtime(r["ref"]) for r in records)
            if now - first_seen < self.settings.min_age:
                continue
            candidates.append((self.last_used.get(image_id, first_seen), image_id, refs))
        removed = []
        for _, image_id, refs in sorted(candidates):
            if not force and self.usage() <= self.settings.low_percent:
                break
            for ref in refs:
                self.store.untag(ref)
            self.last_used.pop(image_id, None)
            removed.append(image_id)
            self.store.remove_unreferenced_layers(self.settings.min_age)
            log.info("image garbage collection removed %s (%s)", image_id, ", ".join(sorted(refs)))
        if not removed:
            self.store.remove_unreferenced_layers(self.settings.min_age)
        return removed

    def _mtime(self, ref: str) -> float:
        from atoll.agent.images.store import _escape
        try:
            return (self.store.refs_dir / f"{_escape(ref)}.json").stat().st_mtime
        except OSError:
            return 0.0
