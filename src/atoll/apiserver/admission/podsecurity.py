"""Pod Security admission: the Pod Security Standards enforced on pods, warned on templates.

A namespace picks its policy with upstream's labels
``pod-security.kubernetes.io/{enforce,warn,audit}`` and their ``-version``
labels (``latest`` or ``v1.x``); namespaces without them get the server's
default level (``baseline``), so a user with Edit in a namespace stays off
the host unless an administrator labels the namespace ``privileged``.

As upstream: pods are checked on create and on every update that can change
what runs (any spec change, through any subresource that writes the spec;
status, binding and eviction cannot), and refused with every violation worded
as upstream words it.  Workload templates (Deployments, Jobs, ...) are never
refused, only warned about, since the pods they make are checked themselves.
An unreadable enforce level fails closed (``restricted``), an unreadable
warn level open.  The checks themselves live in ``admission.pss``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from atoll.api import errors
from atoll.api.resources.core_v1 import NAMESPACES
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.api.tenancy import POD_SECURITY_ENFORCE
from atoll.apiserver.admission import BasePlugin
from atoll.apiserver.admission import pss


LEVELS = pss.LEVELS
LABEL_PREFIX = "pod-security.kubernetes.io/"
EXEMPT_NAMESPACES = frozenset({"kube-system"})
#: pod subresources that cannot change what a pod runs (upstream's ignoredPodSubresources)
IGNORED_SUBRESOURCES = frozenset({"exec", "attach", "binding", "eviction", "log", "portforward",
                                  "proxy", "status"})
_VERSION = re.compile(r"^v1\.(0|[1-9][0-9]{0,8})$")

#: (group, plural) → path to the pod template, for the warnings on workloads
TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "replicationcontrollers"): ("spec", "template"),
    ("", "podtemplates"): ("template",),
    ("apps", "replicasets"): ("spec", "template"),
    ("apps", "deployments"): ("spec", "template"),
    ("apps", "statefulsets"): ("spec", "template"),
    ("apps", "daemonsets"): ("spec", "template"),
    ("batch", "jobs"): ("spec", "template"),
    ("batch", "cronjobs"): ("spec", "jobTemplate", "spec", "template"),
}


@dataclass(frozen=True)
class LevelVersion:
    level: str
    version: str = "latest"  # as labelled: "latest" or "v1.x"

    @property
    def minor(self) -> int | None:
        m = _VERSION.match(self.version)
        return int(m.group(1)) if m else None

    def __str__(self) -> str:
        return f"{self.level}:{self.version}"

    def evaluate(self, meta: Any, spec: Any) -> str:
        """The violations, worded as upstream; empty when allowed."""
        return pss.describe(pss.evaluate(self.level, self.minor, meta, spec))


@dataclass(frozen=True)
class Policy:
    enforce: LevelVersion
    warn: LevelVersion


def _level(value: Any, fallback: str) -> str:
    return value if isinstance(value, str) and value in LEVELS else fallback


def _version(value: Any) -> str:
    return value if isinstance(value, str) and _VERSION.match(value) else "latest"


def policy_for(labels: dict[str, Any], default_level: str) -> Policy:
    """The namespace's policy from its labels (upstream's PolicyToEvaluate).

    Warn follows enforce unless labelled: a template whose pods would be refused says
    so when it is written.  The ``audit`` labels are accepted; this server has no
    audit annotations to record their findings in.
    """
    enforce = LevelVersion(default_level)
    if POD_SECURITY_ENFORCE in labels:
        enforce = LevelVersion(_level(labels[POD_SECURITY_ENFORCE], pss.RESTRICTED))
    if f"{POD_SECURITY_ENFORCE}-version" in labels:
        enforce = LevelVersion(enforce.level, _version(labels[f"{POD_SECURITY_ENFORCE}-version"]))
    warn = enforce
    if f"{LABEL_PREFIX}warn" in labels:
        warn = LevelVersion(_level(labels[f"{LABEL_PREFIX}warn"], pss.PRIVILEGED))
    if f"{LABEL_PREFIX}warn-version" in labels:
        warn = LevelVersion(warn.level, _version(labels[f"{LABEL_PREFIX}warn-version"]))
    return Policy(enforce, warn)


def baseline(spec: Any, meta: Any = None) -> list[str]:
    """Each baseline violation of a pod spec, as ``reason (detail)``."""
    return [pss.describe([r]) for r in pss.evaluate(pss.BASELINE, None, meta, spec)]


def restricted(spec: Any, meta: Any = None) -> list[str]:
    """What the restricted level forbids beyond baseline, as ``reason (detail)``."""
    base = set(baseline(spec, meta))
    return [text for r in pss.evaluate(pss.RESTRICTED, None, meta, spec)
            if (text := pss.describe([r])) not in base]


def _relevant(obj: dict[str, Any]) -> tuple[Any, Any]:
    """What a pod's verdict depends on: its spec and the profile annotations."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    picked = {k: v for k, v in annotations.items() if isinstance(k, str) and (
        k.startswith(pss.APPARMOR_ANNOTATION_PREFIX) or "seccomp.security" in k)} \
        if isinstance(annotations, dict) else {}
    return obj.get("spec"), picked


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


#: members may add ephemeral (debug) containers beyond the namespace's level
CLUSTER_ADMIN_GROUP = "system:masters"


def _cluster_admin(opts: WriteOptions) -> bool:
    groups = getattr(opts.user_info, "groups", None) or ()
    return CLUSTER_ADMIN_GROUP in groups


class PodSecurity(BasePlugin):
    def __init__(self, default_level: str = "baseline") -> None:
        if default_level not in LEVELS:
            raise ValueError(f"pod security level must be one of {', '.join(LEVELS)}")
        self.default_level = default_level

    def policy(self, svc: ObjectReader, namespace: str) -> Policy | None:
        """None for exempt namespaces."""
        if namespace in EXEMPT_NAMESPACES:
            return None
        ns = svc.read(NAMESPACES, "", namespace)
        labels = ((ns.obj.get("metadata") or {}).get("labels") or {}) if ns else {}
        return policy_for(labels if isinstance(labels, dict) else {}, self.default_level)

    def validate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None:
        if not rt.group and rt.plural == "pods":
            self._admit_pod(svc, obj, opts)
        elif (rt.group, rt.plural) in TEMPLATES:
            self._warn_template(svc, rt, obj, opts)

    def validate_update(self, svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
                        new: dict[str, Any], opts: WriteOptions, subresource: str) -> None:
        if not rt.group and rt.plural == "pods":
            if subresource in IGNORED_SUBRESOURCES or _relevant(old) == _relevant(new):
                return  # nothing that decides what runs has changed
            if subresource == "ephemeralcontainers" and _cluster_admin(opts):
                # debugging a running pod is an administrator's act: the pod's own containers
                # cannot change through this subresource, and kubectl debug's default profile
                # adds SYS_PTRACE, which baseline refuses; tenants stay checked
                policy = self.policy(svc, (new.get("metadata") or {}).get("namespace", ""))
                if policy is not None:
                    self._warn(policy.enforce, new.get("metadata"), new.get("spec"), opts)
                return
            self._admit_pod(svc, new, opts)
        elif (rt.group, rt.plural) in TEMPLATES and not subresource:
            path = TEMPLATES[(rt.group, rt.plural)]
            if _dig(old, path) != _dig(new, path):
                self._warn_template(svc, rt, new, opts)

    def _admit_pod(self, svc: ObjectReader, pod: dict[str, Any],
                   opts: WriteOptions) -> None:
        meta = pod.get("metadata") or {}
        policy = self.policy(svc, meta.get("namespace", ""))
        if policy is None:
            return
        problems = policy.enforce.evaluate(meta, pod.get("spec"))
        name = meta.get("name", "")
        if problems:
            raise errors.Forbidden(f'pods "{name}" is forbidden: violates PodSecurity '
                                   f'"{policy.enforce}": {problems}', name=name, kind="pods")
        if policy.warn != policy.enforce:
            self._warn(policy.warn, meta, pod.get("spec"), opts)

    def _warn_template(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                       opts: WriteOptions) -> None:
        policy = self.policy(svc, (obj.get("metadata") or {}).get("namespace", ""))
        template = _dig(obj, TEMPLATES[(rt.group, rt.plural)])
        if policy is None or not isinstance(template, dict):
            return
        self._warn(policy.warn, template.get("metadata"), template.get("spec"), opts)

    @staticmethod
    def _warn(lv: LevelVersion, meta: Any, spec: Any, opts: WriteOptions) -> None:
        problems = lv.evaluate(meta, spec)
        if problems:
            opts.warnings.append(f'would violate PodSecurity "{lv}": {problems}')
