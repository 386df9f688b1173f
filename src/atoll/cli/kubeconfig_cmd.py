"""`atoll kubeconfig`: print the admin kubeconfig of a data dir."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atoll.cli.common import admin_kubeconfig_path, default_data_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kubeconfig", help="print the admin kubeconfig")
    p.add_argument("--data-dir", type=Path, default=None, help="state directory (default: ~/.atoll)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = admin_kubeconfig_path(args.data_dir or default_data_dir())
    if not path.exists():
        print(f"error: {path} does not exist; start the server first (atoll up --data-dir "
              f"{path.parent})", file=sys.stderr)
        return 1
    sys.stdout.write(path.read_text())
    return 0
