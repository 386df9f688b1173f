"""The source end of a live migration: publish the VM's identity, mirror its disks, send it.

Driven by the migration object as the agent's informer sees it (``update``): ``Scheduling``
publishes what the target needs to start an identical QEMU; ``TargetReady`` mirrors every
writable drive into the target's NBD exports (``sync: top`` over a backing image the target
has too, so only the VM's own blocks travel), then starts the memory copy and follows it,
writing progress at most once a second.  ``completed`` cancels the (READY) mirrors, which
leaves the target owning the data, and marks the migration completed; the paused source copy
stays until the VM's host label moves (then the worker removes it).  A failure cancels
everything on this side: the guest simply runs on here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable

from atoll.agent.runtime.qemu import QemuError, QemuProcess
from atoll.agent.vms import migration as mg
from atoll.api.migration import names as m
from atoll.api.timestamps import rfc3339
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)
MIRROR_READY_TIMEOUT = 300.0
PROGRESS_EVERY = 1.0
POLL = 0.2  # QMP queries while a copy runs (local socket, cheap)
#: QEMU 7.2's defaults (query-migrate-parameters), for migrations no policy limits
QEMU_MAX_BANDWIDTH, QEMU_DOWNTIME_LIMIT = 128 * 1024 * 1024, 300


class OutgoingMigration:
    def __init__(self, client: ApiClient, mig: dict[str, Any], qemu: Callable[[], QemuProcess],
                 identity: Callable[[], dict[str, Any]],
                 on_completed: Callable[[str], None], marker: Path,
                 ready: asyncio.Event | None = None) -> None:
        self.client = client
        #: the worker has adopted the QEMU a previous agent left (or found none)
        self.ready = ready
        self.mig = mig
        #: names the migration this QEMU's outgoing stream belongs to: after an agent restart,
        #: QEMU's own migration state is ours only if it says this one (an arrived VM's QEMU
        #: reports its incoming migration as completed)
        self.marker = marker
        self.qemu = qemu              # the worker's current QemuProcess
        self.identity = identity      # address, accelerator, hardware, boot result
        self.on_completed = on_completed
        self.name = f"{mig['metadata']['namespace']}/{mig['metadata']['name']}"
        self._changed = asyncio.Event()
        self._changed.set()
        self.task: asyncio.Task[None] | None = None
        self.finished = False
        self._sent = False  # one attempt per migration object

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"mig-{self.name}")

    def update(self, mig: dict[str, Any]) -> None:
        self.mig = mig
        self._changed.set()

    @property
    def active(self) -> bool:
        return not self.finished

    async def _run(self) -> None:
        try:
            if self.ready is not None:
                await self.ready.wait()  # a restarted agent: QMP first, then the migration
            while True:
                await self._changed.wait()
                self._changed.clear()
                phase = m.phase(self.mig)
                if phase == m.SCHEDULING:
                    await self._publish()
                elif phase in (m.TARGET_READY, m.RUNNING) and not self._sent and \
                        not (self.mig.get("status") or {}).get("completed"):
                    self._sent = True
                    await self._send()
                elif phase in m.TERMINAL:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("migration %s: source side failed", self.name)
            await mg.fail(self.client, self.mig, "SourceError", str(e))
        finally:
            self.finished = True

    async def _publish(self) -> None:
        if not self.qemu().running:
            await mg.fail(self.client, self.mig, "NotRunning", "the VM's QEMU is not running")
            return
        identity = self.identity()
        identity["diskSizes"] = await mg.drive_sizes(self.qemu())
        written = await mg.advance(self.client, self.mig, (m.SCHEDULING,),
                                   {"source": identity}, m.SCHEDULED)
        if written is not None:
            self.mig = written

    async def _send(self) -> None:
        qemu = self.qemu()
        target = (self.mig.get("status") or {}).get("target") or {}
        try:
            state = (await qemu.execute("query-migrate")).get("status")
            ours = _read(self.marker) == self.mig["metadata"]["uid"]
            if ours and state in ("active", "setup", "device", "pre-switchover", "completed"):
                # an agent restart during the copy: QEMU carried on; follow it again
                await self._follow(qemu)
                return
            if ours:
                raise QemuError(f"the memory copy ended ({state}) while the agent was away")
            drives = await mg.writable_drives(qemu)
            await self._mirror(qemu, target, drives)
            policy = (self.mig.get("status") or {}).get("policy") or {}
            await qemu.execute("migrate-set-capabilities", {"capabilities": [
                {"capability": "events", "state": True},
                {"capability": "auto-converge",
                 "state": bool(policy.get("allowAutoConverge", True))},
                {"capability": "postcopy-ram", "state": bool(policy.get("allowPostCopy"))}]})
            # always both: a QEMU keeps the last migration's values
            await qemu.execute("migrate-set-parameters", {
                "max-bandwidth": int(policy.get("bandwidthBytesPerSecond")
                                     or QEMU_MAX_BANDWIDTH),
                "downtime-limit": int(policy.get("downtimeLimitMilliseconds")
                                      or QEMU_DOWNTIME_LIMIT)})
            running = await mg.advance(self.client, self.mig, (m.TARGET_READY,), {}, m.RUNNING)
            if running is None:
                await self._cancel(qemu)
                return
            self.mig = running
            _write(self.marker, self.mig["metadata"]["uid"])
            await qemu.execute("migrate", {
                "uri": f"tcp:{target['address']}:{int(target['migrationPort'])}"})
            await self._follow(qemu)
        except QemuError as e:
            await self._cancel(qemu)
            await mg.fail(self.client, self.mig, "MigrationFailed", str(e))

    async def _mirror(self, qemu: QemuProcess, target: dict[str, Any],
                      drives: dict[str, dict[str, Any]]) -> None:
        """Each writable drive mirrored into the target's export of the same name, until every
        mirror is READY (from then on QEMU keeps both in step at every guest write)."""
        for device, info in drives.items():
            if device not in (target.get("disks") or []):
                raise QemuError(f"the target exports no {device}")
            node = f"mig-nbd-{device}"
            with contextlib.suppress(QemuError):
                await qemu.execute("blockdev-del", {"node-name": node})  # a previous attempt's
            await qemu.execute("blockdev-add", {
                "driver": "nbd", "node-name": node, "export": device,
                "server": {"type": "inet", "host": target["address"],
                           "port": str(int(target["nbdPort"]))}})
            # write-blocking: once in step, every guest write lands on both sides before it
            # completes, so when the target's guest starts (right at switch-over) no older
            # block is still on its way to overwrite what it writes
            await qemu.execute("blockdev-mirror", {
                "job-id": f"mig-{device}", "device": device, "target": node,
                "sync": "top" if info.get("backing_file") else "full",
                "copy-mode": "write-blocking"})
        deadline = time.monotonic() + MIRROR_READY_TIMEOUT
        while drives:
            jobs = {j["device"]: j for j in await qemu.execute("query-block-jobs") or []}
            mine = [jobs.get(f"mig-{d}") for d in drives]
            if any(j is None for j in mine):
                raise QemuError("a disk mirror stopped before it was in step")
            await self._progress({"diskTotalBytes": sum(int(j["len"]) for j in mine),
                                  "diskTransferredBytes": sum(int(j["offset"]) for j in mine)})
            if all(j.get("ready") for j in mine):
                return
            if time.monotonic() > deadline:
                raise QemuError(f"the disks were not in step after {MIRROR_READY_TIMEOUT:.0f} s")
            await asyncio.sleep(POLL)

    async def _follow(self, qemu: QemuProcess) -> None:
        """Until QEMU says completed or failed; progress on the object meanwhile.  A copy that
        has not converged by its completion timeout switches to post-copy if the policy
        allows it, and is aborted otherwise."""
        switch_at = time.monotonic() + self._completion_timeout()
        while True:
            if m.phase(self.mig) == m.FAILED:  # the controller gave up on it (a deadline)
                await self._cancel(qemu)
                return
            info = await qemu.execute("query-migrate")
            state = info.get("status")
            ram = info.get("ram") or {}
            await self._progress({
                "ramTotalBytes": int(ram.get("total") or 0),
                "ramTransferredBytes": int(ram.get("transferred") or 0),
                "ramRemainingBytes": int(ram.get("remaining") or 0),
                "dirtyPagesRate": int(ram.get("dirty-pages-rate") or 0),
                "dirtySyncCount": int(ram.get("dirty-sync-count") or 0),
                "expectedDowntimeMs": int(info.get("expected-downtime") or 0),
                "cpuThrottlePercentage": int(info.get("cpu-throttle-percentage") or 0)},
                force=state in ("completed", "failed", "cancelled"))
            if state == "completed":
                await self._complete(qemu, await self._final(qemu, info))
                return
            if state == "active" and time.monotonic() > switch_at:
                if not ((self.mig.get("status") or {}).get("policy") or {}).get("allowPostCopy"):
                    await self._cancel(qemu)
                    await mg.fail(self.client, self.mig, "CompletionTimeout",
                                  f"the memory copy did not converge within "
                                  f"{self._completion_timeout():.0f} s (the policy's "
                                  "completionTimeoutPerGiB); the VM runs on where it was")
                    return
                await self._post_copy(qemu)
                switch_at = float("inf")
            if state in ("failed", "cancelled"):
                await self._cancel(qemu)
                await mg.fail(self.client, self.mig, "MigrationFailed",
                              str(info.get("error-desc") or f"QEMU's migration {state}"))
                return
            await asyncio.sleep(POLL)

    def _completion_timeout(self) -> float:
        status = self.mig.get("status") or {}
        per_gib = float((status.get("policy") or {}).get("completionTimeoutPerGiB") or 150)
        gib = float((status.get("source") or {}).get("memoryMiB") or 1024) / 1024
        return per_gib * max(gib, 0.25)

    async def _post_copy(self, qemu: QemuProcess) -> None:
        """The guest moves to the target now; what memory is missing follows on demand."""
        log.info("migration %s: not converged in %.0f s: switching to post-copy", self.name,
                 self._completion_timeout())
        await qemu.execute("migrate-start-postcopy")
        written = await mg.advance(self.client, self.mig, (m.RUNNING,), {"postCopy": True})
        if written is not None:
            self.mig = written

    @staticmethod
    async def _final(qemu: QemuProcess, info: dict[str, Any]) -> dict[str, Any]:
        """QEMU says completed a moment before it fills in the timings: wait for them."""
        deadline = time.monotonic() + 2.0
        while not info.get("total-time") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            info = await qemu.execute("query-migrate")
        return info

    async def _complete(self, qemu: QemuProcess, info: dict[str, Any]) -> None:
        """The guest runs on the target now: let go of the disks, say so, never resume here."""
        self.on_completed((self.mig.get("status") or {}).get("targetNode", ""))
        for job in await qemu.execute("query-block-jobs") or []:
            if str(job.get("device", "")).startswith("mig-"):
                # a READY mirror cancelled ends without a pivot: the target keeps the data
                with contextlib.suppress(QemuError):
                    await qemu.execute("block-job-cancel", {"device": job["device"]})
        written = await mg.advance(self.client, self.mig, (m.RUNNING,), {
            "completed": True, "switchoverTimestamp": rfc3339(),
            "downtime": mg.ms(info.get("downtime")), "totalTime": mg.ms(info.get("total-time"))})
        if written is not None:
            self.mig = written
        log.info("migration %s: completed, downtime %s ms, total %s ms", self.name,
                 info.get("downtime"), info.get("total-time"))

    async def _cancel(self, qemu: QemuProcess) -> None:
        """Stop whatever this side started: the memory copy, the mirrors, the NBD clients."""
        with contextlib.suppress(QemuError):
            if (await qemu.execute("query-migrate")).get("status") not in (None, "completed",
                                                                          "failed", "cancelled"):
                await qemu.execute("migrate_cancel")
        with contextlib.suppress(QemuError):
            for job in await qemu.execute("query-block-jobs") or []:
                if str(job.get("device", "")).startswith("mig-"):
                    await qemu.execute("block-job-cancel", {"device": job["device"],
                                                            "force": True})
            await asyncio.sleep(0)
            for node in await qemu.execute("query-named-block-nodes") or []:
                name = str(node.get("node-name", ""))
                if name.startswith("mig-nbd-"):
                    with contextlib.suppress(QemuError):
                        await self._del_when_free(qemu, name)

    @staticmethod
    async def _del_when_free(qemu: QemuProcess, node: str) -> None:
        """A cancelled job lets go of its target node a moment later."""
        deadline = time.monotonic() + 10
        while True:
            try:
                await qemu.execute("blockdev-del", {"node-name": node})
                return
            except QemuError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(POLL)

    _last_progress = 0.0

    async def _progress(self, fields: dict[str, Any], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_EVERY:
            return
        self._last_progress = now
        progress = dict((self.mig.get("status") or {}).get("progress") or {}, **fields)
        written = await mg.advance(self.client, self.mig, (m.TARGET_READY, m.RUNNING),
                                   {"progress": progress})
        if written is not None:
            self.mig = written


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)
