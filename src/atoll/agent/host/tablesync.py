"""Brings one nftables table of ours to the wanted ``nfttable.Table``: a full sync first
(over whatever a previous agent left, read back from the kernel), after any failure, and
at least hourly (as kube-proxy, to repair drift); a partial one otherwise."""

from __future__ import annotations

import logging
import time

from atoll.agent.host import nft
from atoll.agent.host.nfttable import Present, Table, full_sync, partial_sync

log = logging.getLogger(__name__)
FULL_SYNC_PERIOD = 3600.0


class TableSync:
    def __init__(self) -> None:
        self.applied: Table | None = None
        self._last_full = 0.0
        #: figures for tests and benchmarks: kinds of syncs done, lines the last one wrote
        self.full_syncs = self.partial_syncs = 0
        self.last_lines = 0

    async def apply(self, wanted: Table) -> None:
        full = self.applied is None or time.monotonic() - self._last_full > FULL_SYNC_PERIOD
        try:
            if full:
                await self._full(wanted)
            else:
                assert self.applied is not None
                script = partial_sync(self.applied, wanted)
                if script:
                    await nft.run(script)
                    self.partial_syncs += 1
                self.last_lines = script.count("\n")
        except BaseException:
            self.applied = None  # unknown state: the next sync is a full one
            raise
        self.applied = wanted

    async def _full(self, wanted: Table) -> None:
        present = Present.from_json(await nft.list_json("table", wanted.family, wanted.name))
        script = full_sync(wanted, present)
        try:
            await nft.run(script)
        except nft.NftError as e:
            # a base chain or store defined differently by an older version cannot be
            # altered in place: replace the table whole (still one transaction)
            log.warning("table %s %s: replacing it whole (%s)", wanted.family, wanted.name, e)
            await nft.run(f"add table {wanted.family} {wanted.name}\n"
                          f"delete table {wanted.family} {wanted.name}\n"
                          + full_sync(wanted, Present()))
        self.full_syncs += 1
        self.last_lines = script.count("\n")
        self._last_full = time.monotonic()
