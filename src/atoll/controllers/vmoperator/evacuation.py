"""Maintenance mode: a cordoned host's VMs live-migrate away (vSphere's "enter maintenance").

``kubectl cordon`` / ``kubectl drain`` / ``atoll host maintenance`` mark the Node
unschedulable; from then on every powered-on VM placed there gets a VirtualMachineMigration
(KubeVirt's ``evictionStrategy: LiveMigrate``, here the default), at most ``attempts`` per VM
and host, each after the last one failed.  A VM annotated
``migration.atoll.dev/eviction-strategy: None`` stays (it is listed in an Event on the Node,
as are VMs whose migrations all failed).  Uncordoning ends it: the host takes VMs again.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from atoll.api import errors
from atoll.api.migration import names as m
from atoll.api.vmoperator import names as n
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.events import NORMAL, WARNING
from atoll.controllers import capacity

log = logging.getLogger(__name__)
STRATEGY_ANNOTATION = "migration.atoll.dev/eviction-strategy"
#: on the migrations this controller makes: why they exist (and for which host)
REASON_LABEL = "migration.atoll.dev/reason"
EVACUATED_HOST_LABEL = "migration.atoll.dev/evacuating"


def migration_name(vm: str, host: str, attempt: int) -> str:
    """Deterministic, so a restarted controller finds the one it made instead of a second."""
    digest = hashlib.sha256(f"{host}/{attempt}".encode()).hexdigest()[:6]
    return f"{vm[:40]}-evacuate-{digest}"


class EvacuationController(Controller):
    name = "evacuation-controller"
    events_component = "evacuation-controller"
    attempts = 3

    def declare(self, b: Builder) -> None:
        self.nodes = b.primary("", "v1", "nodes")
        self.vms = b.watches(n.GROUP, n.VERSION, "virtualmachines", self._host_of,
                             indexers={capacity.VM_HOST: capacity.by_vm_host})
        self.migrations = b.watches(m.GROUP, m.VERSION, m.PLURAL, self._evacuated_host)

    @staticmethod
    def _host_of(kind: str, vm: dict[str, Any], old: dict[str, Any] | None) -> set[str]:
        return {h for h in (capacity.by_vm_host(vm) or []) if h} | \
            {h for h in (capacity.by_vm_host(old) if old else []) if h}

    @staticmethod
    def _evacuated_host(kind: str, mig: dict[str, Any], old: dict[str, Any] | None) -> set[str]:
        host = (mig["metadata"].get("labels") or {}).get(EVACUATED_HOST_LABEL)
        return {host} if host else set()

    async def reconcile(self, name: str) -> Result:
        node = self.nodes.get(name)
        if node is None or not (node.get("spec") or {}).get("unschedulable"):
            return DONE
        stuck: list[str] = []
        for vm in self.vms.by_index(capacity.VM_HOST, name):
            if not self._wants_move(vm):
                if (vm["metadata"].get("annotations") or {}).get(STRATEGY_ANNOTATION) == "None":
                    stuck.append(f"{vm['metadata']['namespace']}/{vm['metadata']['name']} "
                                 "(eviction-strategy None)")
                continue
            why = await self._ensure_migration(vm, name)
            if why:
                stuck.append(why)
        if stuck:
            self.events.record(dict(node, apiVersion="v1", kind="Node"), WARNING,
                               "EvacuationIncomplete", "VMs that stay: " + "; ".join(stuck))
            return requeue_after(60.0)
        return DONE

    @staticmethod
    def _wants_move(vm: dict[str, Any]) -> bool:
        if vm["metadata"].get("deletionTimestamp"):
            return False
        if (vm["metadata"].get("annotations") or {}).get(STRATEGY_ANNOTATION) == "None":
            return False
        return (vm.get("status") or {}).get("powerState") == n.POWERED_ON

    async def _ensure_migration(self, vm: dict[str, Any], host: str) -> str:
        """Make (or find) this VM's migration off ``host``; why it cannot move, if it can't."""
        ns, vm_name = vm["metadata"]["namespace"], vm["metadata"]["name"]
        for attempt in range(self.attempts):
            mig_name = migration_name(vm_name, host, attempt)
            try:
                mig = await self.client.get(m.path(ns, mig_name))
            except errors.NotFound:
                await self._create(ns, vm_name, mig_name, host, vm)
                return ""
            if m.phase(mig) != m.FAILED:
                return ""  # under way (or done: the VM's label moves with it)
        status = mig.get("status") or {}
        return f"{ns}/{vm_name} ({status.get('reason')}: {status.get('message')})"

    async def _create(self, ns: str, vm_name: str, mig_name: str, host: str,
                      vm: dict[str, Any]) -> None:
        body = {"apiVersion": m.API_VERSION, "kind": m.KIND,
                "metadata": {"name": mig_name, "namespace": ns,
                             "labels": {REASON_LABEL: "evacuation",
                                        EVACUATED_HOST_LABEL: host}},
                "spec": {"vmName": vm_name}}
        try:
            await self.client.create(m.path(ns), body)
        except errors.AlreadyExists:
            return
        log.info("host %s is in maintenance: migrating %s/%s away", host, ns, vm_name)
        self.events.record(dict(vm, apiVersion=n.API_VERSION, kind="VirtualMachine"), NORMAL,
                           "Evacuating", f"{host} is in maintenance: {mig_name}")
