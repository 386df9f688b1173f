"""`atoll up`: the all-in-one platform on one host.

Runs each role in its own process (the GIL gives a process one core): the API
server first, then, once it answers, the controller manager and the host agent
for this host.  It restarts a role that dies, with back-off, and stops them all
on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import socket
import sys

from atoll.cli import server_cmd, supervisor
from atoll.cli.supervisor import Role, python_argv
from atoll.apiserver import pki
from atoll.cli.common import admin_kubeconfig_path
from atoll.cli.kubeconfig_cmd import node_kubeconfig
from atoll.settings import ServerSettings

log = logging.getLogger("atoll.up")
READY_TIMEOUT_SECONDS = 120.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start the all-in-one platform (API server, controllers)")
    server_cmd.add_server_flags(p)
    p.add_argument("--no-controllers", action="store_true", help="run the API server only")
    p.add_argument("--no-agent", action="store_true",
                   help="do not run a host agent for this host (API and controllers only)")
    p.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the local agent (repeatable), e.g. "
                        "--agent-arg=--pod-cidr=10.90.0.0/16")
    p.set_defaults(func=run)


async def wait_ready(settings: ServerSettings, server: Role) -> None:
    await supervisor.wait_ready(f"https://127.0.0.1:{settings.port}",
                                settings.data_dir / "pki" / "ca.crt", server,
                                READY_TIMEOUT_SECONDS, admin_kubeconfig_path(settings.data_dir))





async def supervise(args: argparse.Namespace, settings: ServerSettings) -> int:
    server_args = ["server", "--data-dir", str(settings.data_dir), "--port", str(settings.port),
                   "--bind-address", settings.bind_address]
    if settings.datastore:
        server_args += ["--datastore", settings.datastore]
    if settings.anonymous:
        server_args.append("--anonymous-auth")
    for san in settings.extra_sans:
        server_args += ["--tls-san", san]
    if settings.token_file:
        server_args += ["--token-auth-file", str(settings.token_file)]
    server_args += ["--default-toleration-seconds", str(settings.pod_toleration_seconds),
                    "--content-max-blob-size", str(settings.content_max_blob_bytes),
                    "--pod-security-default", settings.pod_security_default,
                    *server_cmd.token_args(settings), *server_cmd.service_args(settings)]
    if settings.audit_log:
        server_args += ["--audit-log-path", str(settings.audit_log)]
    if settings.default_runtime_class:
        server_args += ["--default-runtime-class", settings.default_runtime_class]
    kubeconfig = admin_kubeconfig_path(settings.data_dir)
    roles = [Role("apiserver", python_argv("--log-level", args.log_level, *server_args))]
    if not args.no_controllers:
        roles.append(Role("controller-manager", python_argv(
            "--log-level", args.log_level, "controller-manager", "--kubeconfig", str(kubeconfig))))
    agent_kubeconfig = settings.data_dir / "agent.kubeconfig"
    if not args.no_agent:
        # pods ask kube-system/kube-dns, on the Service range's tenth address (as kubeadm's
        # default --cluster-dns); an --agent-arg may name another
        dns = str(ipaddress.ip_network(settings.service_cluster_ip_range).network_address + 10)
        roles.append(Role("agent", python_argv(
            "--log-level", args.log_level, "agent", "--kubeconfig", str(agent_kubeconfig),
            "--data-dir", str(settings.data_dir / "agent"), "--cluster-dns", dns,
            *args.agent_arg)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await roles[0].start()
    try:
        await wait_ready(settings, roles[0])
    except RuntimeError as exc:
        await roles[0].stop()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.no_agent:
        # the local agent signs in as its host, not as the administrator
        pki.write_file(agent_kubeconfig, node_kubeconfig(settings.data_dir,
                                                         agent_node_name(args.agent_arg)))
    for role in roles[1:]:
        await role.start()
    print(f"Atoll is ready: export KUBECONFIG={kubeconfig}", flush=True)
    await supervisor.supervise(roles, stop)
    return 0


def run(args: argparse.Namespace) -> int:
    settings = server_cmd.settings_from(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(supervise(args, settings))


def agent_node_name(agent_args: list[str]) -> str:
    """The Node name the local agent will register: its ``--name``, else the host name."""
    for i, arg in enumerate(agent_args):
        if arg.startswith("--name="):
            return arg.split("=", 1)[1]
        if arg == "--name" and i + 1 < len(agent_args):
            return agent_args[i + 1]
    return socket.gethostname().lower()
