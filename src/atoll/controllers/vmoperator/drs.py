"""DRS: VMs live-migrated between hosts to even out their measured load (vSphere's DRS).

One key, the BalancingPolicy ``default``.  A pass runs at most once per
``spec.intervalSeconds`` (the framework's ``requeue_after``); load reports, VMs and migrations
changing bring a due pass forward, never a second one inside the interval.  A pass:

- reads each usable host's load report (``drs.atoll.dev/load`` on its Node, written by its
  agent: ``agent/host/loadreport.py``); hosts without a fresh report, unschedulable (in
  maintenance), tainted or not Ready take no part, as sources or targets;
- waits while any migration runs (the load is in flux) and, after the last one, until both
  its hosts have reported since it ended (the numbers DRS reads then show the move);
- finds the VMs it may move: powered on, not deleted, not migrated within
  ``spec.vmCooldownSeconds`` (no ping-pong), not ``Disabled`` by their
  ``drs.atoll.dev/automation-level`` annotation, no claim on a host-local volume;
- asks ``drsscoring`` for the moves (priorities 1..threshold), each target checked by the
  same ``placement.place`` as a new VM's (room for its class, reservations), the source's
  accelerator, and anti-affinity (``drs.atoll.dev/anti-affinity``);
- FullyAutomated VMs: the first such move becomes a VirtualMachineMigration labelled
  ``migration.atoll.dev/reason: drs`` (one DRS move in flight per cluster); Manual and
  PartiallyAutomated VMs (initial placement is always automatic): MigrationRecommendations,
  one per VM, ``<vm>-drs`` in its namespace, removed when they no longer hold.  Setting a
  recommendation's ``spec.apply: true`` makes the migration at once.

Each move and each new recommendation is an Event on the VM and on the policy.  The policy's
status is written once per pass (the imbalance, each host's utilisation, what was done), and
while a pass waits only when the reason it waits changes.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from atoll.api import conditions as cond
from atoll.api import errors
from atoll.api.migration import drs as d
from atoll.api.migration import names as m
from atoll.api.timestamps import parse_rfc3339, rfc3339
from atoll.api.vmoperator import names as n
from atoll.api.vmoperator import snapshots as vmsnap
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.events import NORMAL
from atoll.controllers import capacity
from atoll.controllers.capacity import Resources
from atoll.controllers.vmoperator import drsscoring as score
from atoll.controllers.vmoperator import placement, vmaffinity
from atoll.controllers.vmoperator import volumes as vmvolumes
from atoll.controllers.vmoperator.evacuation import REASON_LABEL
from atoll.controllers.vmoperator.migration import by_vm

log = logging.getLogger(__name__)
BY_VM = "drs-vm"
#: a report older than this says its agent stopped measuring: the host takes no part
STALE_SECONDS = 600.0
#: after a move, its hosts must have reported this long after it ended (two samples)
SETTLE_SECONDS = 12.0


def _level(vm: dict[str, Any], default: str) -> str:
    value = ((vm.get("metadata") or {}).get("annotations") or {}).get(d.AUTOMATION_ANNOTATION)
    return value if value in (*d.LEVELS, d.DISABLED) else default


def _key(obj: dict[str, Any]) -> str:
    return f"{obj['metadata'].get('namespace', '')}/{obj['metadata'].get('name', '')}"


class DRSController(Controller):
    name = "drs-controller"
    events_component = "drs-controller"

    def declare(self, b: Builder) -> None:
        self.policies = b.primary(d.GROUP, m.VERSION, d.POLICIES)
        self.nodes = b.watches("", "v1", "nodes", self._of_node)
        self.vms = b.watches(n.GROUP, n.VERSION, "virtualmachines", self._of_vm,
                             indexers={capacity.VM_HOST: capacity.by_vm_host})
        self.migrations = b.watches(m.GROUP, m.VERSION, m.PLURAL, self._of_migration,
                                    indexers={BY_VM: by_vm})
        self.recommendations = b.watches(d.GROUP, m.VERSION, d.RECOMMENDATIONS,
                                         self._of_recommendation)
        self.classes = b.reads(n.GROUP, n.VERSION, "virtualmachineclasses")
        self.pods = b.reads("", "v1", "pods", indexers={ix.NODE_NAME: ix.by_node_name})
        self.claims = b.reads("", "v1", "persistentvolumeclaims")
        self.volumes = b.reads("", "v1", "persistentvolumes")
        self.snapshots = b.reads(n.GROUP, vmsnap.VERSION, vmsnap.PLURAL)
        self._last_pass = 0.0

    # -- what wakes it -------------------------------------------------------------------------
    @staticmethod
    def _of_node(kind: str, node: dict[str, Any], old: dict[str, Any] | None) -> set[str]:
        """Only what DRS reads: the load report, schedulability, taints, readiness (not the
        status heartbeat every 10 s)."""
        def seen(o: dict[str, Any] | None) -> Any:
            if o is None:
                return None
            ready = cond.find((o.get("status") or {}).get("conditions"), "Ready") or {}
            return ((o["metadata"].get("annotations") or {}).get(d.LOAD_ANNOTATION),
                    placement.usable(o), ready.get("status"))
        return {d.DEFAULT} if kind != "MODIFIED" or seen(node) != seen(old) else set()

    @staticmethod
    def _of_vm(kind: str, vm: dict[str, Any], old: dict[str, Any] | None) -> set[str]:
        def seen(o: dict[str, Any] | None) -> Any:
            if o is None:
                return None
            ann = o["metadata"].get("annotations") or {}
            return (capacity.vm_host(o), (o.get("status") or {}).get("powerState"),
                    ann.get(d.AUTOMATION_ANNOTATION), ann.get(d.ANTI_AFFINITY_ANNOTATION))
        return {d.DEFAULT} if kind != "MODIFIED" or seen(vm) != seen(old) else set()

    @staticmethod
    def _of_migration(kind: str, mig: dict[str, Any], old: dict[str, Any] | None) -> set[str]:
        return {d.DEFAULT} if kind != "MODIFIED" or old is None or \
            m.phase(mig) != m.phase(old) else set()

    @staticmethod
    def _of_recommendation(kind: str, rec: dict[str, Any],
                           old: dict[str, Any] | None) -> set[str]:
        asked = (rec.get("spec") or {}).get("apply")
        was = ((old or {}).get("spec") or {}).get("apply")
        return {d.DEFAULT} if kind == "DELETED" or (asked and asked != was) else set()

    # -- reconcile -----------------------------------------------------------------------------
    async def reconcile(self, key: str) -> Result:
        policy = self.policies.get(key)
        if key != d.DEFAULT or policy is None:
            return DONE
        spec = policy.get("spec") or {}
        level = spec.get("automationLevel") if spec.get("automationLevel") in d.LEVELS \
            else d.MANUAL
        threshold = min(max(int(spec.get("migrationThreshold") or 3), 1), 5)
        interval = float(max(int(spec.get("intervalSeconds") or 60), 5))
        cooldown = float(max(int(spec.get("vmCooldownSeconds", 300) or 0), 0))
        await self._apply_requested(policy)
        now = self.clock()
        if now - self._last_pass < interval:
            return requeue_after(self._last_pass + interval - now)
        hosts, why = self._hosts(now)
        if why:  # not a pass: the next change of a report or a migration looks again
            if why != (policy.get("status") or {}).get("message"):
                await self._set_status(policy, hosts, len(self.recommendations.list()), why,
                                       "", counted=False)
            return requeue_after(interval)
        self._last_pass = now
        movable, levels, groups = self._movable(hosts, level, cooldown, now)
        moves = score.recommendations(hosts, movable, self._fits, groups, threshold)
        auto = next((mv for mv in moves if levels[mv.vm] == d.FULL), None)
        started = await self._migrate(auto, policy) if auto is not None else ""
        moves = [mv for mv in moves if levels[mv.vm] in (d.MANUAL, d.PARTIAL)]
        why = f"moving {auto.vm} to {auto.target}" if auto else \
            (f"{len(moves)} moves recommended" if moves else "balanced enough")
        await self._sync_recommendations(moves, policy)
        await self._set_status(policy, hosts, len(moves), why, started)
        return requeue_after(interval)

    # -- the picture ---------------------------------------------------------------------------
    def _hosts(self, now: float) -> tuple[dict[str, score.HostLoad], str]:
        """Usable hosts with fresh reports, the VMs in them the ones placed there; or why
        this pass waits."""
        hosts: dict[str, score.HostLoad] = {}
        for node in self.nodes.list():
            load = score.host_load(node)
            if load is None or placement.usable(node) or now - load.time > STALE_SECONDS:
                continue
            here = {_key(vm) for vm in self.vms.by_index(capacity.VM_HOST, load.name)}
            hosts[load.name] = score.HostLoad(
                load.name, load.cpus, load.memory,
                load.cpu - sum(v.cpu for k, v in load.vms.items() if k not in here),
                load.used_memory - sum(v.memory for k, v in load.vms.items() if k not in here),
                {k: v for k, v in load.vms.items() if k in here}, load.pressure, load.time)
        active = [mig for mig in self.migrations.list() if m.phase(mig) in m.ACTIVE]
        if active:
            return hosts, f"waiting: migration {_key(active[0])} runs"
        ended = [(parse_rfc3339((mig.get("status") or {}).get("endTimestamp")) or 0.0, mig)
                 for mig in self.migrations.list() if m.phase(mig) == m.SUCCEEDED]
        if ended:
            end, last = max(ended, key=lambda e: e[0])
            for role in ("sourceNode", "targetNode"):
                host = hosts.get((last.get("status") or {}).get(role) or "")
                if host is not None and host.time < end + SETTLE_SECONDS:
                    return hosts, f"waiting: {host.name} has not reported since {_key(last)}"
        if len(hosts) < 2:
            return hosts, f"{len(hosts)} host(s) with a load report: nothing to balance"
        return hosts, ""

    def _movable(self, hosts: dict[str, score.HostLoad], level: str, cooldown: float,
                 now: float) -> tuple[set[str], dict[str, str], dict[str, str]]:
        """The VMs a move may take, every VM's automation level, anti-affinity groups."""
        movable: set[str] = set()
        levels: dict[str, str] = {}
        groups: dict[str, str] = {}
        for host in hosts.values():
            for key in host.vms:
                vm = self.vms.get(key)
                if vm is None:
                    continue
                levels[key] = _level(vm, level)
                group = (vm["metadata"].get("annotations") or {}).get(
                    d.ANTI_AFFINITY_ANNOTATION)
                if group:
                    groups[key] = f"{vm['metadata']['namespace']}/{group}"
                if levels[key] != d.DISABLED and self._may_move(vm, cooldown, now):
                    movable.add(key)
        return movable, levels, groups

    def _may_move(self, vm: dict[str, Any], cooldown: float, now: float) -> bool:
        if vm["metadata"].get("deletionTimestamp") or \
                (vm.get("status") or {}).get("powerState") != n.POWERED_ON:
            return False
        for mig in self.migrations.by_index(BY_VM, _key(vm)):
            st = mig.get("status") or {}
            when = parse_rfc3339(st.get("endTimestamp")) or \
                parse_rfc3339(mig["metadata"].get("creationTimestamp")) or 0.0
            if m.phase(mig) in m.ACTIVE or now - when < cooldown:
                return False
        ns = vm["metadata"]["namespace"]
        if vmsnap.names_of_vm(self.snapshots.by_index("namespace", ns), vm["metadata"]["name"]):
            return False  # its snapshots cannot follow it (the migration would refuse)
        for _, claim in vmvolumes.claim_volumes(vm):  # host-local volumes cannot follow yet
            pvc = self.claims.get(f"{ns}/{claim}")
            pv = self.volumes.get(((pvc or {}).get("spec") or {}).get("volumeName") or "")
            if pv is not None and (pv.get("spec") or {}).get("nodeAffinity"):
                return False
        return True

    def _fits(self, vm_key: str, target: str) -> str:
        """Why ``vm_key`` cannot run on ``target`` ("" when it can): the migration
        controller's own checks, so a move DRS proposes is one it will carry out."""
        vm, node = self.vms.get(vm_key), self.nodes.get(target)
        if vm is None or node is None:
            return "gone"
        source = self.nodes.get(capacity.vm_host(vm)) or {}
        accel = (source.get("metadata", {}).get("labels") or {}).get(n.ACCELERATOR_LABEL)
        if accel and (node["metadata"].get("labels") or {}).get(
                n.ACCELERATOR_LABEL, accel) != accel:
            return f"{target} does not run {accel} guests"
        klass = self.classes.get(capacity.vm_class_key(vm))
        want = placement.demand(klass) if klass else placement.Demand(1, 0)
        decision = placement.place(want, [node], self._requested, rule=vmaffinity.rule(
            vm, self.vms.by_index(ix.NAMESPACE, vm["metadata"]["namespace"]), self.nodes.get))
        return "" if decision.host == target else decision.message

    def _requested(self, host: str) -> Resources:
        reservations = [r for vm in self.vms.by_index(capacity.VM_HOST, host)
                        if (r := capacity.class_reservation(
                            self.classes.get(capacity.vm_class_key(vm)))) is not None]
        return placement.requested_on(host, self.pods.by_index(ix.NODE_NAME, host),
                                      reservations)

    # -- acting --------------------------------------------------------------------------------
    async def _migrate(self, move: score.Move, policy: dict[str, Any],
                       recommendation: str = "") -> str:
        ns, vm_name = move.vm.split("/", 1)
        digest = hashlib.sha256(f"{move.source}/{move.target}/{self.clock()}".encode())
        name = f"{vm_name[:40]}-drs-{digest.hexdigest()[:6]}"
        labels = {REASON_LABEL: d.REASON}
        if recommendation:
            labels[d.RECOMMENDATION_VM_LABEL] = vm_name[:63]
        body = {"apiVersion": m.API_VERSION, "kind": m.KIND,
                "metadata": {"name": name, "namespace": ns, "labels": labels,
                             "annotations": {"drs.atoll.dev/improvement": move.improvement,
                                             "drs.atoll.dev/why": move.reason[:1000]}},
                "spec": {"vmName": vm_name, "targetNode": move.target}}
        await self.client.create(m.path(ns), body)
        log.info("DRS: migrating %s from %s to %s (%s)", move.vm, move.source, move.target,
                 move.reason)
        text = (f"{name}: {move.vm} {move.source} -> {move.target}, imbalance "
                f"{move.improvement} (priority {move.priority}; {move.reason})")
        vm = self.vms.get(move.vm)
        if vm is not None:
            self.events.record(dict(vm, apiVersion=n.API_VERSION, kind="VirtualMachine"),
                               NORMAL, "DRSMigration", text)
        self.events.record(dict(policy, apiVersion=d.API_VERSION, kind=d.POLICY_KIND), NORMAL,
                           "DRSMigration", text)
        return f"{ns}/{name}"

    async def _apply_requested(self, policy: dict[str, Any]) -> None:
        """Recommendations a user set ``spec.apply`` on become migrations now."""
        for rec in self.recommendations.list():
            spec, status = rec.get("spec") or {}, rec.get("status") or {}
            if spec.get("apply") is not True or status.get("migrationName"):
                continue
            ns = rec["metadata"]["namespace"]
            vm = self.vms.get(f"{ns}/{spec.get('vmName', '')}")
            if vm is None or capacity.vm_host(vm) != spec.get("sourceNode"):
                await self._delete(rec, "the VM is no longer on " + str(spec.get("sourceNode")))
                continue
            if any(m.phase(x) in m.ACTIVE for x in self.migrations.by_index(BY_VM, _key(vm))):
                continue  # it moves already; applied once that one ends, if still valid
            move = score.Move(_key(vm), spec.get("sourceNode", ""), spec.get("targetNode", ""),
                              int(spec.get("priority") or 5), 0.0, 0.0,
                              f"recommendation {rec['metadata']['name']} applied")
            started = await self._migrate(move, policy, recommendation=rec["metadata"]["name"])
            await self._patch_status(rec, {"migrationName": started.split("/", 1)[1],
                                           "message": "applied"})

    async def _sync_recommendations(self, moves: list[score.Move],
                                    policy: dict[str, Any]) -> None:
        wanted: dict[str, score.Move] = {}
        for mv in moves:
            ns, vm = mv.vm.split("/", 1)
            wanted[f"{ns}/{vm[:249]}-drs"] = mv
        for rec in self.recommendations.list():
            key, status = _key(rec), rec.get("status") or {}
            if key in wanted and not status.get("migrationName"):
                continue
            if status.get("migrationName"):
                mig = next((x for x in self.migrations.list()
                            if x["metadata"]["name"] == status["migrationName"] and
                            x["metadata"].get("namespace") == rec["metadata"]["namespace"]),
                           None)
                if mig is not None and m.phase(mig) not in m.TERMINAL:
                    wanted.pop(key, None)
                    continue  # being carried out
            await self._delete(rec, "no longer recommended" if key not in wanted else "done")
            wanted.pop(key, None)  # written again by a later pass, once the cache forgot it
        for key, mv in wanted.items():
            await self._write_recommendation(key, mv, policy)

    async def _write_recommendation(self, key: str, mv: score.Move,
                                    policy: dict[str, Any]) -> None:
        ns, name = key.split("/", 1)
        spec = {"vmName": mv.vm.split("/", 1)[1], "sourceNode": mv.source,
                "targetNode": mv.target, "priority": mv.priority, "reason": mv.reason,
                "expectedImprovement": mv.improvement}
        current = self.recommendations.get(key)
        if current is not None:
            old = current.get("spec") or {}
            if all(old.get(k) == spec[k] for k in ("vmName", "sourceNode", "targetNode",
                                                    "priority")):
                return  # the same move: not rewritten for a changed figure
            try:
                await self.client.patch(d.recommendation_path(ns, name), {"spec": spec})
            except errors.NotFound:
                pass
            return
        body = {"apiVersion": d.API_VERSION, "kind": d.RECOMMENDATION_KIND,
                "metadata": {"name": name, "namespace": ns,
                             "labels": {d.RECOMMENDATION_VM_LABEL: spec["vmName"][:63]}},
                "spec": spec}
        try:
            await self.client.create(d.recommendation_path(ns), body)
        except errors.AlreadyExists:
            return
        text = (f"{name}: move {mv.vm} {mv.source} -> {mv.target}, imbalance "
                f"{mv.improvement} (priority {mv.priority}; {mv.reason})")
        vm = self.vms.get(mv.vm)
        if vm is not None:
            self.events.record(dict(vm, apiVersion=n.API_VERSION, kind="VirtualMachine"),
                               NORMAL, "DRSRecommendation", text)
        self.events.record(dict(policy, apiVersion=d.API_VERSION, kind=d.POLICY_KIND), NORMAL,
                           "DRSRecommendation", text)

    async def _delete(self, rec: dict[str, Any], why: str) -> None:
        log.info("DRS: removing recommendation %s: %s", _key(rec), why)
        try:
            await self.client.delete(d.recommendation_path(rec["metadata"]["namespace"],
                                                           rec["metadata"]["name"]))
        except errors.NotFound:
            pass

    async def _patch_status(self, rec: dict[str, Any], status: dict[str, Any]) -> None:
        try:
            await self.client.patch(d.recommendation_path(rec["metadata"]["namespace"],
                                                          rec["metadata"]["name"]) + "/status",
                                    {"status": status})
        except errors.NotFound:
            pass

    async def _set_status(self, policy: dict[str, Any], hosts: dict[str, score.HostLoad],
                          recommended: int, message: str, started: str,
                          counted: bool = True) -> None:
        old = policy.get("status") or {}
        status: dict[str, Any] = {
            "lastPassTime": rfc3339(self.clock()) if counted else old.get("lastPassTime"),
            "passes": int(old.get("passes") or 0) + (1 if counted else 0),
            "imbalance": f"{score.imbalance(hosts.values()):.3f}",
            "hosts": [{"name": h.name, "cpu": f"{h.utilisation:.0%}",
                       "memory": f"{h.used_memory / h.memory:.0%}" if h.memory else "?",
                       "vms": len(h.vms)} for _, h in sorted(hosts.items())],
            "recommendations": recommended, "message": message[:1000]}
        if started:
            status["lastMigration"] = started
        try:
            await self.client.patch(d.policy_path(policy["metadata"]["name"]) + "/status",
                                    {"status": status})
        except errors.NotFound:
            pass
