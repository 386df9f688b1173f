"""Brings one nftables table of ours to the wanted ``nfttable.Table``: a full sync first
(over whatever a previous agent left, read back from the kernel), after any failure, and
at least hourly (as kube-proxy, to repair drift); a partial one otherwise.

A script nft refuses changes nothing (one transaction).  ``apply_isolating`` then asks
which object the refused line belongs to and applies the table again without it, so one
object nft cannot take never holds back everyone else's rules."""

from __future__ import annotations

import logging
import time
from typing import Callable

from atoll.agent.host import nft
from atoll.agent.host.nfttable import Present, Table, full_sync, partial_sync

log = logging.getLogger(__name__)
FULL_SYNC_PERIOD = 3600.0
#: objects one sync may leave out because nft refused them, before it gives up
MAX_EXCLUDED = 8


def refused_fragment(error: nft.NftError) -> str:
    """The part of the script nft pointed at (it echoes the line and marks the columns):
    the one element of an element list, else the whole line; "" without a pointer."""
    lines = str(error).splitlines()
    for text, marks in zip(lines, lines[1:]):
        start = marks.find("^")
        if start < 0 or marks.strip("^ ") or start >= len(text):
            continue
        if "{" not in text[:start]:
            return text
        end = marks.rfind("^") + 1
        left = max(text.rfind(", ", 0, start), text.rfind("{ ", 0, start))
        right = [i for i in (text.find(", ", end), text.find(" }", end)) if i >= 0]
        return text[left + 2:min(right) if right else len(text)]
    return ""


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

    async def apply_isolating(self, build: Callable[[frozenset[str]], Table],
                              owner: Callable[[str], str | None]) -> dict[str, str]:
        """Apply ``build(excluded)``; when nft refuses a line that ``owner`` ties to one
        object, build again without it.  The objects left out, with nft's message; raises
        when a refusal names no object (or too many were left out)."""
        excluded: dict[str, str] = {}
        while True:
            try:
                await self.apply(build(frozenset(excluded)))
                return excluded
            except nft.NftError as e:
                culprit = owner(refused_fragment(e))
                if culprit is None or culprit in excluded or len(excluded) >= MAX_EXCLUDED:
                    raise
                log.warning("%s: nft refused the rules of %s; leaving it out: %s",
                            type(self).__name__, culprit, e)
                excluded[culprit] = str(e)

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
