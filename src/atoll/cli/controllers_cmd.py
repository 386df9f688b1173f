"""`atoll controller-manager`: every controller, talking to the API over HTTPS."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from atoll.cli.common import resolve_kubeconfig
from atoll.settings import ControllerSettings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("controller-manager", help="run the controllers (garbage collector, "
                                                 "namespaces, ...)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig of the API server to manage")
    p.add_argument("--server", default="",
                   help="API server URL(s) instead of the kubeconfig's; several, comma-separated, "
                        "are tried in order when one cannot be reached")
    p.add_argument("--workers", type=int, default=4, help="workers per controller")
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                   help="act only while holding the kube-system/atoll-controller-manager Lease, "
                        "so several managers can run for high availability (default: on)")
    p.add_argument("--leader-elect-lease-duration", type=float, default=15.0, metavar="SECONDS",
                   help="how long a silent leader keeps the lease (default 15)")
    p.add_argument("--leader-elect-renew-deadline", type=float, default=10.0, metavar="SECONDS",
                   help="a leader that could not renew for this long steps down (default 10)")
    p.add_argument("--leader-elect-retry-period", type=float, default=2.0, metavar="SECONDS",
                   help="how often to renew or try to acquire (default 2)")
    p.add_argument("--metrics-bind-address", default="127.0.0.1:10257", metavar="HOST:PORT",
                   help="serve work-queue metrics on http://HOST:PORT/metrics; '' turns it off "
                        "(default 127.0.0.1:10257)")
    p.set_defaults(func=run)


async def _main(settings: ControllerSettings) -> int:
    from atoll.controllers.manager import ControllerManager

    manager = ControllerManager(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await manager.run_until(stop)


def run(args: argparse.Namespace) -> int:
    settings = ControllerSettings(kubeconfig=Path(resolve_kubeconfig(args.kubeconfig)),
                                  server=args.server, workers=args.workers,
                                  leader_elect=args.leader_elect,
                                  lease_duration_seconds=args.leader_elect_lease_duration,
                                  renew_deadline_seconds=args.leader_elect_renew_deadline,
                                  retry_period_seconds=args.leader_elect_retry_period,
                                  metrics_bind_address=args.metrics_bind_address)
    return asyncio.run(_main(settings))
