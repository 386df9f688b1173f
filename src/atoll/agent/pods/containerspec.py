"""How one container of a pod is run: its OCI runtime spec, and the pod files it mounts.

Pure translation of the (admitted) pod spec, the container, its image config and its
resolved environment into ``oci.ContainerConfig``: command line, user and groups,
capabilities, cgroup limits, and mounts (the pod's ``/etc/hosts``, ``hostname`` and
``resolv.conf``, the termination log, volume mounts with ``subPath``/``subPathExpr``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atoll.agent.pods import env as podenv
from atoll.agent.pods import volumes
from atoll.agent.runtime import oci
from atoll.api import quantity


def runtime_spec(pod: dict[str, Any], container: dict[str, Any], image_config: dict[str, Any],
                 env: dict[str, str], *, pod_dir: Path,
                 pod_volumes: dict[str, volumes.HostVolume], netns_path: str,
                 cgroups_path: str,
                 join_namespaces: dict[str, str] | None = None) -> dict[str, Any]:
    """The OCI ``config.json`` of ``container``; raises ``podenv.ConfigError``.
    ``join_namespaces``: namespaces (by type) to enter rather than create, as an ephemeral
    container enters its target's."""
    spec = pod.get("spec") or {}
    argv = podenv.command_line(container, image_config, env)
    if not argv:
        raise podenv.ConfigError("no command specified")
    pod_sc = spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    uid = sc.get("runAsUser", pod_sc.get("runAsUser", 0))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", 0))
    groups = [g for g in pod_sc.get("supplementalGroups") or [] if isinstance(g, int)]
    if isinstance(pod_sc.get("fsGroup"), int):
        groups.append(pod_sc["fsGroup"])
    caps = sc.get("capabilities") or {}
    mounts = container_mounts(pod_dir, container, env, pod_volumes)
    env_list = [f"{k}={v}" for k, v in env.items()]
    if container.get("tty") and "TERM" not in env:
        env_list.append("TERM=xterm")  # as containerd does for a terminal
    cfg = oci.ContainerConfig(
        args=argv, env=env_list,
        cwd=str(container.get("workingDir") or image_config.get("WorkingDir") or "/"),
        uid=int(uid) if isinstance(uid, int) else 0, gid=int(gid) if isinstance(gid, int) else 0,
        groups=groups, hostname=hostname(pod),
        netns_path=netns_path,
        host_network=bool(spec.get("hostNetwork")),
        cgroups_path=cgroups_path,
        limits=limits(container), mounts=mounts,
        readonly_rootfs=bool(sc.get("readOnlyRootFilesystem")),
        cap_add=[str(c) for c in caps.get("add") or []],
        cap_drop=[str(c) for c in caps.get("drop") or []],
        privileged=bool(sc.get("privileged")),
        no_new_privileges=sc.get("allowPrivilegeEscalation") is False,
        terminal=bool(container.get("tty")),
        host_namespaces=frozenset(ns for ns, key in (("pid", "hostPID"), ("ipc", "hostIPC"))
                                  if spec.get(key)),
        join_namespaces=dict(join_namespaces or {}))
    return oci.runtime_spec(cfg)


def limits(container: dict[str, Any]) -> oci.Limits:
    res = container.get("resources") or {}
    lim, requests = res.get("limits") or {}, res.get("requests") or {}
    try:
        return oci.Limits(
            memory_bytes=quantity.integer(lim["memory"]) if "memory" in lim else None,
            cpu_millis_limit=quantity.millis(lim["cpu"]) if "cpu" in lim else None,
            cpu_millis_request=quantity.millis(requests.get("cpu", lim.get("cpu")))
            if "cpu" in requests or "cpu" in lim else None)
    except ValueError as e:
        raise podenv.ConfigError(f"invalid resources: {e}") from None


def hostname(pod: dict[str, Any]) -> str:
    name = (pod.get("spec") or {}).get("hostname") or pod["metadata"]["name"]
    return str(name)[:63]


def container_mounts(pod_dir: Path, container: dict[str, Any], env: dict[str, str],
                     pod_volumes: dict[str, volumes.HostVolume]) -> list[oci.Mount]:
    files = pod_dir / "etc"
    mounts = [oci.Mount("/etc/hosts", str(files / "hosts")),
              oci.Mount("/etc/hostname", str(files / "hostname")),
              oci.Mount("/etc/resolv.conf", str(files / "resolv.conf"), readonly=True)]
    term = pod_dir / "termination" / container["name"]
    term.parent.mkdir(parents=True, exist_ok=True)
    term.touch()
    mounts.append(oci.Mount(str(container.get("terminationMessagePath")
                                or "/dev/termination-log"), str(term)))
    for index, vm in enumerate(container.get("volumeMounts") or []):
        vol = pod_volumes.get(vm.get("name"))
        if vol is None:
            raise podenv.ConfigError(f'volume "{vm.get("name")}" is not defined in the pod')
        source = vol.path
        sub = subpath(vm, env)
        if sub:
            try:
                source = volumes.prepare_subpath(pod_dir, str(vm["name"]), vol.path, sub,
                                                 container["name"], index)
            except podenv.ConfigError as e:
                raise volumes.subpath_error(str(vm["name"]), container["name"],
                                            str(e)) from None
        mounts.append(oci.Mount(str(vm.get("mountPath")), source,
                                readonly=bool(vm.get("readOnly")) or vol.read_only))
    return mounts


def subpath(vm: dict[str, Any], env: dict[str, str]) -> str:
    """``subPath``, or ``subPathExpr`` with the container's ``$(VAR)``s expanded (the
    result is checked by the safe resolution like any subPath)."""
    if vm.get("subPathExpr"):
        return podenv.expand(str(vm["subPathExpr"]), env)
    return str(vm.get("subPath") or "")


@dataclass(frozen=True)
class DNSSettings:
    #: the cluster DNS server ("": none, pods get the host's resolv.conf)
    server: str = ""
    domain: str = "cluster.local"


#: resolv.conf limits, as kubelet enforces them (glibc reads at most 6 search domains in old
#: releases; kubelet allows 32 and 2048 characters, and at most 3 nameservers)
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32


def resolv_conf(pod: dict[str, Any], host: str, dns: DNSSettings) -> str:
    """The pod's resolv.conf by its dnsPolicy and dnsConfig, as kubelet writes it: the
    cluster's server, search path and ``ndots:5`` for ClusterFirst (and for host-network
    pods with ClusterFirstWithHostNet), the host's file for Default, only dnsConfig for None."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"  # kubelet: host-network pods need ClusterFirstWithHostNet
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and not dns.server:
        policy = "Default"
    host_servers, host_search, host_options = _parse_resolv(host)
    if policy == "None":
        servers, search, options = [], [], []
    elif policy == "Default":
        servers, search, options = host_servers, host_search, host_options
    else:
        ns = pod["metadata"].get("namespace", "default")
        servers = [dns.server]
        search = [f"{ns}.svc.{dns.domain}", f"svc.{dns.domain}", dns.domain, *host_search]
        options = ["ndots:5"]
    config = spec.get("dnsConfig") or {}
    servers = _unique([*servers, *(config.get("nameservers") or [])])[:MAX_NAMESERVERS]
    search = _unique([*search, *(config.get("searches") or [])])[:MAX_SEARCHES]
    by_name = {o.split(":", 1)[0]: o for o in options}
    for opt in config.get("options") or []:
        if isinstance(opt, dict) and opt.get("name"):
            by_name[opt["name"]] = f'{opt["name"]}:{opt["value"]}' if opt.get("value") \
                else opt["name"]
    lines = [f"nameserver {s}" for s in servers]
    if search:
        lines.append("search " + " ".join(search))
    if by_name:
        lines.append("options " + " ".join(by_name.values()))
    return "\n".join(lines) + "\n"


def _parse_resolv(text: str) -> tuple[list[str], list[str], list[str]]:
    servers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith(("#", ";")):
            continue
        if parts[0] == "nameserver" and len(parts) > 1:
            servers.append(parts[1])
        elif parts[0] in ("search", "domain"):
            search = parts[1:]
        elif parts[0] == "options":
            options.extend(parts[1:])
    return servers, search, options


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if isinstance(i, str) and i))


def write_pod_files(pod: dict[str, Any], pod_dir: Path, ip: str,
                    dns: DNSSettings = DNSSettings()) -> None:
    """The pod's ``/etc/hosts``, ``hostname`` and ``resolv.conf`` (rewritten only on change)."""
    spec = pod.get("spec") or {}
    files = pod_dir / "etc"
    files.mkdir(parents=True, exist_ok=True)
    hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{ip}\t{hostname(pod)}"]
    for entry in spec.get("hostAliases") or []:
        hosts.append(f"{entry.get('ip')}\t{' '.join(entry.get('hostnames') or [])}")
    _write_if_changed(files / "hosts", "\n".join(hosts) + "\n")
    _write_if_changed(files / "hostname", hostname(pod) + "\n")
    try:
        host = Path("/etc/resolv.conf").read_text()
    except OSError:
        host = ""
    _write_if_changed(files / "resolv.conf", resolv_conf(pod, host, dns))


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    path.write_text(text)
