"""Embedded store benchmark: SQLiteStore beside raw SQLite with the same durability.

    .venv/bin/python bench/store.py [--writes 5000]

Raw rows: one fsynced commit per write (what a naive store does) and one commit for all
writes (the ceiling). Store rows: creates from 1 and from 64 concurrent writers (group
commit), then a watch replay and a range over everything written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from atoll.storage.cacher import Cacher  # noqa: E402
from atoll.storage.sqlite import SQLiteStore  # noqa: E402

VALUE = b"x" * 1024


def raw(n: int, per_commit: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(os.path.join(d, "raw.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB)")
        started = time.perf_counter()
        for i in range(0, n, per_commit):
            db.execute("BEGIN")
            for j in range(i, min(n, i + per_commit)):
                db.execute("INSERT INTO kv VALUES (?, ?)", (f"/k/{j:08d}", VALUE))
            db.execute("COMMIT")
        elapsed = time.perf_counter() - started
        db.close()
        return n / elapsed


async def store_run(n: int, writers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        store = SQLiteStore(Path(d) / "state.db", history_keep=10 * n)
        await store.start()
        try:
            per = n // writers

            async def writer(w: int) -> None:
                for i in range(per):
                    await store.create(f"/k/{w:03d}/{i:08d}", VALUE)

            started = time.perf_counter()
            await asyncio.gather(*(writer(w) for w in range(writers)))
            write_rate = per * writers / (time.perf_counter() - started)
            started = time.perf_counter()
            seen = 0
            async for batch in store.watch("/k/", from_revision=1):
                seen += len(batch)
                if seen >= per * writers:
                    break
            replay = seen / (time.perf_counter() - started)
            started = time.perf_counter()
            listed = len((await store.range("/k/")).items)
            list_rate = listed / (time.perf_counter() - started)
            return {"writes": write_rate, "replay": replay, "range": list_rate}
        finally:
            await store.close()


async def startup(objects: int) -> tuple[float, float]:
    """Seconds to reopen a store of ``objects`` ConfigMap-sized objects and load the watch cache."""
    import orjson

    with tempfile.TemporaryDirectory() as d:
        store = SQLiteStore(Path(d) / "state.db")
        await store.start()

        async def writer(w: int) -> None:
            for i in range(w, objects, 64):
                body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                    "name": f"cm-{i}", "namespace": f"ns-{i % 100}", "uid": f"uid-{i}",
                    "labels": {"app": "bench"}}, "data": {"v": "x" * 512}}
                await store.create(f"/registry/core/configmaps/ns-{i % 100}/cm-{i}",
                                   orjson.dumps(body))

        await asyncio.gather(*(writer(w) for w in range(64)))
        await store.close()
        started = time.perf_counter()
        store = SQLiteStore(Path(d) / "state.db")
        await store.start()
        opened = time.perf_counter() - started
        cacher = Cacher(store)
        await cacher.start()
        loaded = time.perf_counter() - started
        assert len(cacher.objects) == objects
        await cacher.close()
        await store.close()
        return opened, loaded


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=5000)
    ap.add_argument("--startup-objects", type=int, default=100_000)
    args = ap.parse_args()
    n = args.writes
    rows = [
        ("raw sqlite, 1 commit/write", raw(min(n, 2000), 1)),
        ("raw sqlite, 1 commit for all", raw(n, n)),
    ]
    one = asyncio.run(store_run(min(n, 2000), 1))
    many = asyncio.run(store_run(n, 64))
    rows += [("SQLiteStore creates, 1 writer", one["writes"]),
             ("SQLiteStore creates, 64 writers", many["writes"]),
             ("SQLiteStore watch replay", many["replay"]),
             ("SQLiteStore range (all keys)", many["range"])]
    print(f"{'operation':<36} {'per second':>12}")
    for name, rate in rows:
        print(f"{name:<36} {rate:>12,.0f}")
    opened, loaded = asyncio.run(startup(args.startup_objects))
    print(f"startup with {args.startup_objects:,} objects: store open {opened:.2f} s, "
          f"watch cache loaded {loaded:.2f} s")


if __name__ == "__main__":
    main()
