"""Resource types the API serves: built-in kinds as data, custom ones from CRDs.

A ``ResourceType`` is everything the server needs to route, store, validate,
discover and print one group/version/resource.  Built-in kinds are declared in
``BUILTIN`` below; custom resources get a ``ResourceType`` built from their
CustomResourceDefinition by ``apiserver.crds``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUB_VERBS = ("get", "patch", "update")


@dataclass(frozen=True)
class Subresource:
    """A ``<plural>/<name>`` endpoint; ``kind`` and ``group``/``version`` of its body."""

    name: str
    kind: str = ""  # empty: same kind as the parent
    group: str | None = None
    version: str | None = None
    verbs: tuple[str, ...] = SUB_VERBS


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    name_rule: str = "subdomain"
    #: kinds whose writes bump ``metadata.generation`` when anything but metadata/status changes
    generation: bool = True
    #: the version objects are stored in (differs from ``version`` for multi-version CRDs)
    storage_version: str = ""
    #: for custom resources: the CRD-derived schema/printing data (see apiserver.crds)
    custom: Any = None
    #: per-kind extra data (scale paths etc.)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def kind_key(self) -> str:
        """``<group>/<Kind>``: the key printers and field selectors are indexed by."""
        return f"{self.group}/{self.kind}"

    @property
    def qualified(self) -> str:
        """``plural.group`` as in upstream messages (``deployments.apps "x" not found``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        if self.custom is not None and getattr(self.custom, "list_kind", ""):
            return self.custom.list_kind
        return f"{self.kind}List"

    @property
    def store_prefix(self) -> str:
        """Key prefix of every object of this resource (all versions share it)."""
        return f"/registry/{self.group or 'core'}/{self.plural}/"

    def key(self, namespace: str, name: str) -> str:
        if self.namespaced:
            return f"{self.store_prefix}{namespace}/{name}"
        return f"{self.store_prefix}{name}"

    def prefix(self, namespace: str = "") -> str:
        if self.namespaced and namespace:
            return f"{self.store_prefix}{namespace}/"
        return self.store_prefix

    def subresource(self, name: str) -> Subresource | None:
        for sub in self.subresources:
            if sub.name == name:
                return sub
        return None

    @property
    def has_status(self) -> bool:
        return self.subresource("status") is not None


def _r(group: str, version: str, kind: str, plural: str, namespaced: bool, **kw: Any) -> ResourceType:
    kw.setdefault("singular", kind.lower())
    return ResourceType(group, version, kind, plural, namespaced, **kw)


STATUS = Subresource("status")
SCALE = Subresource("scale", kind="Scale", group="autoscaling", version="v1")

POD_SUBRESOURCES = (
    STATUS,
    Subresource("binding", kind="Binding", verbs=("create",)),
    Subresource("eviction", kind="Eviction", group="policy", version="v1", verbs=("create",)),
    Subresource("log", kind="Pod", verbs=("get",)),
    Subresource("exec", kind="PodExecOptions", verbs=("create", "get")),
    Subresource("attach", kind="PodAttachOptions", verbs=("create", "get")),
    Subresource("portforward", kind="PodPortForwardOptions", verbs=("create", "get")),
    Subresource("ephemeralcontainers", verbs=SUB_VERBS),
)

BUILTIN: tuple[ResourceType, ...] = (
    # core/v1
    _r("", "v1", "Namespace", "namespaces", False, short_names=("ns",), name_rule="label",
       subresources=(STATUS, Subresource("finalize", verbs=("update",))), generation=False,
       verbs=tuple(v for v in ALL_VERBS if v != "deletecollection")),
    _r("", "v1", "Node", "nodes", False, short_names=("no",), subresources=(STATUS,),
       generation=False),
    _r("", "v1", "Pod", "pods", True, short_names=("po",), categories=("all",),
       subresources=POD_SUBRESOURCES),
    _r("", "v1", "Service", "services", True, short_names=("svc",), categories=("all",),
       subresources=(STATUS,), name_rule="dns1035"),
    _r("", "v1", "Endpoints", "endpoints", True, short_names=("ep",), generation=False),
    _r("", "v1", "ConfigMap", "configmaps", True, short_names=("cm",), generation=False),
    _r("", "v1", "Secret", "secrets", True, generation=False),
    _r("", "v1", "ServiceAccount", "serviceaccounts", True, short_names=("sa",),
       subresources=(Subresource("token", kind="TokenRequest", group="authentication.k8s.io",
                                 version="v1", verbs=("create",)),), generation=False),
    _r("", "v1", "Event", "events", True, short_names=("ev",), generation=False),
    _r("", "v1", "PersistentVolume", "persistentvolumes", False, short_names=("pv",),
       subresources=(STATUS,)),
    _r("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, short_names=("pvc",),
       subresources=(STATUS,)),
    _r("", "v1", "ResourceQuota", "resourcequotas", True, short_names=("quota",),
       subresources=(STATUS,)),
    _r("", "v1", "LimitRange", "limitranges", True, short_names=("limits",), generation=False),
    # apps/v1
    _r("apps", "v1", "Deployment", "deployments", True, short_names=("deploy",),
       categories=("all",), subresources=(STATUS, SCALE)),
    _r("apps", "v1", "ReplicaSet", "replicasets", True, short_names=("rs",), categories=("all",),
       subresources=(STATUS, SCALE)),
    _r("apps", "v1", "DaemonSet", "daemonsets", True, short_names=("ds",), categories=("all",),
       subresources=(STATUS,)),
    _r("apps", "v1", "StatefulSet", "statefulsets", True, short_names=("sts",),
       categories=("all",), subresources=(STATUS, SCALE)),
    _r("apps", "v1", "ControllerRevision", "controllerrevisions", True, generation=False),
    # batch/v1
    _r("batch", "v1", "Job", "jobs", True, categories=("all",), subresources=(STATUS,)),
    _r("batch", "v1", "CronJob", "cronjobs", True, short_names=("cj",), categories=("all",),
       subresources=(STATUS,)),
    # coordination
    _r("coordination.k8s.io", "v1", "Lease", "leases", True, generation=False),
    # rbac
    _r("rbac.authorization.k8s.io", "v1", "Role", "roles", True, generation=False,
       name_rule="path-segment"),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False,
       generation=False, name_rule="path-segment"),
    _r("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True,
       generation=False, name_rule="path-segment"),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False,
       generation=False, name_rule="path-segment"),
    # certificates
    _r("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests",
       False, short_names=("csr",), generation=False,
       subresources=(STATUS, Subresource("approval", verbs=("get", "patch", "update")))),
    # storage
    _r("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, short_names=("sc",),
       generation=False),
    # events.k8s.io
    _r("events.k8s.io", "v1", "Event", "events", True, short_names=("ev",), generation=False),
    # apiextensions
    _r("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
       False, short_names=("crd", "crds"), categories=("api-extensions",),
       subresources=(STATUS,)),
    # policy
    _r("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, short_names=("pdb",),
       subresources=(STATUS,)),
    # networking
    _r("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True,
       short_names=("netpol",)),
)

#: Kinds served only as POST-and-answer reviews; never stored.
REVIEWS: tuple[ResourceType, ...] = (
    _r("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", False,
       verbs=("create",)),
    _r("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", False,
       verbs=("create",)),
    _r("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", False,
       verbs=("create",)),
    _r("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews",
       True, verbs=("create",)),
    _r("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False,
       verbs=("create",)),
)

#: The resource metrics API (metrics-server's): read-only, answered from the host agents.
METRICS: tuple[ResourceType, ...] = (
    _r("metrics.k8s.io", "v1beta1", "NodeMetrics", "nodes", False, verbs=("get", "list")),
    _r("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", True, verbs=("get", "list")),
)

#: Group preference order in discovery, as upstream lists them.
GROUP_ORDER = (
    "", "apiregistration.k8s.io", "apps", "events.k8s.io", "authentication.k8s.io",
    "authorization.k8s.io", "autoscaling", "batch", "certificates.k8s.io", "networking.k8s.io",
    "policy", "rbac.authorization.k8s.io", "storage.k8s.io", "coordination.k8s.io",
    "apiextensions.k8s.io", "metrics.k8s.io",
)

STANDARD_FINALIZERS = frozenset({"kubernetes", "orphan", "foregroundDeletion"})
