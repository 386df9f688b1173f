"""`atoll dev cluster --hosts N [--servers S]`: a multi-host Atoll on one machine.

Each host is a network namespace on a bridge (``dev/hosts.py``) running its own
agent, with its own address and pod range; agents route the other hosts' pod
ranges, so pods on different hosts reach each other.  One API server uses the
embedded store; several need etcd: give ``--datastore etcd://...``, or have
``etcd`` installed and the harness starts a 3-member cluster on loopback.  Every
server runs a controller manager (one leads, by Lease).  Ctrl-C stops
everything and removes the hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import shutil
import signal
from pathlib import Path

from atoll.agent.host.teardown import teardown_host
from atoll.apiserver import pki
from atoll.cli import supervisor
from atoll.cli.common import admin_kubeconfig_path
from atoll.cli.kubeconfig_cmd import node_kubeconfig
from atoll.cli.supervisor import Role, python_argv
from atoll.dev import hosts as devhosts

log = logging.getLogger("atoll.dev")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dev", help="development harnesses")
    dsub = p.add_subparsers(dest="dev_command", metavar="COMMAND", required=True)
    c = dsub.add_parser("cluster", help="N hosts (network namespaces) and S API servers on this "
                                        "machine")
    c.add_argument("--hosts", type=int, default=2)
    c.add_argument("--servers", type=int, default=1)
    c.add_argument("--data-dir", type=Path, default=Path.home() / ".atoll-dev")
    c.add_argument("--port", type=int, default=6443, help="first API server's port; the others "
                                                        "follow")
    c.add_argument("--subnet", default="172.30.0.0/24", help="the hosts' LAN")
    c.add_argument("--pod-range", default="10.245.0.0/16",
                   help="all pod ranges (a /24 per host out of it)")
    c.add_argument("--bridge", default="atolldev0", help="the LAN's bridge on this machine")
    c.add_argument("--prefix", default="atoll-dev-",
                   help="prefix of the hosts' names and namespaces")
    c.add_argument("--datastore", default="",
                   help="etcd://... for several servers (default: start etcd if installed)")
    c.add_argument("--lease-seconds", type=int, default=8, help="hosts' Lease duration")
    c.add_argument("--lease-interval", type=float, default=2.0, help="hosts' Lease renewal")
    c.set_defaults(func=cluster)


def cluster(args: argparse.Namespace) -> int:
    if not 1 <= args.hosts <= 50 or not 1 <= args.servers <= 5:
        raise ValueError("--hosts must be 1..50 and --servers 1..5")
    lan = devhosts.Lan(args.bridge, ipaddress.ip_network(args.subnet),
                       ipaddress.ip_network(args.pod_range), args.prefix)
    hosts = [lan.host(i) for i in range(1, args.hosts + 1)]
    return asyncio.run(_run(args, lan, hosts))


def _etcd_roles(work: Path, count: int = 3, base_port: int = 23790) -> tuple[list[Role], str]:
    etcd = shutil.which("etcd")
    if etcd is None:
        raise RuntimeError("several API servers need etcd: install etcd-server, or pass "
                           "--datastore etcd://HOST:PORT")
    names = [f"etcd{i}" for i in range(count)]
    peers = ",".join(f"{n}=http://127.0.0.1:{base_port + 2 * i + 1}" for i, n in enumerate(names))
    roles = []
    for i, name in enumerate(names):
        client, peer = base_port + 2 * i, base_port + 2 * i + 1
        roles.append(Role(name, [
            etcd, "--name", name, "--data-dir", str(work / name),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", peers, "--initial-cluster-state", "new",
            "--initial-cluster-token", "atoll-dev"]))
    url = "etcd://" + ",".join(f"127.0.0.1:{base_port + 2 * i}" for i in range(count))
    return roles, url


async def _run(args: argparse.Namespace, lan: devhosts.Lan, hosts: list[devhosts.Host]) -> int:
    data: Path = args.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    roles: list[Role] = []
    datastore = args.datastore
    if args.servers > 1 and not datastore:
        etcd_roles, datastore = _etcd_roles(data / "etcd")
        roles += etcd_roles
    ports = [args.port + i for i in range(args.servers)]
    urls = ",".join(f"https://{lan.gateway}:{p}" for p in ports)
    servers = []
    for i, port in enumerate(ports):
        argv = ["--log-level", args.log_level, "server", "--data-dir",
                str(data / f"server-{i + 1}"), "--port", str(port), "--tls-san", lan.gateway]
        if datastore:
            argv += ["--datastore", datastore]
        if i:
            argv += ["--ca-from", str(data / "server-1")]
        servers.append(Role(f"apiserver-{i + 1}", python_argv(*argv)))
    admin = admin_kubeconfig_path(data / "server-1")
    try:
        devhosts.create_lan(lan)
        for role in roles:
            await role.start()
        for i, server in enumerate(servers):
            await server.start()
            await supervisor.wait_ready(f"https://127.0.0.1:{ports[i]}",
                                        data / f"server-{i + 1}" / "pki" / "ca.crt", server,
                                        120.0, admin_kubeconfig_path(data / f"server-{i + 1}"))
        roles += servers
        for i in range(args.servers):
            roles.append(Role(f"controller-manager-{i + 1}", python_argv(
                "--log-level", args.log_level, "controller-manager", "--kubeconfig", str(admin),
                "--server", ",".join(f"https://127.0.0.1:{p}" for p in ports[i:] + ports[:i]))))
        for host in hosts:
            devhosts.create_host(lan, host)
            kc = data / f"{host.name}.kubeconfig"
            pki.write_file(kc, node_kubeconfig(data / "server-1", host.name))
            roles.append(Role(host.name, devhosts.in_host(host, python_argv(
                "--log-level", args.log_level, "agent", "--kubeconfig", str(kc),
                "--server", urls, "--name", host.name, "--node-ip", host.address,
                "--pod-cidr", host.pod_cidr, "--cluster-cidr", str(lan.pod_range),
                "--bridge", f"atollp{host.index}", "--data-dir", str(data / host.name),
                "--run-dir", str(_run_dir(host)), "--lease-seconds", str(args.lease_seconds),
                "--lease-interval", str(args.lease_interval)))))
        for role in roles:
            if role.proc is None:
                await role.start()
        print(f"Atoll dev cluster is ready: {len(hosts)} hosts "
              f"({', '.join(h.name + '=' + h.address for h in hosts)}), {args.servers} API "
              f"server(s) at {urls}\nexport KUBECONFIG={admin}", flush=True)
        await supervisor.supervise(roles, stop)
    finally:
        for role in reversed(roles):
            await role.stop()
        for host in hosts:
            teardown_host(data / host.name, _run_dir(host), f"atollp{host.index}")
            devhosts.delete_host(lan, host)
        devhosts.delete_lan(lan)
    return 0


def _run_dir(host: devhosts.Host) -> Path:
    return Path("/run/atoll-dev") / host.name
