"""`atoll vm console NAME`: a VM's serial console, through the API server, from anywhere.

The console is the ``virtualmachines/console`` subresource: a websocket of raw
terminal bytes (proxied by the API server to the VM's host agent), or, with
``--log``, the console output so far without attaching.  Interactive sessions
put the terminal in raw mode; Ctrl-] detaches, as virsh and telnet do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import termios
import tty

import aiohttp

from atoll.api.vmoperator.names import vm_path
from atoll.cli import vm_import_cmd, vm_migrate_cmd
from atoll.cli.common import resolve_kubeconfig
from atoll.client import kubeconfig
from atoll.client.rest import ApiClient

DETACH = b"\x1d"  # Ctrl-]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vm", help="work with VirtualMachines (serial console, live migration, "
                                         "appliance import)")
    vsub = p.add_subparsers(dest="vm_command", metavar="COMMAND", required=True)
    c = vsub.add_parser("console", help="attach to a VM's serial console (Ctrl-] detaches)")
    c.add_argument("name", help="VirtualMachine name")
    c.add_argument("-n", "--namespace", default="", help="namespace (default: the kubeconfig's)")
    c.add_argument("--kubeconfig", default=None, help="credentials for the API server")
    c.add_argument("--log", action="store_true",
                   help="print the console output so far instead of attaching")
    c.add_argument("--tail", type=int, default=None, help="with --log: only the last N lines")
    c.add_argument("--linger", type=float, default=2.0,
                   help="when stdin is not a terminal: seconds of silence to wait for after it "
                        "ends")
    c.set_defaults(func=console)
    vm_migrate_cmd.register(vsub)
    vm_import_cmd.register(vsub)


def console(args: argparse.Namespace) -> int:
    config = kubeconfig.load(resolve_kubeconfig(args.kubeconfig))
    namespace = args.namespace or getattr(config, "namespace", "") or "default"
    return asyncio.run(_console(config, namespace, args))


async def _console(config: kubeconfig.ClientConfig, namespace: str,
                   args: argparse.Namespace) -> int:
    client = ApiClient(config, user_agent="atoll-vm-console")
    path = f"{vm_path(namespace, args.name)}/console"
    try:
        if args.log:
            params = {"tailLines": str(args.tail)} if args.tail is not None else None
            async with client.session.get(path, params=params, headers={"Accept": "*/*"}) as resp:
                if resp.status >= 400:
                    raise SystemExit(f"error: {await _message(resp)}")
                async for chunk in resp.content.iter_any():
                    sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return 0
        try:
            ws = await client.session.ws_connect(path, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as e:
            raise SystemExit(f"error: cannot attach to {namespace}/{args.name}: {e.message}") \
                from None
        async with ws:
            if sys.stdin.isatty():
                print(f"Connected to {namespace}/{args.name}; Ctrl-] detaches.\r",
                      file=sys.stderr)
                with _raw_terminal():
                    await _session(ws, interactive=True, linger=args.linger)
                print("\r", file=sys.stderr)
            else:
                await _session(ws, interactive=False, linger=args.linger)
        return 0
    finally:
        await client.close()


async def _session(ws: aiohttp.ClientWebSocketResponse, *, interactive: bool,
                   linger: float) -> None:
    loop = asyncio.get_running_loop()
    stdin_done = asyncio.Event()
    fd = sys.stdin.fileno()

    def on_input() -> None:
        data = os.read(fd, 4096)
        if not data or (interactive and DETACH in data):
            if data and DETACH in data:
                data = data[:data.index(DETACH)]
                if data:
                    loop.create_task(ws.send_bytes(data))
            loop.remove_reader(fd)
            stdin_done.set()
            return
        loop.create_task(ws.send_bytes(data))

    loop.add_reader(fd, on_input)
    out = sys.stdout.buffer
    try:
        while True:
            timeout = linger if stdin_done.is_set() and not interactive else None
            if stdin_done.is_set() and interactive:
                return
            receive = asyncio.ensure_future(ws.receive())
            waiters = {receive} if stdin_done.is_set() else \
                {receive, asyncio.ensure_future(stdin_done.wait())}
            done, pending = await asyncio.wait(waiters, timeout=timeout,
                                               return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                if p is not receive:
                    p.cancel()
            if receive not in done:
                receive.cancel()
                if not done:  # silence after stdin ended
                    return
                continue
            msg = receive.result()
            if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                out.write(data)
                out.flush()
            else:
                return  # closed: the VM powered off or the agent went away
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(fd)


@contextlib.contextmanager
def _raw_terminal():  # type: ignore[no-untyped-def]
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _message(resp: aiohttp.ClientResponse) -> str:
    try:
        body = await resp.json(content_type=None)
        return str(body.get("message") or body)
    except (ValueError, aiohttp.ClientError):
        return f"HTTP {resp.status}"
