"""The contract every datastore behind the API server keeps (SQLite now, etcd later).

It is etcd's model, reduced to what the API server needs: one global revision
counter bumped by every write, each key remembering the revision that created
and last modified it, compare-and-swap on that modification revision, ranges
at the current or a past revision, and a watch that replays history from a
revision and then follows live writes.  History older than the compaction
point is gone: asking for it raises ``Compacted`` (the API's 410 Gone).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import AsyncIterator


class StoreError(Exception):
    """Base class of every store failure callers may handle."""


class KeyExists(StoreError):
    """create() of a key that is present."""


class KeyNotFound(StoreError):
    """update() or delete() of a key that is absent."""


class RevisionMismatch(StoreError):
    """Compare-and-swap lost: the key was modified since the caller read it."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"{key}: expected mod revision {expected}, found {actual}")
        self.key, self.expected, self.actual = key, expected, actual


class Compacted(StoreError):
    """The requested revision is older than the oldest history kept."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(f"revision {requested} has been compacted (oldest kept: {compacted})")
        self.requested, self.compacted = requested, compacted


class FutureRevision(StoreError):
    """The requested revision has not been written yet."""


class WatchOverflow(StoreError):
    """A watcher fell too far behind; it must re-list and watch again."""


class StoreClosed(StoreError):
    """The store is shutting down."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """One committed write. For DELETE, ``kv`` holds the last value at the delete's revision."""

    type: str  # "PUT" | "DELETE"
    kv: KeyValue
    prev: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class TxnOp:
    """One write of a transaction: ``create``, ``update`` (CAS on ``expected``) or ``delete``."""

    kind: str
    key: str
    value: bytes = b""
    expected: int = 0


@dataclass(frozen=True, slots=True)
class RangeResult:
    items: list[KeyValue]
    revision: int  # the revision the range was read at
    more: bool  # more keys after the last item
    count: int  # keys matched in total (including those beyond the limit)


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    if not prefix:
        return "\U0010ffff"
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Store(abc.ABC):
    """A revisioned key-value store with compare-and-swap and watch."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def current_revision(self) -> int: ...

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    async def range(self, prefix: str, *, start_after: str = "", limit: int = 0,
                    revision: int = 0) -> RangeResult:
        """Keys under ``prefix`` (sorted) after ``start_after``; ``revision`` 0 means now."""

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> KeyValue: ...

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, *, expected_mod_revision: int) -> KeyValue: ...

    @abc.abstractmethod
    async def delete(self, key: str, *, expected_mod_revision: int = 0) -> KeyValue:
        """Delete; the result carries the old value and the delete's revision."""

    @abc.abstractmethod
    async def txn(self, ops: list[TxnOp]) -> list[KeyValue]:
        """All of ``ops`` or none: the first one that may not run raises its StoreError and
        nothing is written.  Each write gets its own revision, in order."""

    @abc.abstractmethod
    def watch(self, prefix: str, *, from_revision: int) -> AsyncIterator[list[Event]]:
        """Batches of events with revision > ``from_revision``, in order, forever."""

    @abc.abstractmethod
    async def compact(self, revision: int) -> None: ...
