"""Pod Security admission: the ``baseline`` and ``restricted`` Pod Security Standards.

A namespace picks its level with the upstream label
``pod-security.kubernetes.io/enforce``; namespaces without it get the server's
default, ``baseline``: no host namespaces, no privileged containers, no
hostPath, no host ports, no extra capabilities beyond the runtime's defaults.
That keeps a user with Edit in a namespace off the host unless an
administrator labels the namespace ``privileged``.  The refusal lists every
violation, worded as upstream words it, so it can be fixed in one pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from atoll.api import errors
from atoll.api.kinds import ResourceType
from atoll.api.tenancy import POD_SECURITY_ENFORCE
from atoll.apiserver.admission import BasePlugin

if TYPE_CHECKING:
    from atoll.apiserver.objects import ObjectService, WriteOptions

LEVELS = ("privileged", "baseline", "restricted")
EXEMPT_NAMESPACES = frozenset({"kube-system"})
BASELINE_CAPABILITIES = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID",
                                   "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID",
                                   "SETPCAP", "SETUID", "SYS_CHROOT"})
SAFE_SYSCTLS = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                          "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                          "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                          "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                          "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"})
RESTRICTED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                                "persistentVolumeClaim", "projected", "secret"})


class PodSecurity(BasePlugin):
    def __init__(self, default_level: str = "baseline") -> None:
        if default_level not in LEVELS:
            raise ValueError(f"pod security level must be one of {', '.join(LEVELS)}")
        self.default_level = default_level

    def validate_create(self, svc: "ObjectService", rt: ResourceType, obj: dict[str, Any],
                        opts: "WriteOptions") -> None:
        if rt.group or rt.plural != "pods":
            return
        namespace = obj["metadata"].get("namespace", "")
        if namespace in EXEMPT_NAMESPACES:
            return
        ns = svc.cacher.get(f"/registry/core/namespaces/{namespace}")
        labels = ((ns.obj.get("metadata") or {}).get("labels") or {}) if ns else {}
        level = labels.get(POD_SECURITY_ENFORCE, self.default_level)
        if level not in LEVELS:
            level = "restricted"  # an unreadable level fails closed, as upstream
        if level == "privileged":
            return
        problems = baseline(obj.get("spec") or {})
        if level == "restricted":
            problems += restricted(obj.get("spec") or {})
        if problems:
            name = obj["metadata"].get("name", "")
            raise errors.Forbidden(f'pods "{name}" is forbidden: violates PodSecurity '
                                   f'"{level}:latest": {", ".join(problems)}', name=name,
                                   kind="pods")


def _containers(spec: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or []:
            if isinstance(c, dict):
                yield c


def _names(items: list[str]) -> str:
    return ", ".join(f'"{n}"' for n in items)


def baseline(spec: dict[str, Any]) -> list[str]:
    out: list[str] = []
    host = [f"{f}=true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f) is True]
    if host:
        out.append(f"host namespaces ({', '.join(host)})")
    privileged = [c.get("name", "") for c in _containers(spec)
                  if (c.get("securityContext") or {}).get("privileged") is True]
    if privileged:
        out.append(f"privileged (container{'s' if len(privileged) > 1 else ''} "
                   f"{_names(privileged)} must not set securityContext.privileged=true)")
    added: dict[str, list[str]] = {}
    for c in _containers(spec):
        caps = ((c.get("securityContext") or {}).get("capabilities") or {}).get("add") or []
        bad = [str(x) for x in caps if str(x) not in BASELINE_CAPABILITIES]
        if bad:
            added[c.get("name", "")] = bad
    if added:
        out.append("non-default capabilities (" + "; ".join(
            f'container "{n}" must not include {_names(b)} in securityContext.capabilities.add'
            for n, b in added.items()) + ")")
    host_path = [v.get("name", "") for v in spec.get("volumes") or []
                 if isinstance(v, dict) and "hostPath" in v]
    if host_path:
        out.append(f"hostPath volumes (volume{'s' if len(host_path) > 1 else ''} "
                   f"{_names(host_path)})")
    ports = [str(p.get("hostPort")) for c in _containers(spec) for p in c.get("ports") or []
             if isinstance(p, dict) and p.get("hostPort")]
    if ports:
        out.append(f"hostPort (host ports {', '.join(ports)})")
    proc = [c.get("name", "") for c in _containers(spec)
            if (c.get("securityContext") or {}).get("procMount") not in (None, "Default")]
    if proc:
        out.append(f"procMount (containers {_names(proc)} must not set "
                   "securityContext.procMount)")
    profiles = [((spec.get("securityContext") or {}).get("seccompProfile") or {}).get("type")]
    profiles += [((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
                 for c in _containers(spec)]
    if "Unconfined" in profiles:
        out.append('seccompProfile (seccompProfile.type must not be "Unconfined")')
    sysctls = [s.get("name") for s in (spec.get("securityContext") or {}).get("sysctls") or []
               if isinstance(s, dict) and s.get("name") not in SAFE_SYSCTLS]
    if sysctls:
        out.append(f"forbidden sysctls ({', '.join(map(str, sysctls))})")
    return out


def restricted(spec: dict[str, Any]) -> list[str]:
    out: list[str] = []
    bad_volumes = [v.get("name", "") for v in spec.get("volumes") or [] if isinstance(v, dict)
                   and not any(k in RESTRICTED_VOLUMES for k in v if k != "name")
                   and "hostPath" not in v]
    if bad_volumes:
        out.append(f"restricted volume types (volumes {_names(bad_volumes)})")
    pod_sc = spec.get("securityContext") or {}
    escalation, caps, non_root, seccomp = [], [], [], []
    for c in _containers(spec):
        sc = c.get("securityContext") or {}
        name = c.get("name", "")
        if sc.get("allowPrivilegeEscalation") is not False:
            escalation.append(name)
        cap = sc.get("capabilities") or {}
        if "ALL" not in (cap.get("drop") or []) or \
                any(a != "NET_BIND_SERVICE" for a in cap.get("add") or []):
            caps.append(name)
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            non_root.append(name)
        profile = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if profile not in ("RuntimeDefault", "Localhost"):
            seccomp.append(name)
    if escalation:
        out.append(f"allowPrivilegeEscalation != false (containers {_names(escalation)} must set "
                   "securityContext.allowPrivilegeEscalation=false)")
    if caps:
        out.append(f'unrestricted capabilities (containers {_names(caps)} must set '
                   'securityContext.capabilities.drop=["ALL"])')
    if non_root:
        out.append(f"runAsNonRoot != true (pod or containers {_names(non_root)} must set "
                   "securityContext.runAsNonRoot=true)")
    if seccomp:
        out.append(f'seccompProfile (pod or containers {_names(seccomp)} must set '
                   'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
    return out
