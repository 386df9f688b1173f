"""`atoll agent`: make this host a Node and run the pods bound to it."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import socket
from pathlib import Path

from atoll.cli.common import default_data_dir, resolve_kubeconfig
from atoll.settings import AgentSettings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="run the host agent: register this host as a Node, run its "
                                     "pods")
    p.add_argument("--server", default="",
                   help="API server URL (overrides the kubeconfig's); several, comma-separated, "
                        "are tried in order when one cannot be reached")
    p.add_argument("--kubeconfig", default=None, help="credentials for the API server")
    p.add_argument("--name", default="", help="Node name (default: the host name)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="agent state: images, containers, pods (default: ~/.atoll/agent)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="container bundles, writable layers and shim state; best on a tmpfs "
                        "(default: /run/atoll/NAME)")
    p.add_argument("--node-ip", default="", help="address reported for this Node "
                                                  "(default: the default route's source)")
    p.add_argument("--port", type=int, default=10250,
                   help="HTTPS port of the agent's API (logs, exec), for the API server")
    p.add_argument("--pod-cidr", default="10.88.0.0/16", help="pod network range of this host")
    p.add_argument("--cluster-cidr", default="",
                   help="all hosts' pod ranges together (pod-to-pod traffic is not "
                        "masqueraded; default: --pod-cidr)")
    p.add_argument("--pod-routes", action=argparse.BooleanOptionalAction, default=True,
                   help="route other hosts' pod ranges via those hosts (default: on)")
    p.add_argument("--bridge", default="atoll0", help="Linux bridge for this host's pods")
    p.add_argument("--cluster-dns", default="", metavar="IP",
                   help="the nameserver of pods with dnsPolicy ClusterFirst, usually "
                        "kube-dns's cluster IP (default: this host's DNS on the pod bridge)")
    p.add_argument("--cluster-domain", default="cluster.local",
                   help="the DNS domain of Services and pods (default: cluster.local)")
    p.add_argument("--runtime", default="runc", help="OCI runtime binary (runc-compatible)")
    p.add_argument("--cni-bin-dir", default="/usr/lib/cni", help="where the CNI plugins are")
    p.add_argument("--lease-interval", type=float, default=2.0,
                   help="seconds between Lease renewals")
    p.add_argument("--lease-seconds", type=int, default=8,
                   help="Lease duration: the host counts as gone when it is not renewed in time")
    p.add_argument("--crashloop-backoff", type=float, default=10.0,
                   help="first restart back-off of a crashing container, in seconds (doubles)")
    p.add_argument("--crashloop-backoff-max", type=float, default=300.0,
                   help="longest restart back-off, in seconds")
    p.add_argument("--vm-soft-timeout", type=float, default=60.0,
                   help="TrySoft power-off: seconds to wait for the guest before powering off "
                        "Hard")
    p.add_argument("--vm-silent-boot-timeout", type=float, default=120.0,
                   help="seconds without any serial console output after which a VM is "
                        "reported as not booting (GuestBootstrap=False)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Node label (repeatable)")
    p.add_argument("--registry-mirror", action="append", default=[],
                   metavar="REGISTRY=URL",
                   help="pull REGISTRY's images from the mirror at URL first, the registry "
                        "itself if the mirror fails (repeatable; e.g. "
                        "docker.io=https://mirror.example:5000)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="a registry reached over plain http or https without certificate "
                        "checks (repeatable; loopback registries may always use http)")
    p.add_argument("--registry-ca-file", type=Path, default=None,
                   help="extra CA certificates (PEM) trusted for registries")
    p.add_argument("--registry-config", type=Path, default=None,
                   help="the node's registry credentials: a docker config.json")
    p.add_argument("--registry-read-timeout", type=float, default=60.0,
                   help="seconds a registry may stay silent mid-answer before a pull fails")
    p.add_argument("--image-gc-high-threshold", type=int, default=85,
                   help="percent of the image filesystem in use that starts image garbage "
                        "collection")
    p.add_argument("--image-gc-low-threshold", type=int, default=80,
                   help="percent of the image filesystem image garbage collection frees "
                        "down to")
    p.add_argument("--minimum-image-gc-age", type=float, default=120.0,
                   help="seconds an unused image is kept at least")
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> AgentSettings:
    from atoll.agent.host.node import host_ip

    labels = []
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--label wants KEY=VALUE, not {item!r}")
        labels.append((key, value))
    mirrors = []
    for item in args.registry_mirror:
        registry, sep, url = item.partition("=")
        if not sep or not registry or not url:
            raise ValueError(f"--registry-mirror wants REGISTRY=URL, not {item!r}")
        mirrors.append((registry, url))
    if args.cluster_dns:
        try:
            ipaddress.IPv4Address(args.cluster_dns)
        except ValueError:
            raise ValueError(f"--cluster-dns wants an IPv4 address, not {args.cluster_dns!r}") \
                from None
    if not 0 <= args.image_gc_low_threshold <= args.image_gc_high_threshold <= 100:
        raise ValueError("--image-gc-low-threshold must be at most --image-gc-high-threshold, "
                         "both 0-100")
    return AgentSettings(
        kubeconfig=Path(resolve_kubeconfig(args.kubeconfig)), server=args.server,
        name=args.name or socket.gethostname().lower(),
        data_dir=args.data_dir or default_data_dir() / "agent", run_dir=args.run_dir,
        host_ip=args.node_ip or host_ip(), port=args.port, pod_cidr=args.pod_cidr,
        cluster_cidr=args.cluster_cidr, pod_routes=args.pod_routes, bridge=args.bridge,
        cluster_domain=args.cluster_domain, cluster_dns=args.cluster_dns,
        runtime=args.runtime, cni_bin_dir=args.cni_bin_dir, lease_interval=args.lease_interval,
        lease_seconds=args.lease_seconds, backoff_base=args.crashloop_backoff,
        backoff_max=args.crashloop_backoff_max, labels=tuple(labels),
        vm_soft_timeout=args.vm_soft_timeout,
        vm_silent_boot_timeout=args.vm_silent_boot_timeout,
        registry_mirrors=tuple(mirrors), insecure_registries=tuple(args.insecure_registry),
        registry_ca_file=args.registry_ca_file, registry_credentials_file=args.registry_config,
        registry_read_timeout=args.registry_read_timeout,
        image_gc_high_threshold=args.image_gc_high_threshold,
        image_gc_low_threshold=args.image_gc_low_threshold,
        image_gc_min_age=args.minimum_image_gc_age)


async def _main(settings: AgentSettings) -> None:
    from atoll.agent.agent import Agent

    agent = Agent(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(agent.run())
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
    finally:
        task.cancel()
        stopper.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await agent.close()  # containers keep running: they belong to their shims


def run(args: argparse.Namespace) -> int:
    # one pidfd per child instead of one waiting thread per child: an agent spawns many
    asyncio.get_event_loop_policy().set_child_watcher(asyncio.PidfdChildWatcher())
    asyncio.run(_main(settings_from(args)))
    return 0
