"""The Store protocol on etcd v3, for several API servers over one replicated state.

Spoken over etcd's gRPC-JSON gateway (``/v3/kv/*``, ``/v3/watch``; keys and
values base64) with aiohttp, so no gRPC stack is needed.  The semantics are the
embedded store's: creates and updates are transactions comparing
``create_revision``/``mod_revision`` (compare-and-swap), reads can be at a past
revision (410 once compacted), a watch replays from a revision then follows,
and ``txn`` is one etcd transaction (all its writes share one revision, as
etcd does).  Several endpoints are tried in turn when one cannot be reached;
a request that may have reached etcd is not retried blindly.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any, AsyncIterator

import aiohttp
import orjson

from atoll.storage.store import (Compacted, Event, FutureRevision, KeyExists, KeyNotFound,
                                 KeyValue, RangeResult, RevisionMismatch, Store, StoreClosed,
                                 StoreError, TxnOp, prefix_end)

log = logging.getLogger(__name__)
COMPACT_EVERY = 300.0  # seconds, as kube-apiserver compacts its etcd


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(_unb64(raw.get("key")).decode(), _unb64(raw.get("value")),
                    int(raw.get("create_revision", 0)), int(raw.get("mod_revision", 0)))


def parse_url(url: str) -> list[str]:
    """``etcd://h1:2379,h2:2379`` (or ``etcds://`` for TLS) → gateway base URLs."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("etcd", "etcds") or not rest:
        raise ValueError(f"not an etcd URL: {url!r} (etcd://HOST:PORT[,HOST:PORT...])")
    http = "https" if scheme == "etcds" else "http"
    return [f"{http}://{h.strip().rstrip('/')}" for h in rest.split(",") if h.strip()]


class EtcdStore(Store):
    def __init__(self, url: str, *, history_keep: int = 100_000,
                 ssl_context: Any = None) -> None:
        self.endpoints = parse_url(url)
        self.history_keep = max(history_keep, 1)
        self.ssl = ssl_context
        self._current = 0
        self._session: aiohttp.ClientSession | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        tls = self.ssl if self.ssl is not None else \
            (None if self.endpoints[0].startswith("https") else False)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=256),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # etcd may still be electing a leader
            try:
                rev = await self.current_revision()
                break
            except StoreError as e:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                log.info("waiting for etcd: %s", e)
                await asyncio.sleep(0.5)
        log.info("etcd store at %s, revision %d", ",".join(self.endpoints), rev)
        self._compactor = asyncio.create_task(self._compact_loop(), name="etcd-compactor")

    async def close(self) -> None:
        self._closed = True
        if self._compactor is not None:
            self._compactor.cancel()
        if self._session is not None:
            await self._session.close()

    # -- transport -------------------------------------------------------------------------------
    async def _call(self, path: str, body: dict[str, Any], timeout: float = 30.0) -> Any:
        if self._closed or self._session is None:
            raise StoreClosed("store is closed")
        last: Exception | None = None
        for _ in range(len(self.endpoints)):
            base = self.endpoints[self._current]
            try:
                async with self._session.post(base + path, data=orjson.dumps(body),
                                              timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                    data = orjson.loads(await r.read() or b"{}")
                    if r.status >= 400 or "error" in data:
                        raise _error(data)
                    return data
            except aiohttp.ClientConnectorError as e:  # never reached etcd: the next one
                last = e
                self._current = (self._current + 1) % len(self.endpoints)
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                raise StoreError(f"etcd request failed: {e}") from None
        raise StoreError(f"no etcd endpoint answers: {last}")

    # -- reads -----------------------------------------------------------------------------------
    async def current_revision(self) -> int:
        data = await self._call("/v3/kv/range", {"key": _b64("\0"), "limit": 1,
                                                 "count_only": True})
        return int(data["header"]["revision"])

    async def get(self, key: str) -> KeyValue | None:
        data = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs = data.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    async def range(self, prefix: str, *, start_after: str = "", limit: int = 0,
                    revision: int = 0) -> RangeResult:
        start = max(prefix, start_after + "\0") if start_after else prefix
        body: dict[str, Any] = {"key": _b64(start), "range_end": _b64(prefix_end(prefix))}
        if limit:
            body["limit"] = limit
        if revision:
            body["revision"] = revision
        data = await self._call("/v3/kv/range", body)
        items = [_kv(kv) for kv in data.get("kvs") or []]
        return RangeResult(items, int(revision or data["header"]["revision"]),
                           bool(data.get("more")), int(data.get("count", len(items))))

    # -- writes ----------------------------------------------------------------------------------
    async def create(self, key: str, value: bytes) -> KeyValue:
        return (await self.txn([TxnOp("create", key, value)]))[0]

    async def update(self, key: str, value: bytes, *, expected_mod_revision: int) -> KeyValue:
        return (await self.txn([TxnOp("update", key, value, expected_mod_revision)]))[0]

    async def delete(self, key: str, *, expected_mod_revision: int = 0) -> KeyValue:
        return (await self.txn([TxnOp("delete", key, b"", expected_mod_revision)]))[0]

    async def txn(self, ops: list[TxnOp]) -> list[KeyValue]:
        compare, success = [], []
        for op in ops:
            k = _b64(op.key)
            if op.kind == "create":
                compare.append({"key": k, "target": "CREATE", "result": "EQUAL",
                                "create_revision": "0"})
                success.append({"request_put": {"key": k, "value": _b64(op.value)}})
                continue
            if op.expected:
                compare.append({"key": k, "target": "MOD", "result": "EQUAL",
                                "mod_revision": str(op.expected)})
            else:
                compare.append({"key": k, "target": "CREATE", "result": "GREATER",
                                "create_revision": "0"})
            if op.kind == "update":
                success.append({"request_put": {"key": k, "value": _b64(op.value),
                                                "prev_kv": True}})
            else:
                success.append({"request_delete_range": {"key": k, "prev_kv": True}})
        data = await self._call("/v3/kv/txn", {"compare": compare, "success": success})
        if not data.get("succeeded"):
            await self._explain_failure(ops)
        revision = int(data["header"]["revision"])
        out = []
        for op, resp in zip(ops, data.get("responses") or []):
            if op.kind == "create":
                out.append(KeyValue(op.key, op.value, revision, revision))
            elif op.kind == "update":
                prev = _kv((resp.get("response_put") or {}).get("prev_kv") or {})
                out.append(KeyValue(op.key, op.value, prev.create_revision, revision))
            else:
                prevs = (resp.get("response_delete_range") or {}).get("prev_kvs") or [{}]
                prev = _kv(prevs[0])
                out.append(KeyValue(op.key, prev.value, prev.create_revision, revision))
        return out

    async def _explain_failure(self, ops: list[TxnOp]) -> None:
        """Which compare failed, as the StoreError the embedded store would raise."""
        for op in ops:
            current = await self.get(op.key)
            if op.kind == "create":
                if current is not None:
                    raise KeyExists(op.key)
            elif current is None:
                raise KeyNotFound(op.key)
            elif op.expected and current.mod_revision != op.expected:
                raise RevisionMismatch(op.key, op.expected, current.mod_revision)
        raise RevisionMismatch(ops[0].key if ops else "", 0, 0)  # changed meanwhile

    async def compact(self, revision: int) -> None:
        try:
            await self._call("/v3/kv/compaction", {"revision": str(revision)})
        except Compacted:
            pass

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(COMPACT_EVERY)
            try:
                target = await self.current_revision() - self.history_keep
                if target > 1:
                    await self.compact(target)
            except StoreError as e:
                log.warning("etcd compaction: %s", e)

    # -- watch -----------------------------------------------------------------------------------
    async def watch(self, prefix: str, *, from_revision: int) -> AsyncIterator[list[Event]]:
        """Replay after ``from_revision``, then follow; a broken stream is resumed after the
        last revision seen, on the next endpoint if need be."""
        last = from_revision
        while True:
            if self._closed or self._session is None:
                raise StoreClosed("store is closed")
            base = self.endpoints[self._current]
            request = {"create_request": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                                          "start_revision": str(last + 1), "prev_kv": True}}
            try:
                async with self._session.post(base + "/v3/watch", data=orjson.dumps(request),
                                              timeout=aiohttp.ClientTimeout(total=None)) as r:
                    buffer = b""
                    async for chunk in r.content.iter_any():
                        buffer += chunk
                        while b"\n" in buffer:
                            line, buffer = buffer.split(b"\n", 1)
                            events = self._events(line, prefix)
                            if events:
                                last = events[-1].kv.mod_revision
                                yield events
            except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError,
                    aiohttp.ClientPayloadError):
                self._current = (self._current + 1) % len(self.endpoints)
                await asyncio.sleep(0.2)
            except aiohttp.ClientError as e:
                raise StoreError(f"etcd watch failed: {e}") from None

    @staticmethod
    def _events(line: bytes, prefix: str) -> list[Event]:
        if not line.strip():
            return []
        msg = orjson.loads(line)
        if "error" in msg:
            raise _error(msg["error"])
        result = msg.get("result") or {}
        if int(result.get("compact_revision", 0) or 0):
            raise Compacted(0, int(result["compact_revision"]))
        out = []
        for ev in result.get("events") or []:
            kv = _kv(ev.get("kv") or {})
            prev = _kv(ev["prev_kv"]) if ev.get("prev_kv") else None
            if ev.get("type") == "DELETE":
                value = prev.value if prev else b""
                created = prev.create_revision if prev else 0
                out.append(Event("DELETE", KeyValue(kv.key, value, created, kv.mod_revision),
                                 prev))
            else:
                out.append(Event("PUT", kv, prev))
        return out


def _error(data: dict[str, Any]) -> StoreError:
    message = str(data.get("message") or data.get("error") or data)
    if "compacted" in message:
        return Compacted(0, 0)
    if "future revision" in message:
        return FutureRevision(message)
    return StoreError(f"etcd: {message}")
