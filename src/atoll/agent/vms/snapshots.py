"""VirtualMachineSnapshots of this host's VMs: taken, reverted to and deleted in their qcow2s.

A snapshot is an internal qcow2 snapshot tagged with the snapshot's uid (``status.uniqueID``)
in every writable qcow2 disk of the VM (the boot disk; claims are raw files and are not part
of it).  With ``memory: true`` and the VM running, QEMU's ``snapshot-save`` job also writes
the guest's RAM and device state (vmstate) into the first of them; otherwise the disks alone
are snapshotted (``blockdev-snapshot-internal-sync`` in one transaction while QEMU runs,
``qemu-img snapshot -c`` while it is off).

A revert is asked by the VM's ``spec.currentSnapshotName``; the controller first sets
``spec.powerState`` to what the snapshot holds (PoweredOn with memory, else PoweredOff).
With memory, ``snapshot-load`` puts the running guest back where it was (a powered-off VM is
started first); without, QEMU is stopped and ``qemu-img snapshot -a`` rewinds the disk.  The
outcome is the VM's ``VirtualMachineSnapshotRevertSucceeded`` condition, observed at the VM's
generation, which the controller waits for before clearing ``currentSnapshotName``.

Everything runs inside the VM worker's ``sync`` (``step``), so it never races a launch, a
power change or a migration of the same VM.  A failure is a condition with its reason, never
a crashed worker.  QEMU writes a snapshot's table entry only after its data, so a snapshot
interrupted by kill -9 is absent (and taken again), never half there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qemu.qmp import EventListener
from qemu.qmp.error import QMPError

from atoll.api import conditions as cond
from atoll.api import errors
from atoll.api.vmoperator import names as n
from atoll.api.vmoperator import snapshots as s
from atoll.api.vmoperator.conversion import in_version
from atoll.client.events import NORMAL, WARNING
from atoll.client.factory import InformerFactory
from atoll.client.rest import ApiClient
from atoll.client.status import patch_with_retry, without_finalizer

if TYPE_CHECKING:
    from atoll.agent.runtime.qemu import QemuProcess
    from atoll.agent.vms.worker import VMWorker

log = logging.getLogger(__name__)
JOB_TIMEOUT = 600.0  # seconds a snapshot job may take (TCG, big guests)
#: the agent's own verdicts: tried again only when the snapshot's spec changes
AGENT_FAILURES = (s.FAILED, "NoQcow2Disk", "NoQMP")


class SnapshotError(Exception):
    """A snapshot or revert that cannot be done; its reason becomes a condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class VMSnapshots:
    """The snapshots of the VMs on this host, handed to each VM's worker as its ``snapshots``."""

    def __init__(self, client: ApiClient, factory: InformerFactory, node: str,
                 workers: dict[str, VMWorker]) -> None:
        self.client = client
        self.workers = workers
        selector = f"{n.HOST_LABEL}={node}"
        self.snapshots = factory.informer(n.GROUP, s.VERSION, s.PLURAL, label_selector=selector)
        self.snapshots.add_handler(self._on_snapshot)
        # the manager's informer of this host's VMs (one watch), read in the version that
        # has spec.currentSnapshotName (``_vm6``)
        self.vms = factory.informer(n.GROUP, n.VERSION, "virtualmachines",
                                    label_selector=selector)
        self.vms.add_handler(self._on_vm)

    @property
    def informers(self) -> list[Any]:
        return [self.snapshots, self.vms]

    def _wake(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        for worker in list(self.workers.values()):
            if worker.key == key:
                worker.wake()

    def _on_snapshot(self, kind: str, snap: dict[str, Any], old: dict[str, Any] | None) -> None:
        self._wake(snap["metadata"].get("namespace", ""), s.vm_name(snap))

    def _on_vm(self, kind: str, vm: dict[str, Any], old: dict[str, Any] | None) -> None:
        spec = vm.get("spec") or {}
        if spec.get("currentSnapshotName") and spec != (old or {}).get("spec"):
            self._wake(vm["metadata"].get("namespace", ""), vm["metadata"].get("name", ""))

    def of(self, worker: VMWorker) -> list[dict[str, Any]]:
        ns, name = worker.vm["metadata"].get("namespace", ""), worker.vm["metadata"]["name"]
        return sorted((x for x in self.snapshots.list()
                       if x["metadata"].get("namespace") == ns and s.vm_name(x) == name),
                      key=lambda x: (x["metadata"].get("creationTimestamp", ""),
                                     x["metadata"]["name"]))

    # -- the worker's hook -----------------------------------------------------------------------
    async def step(self, worker: VMWorker) -> bool:
        """One snapshot, deletion or revert of ``worker``'s VM; True when its power handling
        must wait (a revert is under way)."""
        if worker.gone or worker.vm["metadata"].get("deletionTimestamp"):
            return False
        snaps = self.of(worker)
        for snap in snaps:
            if snap["metadata"].get("deletionTimestamp") and \
                    s.FINALIZER in (snap["metadata"].get("finalizers") or []):
                await self._delete(worker, snap)
        for snap in snaps:
            if _pending(snap):
                await self._create(worker, snap, snaps)
        return await self._revert(worker, snaps)

    # -- taking ----------------------------------------------------------------------------------
    async def _create(self, worker: VMWorker, snap: dict[str, Any],
                      snaps: list[dict[str, Any]]) -> None:
        tag, memory = s.tag(snap), bool((snap.get("spec") or {}).get("memory"))
        qemu = worker.qemu
        power = n.POWERED_OFF
        try:
            if qemu.running:
                state = await qemu.status()
                disks = await qcow2_nodes(qemu)
                if not disks:
                    raise SnapshotError("NoQcow2Disk", "the VM has no writable qcow2 disk to "
                                        "hold a snapshot (a kernel-only image: give it a disk)")
                if not any(tag in d["snapshots"] for d in disks.values()):
                    if memory:
                        await run_job(qemu, "snapshot-save", tag, {
                            "tag": tag, "vmstate": next(iter(disks)), "devices": list(disks)})
                    else:
                        await qemu.execute("transaction", {"actions": [
                            {"type": "blockdev-snapshot-internal-sync",
                             "data": {"device": node, "name": tag}} for node in disks]})
                if memory:
                    power = n.SUSPENDED if state == "paused" else n.POWERED_ON
                used = _vmstate_size(await qcow2_nodes(qemu), tag)
            else:
                boot = worker.disks / "boot.qcow2"
                if not boot.exists():
                    raise SnapshotError("NoQcow2Disk", "the VM has no qcow2 boot disk yet (it "
                                        "never ran, or its image is kernel-only)")
                info = await offline_snapshots(worker.settings.qemu_img, boot)
                if tag not in info:
                    await _qemu_img(worker.settings.qemu_img, "snapshot", "-c", tag, str(boot))
                used = 0
        except SnapshotError as e:
            await self._created(snap, False, e.reason, e.message)
            return
        except Exception as e:  # QemuError, OSError, QMP errors: a condition, not a crash
            log.warning("vm %s: snapshot %s: %s", worker.key, snap["metadata"]["name"], e)
            await self._created(snap, False, s.FAILED, str(e))
            return
        parent = self._current(worker, snaps)
        ns, name = snap["metadata"]["namespace"], snap["metadata"]["name"]
        with contextlib.suppress(errors.NotFound):
            if parent != name:
                await self.client.patch(s.path(ns, name), {"metadata": {"annotations": {
                    s.PARENT_ANNOTATION: parent}}})
            await self._created(snap, True, "Created", "with memory" if power != n.POWERED_OFF
                                else "disks only", uniqueID=tag, powerState=power,
                                storage={"used": used})
            await self._vm_status(worker, {"currentSnapshot": s.ref(name)})
        _save_current(worker, name)
        worker.events.record(worker.ref, NORMAL, "SnapshotCreated",
                             f"{name} ({'memory and disks' if power != n.POWERED_OFF else 'disks'}"
                             f", tag {tag})")

    def _current(self, worker: VMWorker, snaps: list[dict[str, Any]]) -> str:
        """The VM's current snapshot (the new one's parent): the last this agent took or
        reverted to, else what the VM's status says; "" when it is gone."""
        live = {x["metadata"]["name"] for x in snaps if not x["metadata"].get("deletionTimestamp")
                and cond.is_true((x.get("status") or {}).get("conditions"), s.CREATED)}
        mine = _load_current(worker)
        if mine in live:
            return mine
        vm = self._vm6(worker) or {}
        status = str(((vm.get("status") or {}).get("currentSnapshot") or {}).get("name") or "")
        return status if status in live else ""

    async def _created(self, snap: dict[str, Any], ok: bool, reason: str, message: str,
                       **fields: Any) -> None:
        gen = snap["metadata"].get("generation")
        update = cond.condition(s.CREATED, ok, reason, message, gen)

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            status = current.get("status") or {}
            merged = cond.merge(status.get("conditions"), [update])
            if not cond.changed(status.get("conditions"), merged) and \
                    all(status.get(k) == v for k, v in fields.items()):
                return None
            return {"status": dict(fields, conditions=merged)}

        ns, name = snap["metadata"]["namespace"], snap["metadata"]["name"]
        with contextlib.suppress(errors.NotFound):
            await patch_with_retry(self.client, s.path(ns, name), snap, change,
                                   subresource="status")

    # -- deleting --------------------------------------------------------------------------------
    async def _delete(self, worker: VMWorker, snap: dict[str, Any]) -> None:
        tag, name = s.tag(snap), snap["metadata"]["name"]
        qemu = worker.qemu
        try:
            if qemu.running:
                disks = await qcow2_nodes(qemu)
                holders = [node for node, d in disks.items() if tag in d["snapshots"]]
                if holders:
                    await run_job(qemu, "snapshot-delete", tag, {"tag": tag,
                                                                 "devices": holders})
            else:
                boot = worker.disks / "boot.qcow2"
                if boot.exists() and tag in await offline_snapshots(worker.settings.qemu_img,
                                                                    boot):
                    await _qemu_img(worker.settings.qemu_img, "snapshot", "-d", tag, str(boot))
        except Exception as e:
            log.warning("vm %s: deleting snapshot %s: %s", worker.key, name, e)
            worker.events.record(worker.ref, WARNING, "SnapshotDeleteFailed", f"{name}: {e}")
            return  # the finalizer stays; the next change of the VM or the snapshot retries
        with contextlib.suppress(errors.NotFound):
            await patch_with_retry(self.client, s.path(snap["metadata"]["namespace"], name),
                                   snap, without_finalizer(s.FINALIZER))
        if _load_current(worker) == name:
            _save_current(worker, str((snap["metadata"].get("annotations") or {}).get(
                s.PARENT_ANNOTATION) or ""))
        worker.events.record(worker.ref, NORMAL, "SnapshotDeleted", f"{name} (tag {tag})")

    # -- reverting -------------------------------------------------------------------------------
    def _vm6(self, worker: VMWorker) -> dict[str, Any] | None:
        vm = self.vms.get(worker.key)
        if vm is None or vm["metadata"].get("uid") != worker.uid:
            return None
        return in_version(vm, "VirtualMachine", n.VERSION, s.VERSION)

    async def _revert(self, worker: VMWorker, snaps: list[dict[str, Any]]) -> bool:
        vm = self._vm6(worker)
        if vm is None:
            return False
        target = str((vm.get("spec") or {}).get("currentSnapshotName") or "")
        gen = vm["metadata"].get("generation")
        last = cond.find((vm.get("status") or {}).get("conditions"), s.REVERT_SUCCEEDED)
        if not target or (last is not None and last.get("observedGeneration") == gen):
            return False  # nothing asked, or this request was answered
        snap = next((x for x in snaps if x["metadata"]["name"] == target), None)
        if snap is None or snap["metadata"].get("deletionTimestamp") or \
                not cond.is_true((snap.get("status") or {}).get("conditions"), s.CREATED):
            return False  # the controller says why on the VM
        power = (snap.get("status") or {}).get("powerState") or n.POWERED_OFF
        memory = power != n.POWERED_OFF
        if (vm.get("spec") or {}).get("powerState", n.POWERED_ON) != \
                (n.POWERED_OFF if not memory else power):
            return False  # the controller sets the snapshot's power state first
        qemu, tag = worker.qemu, s.tag(snap)
        try:
            if memory:
                if not qemu.running:
                    worker._wake_later(1.0)
                    return False  # the power-on path starts it; the snapshot loads next time
                was = await qemu.status()
                disks = await qcow2_nodes(qemu)
                holders = [node for node, d in disks.items() if tag in d["snapshots"]]
                if not holders:
                    raise SnapshotError("SnapshotMissing", f"no disk holds {tag}")
                vmstate = next((node for node in holders
                                if disks[node]["vmstate"].get(tag)), holders[0])
                await run_job(qemu, "snapshot-load", tag, {"tag": tag, "vmstate": vmstate,
                                                           "devices": holders})
                if power == n.POWERED_ON and await qemu.status() == "paused" and \
                        was != "paused":
                    await qemu.resume()
            else:
                if qemu.running:
                    await worker._hard_stop()
                boot = worker.disks / "boot.qcow2"
                if not boot.exists() or tag not in await offline_snapshots(
                        worker.settings.qemu_img, boot):
                    raise SnapshotError("SnapshotMissing", f"the boot disk has no {tag}")
                await _qemu_img(worker.settings.qemu_img, "snapshot", "-a", tag, str(boot))
        except SnapshotError as e:
            await self._reverted(worker, vm, False, e.reason, e.message)
            return False
        except Exception as e:
            log.warning("vm %s: revert to %s: %s", worker.key, target, e)
            await self._reverted(worker, vm, False, "RevertFailed", str(e))
            return False
        _save_current(worker, target)
        await self._reverted(worker, vm, True, "Reverted",
                             f"to {target} ({'memory and disks' if memory else 'disks'})",
                             currentSnapshot=s.ref(target))
        worker.events.record(worker.ref, NORMAL, "SnapshotReverted",
                             f"to {target}" + ("" if memory else ": powered off"))
        return False

    async def _reverted(self, worker: VMWorker, vm: dict[str, Any], ok: bool, reason: str,
                        message: str, **fields: Any) -> None:
        update = cond.condition(s.REVERT_SUCCEEDED, ok, reason, message,
                                vm["metadata"].get("generation"))
        if not ok:
            worker.events.record(worker.ref, WARNING, "SnapshotRevertFailed", message)
        await self._vm_status(worker, fields, [update])

    async def _vm_status(self, worker: VMWorker, fields: dict[str, Any],
                         updates: list[dict[str, Any]] | None = None) -> None:
        vm = self._vm6(worker)
        if vm is None:
            return

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            status = current.get("status") or {}
            body: dict[str, Any] = {k: v for k, v in fields.items() if status.get(k) != v}
            if updates:
                body["conditions"] = cond.merge(status.get("conditions"), updates)
            return {"status": body} if body else None

        with contextlib.suppress(errors.NotFound):
            await patch_with_retry(self.client, s.vm_path(vm["metadata"]["namespace"],
                                                          vm["metadata"]["name"]),
                                   vm, change, subresource="status")


def _pending(snap: dict[str, Any]) -> bool:
    """Not taken yet, and not failed at this generation."""
    meta = snap["metadata"]
    if meta.get("deletionTimestamp") or s.FINALIZER not in (meta.get("finalizers") or []):
        return False
    created = cond.find((snap.get("status") or {}).get("conditions"), s.CREATED)
    if created is None:
        return True
    if created.get("status") == "True":
        return False
    return not (created.get("reason") in AGENT_FAILURES and
                created.get("observedGeneration") == meta.get("generation"))


# -- QEMU ----------------------------------------------------------------------------------------
async def qcow2_nodes(qemu: QemuProcess) -> dict[str, dict[str, Any]]:
    """The VM's writable qcow2 nodes (in drive order): their snapshot tags and vmstate sizes."""
    out: dict[str, dict[str, Any]] = {}
    for drive in await qemu.execute("query-block") or []:
        inserted = drive.get("inserted") or {}
        if inserted.get("drv") != "qcow2" or inserted.get("ro") or not inserted.get("node-name"):
            continue
        snaps = (inserted.get("image") or {}).get("snapshots") or []
        out[str(inserted["node-name"])] = {
            "snapshots": [str(x.get("name")) for x in snaps],
            "vmstate": {str(x.get("name")): int(x.get("vm-state-size") or 0) for x in snaps}}
    return out


def _vmstate_size(disks: dict[str, dict[str, Any]], tag: str) -> int:
    return max((d["vmstate"].get(tag, 0) for d in disks.values()), default=0)


async def run_job(qemu: QemuProcess, command: str, tag: str, arguments: dict[str, Any]) -> None:
    """A QMP job to its end: started, followed by JOB_STATUS_CHANGE to ``concluded``, its
    error (query-jobs) raised, dismissed."""
    qmp = qemu.qmp
    if qmp is None:
        raise SnapshotError("NoQMP", "no QMP connection to the VM's QEMU")
    job = f"{command}-{tag}"
    listener = EventListener(("JOB_STATUS_CHANGE",))
    try:
        with qmp.listen(listener):
            await qemu.execute(command, dict(arguments, **{"job-id": job}))

            async def concluded() -> None:
                async for event in listener:
                    data = event.get("data") or {}
                    if data.get("id") == job and data.get("status") == "concluded":
                        return
            await asyncio.wait_for(concluded(), JOB_TIMEOUT)
    except (QMPError, asyncio.TimeoutError) as e:
        raise SnapshotError(s.FAILED, f"QMP {command}: {e or 'timed out'}") from None
    jobs = await qemu.execute("query-jobs") or []
    error = next((j.get("error") for j in jobs if j.get("id") == job), None)
    with contextlib.suppress(Exception):
        await qemu.execute("job-dismiss", {"id": job})
    if error:
        raise SnapshotError(s.FAILED, f"{command}: {error}")


async def offline_snapshots(qemu_img: str, disk: Path) -> list[str]:
    """The snapshot tags in a qcow2 no QEMU has open."""
    out = await _qemu_img(qemu_img, "info", "--output=json", str(disk))
    info = json.loads(out or "{}")
    return [str(x.get("name")) for x in info.get("snapshots") or []]


async def _qemu_img(qemu_img: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(qemu_img, *args, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SnapshotError(s.FAILED, f"qemu-img {args[0]}: "
                            f"{err.decode(errors='replace').strip()[-400:]}")
    return out.decode(errors="replace")


# -- the VM's current snapshot, as this host last set it (with its disks) ------------------------
def _load_current(worker: VMWorker) -> str:
    try:
        return str(json.loads((worker.disks / "snapshots.json").read_text()).get("current") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def _save_current(worker: VMWorker, name: str) -> None:
    worker.disks.mkdir(parents=True, exist_ok=True)
    tmp = worker.disks / "snapshots.json.tmp"
    tmp.write_text(json.dumps({"current": name}))
    tmp.rename(worker.disks / "snapshots.json")
