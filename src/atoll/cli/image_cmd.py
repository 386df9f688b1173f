"""`atoll image import|list`: the host's local image store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atoll.cli.common import default_data_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("image", help="import and list images in this host's store")
    isub = p.add_subparsers(dest="image_command", metavar="COMMAND", required=True)
    imp = isub.add_parser("import", help="import an OCI image layout (directory or tar) or a "
                                         "`docker save` archive")
    imp.add_argument("file", type=Path)
    imp.add_argument("--name", default="", help="name for the image (when the file has none, "
                                                "or an extra one)")
    imp.add_argument("--data-dir", type=Path, default=None,
                     help="the agent's data dir (default: ~/.atoll/agent)")
    imp.set_defaults(func=run_import)
    ls = isub.add_parser("list", help="images in this host's store")
    ls.add_argument("--data-dir", type=Path, default=None,
                    help="the agent's data dir (default: ~/.atoll/agent)")
    ls.set_defaults(func=run_list)


def _store(data_dir: Path | None):  # type: ignore[no-untyped-def]
    from atoll.agent.images import ImageStore

    return ImageStore((data_dir or default_data_dir() / "agent") / "images")


def run_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from atoll.agent.imageimport import ImageImportError, import_file

    if not args.file.exists():
        print(f"error: {args.file} does not exist", file=sys.stderr)
        return 1
    store = _store(args.data_dir)
    bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="importing",
               file=sys.stderr, disable=None)

    def set_total(n: int) -> None:
        bar.total = n
        bar.refresh()
    try:
        images = import_file(store, args.file, name=args.name, progress_total=set_total,
                             progress=bar.update)
    except ImageImportError as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 1
    bar.close()
    for image in images:
        print(f"imported {image.ref} ({image.id[:19]}, {len(image.layers)} layers)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    images = _store(args.data_dir).list()
    print(f"{'IMAGE':60} {'ID':19} LAYERS")
    for image in images:
        print(f"{image.ref:60} {image.id[:19]:19} {len(image.layers)}")
    return 0
