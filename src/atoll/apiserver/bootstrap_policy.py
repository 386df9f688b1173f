"""The default ClusterRoles and ClusterRoleBindings, as kube-apiserver bootstraps them.

User-facing roles follow upstream: ``cluster-admin``; ``admin``, ``edit`` and
``view`` built by aggregation from ``system:aggregate-to-*`` roles (so a CRD's
own aggregate roles extend them), with the VM Operator kinds added: viewers
read VMs, editors run them, nobody below cluster-admin changes quotas, limit
ranges or VM classes.  System roles let every signed-in user discover the API
and review their own access, and let host agents (group ``system:nodes``) do
what a host needs; NodeRestriction admission narrows that to their own objects.

Installed at start-up: missing objects are created, and objects carrying
``rbac.authorization.kubernetes.io/autoupdate: "true"`` get their rules back
if someone changed them, as upstream reconciles its bootstrap policy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from atoll.api import errors
from atoll.api.migration.names import GROUP as MIGRATION_GROUP
from atoll.api.migration.names import POLICY_GROUP as MIGRATION_POLICY_GROUP
from atoll.api.network import GROUP as NETWORK_GROUP
from atoll.api.network import POOLS as NETWORK_POOLS
from atoll.api.resources.rbac_v1 import CLUSTERROLEBINDINGS, CLUSTERROLES
from atoll.api.snapshots import GROUP as SNAPSHOT_GROUP
from atoll.api.vmoperator.names import GROUP as VM_GROUP
from atoll.apiserver.objects import ObjectService, WriteOptions, semantically_equal
from atoll.apiserver.registry import Registry

log = logging.getLogger(__name__)

RBAC = "rbac.authorization.k8s.io"
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"
READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def _urls(urls: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"nonResourceURLs": urls, "verbs": verbs}


VIEW_RULES = [
    _rule([""], ["configmaps", "endpoints", "persistentvolumeclaims",
                 "persistentvolumeclaims/status", "pods", "replicationcontrollers",
                 "replicationcontrollers/scale", "serviceaccounts", "services", "services/status"],
          READ),
    _rule([""], ["bindings", "events", "limitranges", "namespaces/status", "pods/log",
                 "pods/status", "replicationcontrollers/status", "resourcequotas",
                 "resourcequotas/status"], READ),
    _rule([""], ["namespaces"], READ),
    _rule(["apps"], ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments",
                     "deployments/scale", "deployments/status", "replicasets",
                     "replicasets/scale", "replicasets/status", "statefulsets",
                     "statefulsets/scale", "statefulsets/status"], READ),
    _rule(["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"], READ),
    _rule(["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"], READ),
    _rule(["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"], READ),
    _rule(["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"], READ),
    _rule(["discovery.k8s.io"], ["endpointslices"], READ),
    _rule(["events.k8s.io"], ["events"], READ),
    _rule(["metrics.k8s.io"], ["pods", "nodes"], READ),
    _rule([VM_GROUP], ["virtualmachines", "virtualmachines/status", "virtualmachineclasses",
                       "virtualmachineimages", "virtualmachineimages/status",
                       "virtualmachineservices", "virtualmachineservices/status",
                       "virtualmachinesnapshots", "virtualmachinesnapshots/status",
                       "virtualmachinereplicasets", "virtualmachinereplicasets/scale",
                       "virtualmachinereplicasets/status", "virtualmachinewebconsolerequests",
                       "virtualmachinewebconsolerequests/status", "virtualmachinegroups",
                       "virtualmachinegroups/status"], READ),
    _rule([SNAPSHOT_GROUP], ["volumesnapshots", "volumesnapshots/status"], READ),
    _rule([MIGRATION_GROUP], ["virtualmachinemigrations", "virtualmachinemigrations/status"],
          READ),
    # the moves DRS recommends in the namespace (controllers/vmoperator/drs.py)
    _rule([MIGRATION_POLICY_GROUP], ["migrationrecommendations",
                                     "migrationrecommendations/status"], READ),
]

EDIT_RULES = [
    _rule([""], ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets",
                 "services/proxy"], READ),
    _rule([""], ["serviceaccounts"], ["impersonate"]),
    _rule([""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], WRITE),
    _rule([""], ["pods/eviction"], ["create"]),
    _rule([""], ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                 "replicationcontrollers/scale", "secrets", "serviceaccounts", "services",
                 "services/proxy"], WRITE),
    _rule([""], ["serviceaccounts/token"], ["create"]),
    _rule(["apps"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale",
                     "replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale"],
          WRITE),
    _rule(["autoscaling"], ["horizontalpodautoscalers"], WRITE),
    _rule(["batch"], ["cronjobs", "jobs"], WRITE),
    _rule(["networking.k8s.io"], ["ingresses", "networkpolicies"], WRITE),
    _rule(["policy"], ["poddisruptionbudgets"], WRITE),
    _rule([VM_GROUP], ["virtualmachines", "virtualmachineservices",
                       "virtualmachinesnapshots", "virtualmachinereplicasets",
                       "virtualmachinereplicasets/scale", "virtualmachinewebconsolerequests",
                       "virtualmachinegroups"], WRITE),
    _rule([SNAPSHOT_GROUP], ["volumesnapshots"], WRITE),
    _rule([VM_GROUP], ["virtualmachines/console"], ["get", "create"]),
    _rule([MIGRATION_GROUP], ["virtualmachinemigrations"], WRITE),
    # carrying a recommendation out (spec.apply) or dismissing it
    _rule([MIGRATION_POLICY_GROUP], ["migrationrecommendations"], ["delete", "patch",
                                                                   "update"]),
]

ADMIN_RULES = [
    _rule(["authorization.k8s.io"], ["localsubjectaccessreviews"], ["create"]),
    _rule([RBAC], ["rolebindings", "roles"], READ + WRITE),
]

DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                  "/openapi/*", "/readyz", "/version", "/version/"]
PUBLIC_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
#: the web console's static files (atoll.webui): they hold no data
UI_URLS = ["/ui", "/ui/*"]

NODE_RULES = [
    _rule([""], ["nodes"], READ + ["create", "update", "patch"]),
    _rule([""], ["nodes/status"], ["patch", "update"]),
    _rule([""], ["pods"], READ + ["create", "delete"]),
    _rule([""], ["pods/status"], ["patch", "update"]),
    _rule([""], ["pods/eviction"], ["create"]),
    # Secrets, ConfigMaps and claims: only those its workloads use (apiserver/nodeauthz.py)
    _rule([""], ["services", "endpoints", "persistentvolumes", "namespaces"], READ),
    _rule([""], ["persistentvolumeclaims/status"], ["get", "patch", "update"]),
    # the Service dataplane, DNS and policies each host runs; its own slices (the DNS it
    # serves) only, as NodeRestriction checks
    _rule(["discovery.k8s.io"], ["endpointslices"], READ + ["create", "update", "patch",
                                                            "delete"]),
    _rule(["networking.k8s.io"], ["networkpolicies", "ingresses", "ingressclasses",
                                  "servicecidrs"], READ),
    _rule([""], ["events"], ["create", "patch", "update"]),
    _rule(["events.k8s.io"], ["events"], ["create", "patch", "update"]),
    _rule([""], ["serviceaccounts"], ["get"]),
    _rule([""], ["serviceaccounts/token"], ["create"]),
    _rule(["coordination.k8s.io"], ["leases"], ["get", "create", "update", "patch", "delete"]),
    _rule(["storage.k8s.io"], ["storageclasses"], READ),
    # the handler of a pod's RuntimeClass decides which runtime runs it
    _rule(["node.k8s.io"], ["runtimeclasses"], READ),
    # the pools whose addresses a host may answer ARP for (agent/host/lbannounce.py)
    _rule([NETWORK_GROUP], [NETWORK_POOLS], READ),
    # its own local datastore's capacity only (kube-system/atoll-local-<node>: NodeRestriction)
    _rule(["storage.k8s.io"], ["csistoragecapacities"], READ + ["create", "update", "patch",
                                                              "delete"]),
    _rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
    _rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"]),
    _rule([VM_GROUP], ["virtualmachines", "virtualmachineclasses", "virtualmachineimages",
                       "clustervirtualmachineimages"], READ),
    _rule([VM_GROUP], ["virtualmachines", "virtualmachines/status"], ["get", "patch", "update"]),
    # its VMs' snapshots (agent/vms/snapshots.py): taken, their finalizer removed once deleted
    _rule([VM_GROUP], ["virtualmachinesnapshots"], READ + ["patch", "update"]),
    _rule([VM_GROUP], ["virtualmachinesnapshots/status"], ["get", "patch", "update"]),
    # live migrations it is the source or the target of (each side writes its steps)
    _rule([MIGRATION_GROUP], ["virtualmachinemigrations"], READ),
    _rule([MIGRATION_GROUP], ["virtualmachinemigrations/status"], ["get", "patch", "update"]),
    # the snapshots of its own volumes (agent/storage/snapshots.py: the sidecar's half)
    _rule([SNAPSHOT_GROUP], ["volumesnapshotcontents"], READ + ["patch", "update"]),
    _rule([SNAPSHOT_GROUP], ["volumesnapshotcontents/status"], ["get", "patch", "update"]),
    _urls(["/content/v1/blobs/*"], ["get", "head"]),
]


def _role(name: str, rules: list[dict[str, Any]], *, labels: dict[str, str] | None = None,
          aggregate_from: str = "") -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": f"{RBAC}/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "annotations": {AUTOUPDATE: "true"},
                     "labels": {"kubernetes.io/bootstrapping": "rbac-defaults",
                                **(labels or {})}},
        "rules": rules}
    if aggregate_from:
        obj["aggregationRule"] = {"clusterRoleSelectors": [
            {"matchLabels": {AGGREGATE_TO + aggregate_from: "true"}}]}
    return obj


def _binding(name: str, role: str, groups: list[str]) -> dict[str, Any]:
    return {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "annotations": {AUTOUPDATE: "true"},
                         "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": RBAC, "kind": "Group", "name": g} for g in groups]}


def cluster_roles() -> list[dict[str, Any]]:
    """Every default ClusterRole; aggregated ones come with their rules already filled in."""
    return [
        _role("cluster-admin", [_rule(["*"], ["*"], ["*"]), _urls(["*"], ["*"])]),
        _role("system:aggregate-to-view", VIEW_RULES,
              labels={AGGREGATE_TO + "view": "true"}),
        _role("system:aggregate-to-edit", EDIT_RULES,
              labels={AGGREGATE_TO + "edit": "true"}),
        _role("system:aggregate-to-admin", ADMIN_RULES,
              labels={AGGREGATE_TO + "admin": "true"}),
        # view feeds edit, edit feeds admin: the chain upstream builds with labels
        _role("view", VIEW_RULES, labels={AGGREGATE_TO + "edit": "true"}, aggregate_from="view"),
        _role("edit", VIEW_RULES + EDIT_RULES, labels={AGGREGATE_TO + "admin": "true"},
              aggregate_from="edit"),
        _role("admin", VIEW_RULES + EDIT_RULES + ADMIN_RULES, aggregate_from="admin"),
        _role("system:discovery", [_urls(DISCOVERY_URLS, ["get"])]),
        _role("system:public-info-viewer", [_urls(PUBLIC_URLS, ["get"]),
                                             _urls(UI_URLS, ["get", "head"])]),
        _role("system:basic-user", [_rule(["authorization.k8s.io"],
                                          ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                                          ["create"]),
                                    _rule(["authentication.k8s.io"], ["selfsubjectreviews"],
                                          ["create"]),
                                    # the namespaces one works in (apiserver/projects.py)
                                    _rule(["tenancy.atoll.dev"], ["projects"], ["get", "list"])]),
        _role("system:node", NODE_RULES),
        # delegated authentication and authorization (extension API servers, auth proxies)
        _role("system:auth-delegator", [
            _rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
            _rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"])]),
        _role("system:service-account-issuer-discovery",
              [_urls(["/.well-known/openid-configuration", "/openid/v1/jwks"], ["get"])]),
    ]


def cluster_role_bindings() -> list[dict[str, Any]]:
    return [
        _binding("cluster-admin", "cluster-admin", ["system:masters"]),
        _binding("system:discovery", "system:discovery", ["system:authenticated"]),
        _binding("system:basic-user", "system:basic-user", ["system:authenticated"]),
        _binding("system:public-info-viewer", "system:public-info-viewer",
                 ["system:authenticated", "system:unauthenticated"]),
        _binding("system:node", "system:node", ["system:nodes"]),
        _binding("system:service-account-issuer-discovery",
                 "system:service-account-issuer-discovery", ["system:serviceaccounts"]),
    ]


async def ensure(svc: ObjectService, registry: Registry) -> None:
    """Create what is missing; put back auto-updated objects that were changed."""
    roles = registry.lookup(RBAC, "v1", "clusterroles")
    bindings = registry.lookup(RBAC, "v1", "clusterrolebindings")
    assert roles is not None and bindings is not None
    opts = WriteOptions(field_manager="atoll-apiserver")
    for rt, objects in ((roles, cluster_roles()), (bindings, cluster_role_bindings())):
        for obj in objects:
            name = obj["metadata"]["name"]
            cached = svc.cacher.get(rt.key("", name))
            try:
                if cached is None:
                    await svc.create(rt, "", obj, opts)
                    continue
                current = cached.obj
                if (current["metadata"].get("annotations") or {}).get(AUTOUPDATE) != "true":
                    continue
                wanted = {k: obj[k] for k in ("rules", "roleRef", "subjects",
                                              "aggregationRule") if k in obj}
                if rt.kind == "ClusterRole" and "aggregationRule" in obj:
                    wanted.pop("rules")  # the aggregation controller owns those
                if all(semantically_equal({"v": current.get(k)}, {"v": v})
                       for k, v in wanted.items()):
                    continue

                def restore(cur: dict[str, Any], wanted: dict[str, Any] = wanted) -> dict[str, Any]:
                    cur.update(wanted)
                    return cur
                await svc.guaranteed_update(rt, "", name, restore, opts)
            except (errors.AlreadyExists, errors.Conflict) as err:
                log.info("bootstrap policy %s %s: %s (another server wrote it)", rt.kind, name, err)


class Keeper:
    """Puts a default ClusterRole or ClusterRoleBinding back when someone deletes it (with
    ``autoupdate`` not switched off): without ``system:node`` no host could run anything,
    without ``system:basic-user`` nobody could ask what they may do."""

    def __init__(self, svc: ObjectService, registry: Registry, cacher: Any) -> None:
        self.svc = svc
        self.registry = registry
        self.keys = {CLUSTERROLES.key("", o["metadata"]["name"]) for o in cluster_roles()} | \
            {CLUSTERROLEBINDINGS.key("", o["metadata"]["name"]) for o in cluster_role_bindings()}
        self._pending: asyncio.Task[None] | None = None
        cacher.listeners.append(self._on_event)

    def _on_event(self, ev: Any) -> None:
        if ev.type != "DELETED" or ev.key not in self.keys:
            return
        if (ev.obj.get("metadata", {}).get("annotations") or {}).get(AUTOUPDATE) == "false":
            return
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self._restore())

    async def _restore(self) -> None:
        try:
            await ensure(self.svc, self.registry)
        except Exception:
            log.exception("cannot restore the default RBAC policy")
