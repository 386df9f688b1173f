"""The embedded datastore: etcd's revisioned key-value model on one SQLite file.

Layout:

* ``log`` holds every write as a row keyed by its revision (a PUT carries the
  new value, a DELETE the value it removed), so a watch replays history with a
  primary-key range scan and a list at a past revision picks, per key, the
  newest row at or below that revision.
* ``kv`` maps each live key to the revisions that created and last modified
  it; its value is the ``log`` row at ``mod_revision``.  Current reads join the
  two and never scan history.
* ``meta`` keeps the current and the compacted revision.

All writes go through one thread.  It takes every operation queued while the
previous commit was syncing and commits them in one transaction (group
commit); WAL with ``synchronous=FULL`` means an operation is acknowledged only
once it is on disk.  Reads run on a small pool of reader connections, each
seeing the last committed snapshot.  Watchers in this process are fed straight
from the writer, in revision order, after each commit.

Compaction keeps, below the compaction revision, only each key's newest row
(and drops rows of deleted keys), exactly what is needed to answer ranges at
any revision at or above it.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from atoll.storage.store import (Compacted, Event, FutureRevision, KeyExists, KeyNotFound,
                                 KeyValue, RangeResult, RevisionMismatch, Store, StoreClosed,
                                 StoreError, TxnOp, WatchOverflow, prefix_end)

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    revision        INTEGER PRIMARY KEY,
    key             TEXT    NOT NULL,
    deleted         INTEGER NOT NULL,
    value           BLOB    NOT NULL,
    create_revision INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_key ON log (key, revision);
CREATE TABLE IF NOT EXISTS kv (
    key             TEXT PRIMARY KEY,
    create_revision INTEGER NOT NULL,
    mod_revision    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""

MAX_BATCH = 512  # operations committed together at most
COMPACT_EVERY = 1000  # writes between automatic compactions
COMPACT_CHUNK = 5000  # revisions compacted per transaction, so writers are not starved
WATCH_QUEUE = 4096  # batches a watcher may fall behind before it must re-list
READ_PAGE = 1000  # history rows read per replay step


@dataclass(slots=True)
class _Op:
    kind: str  # create | update | delete | compact | txn
    key: str
    value: bytes
    expected: int
    done: Callable[[Any], None]
    parts: tuple[TxnOp, ...] = ()


@dataclass(slots=True, eq=False)
class _Subscriber:
    prefix: str
    end: str
    queue: asyncio.Queue[list[Event] | None] = field(
        default_factory=lambda: asyncio.Queue(WATCH_QUEUE))
    overflowed: bool = False

    def offer(self, events: list[Event]) -> None:
        mine = [e for e in events if self.prefix <= e.kv.key < self.end]
        if not mine or self.overflowed:
            return
        try:
            self.queue.put_nowait(mine)
        except asyncio.QueueFull:
            self.overflowed = True
            self.queue.get_nowait()
            self.queue.put_nowait(None)


class SQLiteStore(Store):
    def __init__(self, path: Path, *, history_keep: int = 100_000) -> None:
        self.path = Path(path)
        self.history_keep = max(history_keep, 1)
        self._ops: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sqlite-read")
        self._local = threading.local()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[_Subscriber] = set()
        self._revision = 1
        self._compacted = 1
        self._writes_since_compact = 0
        self._lock_fd: int | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        conn = self._connect()
        conn.executescript(SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('revision', 1), ('compacted', 1)")
        self._revision = _meta(conn, "revision")
        self._compacted = _meta(conn, "compacted")
        self._writer = threading.Thread(target=self._write_loop, args=(conn,),
                                        name="sqlite-writer", daemon=True)
        self._writer.start()
        log.info("sqlite store %s at revision %d (compacted %d)", self.path, self._revision,
                 self._compacted)

    def _take_lock(self) -> None:
        """One server per data file: a second one would fork the revision sequence."""
        fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(f"{self.path} is in use by another atoll server") from None
        self._lock_fd = fd

    def _connect(self, readonly: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA cache_size=-65536")
        if readonly:
            conn.execute("PRAGMA query_only=1")
        return conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._ops.put(None)
            await asyncio.to_thread(self._writer.join)
        for sub in list(self._subscribers):
            sub.overflowed = True
            if sub.queue.full():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)
        self._readers.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- reads -------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(readonly=True)
            self._local.conn = conn
        return conn

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise StoreClosed("store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._reader(), *args))

    async def current_revision(self) -> int:
        return self._revision

    async def get(self, key: str) -> KeyValue | None:
        return await self._read(_get, key)

    async def range(self, prefix: str, *, start_after: str = "", limit: int = 0,
                    revision: int = 0) -> RangeResult:
        return await self._read(_range, prefix, start_after, max(limit, 0), revision)

    # -- writes ------------------------------------------------------------------------------
    async def _submit(self, kind: str, key: str, value: bytes = b"", expected: int = 0,
                      parts: tuple[TxnOp, ...] = ()) -> Any:
        if self._closed or self._loop is None:
            raise StoreClosed("store is closed")
        loop = self._loop
        fut: asyncio.Future[Any] = loop.create_future()

        def done(result: Any) -> None:
            if not fut.done():
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

        self._ops.put(_Op(kind, key, value, expected, done, parts))
        return await fut

    async def create(self, key: str, value: bytes) -> KeyValue:
        return await self._submit("create", key, bytes(value))

    async def update(self, key: str, value: bytes, *, expected_mod_revision: int) -> KeyValue:
        return await self._submit("update", key, bytes(value), expected_mod_revision)

    async def delete(self, key: str, *, expected_mod_revision: int = 0) -> KeyValue:
        return await self._submit("delete", key, b"", expected_mod_revision)

    async def compact(self, revision: int) -> None:
        await self._submit("compact", "", b"", revision)

    async def txn(self, ops: list[TxnOp]) -> list[KeyValue]:
        """Run through the writer like any write, as one savepoint."""
        return await self._submit("txn", "", parts=tuple(ops))

    # -- watch -------------------------------------------------------------------------------
    async def watch(self, prefix: str, *, from_revision: int) -> AsyncIterator[list[Event]]:
        """Replay history after ``from_revision``, then follow live commits.

        The subscription is registered before history is read, so a commit
        racing the replay shows up in both; revisions already yielded are
        skipped, which makes the hand-over exact.
        """
        if self._closed:
            raise StoreClosed("store is closed")
        sub = _Subscriber(prefix, prefix_end(prefix))
        self._subscribers.add(sub)
        try:
            last = from_revision
            while True:
                events = await self._read(_history, prefix, last, READ_PAGE)
                if not events:
                    break
                last = events[-1].kv.mod_revision
                yield events
            while True:
                batch = await sub.queue.get()
                if batch is None:
                    if self._closed:
                        raise StoreClosed("store is closed")
                    raise WatchOverflow(f"watch on {prefix} fell behind")
                fresh = [e for e in batch if e.kv.mod_revision > last]
                if fresh:
                    last = fresh[-1].kv.mod_revision
                    yield fresh
        finally:
            self._subscribers.discard(sub)

    def _publish(self, events: list[Event]) -> None:
        for sub in list(self._subscribers):
            sub.offer(events)

    # -- the writer thread -------------------------------------------------------------------
    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                op = self._ops.get()
                if op is None:
                    break
                batch = [op]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        nxt = self._ops.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                self._commit(conn, batch)
                if self._writes_since_compact >= COMPACT_EVERY:
                    self._writes_since_compact = 0
                    target = self._revision - self.history_keep
                    if target > self._compacted:
                        self._compact(conn, target)
                if stop:
                    break
        finally:
            self._fail_pending()
            conn.close()

    def _fail_pending(self) -> None:
        while True:
            try:
                op = self._ops.get_nowait()
            except queue.Empty:
                return
            if op is not None:
                self._deliver(op.done, StoreClosed("store is closed"))

    def _deliver(self, done: Callable[[Any], None], result: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(done, result)
        except RuntimeError:  # loop already closed: nobody is waiting any more
            pass

    def _commit(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        results: list[Any] = []
        events: list[Event] = []
        revision = self._revision
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                if op.kind == "compact":
                    results.append(None)
                    continue
                if op.kind == "txn":
                    applied = _apply_txn(conn, op, revision)
                    if isinstance(applied, StoreError):
                        results.append(applied)
                        continue
                    revision += len(applied)
                    events.extend(applied)
                    results.append([e.kv for e in applied])
                    continue
                try:
                    event = _apply(conn, op, revision + 1)
                except StoreError as err:
                    results.append(err)
                    continue
                revision += 1
                events.append(event)
                results.append(event.kv)
            if events:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            log.error("store commit failed: %s", err)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            failure = StoreError(f"datastore write failed: {err}")
            for op in batch:
                self._deliver(op.done, failure)
            return
        self._revision = revision
        self._writes_since_compact += len(events)
        if events:
            self._deliver(self._publish, events)
        for op, result in zip(batch, results):
            if op.kind != "compact":
                self._deliver(op.done, result)
        for op in batch:
            if op.kind == "compact":
                try:
                    self._compact(conn, op.expected)
                except StoreError as err:
                    self._deliver(op.done, err)
                else:
                    self._deliver(op.done, None)

    def _compact(self, conn: sqlite3.Connection, target: int) -> None:
        """Drop history below ``target`` in chunks, keeping each live key's newest row."""
        target = min(target, self._revision)
        if target <= self._compacted:
            return
        start = self._compacted
        while start < target:
            end = min(start + COMPACT_CHUNK, target)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    """DELETE FROM log WHERE revision < :end AND (
                           deleted = 1 OR EXISTS (
                               SELECT 1 FROM log AS newer WHERE newer.key = log.key
                               AND newer.revision > log.revision AND newer.revision <= :end))""",
                    {"end": end})
                conn.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (end,))
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                conn.execute("ROLLBACK")
                raise StoreError(f"compaction failed: {err}") from err
            self._compacted = end
            start = end
        log.debug("compacted store history below revision %d", target)


# -- SQL helpers (run on reader or writer threads) ---------------------------------------------
def _meta(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 1


def _current(conn: sqlite3.Connection, key: str) -> tuple[int, int, bytes] | None:
    row = conn.execute(
        "SELECT kv.create_revision, kv.mod_revision, log.value FROM kv "
        "JOIN log ON log.revision = kv.mod_revision WHERE kv.key = ?", (key,)).fetchone()
    return (row[0], row[1], row[2]) if row else None


def _apply(conn: sqlite3.Connection, op: _Op, revision: int) -> Event:
    """One operation inside the writer's transaction; raises StoreError if it may not run."""
    cur = _current(conn, op.key)
    if op.kind == "create":
        if cur is not None:
            raise KeyExists(op.key)
        conn.execute("INSERT INTO log VALUES (?, ?, 0, ?, ?)", (revision, op.key, op.value,
                                                               revision))
        conn.execute("INSERT INTO kv VALUES (?, ?, ?)", (op.key, revision, revision))
        return Event("PUT", KeyValue(op.key, op.value, revision, revision))
    if cur is None:
        raise KeyNotFound(op.key)
    create_rev, mod_rev, old_value = cur
    if op.expected and op.expected != mod_rev:
        raise RevisionMismatch(op.key, op.expected, mod_rev)
    prev = KeyValue(op.key, old_value, create_rev, mod_rev)
    if op.kind == "update":
        conn.execute("INSERT INTO log VALUES (?, ?, 0, ?, ?)", (revision, op.key, op.value,
                                                               create_rev))
        conn.execute("UPDATE kv SET mod_revision = ? WHERE key = ?", (revision, op.key))
        return Event("PUT", KeyValue(op.key, op.value, create_rev, revision), prev)
    conn.execute("INSERT INTO log VALUES (?, ?, 1, ?, ?)", (revision, op.key, old_value,
                                                           create_rev))
    conn.execute("DELETE FROM kv WHERE key = ?", (op.key,))
    return Event("DELETE", KeyValue(op.key, old_value, create_rev, revision), prev)


def _apply_txn(conn: sqlite3.Connection, op: _Op, revision: int) -> list[Event] | StoreError:
    """The parts of a transaction inside a savepoint: all of them, or none."""
    conn.execute("SAVEPOINT txn")
    events: list[Event] = []
    try:
        for part in op.parts:
            events.append(_apply(conn, _Op(part.kind, part.key, part.value, part.expected,
                                           op.done), revision + len(events) + 1))
    except StoreError as err:
        conn.execute("ROLLBACK TO txn")
        conn.execute("RELEASE txn")
        return err
    conn.execute("RELEASE txn")
    return events


def _get(conn: sqlite3.Connection, key: str) -> KeyValue | None:
    cur = _current(conn, key)
    if cur is None:
        return None
    return KeyValue(key, cur[2], cur[0], cur[1])


def _range(conn: sqlite3.Connection, prefix: str, start_after: str, limit: int,
           revision: int) -> RangeResult:
    lo = max(prefix, start_after + "\x00") if start_after else prefix
    hi = prefix_end(prefix)
    conn.execute("BEGIN")  # one snapshot for the revision check and the rows
    try:
        current = _meta(conn, "revision")
        compacted = _meta(conn, "compacted")
        if revision and revision > current:
            raise FutureRevision(f"revision {revision} is newer than {current}")
        if revision and revision < compacted:
            raise Compacted(revision, compacted)
        fetch = limit + 1 if limit else -1
        if not revision or revision == current:
            rows = conn.execute(
                "SELECT kv.key, log.value, kv.create_revision, kv.mod_revision FROM kv "
                "JOIN log ON log.revision = kv.mod_revision "
                "WHERE kv.key >= ? AND kv.key < ? ORDER BY kv.key LIMIT ?",
                (lo, hi, fetch)).fetchall()
            items = [KeyValue(k, v, c, m) for k, v, c, m in rows]
            at = current
        else:
            items = _range_at(conn, lo, hi, fetch, revision)
            at = revision
        more = bool(limit) and len(items) > limit
        if more:
            items = items[:limit]
            count = len(items) + conn.execute(
                "SELECT count(*) FROM kv WHERE key > ? AND key < ?",
                (items[-1].key, hi)).fetchone()[0]
        else:
            count = len(items)
        return RangeResult(items, at, more, count)
    finally:
        conn.execute("COMMIT")


def _range_at(conn: sqlite3.Connection, lo: str, hi: str, fetch: int,
              revision: int) -> list[KeyValue]:
    """Each key's newest row at or below ``revision``; keys deleted by then are skipped."""
    items: list[KeyValue] = []
    cursor = lo
    while fetch < 0 or len(items) < fetch:
        rows = conn.execute(
            "SELECT key, max(revision), deleted, value, create_revision FROM log "
            "WHERE key >= ? AND key < ? AND revision <= ? GROUP BY key ORDER BY key LIMIT ?",
            (cursor, hi, revision, READ_PAGE)).fetchall()
        for key, mod, deleted, value, create in rows:
            if not deleted:
                items.append(KeyValue(key, value, create, mod))
        if len(rows) < READ_PAGE:
            break
        cursor = rows[-1][0] + "\x00"
    return items[:fetch] if fetch >= 0 else items


def _history(conn: sqlite3.Connection, prefix: str, after: int, limit: int) -> list[Event]:
    conn.execute("BEGIN")
    try:
        compacted = _meta(conn, "compacted")
        if after < compacted - 1:
            raise Compacted(after + 1, compacted)
        rows = conn.execute(
            "SELECT revision, key, deleted, value, create_revision FROM log "
            "WHERE revision > ? AND key >= ? AND key < ? ORDER BY revision LIMIT ?",
            (after, prefix, prefix_end(prefix), limit)).fetchall()
    finally:
        conn.execute("COMMIT")
    return [Event("DELETE" if deleted else "PUT", KeyValue(key, value, create, rev))
            for rev, key, deleted, value, create in rows]
