"""`atoll migrate-store --from sqlite://PATH --to etcd://...`: move the state between stores.

Stop the server first (the embedded store refuses a second opener, so a running
server is detected).  Every key is copied at one revision of the source, in
transactions of up to 100 keys, with a progress bar; then both sides are
compared (count and a digest of every key and value).  Objects keep their
content and uids; resourceVersions are the target's revisions, so clients
re-list after the move, as after an etcd restore.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys

from tqdm import tqdm

from atoll.storage.store import Store, StoreError, TxnOp

PREFIX = "/registry/"
BATCH = 100


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("migrate-store", help="copy a stopped platform's state to another "
                                             "datastore (e.g. SQLite to etcd) and verify it")
    p.add_argument("--from", dest="source", required=True, help="sqlite://PATH or etcd://...")
    p.add_argument("--to", dest="target", required=True, help="etcd://HOST:PORT[,...] or "
                                                              "sqlite://PATH")
    p.add_argument("--force", action="store_true",
                   help="copy even if the target already holds objects (they are overwritten)")
    p.set_defaults(func=run)


def open_url(url: str) -> Store:
    if url.startswith("sqlite://"):
        from pathlib import Path

        from atoll.storage.sqlite import SQLiteStore
        return SQLiteStore(Path(url[len("sqlite://"):]))
    if url.startswith(("etcd://", "etcds://")):
        from atoll.storage.etcd import EtcdStore
        return EtcdStore(url)
    raise ValueError(f"unsupported datastore {url!r} (sqlite://PATH or etcd://HOST:PORT)")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(migrate(args.source, args.target, args.force))


async def _open(url: str, role: str) -> Store:
    store = open_url(url)
    try:
        await store.start()
    except (StoreError, OSError, RuntimeError) as e:
        raise RuntimeError(f"cannot open the {role} {url}: {e} (is a server still using it? "
                           "stop it first)") from None
    return store


async def digest(store: Store, revision: int = 0) -> tuple[int, str]:
    h, count, after = hashlib.sha256(), 0, ""
    while True:
        page = await store.range(PREFIX, start_after=after, limit=1000, revision=revision)
        for kv in page.items:
            h.update(kv.key.encode() + b"\0" + kv.value + b"\0")
            count += 1
        if not page.items or not page.more:
            return count, h.hexdigest()
        after = page.items[-1].key


async def migrate(source_url: str, target_url: str, force: bool) -> int:
    if source_url == target_url:
        raise ValueError("--from and --to are the same store")
    source = await _open(source_url, "source")
    try:
        target = await _open(target_url, "target")
    except Exception:
        await source.close()
        raise
    try:
        existing = await target.range(PREFIX, limit=1)
        if existing.items and not force:
            raise RuntimeError(f"{target_url} already holds objects; --force overwrites them")
        revision = await source.current_revision()
        total, _ = await digest(source, revision)
        copied, after = 0, ""
        with tqdm(total=total, unit="obj", desc="copying", file=sys.stderr) as bar:
            while True:
                page = await source.range(PREFIX, start_after=after, limit=BATCH,
                                          revision=revision)
                if not page.items:
                    break
                ops = []
                for kv in page.items:
                    current = await target.get(kv.key) if force else None
                    ops.append(TxnOp("update", kv.key, kv.value, current.mod_revision)
                               if current else TxnOp("create", kv.key, kv.value))
                await target.txn(ops)
                copied += len(ops)
                bar.update(len(ops))
                after = page.items[-1].key
                if not page.more:
                    break
        src = await digest(source, revision)
        dst = await digest(target)
        if src != dst:
            raise RuntimeError(f"verification failed: source has {src[0]} objects "
                               f"({src[1][:12]}), target {dst[0]} ({dst[1][:12]})")
        print(f"copied {copied} objects from {source_url} to {target_url}; verified "
              f"(sha256 {src[1][:16]}). Start the servers with --datastore {target_url}")
        return 0
    finally:
        await source.close()
        await target.close()
