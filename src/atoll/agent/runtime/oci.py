"""OCI runtime-spec ``config.json`` for one container of a pod.

Follows what containerd's CRI plugin produces for runc: the default Docker
capability set, masked and read-only kernel paths, a private /dev, the pod's
network namespace joined by path, cgroup limits from the container's resource
limits, and bind mounts for volumes and the pod's hosts/resolv.conf/hostname.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)
ALL_CAPABILITIES = DEFAULT_CAPABILITIES + (
    "CAP_DAC_READ_SEARCH", "CAP_LINUX_IMMUTABLE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_LEASE", "CAP_AUDIT_CONTROL", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
CPU_PERIOD = 100_000


@dataclass
class Mount:
    destination: str
    source: str
    readonly: bool = False
    type: str = "bind"
    options: list[str] = field(default_factory=list)

    def to_spec(self) -> dict[str, Any]:
        if self.type == "bind":
            opts = ["rbind", "rprivate", "ro" if self.readonly else "rw"]
        else:
            opts = list(self.options) + (["ro"] if self.readonly else [])
        return {"destination": self.destination, "type": self.type, "source": self.source,
                "options": opts}


@dataclass
class Limits:
    memory_bytes: int | None = None
    cpu_millis_limit: int | None = None
    cpu_millis_request: int | None = None
    pids: int | None = None

    def to_spec(self) -> dict[str, Any]:
        res: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
        if self.memory_bytes:
            res["memory"] = {"limit": self.memory_bytes, "swap": self.memory_bytes}
        cpu: dict[str, Any] = {}
        if self.cpu_millis_limit:
            cpu["quota"] = max(1000, self.cpu_millis_limit * CPU_PERIOD // 1000)
            cpu["period"] = CPU_PERIOD
        # kubelet's shares: request in millicores * 1024 / 1000, at least 2
        shares = max(2, (self.cpu_millis_request or 0) * 1024 // 1000) \
            if self.cpu_millis_request is not None else 2
        cpu["shares"] = shares
        res["cpu"] = cpu
        if self.pids:
            res["pids"] = {"limit": self.pids}
        return res


@dataclass
class ContainerConfig:
    args: list[str]
    env: list[str]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)
    hostname: str = ""
    netns_path: str = ""
    #: share the host's network namespace (``hostNetwork: true``)
    host_network: bool = False
    cgroups_path: str = ""
    limits: Limits = field(default_factory=Limits)
    mounts: list[Mount] = field(default_factory=list)
    readonly_rootfs: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    no_new_privileges: bool = False
    #: a pseudo-terminal as stdio (``tty: true``): the shim receives its master from runc
    terminal: bool = False
    #: namespaces joined by path instead of made new, by type (``pid`` of a debug target...)
    join_namespaces: dict[str, str] = field(default_factory=dict)
    #: namespaces of the host kept, by type (``hostPID``: pid, ``hostIPC``: ipc)
    host_namespaces: frozenset[str] = frozenset()


def _nofile() -> int:
    """containerd's 1048576 open files, capped by what this host lets us grant."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1048576 if hard == resource.RLIM_INFINITY else min(1048576, hard)


def _cap(name: str) -> str:
    name = name.upper()
    return name if name.startswith("CAP_") else f"CAP_{name}"


#: Linux capability numbers (``linux/capability.h``), for reading a bounding set
CAP_NUMBERS = {name: n for n, name in enumerate((
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE"))}


def host_capabilities() -> list[str]:
    """The capabilities this process may grant (its bounding set): a privileged container
    gets these, as containerd does, since runc fails on any it cannot apply."""
    try:
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return list(ALL_CAPABILITIES)
    return [c for c in ALL_CAPABILITIES if mask >> CAP_NUMBERS[c] & 1]


def capabilities(cfg: ContainerConfig) -> list[str]:
    if cfg.privileged:
        return host_capabilities()
    drop = {_cap(c) for c in cfg.cap_drop}
    if "CAP_ALL" in drop:
        caps: list[str] = []
    else:
        caps = [c for c in DEFAULT_CAPABILITIES if c not in drop]
    for c in cfg.cap_add:
        cap = _cap(c)
        if cap == "CAP_ALL":
            caps = [c for c in ALL_CAPABILITIES if c not in drop]
        elif cap not in caps and cap in ALL_CAPABILITIES:
            caps.append(cap)
    return caps


def runtime_spec(cfg: ContainerConfig) -> dict[str, Any]:
    caps = capabilities(cfg)
    mounts = [
        Mount("/proc", "proc", type="proc", options=["nosuid", "noexec", "nodev"]),
        Mount("/dev", "tmpfs", type="tmpfs", options=["nosuid", "strictatime", "mode=755",
                                                      "size=65536k"]),
        Mount("/dev/pts", "devpts", type="devpts",
              options=["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                       "gid=5"]),
        Mount("/dev/shm", "shm", type="tmpfs",
              options=["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        Mount("/dev/mqueue", "mqueue", type="mqueue", options=["nosuid", "noexec", "nodev"]),
        Mount("/sys", "sysfs", type="sysfs", options=["nosuid", "noexec", "nodev", "ro"]),
    ]
    namespaces: list[dict[str, str]] = [
        {"type": t, "path": cfg.join_namespaces[t]} if t in cfg.join_namespaces else {"type": t}
        for t in ("pid", "ipc", "uts", "mount") if t not in cfg.host_namespaces]
    if cfg.netns_path:
        namespaces.append({"type": "network", "path": cfg.netns_path})
    elif not cfg.host_network:
        namespaces.append({"type": "network"})
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "resources": cfg.limits.to_spec(),
    }
    if cfg.cgroups_path:
        linux["cgroupsPath"] = cfg.cgroups_path
    if not cfg.privileged:
        linux["maskedPaths"] = MASKED_PATHS
        linux["readonlyPaths"] = READONLY_PATHS
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": cfg.terminal,
            "user": {"uid": cfg.uid, "gid": cfg.gid,
                     **({"additionalGids": cfg.groups} if cfg.groups else {})},
            "args": cfg.args,
            "env": cfg.env,
            "cwd": cfg.cwd or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": _nofile(), "soft": _nofile()}],
            "noNewPrivileges": cfg.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": cfg.readonly_rootfs},
        "hostname": cfg.hostname,
        "mounts": [m.to_spec() for m in mounts + cfg.mounts],
        "linux": linux,
    }
