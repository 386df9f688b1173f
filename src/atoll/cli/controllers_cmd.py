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
    p.add_argument("--workers", type=int, default=4, help="workers per controller")
    p.set_defaults(func=run)


async def _main(settings: ControllerSettings) -> None:
    from atoll.controllers.manager import ControllerManager

    manager = ControllerManager(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await manager.start()
    try:
        await stop.wait()
    finally:
        await manager.stop()


def run(args: argparse.Namespace) -> int:
    settings = ControllerSettings(kubeconfig=Path(resolve_kubeconfig(args.kubeconfig)),
                                  workers=args.workers)
    asyncio.run(_main(settings))
    return 0
