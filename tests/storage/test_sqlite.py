"""The embedded store against its contract: CAS, history, watch hand-over, compaction, crash."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from atoll.storage.sqlite import SQLiteStore
from atoll.storage.store import (Compacted, FutureRevision, KeyExists, KeyNotFound,
                                 RevisionMismatch, StoreError, TxnOp)


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "state.db", history_keep=1_000_000)
    await s.start()
    yield s
    await s.close()


async def test_create_update_delete_revisions(store: SQLiteStore) -> None:
    start = await store.current_revision()
    a = await store.create("/r/a", b"1")
    assert a.mod_revision == a.create_revision == start + 1
    with pytest.raises(KeyExists):
        await store.create("/r/a", b"x")
    b = await store.update("/r/a", b"2", expected_mod_revision=a.mod_revision)
    assert (b.create_revision, b.mod_revision) == (a.create_revision, start + 2)
    with pytest.raises(RevisionMismatch):
        await store.update("/r/a", b"3", expected_mod_revision=a.mod_revision)
    with pytest.raises(KeyNotFound):
        await store.update("/r/zz", b"3", expected_mod_revision=1)
    gone = await store.delete("/r/a", expected_mod_revision=b.mod_revision)
    assert gone.value == b"2" and gone.mod_revision == start + 3
    assert await store.get("/r/a") is None
    with pytest.raises(KeyNotFound):
        await store.delete("/r/a")
    assert await store.current_revision() == start + 3


async def test_txn_is_all_or_nothing(store: SQLiteStore) -> None:
    quota = await store.create("/r/quota", b"0")
    kvs = await store.txn([TxnOp("create", "/r/obj1", b"a"),
                           TxnOp("update", "/r/quota", b"1", quota.mod_revision)])
    assert [kv.key for kv in kvs] == ["/r/obj1", "/r/quota"]
    before = await store.current_revision()
    # a stale CAS on the quota: the object must not appear either
    with pytest.raises(RevisionMismatch):
        await store.txn([TxnOp("create", "/r/obj2", b"b"),
                         TxnOp("update", "/r/quota", b"2", quota.mod_revision)])
    with pytest.raises(KeyExists):
        await store.txn([TxnOp("update", "/r/quota", b"2", kvs[1].mod_revision),
                         TxnOp("create", "/r/obj1", b"again")])
    assert await store.get("/r/obj2") is None
    assert (await store.get("/r/quota")).value == b"1"
    assert await store.current_revision() == before
    # racing transactions on one key: exactly one wins
    current = (await store.get("/r/quota")).mod_revision
    results = await asyncio.gather(*(store.txn([TxnOp("create", f"/r/race{i}", b"x"),
                                                TxnOp("update", "/r/quota", b"n", current)])
                                     for i in range(10)), return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1


async def test_range_pages_and_past_revisions(store: SQLiteStore) -> None:
    for i in range(10):
        await store.create(f"/r/k{i:02d}", str(i).encode())
    await store.create("/s/other", b"x")
    mid = await store.current_revision()
    await store.delete("/r/k03")
    await store.update("/r/k04", b"new", expected_mod_revision=(await store.get("/r/k04")).mod_revision)
    page = await store.range("/r/", limit=4)
    assert [kv.key for kv in page.items] == ["/r/k00", "/r/k01", "/r/k02", "/r/k04"]
    assert page.more and page.count == 9
    rest = await store.range("/r/", start_after=page.items[-1].key)
    assert len(rest.items) == 5 and not rest.more
    old = await store.range("/r/", revision=mid)
    assert len(old.items) == 10 and old.revision == mid
    assert next(kv.value for kv in old.items if kv.key == "/r/k04") == b"4"
    with pytest.raises(FutureRevision):
        await store.range("/r/", revision=mid + 100)


async def test_watch_replays_then_follows_without_gaps(store: SQLiteStore) -> None:
    first = await store.create("/w/a", b"1")
    await store.create("/x/ignored", b"1")

    async def writer() -> None:
        for i in range(200):
            await store.create(f"/w/n{i:03d}", b"v")

    seen: list[int] = []

    async def reader() -> None:
        async for batch in store.watch("/w/", from_revision=first.mod_revision - 1):
            seen.extend(e.kv.mod_revision for e in batch)
            if len(seen) >= 201:
                return

    task = asyncio.create_task(reader())
    await writer()
    await asyncio.wait_for(task, 30)
    assert seen == sorted(seen) and len(set(seen)) == 201


async def test_compaction_keeps_current_state(store: SQLiteStore) -> None:
    kv = await store.create("/c/a", b"0")
    for i in range(20):
        kv = await store.update("/c/a", str(i).encode(), expected_mod_revision=kv.mod_revision)
    await store.create("/c/b", b"b")
    tmp = await store.create("/c/tmp", b"t")
    await store.delete("/c/tmp")
    rev = await store.current_revision()
    await store.compact(rev - 1)
    with pytest.raises(Compacted):
        await store.range("/c/", revision=rev - 5)
    with pytest.raises(Compacted):
        async for _ in store.watch("/c/", from_revision=tmp.mod_revision - 5):
            pass
    now = await store.range("/c/")
    assert {kv.key: kv.value for kv in now.items} == {"/c/a": b"19", "/c/b": b"b"}
    at = await store.range("/c/", revision=rev - 1)
    assert {kv.key for kv in at.items} == {"/c/a", "/c/b", "/c/tmp"}  # deleted at rev


async def test_reopen_keeps_revision_and_data(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "db")
    await s.start()
    await s.create("/p/a", b"1")
    rev = await s.current_revision()
    await s.close()
    s2 = SQLiteStore(tmp_path / "db")
    await s2.start()
    try:
        assert await s2.current_revision() == rev
        assert (await s2.get("/p/a")).value == b"1"
        kv = await s2.create("/p/b", b"2")
        assert kv.mod_revision == rev + 1
    finally:
        await s2.close()


async def test_second_server_on_same_file_is_refused(store: SQLiteStore) -> None:
    other = SQLiteStore(store.path)
    with pytest.raises(StoreError, match="in use"):
        await other.start()


CHILD = textwrap.dedent("""
    import asyncio, sys
    from atoll.storage.sqlite import SQLiteStore

    async def main():
        s = SQLiteStore(sys.argv[1])
        await s.start()
        async def one(w):
            i = 0
            while True:
                await s.create(f"/k/{w}-{i}", b"x")
                print(f"{w}-{i}", flush=True)
                i += 1
        await asyncio.gather(*(one(w) for w in range(8)))
    asyncio.run(main())
""")


async def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE,
                            text=True, env=env)
    acked: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        acked.append(line.strip())
        if len(acked) >= 300:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acked.extend(line.strip() for line in proc.stdout if line.endswith("\n"))
    s = SQLiteStore(db)
    await s.start()
    try:
        stored = {kv.key for kv in (await s.range("/k/")).items}
    finally:
        await s.close()
    missing = [a for a in acked if f"/k/{a}" not in stored]
    assert not missing
