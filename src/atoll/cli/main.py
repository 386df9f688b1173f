"""The ``atoll`` command line: one subcommand per module in this package."""

from __future__ import annotations

import argparse
import logging
import sys

from atoll.cli import (agent_cmd, controllers_cmd, dev_cmd, host_cmd, image_cmd,
                       kubeconfig_cmd, migrate_cmd, namespace_cmd, server_cmd, up_cmd, user_cmd,
                       vm_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atoll",
        description="Atoll: Kubernetes-native virtual machines, pods and containers on plain hosts.")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log verbosity")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up_cmd.register(sub)
    server_cmd.register(sub)
    controllers_cmd.register(sub)
    agent_cmd.register(sub)
    image_cmd.register(sub)
    kubeconfig_cmd.register(sub)
    vm_cmd.register(sub)
    host_cmd.register(sub)
    user_cmd.register(sub)
    namespace_cmd.register(sub)
    dev_cmd.register(sub)
    migrate_cmd.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise
    except Exception as exc:  # print what a person can act on, not a traceback
        if args.log_level == "DEBUG":
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
