"""VirtualMachineGroups: members powered on in their boot order, off together.

A group's members are the VMs and groups its ``bootOrder`` names; a member is *linked* once
it exists and its ``spec.groupName`` names the group, and then carries an owner reference
to the group (upstream's rule: deleting the group deletes its members).

Power follows epochs: an epoch is the group's ``powerState`` and
``nextForcePowerStateSyncTime`` together, and begins when either changes
(``status.lastUpdatedPowerStateTime``).  In an epoch every linked member gets the group's
power state once, marked on the member (``vmoperator.atoll.dev/group-power-epoch``, and
when in ``…/group-power-set-at``): members
of boot-order entry *i* when the delays of entries 0..i have passed since the epoch began
(powering off and suspending are immediate for all), with the group's ``powerOffMode`` /
``suspendMode``.  A member added later gets it at once if its entry is due, and a member
changed by hand keeps its own state until the next epoch, as upstream.  With no
``powerState`` the group leaves its members alone.

Status: per member its power state, host and conditions (``GroupLinked``,
``PowerStateSynced``), and ``Ready`` when every member's conditions are True.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from atoll.api import conditions as cond
from atoll.api import errors
from atoll.api.timestamps import parse_go_duration, parse_rfc3339, rfc3339
from atoll.api.vmoperator import names as n
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.events import NORMAL, WARNING

log = logging.getLogger(__name__)

VERSION = "v1alpha6"
PLURAL = "virtualmachinegroups"
KIND = "VirtualMachineGroup"
EPOCH = "vmoperator.atoll.dev/group-power-epoch"
#: on a member: when the group last set its power state (to the microsecond)
SET_AT = "vmoperator.atoll.dev/group-power-set-at"
#: on the group: the epoch whose start ``status.lastUpdatedPowerStateTime`` records
GROUP_EPOCH = "vmoperator.atoll.dev/power-epoch"
LINKED, SYNCED = "GroupLinked", "PowerStateSynced"
MEMBERS_INDEX = "member"


def group_path(ns: str, name: str = "") -> str:
    base = f"/apis/{n.GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}"
    return f"{base}/{name}" if name else base


def members_of(group: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(boot-order entry, kind, name) of every member, in boot order."""
    out = []
    for i, entry in enumerate((group.get("spec") or {}).get("bootOrder") or []):
        for member in (entry or {}).get("members") or []:
            if isinstance(member, dict) and member.get("name"):
                out.append((i, str(member.get("kind") or "VirtualMachine"), str(member["name"])))
    return out


def by_member(group: dict[str, Any]) -> Iterable[str]:
    ns = group["metadata"].get("namespace", "")
    return [f"{ns}/{kind}/{name}" for _, kind, name in members_of(group)]


def epoch_of(group: dict[str, Any]) -> str:
    spec = group.get("spec") or {}
    return f"{spec.get('powerState') or ''}@{spec.get('nextForcePowerStateSyncTime') or ''}"


def due_offsets(group: dict[str, Any]) -> list[float]:
    """Seconds after the epoch's start at which each boot-order entry powers on."""
    out, total = [], 0.0
    for entry in (group.get("spec") or {}).get("bootOrder") or []:
        try:
            total += max(0.0, parse_go_duration(str((entry or {}).get("powerOnDelay") or "0")))
        except ValueError:
            pass  # the API server refuses such delays; an old object: no delay
        out.append(total)
    return out


def owner_ref(group: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{n.GROUP}/{VERSION}", "kind": KIND,
            "name": group["metadata"]["name"], "uid": group["metadata"]["uid"]}


class VirtualMachineGroupController(Controller):
    name = "vm-group"
    events_component = "vm-group-controller"
    default_workers = 2

    def declare(self, b: Builder) -> None:
        self.groups = b.primary(n.GROUP, VERSION, PLURAL, indexers={MEMBERS_INDEX: by_member})
        b.watches(n.GROUP, VERSION, PLURAL, self._parents)
        self.vms = b.watches(n.GROUP, n.VERSION, "virtualmachines", self._of_vm)

    # -- what a change touches ---------------------------------------------------------------
    def _listing(self, ns: str, kind: str, name: str) -> set[str]:
        return {f"{ns}/{g['metadata']['name']}"
                for g in self.groups.by_index(MEMBERS_INDEX, f"{ns}/{kind}/{name}")}

    def _of_vm(self, kind: str, vm: dict[str, Any], old: dict[str, Any] | None) -> set[str]:
        ns, name = vm["metadata"].get("namespace", ""), vm["metadata"].get("name", "")
        keys = self._listing(ns, "VirtualMachine", name)
        for obj in (vm, old):
            group = ((obj or {}).get("spec") or {}).get("groupName")
            if group:
                keys.add(f"{ns}/{group}")
        return keys

    def _parents(self, kind: str, group: dict[str, Any], old: dict[str, Any] | None
                 ) -> set[str]:
        ns, name = group["metadata"].get("namespace", ""), group["metadata"].get("name", "")
        keys = self._listing(ns, KIND, name)
        for obj in (group, old):
            parent = ((obj or {}).get("spec") or {}).get("groupName")
            if parent:
                keys.add(f"{ns}/{parent}")
        return keys

    # -- reconcile -------------------------------------------------------------------------
    async def reconcile(self, key: str) -> Result:
        group = self.groups.get(key)
        if group is None or group["metadata"].get("deletionTimestamp"):
            return DONE
        ns, name = key.split("/", 1)
        group = await self._begin_epoch(group)
        want = (group.get("spec") or {}).get("powerState") or ""
        started = parse_rfc3339((group.get("status") or {}).get("lastUpdatedPowerStateTime"))
        offsets = due_offsets(group)
        now = self.clock()
        wait: float | None = None
        listed = members_of(group)
        rows = []
        for entry, kind, member_name in listed:
            obj = self._member(ns, kind, member_name)
            linked = obj is not None and (obj.get("spec") or {}).get("groupName") == name
            if linked:
                await self._own(group, kind, obj)
                if want and started is not None:
                    due = started + (offsets[entry] if want == n.POWERED_ON else 0.0)
                    if now >= due:
                        await self._apply(group, kind, obj, want)
                    else:
                        wait = due - now if wait is None else min(wait, due - now)
            rows.append(self._member_status(kind, member_name, obj, linked, want))
        await self._disown_strays(group, {(k, m) for _, k, m in listed})
        await self._write_status(group, rows)
        return requeue_after(wait + 0.05) if wait is not None else DONE

    def _member(self, ns: str, kind: str, name: str) -> dict[str, Any] | None:
        informer = self.vms if kind == "VirtualMachine" else self.groups
        return informer.get(f"{ns}/{name}")

    async def _begin_epoch(self, group: dict[str, Any]) -> dict[str, Any]:
        """A new power state (or a forced sync) starts a new epoch, now."""
        epoch = epoch_of(group)
        if not (group.get("spec") or {}).get("powerState") or \
                (group["metadata"].get("annotations") or {}).get(GROUP_EPOCH) == epoch:
            return group
        ns, name = group["metadata"]["namespace"], group["metadata"]["name"]
        when = rfc3339(self.clock(), digits=6)
        try:
            await self.client.patch(group_path(ns, name), {"metadata": {
                "annotations": {GROUP_EPOCH: epoch},
                "resourceVersion": group["metadata"]["resourceVersion"]}})
            return await self.client.patch(f"{group_path(ns, name)}/status", {
                "status": {"lastUpdatedPowerStateTime": when}})
        except (errors.NotFound, errors.Conflict):
            return group  # changed meanwhile: its event brings it back

    async def _apply(self, group: dict[str, Any], kind: str, obj: dict[str, Any],
                     want: str) -> None:
        """The group's power state on one member, once per epoch."""
        epoch = epoch_of(group)
        if (obj["metadata"].get("annotations") or {}).get(EPOCH) == epoch:
            return
        spec = group.get("spec") or {}
        change: dict[str, Any] = {"powerState": want}
        if want == n.POWERED_OFF and spec.get("powerOffMode"):
            change["powerOffMode"] = spec["powerOffMode"]
        if want == n.SUSPENDED and spec.get("suspendMode"):
            change["suspendMode"] = spec["suspendMode"]
        meta = obj["metadata"]
        path = n.vm_path(meta["namespace"], meta["name"]) if kind == "VirtualMachine" else \
            group_path(meta["namespace"], meta["name"])
        try:
            await self.client.patch(path, {"metadata": {"annotations": {
                EPOCH: epoch, SET_AT: rfc3339(self.clock(), digits=6)}}, "spec": change})
        except errors.NotFound:
            return
        except errors.Invalid as e:  # e.g. a VM that cannot be Suspended now
            self.events.record(dict(group, apiVersion=f"{n.GROUP}/{VERSION}", kind=KIND),
                               WARNING, "PowerStateFailed", f"{meta['name']}: {e}")
            return
        self.events.record(dict(group, apiVersion=f"{n.GROUP}/{VERSION}", kind=KIND),
                           NORMAL, "PowerStateSet", f"{kind} {meta['name']}: {want}")

    async def _own(self, group: dict[str, Any], kind: str, obj: dict[str, Any]) -> None:
        refs = obj["metadata"].get("ownerReferences") or []
        if any(r.get("uid") == group["metadata"]["uid"] for r in refs):
            return
        await self._set_refs(kind, obj, [*refs, owner_ref(group)])

    async def _disown_strays(self, group: dict[str, Any], listed: set[tuple[str, str]]) -> None:
        """Members that left (no longer listed, or their groupName changed) lose the ref."""
        uid, name = group["metadata"]["uid"], group["metadata"]["name"]
        for kind, informer in (("VirtualMachine", self.vms), (KIND, self.groups)):
            for obj in informer.by_index(ix.OWNER_UID, uid):
                linked = (kind, obj["metadata"]["name"]) in listed and \
                    (obj.get("spec") or {}).get("groupName") == name
                if not linked:
                    refs = [r for r in obj["metadata"].get("ownerReferences") or []
                            if r.get("uid") != uid]
                    await self._set_refs(kind, obj, refs)

    async def _set_refs(self, kind: str, obj: dict[str, Any], refs: list[dict[str, Any]]
                        ) -> None:
        meta = obj["metadata"]
        path = n.vm_path(meta["namespace"], meta["name"]) if kind == "VirtualMachine" else \
            group_path(meta["namespace"], meta["name"])
        try:
            await self.client.patch(path, {"metadata": {
                "ownerReferences": refs or None, "resourceVersion": meta["resourceVersion"]}})
        except (errors.NotFound, errors.Conflict):
            pass  # changed meanwhile: its event brings the group back

    def _member_status(self, kind: str, name: str, obj: dict[str, Any] | None, linked: bool,
                       want: str) -> dict[str, Any]:
        row: dict[str, Any] = {"name": name, "kind": kind}
        if obj is None:
            linked_c = cond.condition(LINKED, False, "NotFound", f"{kind} {name} does not exist")
        elif not linked:
            linked_c = cond.condition(LINKED, False, "NotMember",
                                      "its spec.groupName is not this group")
        else:
            linked_c = cond.condition(LINKED, True, "Linked")
        conditions = [linked_c]
        if kind == "VirtualMachine" and obj is not None:
            have = (obj.get("status") or {}).get("powerState") or ""
            row["powerState"] = have or None
            host = (obj["metadata"].get("labels") or {}).get(n.HOST_LABEL)
            if host:
                row["placement"] = {"name": name, "node": host}
            if want:
                ok = have == want
                conditions.append(cond.condition(SYNCED, ok, "Synced" if ok else "NotSynced",
                                                 "" if ok else f"{have or 'no power state'}, "
                                                               f"the group wants {want}"))
        elif kind == KIND and obj is not None:
            ready = cond.find((obj.get("status") or {}).get("conditions"), n.READY)
            conditions.append(cond.condition(n.READY, bool(ready and ready.get("status") ==
                                                            "True"), "MembersReady"
                                             if ready and ready.get("status") == "True"
                                             else "MembersNotReady"))
        if not row.get("powerState"):
            row.pop("powerState", None)
        row["conditions"] = conditions
        return row

    async def _write_status(self, group: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        current = group.get("status") or {}
        before = {(m.get("kind"), m.get("name")): m for m in current.get("members") or []}
        for row in rows:  # keep the transition times of conditions that did not change
            old = before.get((row["kind"], row["name"])) or {}
            row["conditions"] = cond.merge(old.get("conditions"), row["conditions"])
        bad = [f"{r['name']}: {c['type']}" for r in rows for c in r["conditions"]
               if c.get("status") != "True"]
        ready = cond.condition(n.READY, not bad, "MembersReady" if not bad else "NotReady",
                               "; ".join(bad)[:1024])
        status = {"members": rows or None,
                  "conditions": cond.merge(current.get("conditions"), [ready])}
        if (current.get("members") or None) == status["members"] and \
                current.get("conditions") == status["conditions"]:
            return
        ns, name = group["metadata"]["namespace"], group["metadata"]["name"]
        try:
            await self.client.patch(f"{group_path(ns, name)}/status", {"status": status})
        except errors.NotFound:
            pass
