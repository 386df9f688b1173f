"""The Pod Security Standards: upstream's ``baseline`` and ``restricted`` checks, by version.

Each check looks at a pod's metadata and spec (or a workload's template) and
returns ``(reason, detail)`` when it forbids something, worded exactly as
k8s.io/pod-security-admission words it, so a refusal here reads like one from
kube-apiserver.  Checks change across policy versions (a namespace may pin
``enforce-version: v1.x``): each has variants with the first minor version they
apply to, and restricted checks may override a baseline one.  The evaluation
order is upstream's: baseline check IDs sorted, then restricted ones.

Inputs are decoded JSON, not typed structs: every access tolerates a wrong type
(a list where an object belongs is simply "not set"), so a hostile body can
never make the evaluation itself fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

Result = tuple[str, str] | None
CheckFn = Callable[[dict[str, Any], dict[str, Any]], Result]

#: the newest policy version these checks know; "latest" and newer versions evaluate as this
LATEST_MINOR = 37
PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)

APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_CONTAINER_ANNOTATION_PREFIX = "container.seccomp.security.alpha.kubernetes.io/"


# -- helpers ----------------------------------------------------------------------------------
def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Init containers, containers, then ephemeral containers, as upstream visits them."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in _l(spec.get(key)):
            if isinstance(c, dict):
                yield c


def _name(c: dict[str, Any]) -> str:
    return _s(c.get("name"))


def _sc(obj: dict[str, Any]) -> dict[str, Any]:
    return _d(obj.get("securityContext"))


def join_quote(items: list[str]) -> str:
    return '"' + '", "'.join(items) + '"' if items else ""


def plural(singular: str, many: str, count: int) -> str:
    return singular if count == 1 else many


def _go_quote(value: str) -> str:
    """Go's %q for the printable strings annotations hold."""
    out = value.replace("\\", "\\\\").replace('"', '\\"')
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{out}"'


def _setters(pod: bool, bad: list[str]) -> list[str]:
    out = ["pod"] if pod else []
    if bad:
        out.append(f"{plural('container', 'containers', len(bad))} {join_quote(bad)}")
    return out


def _user_namespaced(spec: dict[str, Any]) -> bool:
    return spec.get("hostUsers") is False


def _windows(spec: dict[str, Any]) -> bool:
    return _d(spec.get("os")).get("name") == "windows"


# -- baseline ---------------------------------------------------------------------------------
def app_armor_profile(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    allowed = ("RuntimeDefault", "Localhost")
    bad_values: set[str] = set()
    setters: list[str] = []
    profile = _sc(spec).get("appArmorProfile")
    if isinstance(profile, dict) and profile.get("type") not in allowed:
        setters.append("pod")
        bad_values.add(_s(profile.get("type")))
    bad: list[str] = []
    for c in containers(spec):
        profile = _sc(c).get("appArmorProfile")
        if isinstance(profile, dict) and profile.get("type") not in allowed:
            bad.append(_name(c))
            bad_values.add(_s(profile.get("type")))
    setters += _setters(False, bad)
    annotations = [f"{k}={_go_quote(_s(v))}" for k, v in _d(meta.get("annotations")).items()
                   if isinstance(k, str) and k.startswith(APPARMOR_ANNOTATION_PREFIX)
                   and not (_s(v) in ("", "runtime/default") or _s(v).startswith("localhost/"))]
    values = sorted(bad_values)
    if annotations:
        values += sorted(annotations)
        setters.append(plural("annotation", "annotations", len(annotations)))
    if not setters:
        return None
    return (plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(values)),
            f"{' and '.join(setters)} must not set AppArmor profile type to {join_quote(values)}")


BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})


def capabilities_baseline(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    bad: list[str] = []
    extra: set[str] = set()
    for c in containers(spec):
        added = [_s(a) for a in _l(_d(_sc(c).get("capabilities")).get("add"))]
        wrong = [a for a in added if a not in BASELINE_CAPABILITIES]
        if wrong:
            bad.append(_name(c))
            extra.update(wrong)
    if not bad:
        return None
    return ("non-default capabilities",
            f"{plural('container', 'containers', len(bad))} {join_quote(bad)} must not include "
            f"{join_quote(sorted(extra))} in securityContext.capabilities.add")


def host_namespaces(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    shared = [f"{f}=true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f) is True]
    return ("host namespaces", ", ".join(shared)) if shared else None


def host_path_volumes(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    names = [_s(v.get("name")) for v in _l(spec.get("volumes"))
             if isinstance(v, dict) and v.get("hostPath") is not None]
    if not names:
        return None
    return "hostPath volumes", f"{plural('volume', 'volumes', len(names))} {join_quote(names)}"


def host_ports(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    bad: list[str] = []
    ports: set[str] = set()
    for c in containers(spec):
        used = [_s(p.get("hostPort")) for p in _l(c.get("ports"))
                if isinstance(p, dict) and p.get("hostPort") not in (None, 0)]
        if used:
            bad.append(_name(c))
            ports.update(used)
    if not bad:
        return None
    return ("hostPort",
            f"{plural('container', 'containers', len(bad))} {join_quote(bad)} "
            f"{plural('uses', 'use', len(bad))} {plural('hostPort', 'hostPorts', len(ports))} "
            f"{', '.join(sorted(ports))}")


def _handler_hosts(handler: Any) -> list[str]:
    handler = _d(handler)
    return [_s(_d(handler.get(k)).get("host")) for k in ("httpGet", "tcpSocket")
            if _d(handler.get(k)).get("host") not in (None, "")]


def host_probes_and_lifecycle(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    bad: set[str] = set()
    hosts: set[str] = set()
    for c in containers(spec):
        found: list[str] = []
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            found += _handler_hosts(c.get(probe))
        lifecycle = _d(c.get("lifecycle"))
        for hook in ("postStart", "preStop"):
            found += _handler_hosts(lifecycle.get(hook))
        if found:
            bad.add(_name(c))
            hosts.update(found)
    if not bad:
        return None
    return ("probe or lifecycle host",
            f"{plural('container', 'containers', len(bad))} {join_quote(sorted(bad))} "
            f"{plural('uses', 'use', len(bad))} "
            f"{plural('probe or lifecycle host', 'probe or lifecycle hosts', len(hosts))} "
            f"{join_quote(sorted(hosts))}")


def privileged(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    bad = [_name(c) for c in containers(spec) if _sc(c).get("privileged") is True]
    if not bad:
        return None
    return ("privileged", f"{plural('container', 'containers', len(bad))} {join_quote(bad)} "
                          "must not set securityContext.privileged=true")


def proc_mount(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    bad: list[str] = []
    kinds: set[str] = set()
    for c in containers(spec):
        value = _sc(c).get("procMount")
        if value is not None and value != "Default":
            bad.append(_name(c))
            kinds.add(_s(value))
    if not bad:
        return None
    return ("procMount", f"{plural('container', 'containers', len(bad))} {join_quote(bad)} "
                         f"must not set securityContext.procMount to {join_quote(sorted(kinds))}")


def proc_mount_1_35(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    return None if _user_namespaced(spec) else proc_mount(meta, spec)


def _selinux(allowed: frozenset[str]) -> CheckFn:
    def check(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
        bad_types: set[str] = set()
        flags = {"user": False, "role": False}

        def valid(opts: dict[str, Any]) -> bool:
            ok = True
            if _s(opts.get("type")) not in allowed:
                ok = False
                bad_types.add(_s(opts.get("type")))
            for key in ("user", "role"):
                if _s(opts.get(key)):
                    ok = False
                    flags[key] = True
            return ok

        pod_opts = _sc(spec).get("seLinuxOptions")
        pod_bad = isinstance(pod_opts, dict) and not valid(pod_opts)
        bad = [_name(c) for c in containers(spec)
               if isinstance(_sc(c).get("seLinuxOptions"), dict)
               and not valid(_sc(c)["seLinuxOptions"])]
        setters = _setters(pod_bad, bad)
        if not setters:
            return None
        data = []
        if bad_types:
            data.append(f"{plural('type', 'types', len(bad_types))} "
                        f"{join_quote(sorted(bad_types))}")
        data += [f"{key} may not be set" for key in ("user", "role") if flags[key]]
        return ("seLinuxOptions", f"{' and '.join(setters)} set forbidden "
                                  f"securityContext.seLinuxOptions: {'; '.join(data)}")
    return check


SELINUX_TYPES_1_0 = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
SELINUX_TYPES_1_31 = SELINUX_TYPES_1_0 | {"container_engine_t"}


def _seccomp_annotation_ok(value: str) -> bool:
    return value in ("runtime/default", "docker/default") or value.startswith("localhost/")


def seccomp_baseline_1_0(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    annotations = _d(meta.get("annotations"))
    forbidden: set[str] = set()
    keys = [SECCOMP_POD_ANNOTATION] + [SECCOMP_CONTAINER_ANNOTATION_PREFIX + _name(c)
                                       for c in containers(spec)]
    for key in keys:
        if key in annotations and not _seccomp_annotation_ok(_s(annotations[key])):
            forbidden.add(f"{key}={_go_quote(_s(annotations[key]))}")
    if not forbidden:
        return None
    return ("seccompProfile", f"forbidden {plural('annotation', 'annotations', len(forbidden))} "
                              f"{', '.join(sorted(forbidden))}")


SECCOMP_OK = ("RuntimeDefault", "Localhost")


def seccomp_baseline_1_19(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    values: set[str] = set()
    profile = _sc(spec).get("seccompProfile")
    pod_bad = isinstance(profile, dict) and profile.get("type") not in SECCOMP_OK
    if pod_bad:
        values.add(_s(profile.get("type")))  # type: ignore[union-attr]
    bad: list[str] = []
    for c in containers(spec):
        profile = _sc(c).get("seccompProfile")
        if isinstance(profile, dict) and profile.get("type") not in SECCOMP_OK:
            bad.append(_name(c))
            values.add(_s(profile.get("type")))
    setters = _setters(pod_bad, bad)
    if not setters:
        return None
    return ("seccompProfile", f"{' and '.join(setters)} must not set securityContext."
                              f"seccompProfile.type to {join_quote(sorted(values))}")


SYSCTLS_1_0 = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                         "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
                         "net.ipv4.ip_unprivileged_port_start"})
SYSCTLS_1_27 = SYSCTLS_1_0 | {"net.ipv4.ip_local_reserved_ports"}
SYSCTLS_1_29 = SYSCTLS_1_27 | {"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                               "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
SYSCTLS_1_32 = SYSCTLS_1_29 | {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}
SYSCTLS_1_37 = SYSCTLS_1_32 | {"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"}


def _sysctls(allowed: frozenset[str]) -> CheckFn:
    def check(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
        names = [_s(s.get("name")) for s in _l(_sc(spec).get("sysctls"))
                 if isinstance(s, dict) and _s(s.get("name")) not in allowed]
        return ("forbidden sysctls", ", ".join(names)) if names else None
    return check


def windows_host_process(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    def host_process(sc: dict[str, Any]) -> bool:
        return _d(sc.get("windowsOptions")).get("hostProcess") is True

    bad = [_name(c) for c in containers(spec) if host_process(_sc(c))]
    setters = _setters(host_process(_sc(spec)), bad)
    if not setters:
        return None
    return ("hostProcess", f"{' and '.join(setters)} must not set "
                           "securityContext.windowsOptions.hostProcess=true")


# -- restricted -------------------------------------------------------------------------------
def allow_privilege_escalation(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    bad = [_name(c) for c in containers(spec)
           if _sc(c).get("allowPrivilegeEscalation") is not False]
    if not bad:
        return None
    return ("allowPrivilegeEscalation != false",
            f"{plural('container', 'containers', len(bad))} {join_quote(bad)} must set "
            "securityContext.allowPrivilegeEscalation=false")


def allow_privilege_escalation_1_25(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    return None if _windows(spec) else allow_privilege_escalation(meta, spec)


def capabilities_restricted(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    missing_drop: list[str] = []
    adding: list[str] = []
    extra: set[str] = set()
    for c in containers(spec):
        caps = _sc(c).get("capabilities")
        if not isinstance(caps, dict):
            missing_drop.append(_name(c))
            continue
        if "ALL" not in [_s(x) for x in _l(caps.get("drop"))]:
            missing_drop.append(_name(c))
        wrong = [_s(a) for a in _l(caps.get("add")) if _s(a) != "NET_BIND_SERVICE"]
        if wrong:
            adding.append(_name(c))
            extra.update(wrong)
    details = []
    if missing_drop:
        details.append(f"{plural('container', 'containers', len(missing_drop))} "
                       f"{join_quote(missing_drop)} must set "
                       'securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{plural('container', 'containers', len(adding))} {join_quote(adding)} "
                       f"must not include {join_quote(sorted(extra))} in "
                       "securityContext.capabilities.add")
    return ("unrestricted capabilities", "; ".join(details)) if details else None


def capabilities_restricted_1_25(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    return None if _windows(spec) else capabilities_restricted(meta, spec)


#: volume sources the restricted level allows
RESTRICTED_VOLUME_SOURCES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                                       "image", "persistentVolumeClaim", "projected", "secret"})
#: the other sources, in upstream's order, named in the refusal
OTHER_VOLUME_SOURCES = (
    "hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi",
    "glusterfs", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile",
    "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "portworxVolume", "scaleIO",
    "storageos")


def restricted_volumes(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    bad: list[str] = []
    kinds: set[str] = set()
    for v in _l(spec.get("volumes")):
        if not isinstance(v, dict):
            continue
        if any(v.get(k) is not None for k in RESTRICTED_VOLUME_SOURCES):
            continue
        bad.append(_s(v.get("name")))
        kinds.add(next((k for k in OTHER_VOLUME_SOURCES if v.get(k) is not None), "unknown"))
    if not bad:
        return None
    return ("restricted volume types",
            f"{plural('volume', 'volumes', len(bad))} {join_quote(bad)} "
            f"{plural('uses', 'use', len(bad))} "
            f"{plural('restricted volume type', 'restricted volume types', len(kinds))} "
            f"{join_quote(sorted(kinds))}")


def run_as_non_root(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    pod_value = _sc(spec).get("runAsNonRoot")
    pod_bad = pod_value is not None and pod_value is not True
    pod_ok = pod_value is True
    explicit: list[str] = []
    implicit: list[str] = []
    for c in containers(spec):
        value = _sc(c).get("runAsNonRoot")
        if value is not None:
            if value is not True:
                explicit.append(_name(c))
        elif not pod_ok:
            implicit.append(_name(c))
    setters = _setters(pod_bad, explicit)
    if setters:
        return ("runAsNonRoot != true",
                f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false")
    if implicit:
        return ("runAsNonRoot != true",
                f"pod or {plural('container', 'containers', len(implicit))} "
                f"{join_quote(implicit)} must set securityContext.runAsNonRoot=true")
    return None


def run_as_non_root_1_35(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    return None if _user_namespaced(spec) else run_as_non_root(meta, spec)


def _is_zero(value: Any) -> bool:
    return value == 0 and not isinstance(value, bool)


def run_as_user(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    bad = [_name(c) for c in containers(spec) if _is_zero(_sc(c).get("runAsUser"))]
    setters = _setters(_is_zero(_sc(spec).get("runAsUser")), bad)
    if not setters:
        return None
    return "runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0"


def run_as_user_1_35(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    return None if _user_namespaced(spec) else run_as_user(meta, spec)


def seccomp_restricted(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    values: set[str] = set()
    profile = _sc(spec).get("seccompProfile")
    pod_bad = pod_ok = False
    if isinstance(profile, dict):
        if profile.get("type") not in SECCOMP_OK:
            pod_bad = True
            values.add(_s(profile.get("type")))
        else:
            pod_ok = True
    explicit: list[str] = []
    implicit: list[str] = []
    for c in containers(spec):
        profile = _sc(c).get("seccompProfile")
        if isinstance(profile, dict):
            if profile.get("type") not in SECCOMP_OK:
                explicit.append(_name(c))
                values.add(_s(profile.get("type")))
        elif not pod_ok:
            implicit.append(_name(c))
    setters = _setters(pod_bad, explicit)
    if setters:
        return ("seccompProfile", f"{' and '.join(setters)} must not set securityContext."
                                  f"seccompProfile.type to {join_quote(sorted(values))}")
    if implicit:
        return ("seccompProfile",
                f"pod or {plural('container', 'containers', len(implicit))} "
                f"{join_quote(implicit)} must set securityContext.seccompProfile.type to "
                '"RuntimeDefault" or "Localhost"')
    return None


def seccomp_restricted_1_25(meta: dict[str, Any], spec: dict[str, Any]) -> Result:
    return None if _windows(spec) else seccomp_restricted(meta, spec)


# -- registry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    since: int  # first policy minor version (1.x) this variant applies to
    check: CheckFn
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    id: str
    level: str
    variants: tuple[Variant, ...] = field(default_factory=tuple)

    def at(self, minor: int) -> Variant | None:
        chosen = None
        for v in self.variants:
            if v.since <= minor:
                chosen = v
        return chosen


CHECKS: tuple[Check, ...] = (
    Check("appArmorProfile", BASELINE, (Variant(0, app_armor_profile),)),
    Check("capabilities_baseline", BASELINE, (Variant(0, capabilities_baseline),)),
    Check("hostNamespaces", BASELINE, (Variant(0, host_namespaces),)),
    Check("hostPathVolumes", BASELINE, (Variant(0, host_path_volumes),)),
    Check("hostPorts", BASELINE, (Variant(0, host_ports),)),
    Check("hostProbesAndHostLifecycle", BASELINE, (Variant(34, host_probes_and_lifecycle),)),
    Check("privileged", BASELINE, (Variant(0, privileged),)),
    Check("procMount", BASELINE, (Variant(0, proc_mount), Variant(35, proc_mount_1_35))),
    Check("seLinuxOptions", BASELINE, (Variant(0, _selinux(SELINUX_TYPES_1_0)),
                                       Variant(31, _selinux(SELINUX_TYPES_1_31)))),
    Check("seccompProfile_baseline", BASELINE, (Variant(0, seccomp_baseline_1_0),
                                                Variant(19, seccomp_baseline_1_19))),
    Check("sysctls", BASELINE, (Variant(0, _sysctls(SYSCTLS_1_0)),
                                Variant(27, _sysctls(SYSCTLS_1_27)),
                                Variant(29, _sysctls(SYSCTLS_1_29)),
                                Variant(32, _sysctls(SYSCTLS_1_32)),
                                Variant(37, _sysctls(SYSCTLS_1_37)))),
    Check("windowsHostProcess", BASELINE, (Variant(0, windows_host_process),)),
    Check("allowPrivilegeEscalation", RESTRICTED, (
        Variant(8, allow_privilege_escalation), Variant(25, allow_privilege_escalation_1_25))),
    Check("capabilities_restricted", RESTRICTED, (
        Variant(22, capabilities_restricted, ("capabilities_baseline",)),
        Variant(25, capabilities_restricted_1_25, ("capabilities_baseline",)))),
    Check("procMount_restricted", RESTRICTED, (Variant(35, proc_mount, ("procMount",)),)),
    Check("restrictedVolumes", RESTRICTED, (
        Variant(0, restricted_volumes, ("hostPathVolumes",)),)),
    Check("runAsNonRoot", RESTRICTED, (Variant(0, run_as_non_root),
                                       Variant(35, run_as_non_root_1_35))),
    Check("runAsUser", RESTRICTED, (Variant(23, run_as_user), Variant(35, run_as_user_1_35))),
    Check("seccompProfile_restricted", RESTRICTED, (
        Variant(19, seccomp_restricted, ("seccompProfile_baseline",)),
        Variant(25, seccomp_restricted_1_25, ("seccompProfile_baseline",)))),
)

_ORDER = sorted(c.id for c in CHECKS if c.level == BASELINE) + \
    sorted(c.id for c in CHECKS if c.level == RESTRICTED)
_BY_ID = {c.id: c for c in CHECKS}
_cache: dict[tuple[str, int], list[CheckFn]] = {}


def checks_for(level: str, minor: int | None) -> list[CheckFn]:
    """The checks one level runs at policy version 1.``minor`` (None: latest)."""
    minor = LATEST_MINOR if minor is None or minor > LATEST_MINOR else minor
    key = (level, minor)
    if key not in _cache:
        active = {c.id: v for c in CHECKS if (v := c.at(minor)) is not None
                  and (c.level == BASELINE or level == RESTRICTED)}
        overridden = {o for cid, v in active.items() if _BY_ID[cid].level == RESTRICTED
                      for o in v.overrides}
        _cache[key] = [active[cid].check for cid in _ORDER
                       if cid in active and cid not in overridden]
    return _cache[key]


def evaluate(level: str, minor: int | None, meta: Any, spec: Any) -> list[tuple[str, str]]:
    """Every (reason, detail) the level forbids; empty when the pod is allowed."""
    if level == PRIVILEGED:
        return []
    meta, spec = _d(meta), _d(spec)
    return [r for check in checks_for(level, minor) if (r := check(meta, spec)) is not None]


def describe(results: list[tuple[str, str]]) -> str:
    """``reason (detail), reason (detail)``: upstream's ForbiddenDetail."""
    return ", ".join(f"{reason} ({detail})" if detail else reason for reason, detail in results)
