"""What both ends of a live migration share: the drives that move, and writing the object.

A migration moves the guest's RAM and device state over QEMU's migration stream and its
writable disks over NBD (a ``blockdev-mirror`` on the source into an export on the target,
as libvirt does for non-shared storage); the read-only seed is made again on the target.
Each agent writes only the steps it owns, and only from the phase it expects: a migration the
controller has failed meanwhile is never written back to life.
"""

from __future__ import annotations

import logging
from typing import Any

from atoll.agent.runtime.qemu import QemuProcess
from atoll.api import errors
from atoll.api.migration import names as m
from atoll.api.timestamps import rfc3339
from atoll.client.rest import ApiClient
from atoll.client.status import patch_with_retry

log = logging.getLogger(__name__)


async def writable_drives(qemu: QemuProcess) -> dict[str, dict[str, Any]]:
    """{drive id: its ``inserted`` block info} for the drives that must be copied."""
    out = {}
    for drive in await qemu.execute("query-block") or []:
        inserted = drive.get("inserted")
        if inserted and not inserted.get("ro") and str(drive.get("device", "")).startswith("disk"):
            out[drive["device"]] = inserted
    return out


async def drive_sizes(qemu: QemuProcess) -> list[int]:
    """Every drive's virtual size, in QEMU's order (disk0, disk1, ...)."""
    drives = {d["device"]: d for d in await qemu.execute("query-block") or []
              if str(d.get("device", "")).startswith("disk") and d.get("inserted")}
    return [int(drives[k]["inserted"]["image"]["virtual-size"])
            for k in sorted(drives, key=lambda k: int(k[4:]) if k[4:].isdigit() else 0)]


async def advance(client: ApiClient, mig: dict[str, Any], expected: tuple[str, ...],
                  status: dict[str, Any], phase: str | None = None) -> dict[str, Any] | None:
    """Merge ``status`` (and a new ``phase``) into the migration if it is still in one of the
    ``expected`` phases; the object as written, or None when it had moved on (or is gone)."""
    path = m.path(mig["metadata"]["namespace"], mig["metadata"]["name"])

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        if m.phase(current) not in expected:
            raise _MovedOn(m.phase(current))
        if phase == m.FAILED and (current.get("status") or {}).get("completed"):
            raise _MovedOn("completed")  # the VM runs on the target: nothing left to fail
        body = dict(status)
        if phase is not None and phase != m.phase(current):
            stamps = list((current.get("status") or {}).get("phaseTransitionTimestamps") or [])
            stamps.append({"phase": phase, "timestamp": rfc3339()})
            body.update(phase=phase, phaseTransitionTimestamps=stamps)
        return {"status": body}
    try:
        return await patch_with_retry(client, path, mig, change, subresource="status")
    except _MovedOn as e:
        log.info("migration %s is %s now: not writing", mig["metadata"]["name"], e)
        return None
    except errors.NotFound:
        return None


async def fail(client: ApiClient, mig: dict[str, Any], reason: str, message: str) -> None:
    """Fail the migration unless it finished (a completed one belongs to the controller)."""
    if (mig.get("status") or {}).get("completed"):
        return
    log.warning("migration %s failed: %s: %s", mig["metadata"]["name"], reason, message)
    await advance(client, mig, m.ACTIVE, {"reason": reason, "message": message,
                                          "endTimestamp": rfc3339()}, m.FAILED)


def ms(value: Any) -> str:
    return f"{int(value)}ms" if isinstance(value, (int, float)) else ""


class _MovedOn(Exception):
    pass

