"""A VirtualMachine's ``status`` as its host reports it: power state, network, conditions.

``report`` computes, from what the worker knows, the fields the host owns and the condition
updates; ``change`` makes the patch function ``patch_with_retry`` calls against the stored
object, so nothing is written when nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from atoll.agent.vms.boot import BootWatch
from atoll.agent.vms.launch import VMSetupError
from atoll.agent.vms.network import VMAddress
from atoll.api import conditions as cond
from atoll.api.vmoperator import names as n


@dataclass(frozen=True)
class Observed:
    """What the worker knows of its VM at one moment."""

    node_name: str
    uid: str
    accel: str
    running: bool
    paused: bool
    address: VMAddress | None
    boot: BootWatch | None
    ready: bool | None
    setup_error: VMSetupError | None
    #: the VM has run on this host before (its state file exists)
    created: bool
    silent_boot_timeout: float


def report(spec: dict[str, Any], o: Observed) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                      tuple[str, ...]]:
    """(status fields, condition updates, conditions to remove)."""
    running, paused = o.running, o.paused
    power = n.SUSPENDED if paused else (n.POWERED_ON if running else n.POWERED_OFF)
    status: dict[str, Any] = {
        "powerState": power, "nodeName": o.node_name,
        "host": o.node_name, "uniqueID": o.uid, "biosUUID": o.uid,
        "instanceUUID": o.uid}
    if o.accel:
        status["accelerator"] = o.accel
    if running and o.address is not None:
        status["network"] = {"primaryIP4": o.address.ip, "interfaces": [{
            "name": "eth0", "ip": {"macAddr": o.address.mac,
                                   "addresses": [{"address": f"{o.address.ip}/"
                                                             f"{o.address.prefixlen}"}]}}]}
    else:
        status["network"] = None
    updates = [created_condition(o)]
    if running and o.boot is not None:
        updates.append({
            None: cond.condition(n.GUEST_BOOTSTRAP, None, "Booting",
                                 "waiting for the guest's bootstrap (cloud-init) to finish"),
            "done": cond.condition(n.GUEST_BOOTSTRAP, True, "CloudInitDone", ""),
            "failed": cond.condition(n.GUEST_BOOTSTRAP, False, "BootFailed", o.boot.detail),
            "silent": cond.condition(
                n.GUEST_BOOTSTRAP, False, "NoConsoleOutput",
                f"the guest wrote nothing to its serial console in "
                f"{o.silent_boot_timeout:.0f} s: it probably does not boot "
                f"(see `atoll vm console --log`)"),
        }[o.boot.result])
    remove: tuple[str, ...] = ()
    if spec.get("readinessProbe"):
        ok = bool(running and not paused and o.ready)
        updates.append(cond.condition(n.READY, ok, "ProbeSucceeded" if ok else "ProbeFailed"
                                      if running else "PoweredOff"))
    elif running and not paused:
        updates.append(cond.condition(n.READY, True, "PoweredOn"))
    else:
        remove = (n.READY,)
    err = o.setup_error
    for ctype in (n.BOOTSTRAP_READY, n.STORAGE_READY, n.NETWORK_READY):
        if err is not None and err.condition == ctype:
            updates.append(cond.condition(ctype, False, err.reason, err.message))
        elif running:
            updates.append(cond.condition(ctype, True, "Ready"))
    return status, updates, remove


def created_condition(o: Observed) -> dict[str, Any]:
    err = o.setup_error
    if err is not None and err.condition in (n.CREATED, n.CLASS_READY, n.IMAGE_READY):
        return cond.condition(n.CREATED, False, err.reason, err.message)
    if o.running:
        return cond.condition(n.CREATED, True, "Running",
                              f"QEMU ({o.accel or 'tcg'}) on {o.node_name}")
    return cond.condition(n.CREATED, True, "PoweredOff", "") if o.created \
        else cond.condition(n.CREATED, False, "NotCreated", "")


def change(status: dict[str, Any], updates: list[dict[str, Any]],
           remove: tuple[str, ...]) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """The status patch against the stored VM, or None when it already says all this."""
    def patch(vm: dict[str, Any]) -> dict[str, Any] | None:
        old = vm.get("status") or {}
        merged = cond.merge(old.get("conditions"), updates, remove)
        same = all(old.get(k) == v for k, v in status.items() if v is not None) and \
            not (status["network"] is None and old.get("network")) and \
            not cond.changed(old.get("conditions"), merged)
        return None if same else {"status": dict(status, conditions=merged)}
    return patch
