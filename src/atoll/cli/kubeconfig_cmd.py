"""`atoll kubeconfig`: print the admin kubeconfig of a data dir, or a host agent's.

``--node NAME`` prints credentials for the agent of host NAME
(``CN=system:node:NAME, O=system:nodes``): RBAC's ``system:node`` role and
NodeRestriction admission then let it change only its own Node, Lease, pods
and VMs.  Run it on the server's machine and copy the file to the host.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atoll.cli.common import admin_kubeconfig_path, default_data_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kubeconfig", help="print the admin kubeconfig")
    p.add_argument("--data-dir", type=Path, default=None, help="state directory (default: ~/.atoll)")
    p.add_argument("--node", default="", metavar="NAME",
                   help="credentials for the host agent of node NAME instead of the admin's")
    p.set_defaults(func=run)


def node_kubeconfig(data_dir: Path, node: str) -> str:
    """A kubeconfig for host ``node``'s agent, signed by the data dir's CA (kept in pki/)."""
    from atoll.apiserver import pki
    from atoll.client import kubeconfig

    if not node or "/" in node or node != node.strip():
        raise ValueError(f"invalid node name {node!r}")
    pki_dir = data_dir / "pki"
    ca = pki.ensure_ca(pki_dir)
    pair = pki.ensure_client(pki_dir, ca, f"node-{node}", f"system:node:{node}",
                             ("system:nodes",))
    server = kubeconfig.load(admin_kubeconfig_path(data_dir)).server
    return pki.kubeconfig(server=server, ca_pem=ca.cert_pem(), user=f"system:node:{node}",
                          cert_pem=pair.cert_pem(), key_pem=pair.key_pem())


def run(args: argparse.Namespace) -> int:
    path = admin_kubeconfig_path(args.data_dir or default_data_dir())
    if not path.exists():
        print(f"error: {path} does not exist; start the server first (atoll up --data-dir "
              f"{path.parent})", file=sys.stderr)
        return 1
    if args.node:
        sys.stdout.write(node_kubeconfig(args.data_dir or default_data_dir(), args.node))
        return 0
    sys.stdout.write(path.read_text())
    return 0
