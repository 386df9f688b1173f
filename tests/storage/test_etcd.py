"""The etcd store against the same contract as the embedded one, on a real etcd."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from atoll.storage.etcd import EtcdStore
from atoll.storage.store import (Compacted, KeyExists, KeyNotFound, RevisionMismatch, TxnOp)
from tests.etcd import start_etcd


@pytest.fixture
def etcd(tmp_path: Path):
    e = start_etcd(tmp_path)
    yield e
    e.stop()


@pytest.fixture
async def store(etcd):
    s = EtcdStore(etcd.url)
    await s.start()
    yield s
    await s.close()


async def test_cas_create_update_delete(store: EtcdStore) -> None:
    a = await store.create("/r/a", b"1")
    with pytest.raises(KeyExists):
        await store.create("/r/a", b"x")
    b = await store.update("/r/a", b"2", expected_mod_revision=a.mod_revision)
    assert (b.create_revision, b.value) == (a.create_revision, b"2")
    with pytest.raises(RevisionMismatch) as e:
        await store.update("/r/a", b"3", expected_mod_revision=a.mod_revision)
    assert e.value.actual == b.mod_revision
    with pytest.raises(KeyNotFound):
        await store.update("/r/none", b"3", expected_mod_revision=1)
    gone = await store.delete("/r/a", expected_mod_revision=b.mod_revision)
    assert gone.value == b"2" and gone.mod_revision > b.mod_revision
    assert await store.get("/r/a") is None


async def test_txn_and_races(store: EtcdStore) -> None:
    q = await store.create("/r/q", b"0")
    await store.txn([TxnOp("create", "/r/o1", b"o"), TxnOp("update", "/r/q", b"1",
                                                            q.mod_revision)])
    with pytest.raises(RevisionMismatch):
        await store.txn([TxnOp("create", "/r/o2", b"o"), TxnOp("update", "/r/q", b"2",
                                                                q.mod_revision)])
    assert await store.get("/r/o2") is None
    current = (await store.get("/r/q")).mod_revision
    results = await asyncio.gather(*(store.txn([TxnOp("create", f"/r/race{i}", b"x"),
                                                TxnOp("update", "/r/q", b"n", current)])
                                     for i in range(10)), return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1


async def test_ranges_watch_and_compaction(store: EtcdStore) -> None:
    start = await store.current_revision()
    for i in range(5):
        await store.create(f"/r/k{i}", str(i).encode())
    page = await store.range("/r/", limit=2)
    assert [kv.key for kv in page.items] == ["/r/k0", "/r/k1"] and page.more
    rest = await store.range("/r/", start_after="/r/k1")
    assert [kv.key for kv in rest.items] == ["/r/k2", "/r/k3", "/r/k4"]
    old = await store.range("/r/", revision=start + 2)
    assert len(old.items) == 2

    async def collect() -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        async for events in store.watch("/r/", from_revision=start):
            seen += [(e.type, e.kv.key) for e in events]
            if len(seen) >= 6:
                return seen
        return seen
    watcher = asyncio.create_task(collect())
    deleted = await store.delete("/r/k0")
    seen = await asyncio.wait_for(watcher, 10)
    assert seen[:5] == [("PUT", f"/r/k{i}") for i in range(5)] and seen[5] == ("DELETE", "/r/k0")
    await store.compact(deleted.mod_revision)
    with pytest.raises(Compacted):
        await store.range("/r/", revision=start + 1)
