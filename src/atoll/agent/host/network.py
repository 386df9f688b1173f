"""Pod networking: one network namespace per pod, wired by the standard CNI plugins.

As a CRI runtime does: create a named network namespace, run the plugin
chain of a network configuration list (``loopback``, then ``bridge``, then
``portmap`` for ``hostPort``) with ``CNI_COMMAND=ADD``, and ``DEL`` in reverse
order on teardown.  Every pod on a host hangs off the same bridge, so pods
reach each other; the bridge is the gateway, and one nftables rule
masquerades traffic from the pod range leaving the host.  Addresses come from
``LocalIPAM`` (handed to the bridge plugin through the ``static`` IPAM
plugin), whose leases live under the agent's data dir, so two agents on one
machine keep separate ranges.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
CNI_VERSION = "1.0.0"
NETNS_DIR = Path("/run/netns")


class NetworkError(Exception):
    pass


@dataclass(frozen=True)
class NetworkSettings:
    pod_cidr: str = "10.88.0.0/16"
    #: all hosts' pod ranges (traffic between pods is not masqueraded); "" = pod_cidr
    cluster_cidr: str = ""
    bridge: str = "atoll0"
    cni_bin_dir: str = "/usr/lib/cni"
    state_dir: Path = Path("/var/lib/atoll/cni")


@dataclass
class PodNetwork:
    netns: str
    ip: str

    @property
    def netns_path(self) -> str:
        return str(NETNS_DIR / self.netns)


def netns_name(pod_uid: str) -> str:
    return f"atoll-{pod_uid.replace('-', '')[:20]}"


class LocalIPAM:
    """Pod addresses from this host's range: the host-local plugin's job, done in-process.

    One file per leased address (named by the address, holding the pod uid), as
    host-local keeps them; the agent is the only writer, so allocation needs no
    file lock and pods' CNI calls run in parallel (host-local serializes them).
    """

    def __init__(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network,
                 directory: Path) -> None:
        self.network = network
        self.gateway = next(network.hosts())
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._cursor = 1  # the last offset handed out (1 is the gateway)
        self._by_pod: dict[str, str] = {}
        for lease in self.dir.iterdir():
            try:
                self._by_pod[lease.read_text().strip()] = lease.name
            except OSError:
                continue

    def allocate(self, pod_uid: str) -> str:
        if pod_uid in self._by_pod:
            return self._by_pod[pod_uid]
        base = int(self.network.network_address)
        span = self.network.num_addresses - 3  # offsets 2 .. last-1: not network, gateway, broadcast
        for k in range(1, span + 1):
            offset = 2 + (self._cursor - 2 + k) % span
            ip = str(ipaddress.ip_address(base + offset))
            try:
                fd = os.open(self.dir / ip, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(pod_uid)
            self._cursor = offset
            self._by_pod[pod_uid] = ip
            return ip
        raise NetworkError(f"no free address left in {self.network}")

    def claim(self, pod_uid: str, ip: str) -> str:
        """Lease exactly ``ip`` (a VM's static address) to ``pod_uid``, dropping the address it
        held before; a NetworkError when it is not an address of this range or is taken."""
        addr = ipaddress.ip_address(ip)
        if addr not in self.network or addr in (self.network.network_address, self.gateway,
                                                self.network.broadcast_address):
            raise NetworkError(f"{ip} is not a workload address of this host's pod range "
                               f"{self.network} (gateway {self.gateway})")
        ip = str(addr)
        held = self._by_pod.get(pod_uid)
        if held == ip:
            return ip
        try:
            fd = os.open(self.dir / ip, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                owner = (self.dir / ip).read_text().strip()
            except OSError:
                owner = ""
            if owner != pod_uid:
                raise NetworkError(f"{ip} is in use on this host") from None
        else:
            with os.fdopen(fd, "w") as f:
                f.write(pod_uid)
        if held is not None:
            (self.dir / held).unlink(missing_ok=True)
        self._by_pod[pod_uid] = ip
        return ip

    def release(self, pod_uid: str) -> None:
        ip = self._by_pod.pop(pod_uid, None)
        if ip is not None:
            try:
                (self.dir / ip).unlink()
            except FileNotFoundError:
                pass


class CNI:
    def __init__(self, settings: NetworkSettings) -> None:
        self.settings = settings
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.ipam = LocalIPAM(ipaddress.ip_network(settings.pod_cidr),
                              settings.state_dir / "ipam" / "atoll")

    def conflist(self, ip: str = "") -> dict[str, Any]:
        s = self.settings
        ipam: dict[str, Any] = {"type": "static", "routes": [{"dst": "0.0.0.0/0"}]}
        if ip:
            ipam["addresses"] = [{"address": f"{ip}/{self.ipam.network.prefixlen}",
                                  "gateway": str(self.ipam.gateway)}]
        return {"cniVersion": CNI_VERSION, "name": "atoll", "plugins": [
            # masquerading is one nftables rule for the whole pod range (ensure_masquerade),
            # not the bridge plugin's iptables chain per pod, which serializes pod starts
            {"type": "bridge", "bridge": s.bridge, "isGateway": True, "ipMasq": False,
             "hairpinMode": True, "ipam": ipam},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}

    def nft_table(self) -> str:
        return f"atoll_{self.settings.bridge}".replace("-", "_")

    async def ensure_masquerade(self) -> None:
        """Traffic from pods to anywhere outside the pod range leaves with the host's address."""
        cidr = self.settings.pod_cidr
        cluster = self.settings.cluster_cidr or cidr
        table = self.nft_table()
        script = (f"table ip {table} {{}}\ndelete table ip {table}\n"
                  f"table ip {table} {{\n"
                  f"  chain postrouting {{\n"
                  f"    type nat hook postrouting priority srcnat; policy accept;\n"
                  f"    ip saddr {cidr} ip daddr != {cluster} masquerade\n"
                  f"  }}\n}}\n")
        proc = await asyncio.create_subprocess_exec(
            "nft", "-f", "-", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate(script.encode())
        if proc.returncode != 0:
            log.warning("cannot install the pod masquerade rule (pods reach only this host and "
                        "other pods): %s", err.decode(errors="replace").strip())

    async def setup(self, pod_uid: str, namespace: str, name: str,
                    port_mappings: list[dict[str, Any]]) -> PodNetwork:
        netns = netns_name(pod_uid)
        if not (NETNS_DIR / netns).exists():
            await _run("ip", "netns", "add", netns)
        path = str(NETNS_DIR / netns)
        args = (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};"
                f"K8S_POD_UID={pod_uid}")
        await self._plugin("ADD", {"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"},
                           pod_uid, path, args, ifname="lo")
        prev: dict[str, Any] | None = None
        conflist = self.conflist(self.ipam.allocate(pod_uid))
        for plugin in conflist["plugins"]:
            conf = dict(plugin, cniVersion=CNI_VERSION, name=conflist["name"])
            if plugin["type"] == "portmap":
                if not port_mappings:
                    continue
                conf["runtimeConfig"] = {"portMappings": port_mappings}
            if prev is not None:
                conf["prevResult"] = prev
            prev = await self._plugin("ADD", conf, pod_uid, path, args)
        ips = (prev or {}).get("ips") or []
        if not ips:
            raise NetworkError("the CNI plugins returned no IP address")
        ip = str(ips[0]["address"]).split("/")[0]
        return PodNetwork(netns, ip)

    async def teardown(self, pod_uid: str, port_mappings: list[dict[str, Any]]) -> None:
        """Release the pod's IP and interfaces, then its namespace; safe to repeat."""
        netns = netns_name(pod_uid)
        path = str(NETNS_DIR / netns) if (NETNS_DIR / netns).exists() else ""
        conflist = self.conflist()
        for plugin in reversed(conflist["plugins"]):
            conf = dict(plugin, cniVersion=CNI_VERSION, name=conflist["name"])
            if plugin["type"] == "portmap":
                if not port_mappings:
                    continue
                conf["runtimeConfig"] = {"portMappings": port_mappings}
            try:
                await self._plugin("DEL", conf, pod_uid, path, "")
            except NetworkError as e:
                log.warning("CNI DEL %s for pod %s: %s", plugin["type"], pod_uid, e)
        if path:
            await _run("ip", "netns", "delete", netns, check=False)
        self.ipam.release(pod_uid)

    async def _plugin(self, command: str, conf: dict[str, Any], container_id: str, netns: str,
                      args: str, ifname: str = "eth0") -> dict[str, Any]:
        binary = os.path.join(self.settings.cni_bin_dir, conf["type"])
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
               "CNI_IFNAME": ifname, "CNI_PATH": self.settings.cni_bin_dir, "CNI_ARGS": args,
               "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        proc = await asyncio.create_subprocess_exec(
            binary, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await proc.communicate(json.dumps(conf).encode())
        if proc.returncode != 0:
            try:
                detail = json.loads(out).get("msg") or out.decode()
            except ValueError:
                detail = (out or err).decode(errors="replace")
            raise NetworkError(f"CNI {conf['type']} {command}: {detail.strip()}")
        if not out.strip():
            return {}
        try:
            result = json.loads(out)
        except ValueError as e:
            raise NetworkError(f"CNI {conf['type']} returned invalid JSON: {e}") from None
        return result if isinstance(result, dict) else {}


async def _run(*cmd: str, check: bool = True) -> None:
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(cmd)}: {err.decode(errors='replace').strip()}")
