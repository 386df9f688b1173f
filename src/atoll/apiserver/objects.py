"""Generic object operations: create, read, list, update, patch, delete, as kube's registry does.

This is where the Kubernetes API conventions live: uid, creationTimestamp,
generation, resourceVersion preconditions (409), finalizers and
deletionTimestamp, status subresources, dry runs and field managers.  Kind
specific rules come from each kind's strategy (``atoll.api.resources``, through
``apiserver.strategy``); the HTTP layer only parses
requests and renders results.
"""

from __future__ import annotations

import asyncio
import base64
import random
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from atoll.api import errors
from atoll.api.resources.core_v1 import NAMESPACES
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import WriteOptions
from atoll.api.timestamps import rfc3339
from atoll.api.resources import serviceaddresses
from atoll.apiserver import serviceips, strategy
from atoll.apiserver.admission import Admission
from atoll.apiserver.registry import Registry
from atoll.storage.cacher import CachedObject, Cacher, decode
from atoll.storage.store import (KeyExists, KeyNotFound, RevisionMismatch, Store, Compacted,
                                 FutureRevision, KeyValue, TxnOp)

GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
MAX_OBJECT_BYTES = 1536 * 1024
MAX_UPDATE_RETRIES = 20


def deepcopy(obj: Any) -> Any:
    return orjson.loads(orjson.dumps(obj))


@dataclass
class ListResult:
    items: list[CachedObject]
    resource_version: str
    continue_token: str = ""
    remaining: int | None = None


class ObjectService:
    """The generic object operations; also the ``ObjectReader`` that strategies and admission
    plugins read other objects through (``read``, ``read_list``, ``resource``)."""

    def __init__(self, store: Store, cacher: Cacher, registry: Registry, *,
                 pod_toleration_seconds: int = 300,
                 service_ranges: serviceaddresses.ServiceRanges | None = None) -> None:
        self.store = store
        self.cacher = cacher
        self.registry = registry
        #: DefaultTolerationSeconds admission: how long pods stay on a not-ready node
        self.pod_toleration_seconds = pod_toleration_seconds
        #: where Services' cluster IPs and node ports come from
        self.service_ranges = service_ranges or serviceaddresses.ServiceRanges()
        self.admission = Admission()
        self._quota_locks: dict[str, asyncio.Lock] = {}

    # -- the read-only view (atoll.api.strategy.ObjectReader) ----------------------------------
    def read(self, rt: ResourceType, namespace: str, name: str) -> CachedObject | None:
        return self.cacher.get(rt.key(namespace, name))

    def read_list(self, rt: ResourceType, namespace: str = "") -> list[CachedObject]:
        return self.cacher.list(rt.prefix(namespace))

    def resource(self, group: str, plural: str) -> ResourceType | None:
        return self.registry.lookup_plural(group, plural)

    # -- reads -------------------------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str, name: str) -> CachedObject:
        cached = self.cacher.get(rt.key(namespace, name))
        if cached is None:
            raise not_found(rt, name)
        return cached

    async def list(self, rt: ResourceType, namespace: str, *, matches: Callable[[dict], bool] | None,
                   limit: int = 0, continue_token: str = "", resource_version: str = "",
                   resource_version_match: str = "") -> ListResult:
        prefix = rt.prefix(namespace)
        start_after = ""
        at_revision = 0
        if continue_token:
            at_revision, start_after = decode_continue(continue_token, prefix)
        elif resource_version_match == "Exact":
            at_revision = parse_rv(resource_version)
        elif resource_version and resource_version != "0":
            wanted = parse_rv(resource_version)
            if wanted > self.cacher.revision:
                try:
                    await self.cacher.wait_for(wanted, timeout=3.0)
                except asyncio.TimeoutError:
                    raise errors.Timeout(
                        f"Too large resource version: {wanted}, current: {self.cacher.revision}",
                        retry_after=1) from None
        if at_revision and at_revision != self.cacher.revision:
            return await self._list_from_store(rt, prefix, at_revision, start_after, limit, matches)
        items = self.cacher.list(prefix)
        revision = self.cacher.revision
        if start_after:
            items = [c for c in items if c.key > start_after]
        if matches is not None:
            items = [c for c in items if matches(c.obj)]
        if limit and len(items) > limit:
            page = items[:limit]
            token = encode_continue(revision, page[-1].key, prefix)
            return ListResult(page, str(revision), token, len(items) - limit)
        return ListResult(items, str(revision))

    async def _list_from_store(self, rt: ResourceType, prefix: str, revision: int,
                               start_after: str, limit: int,
                               matches: Callable[[dict], bool] | None) -> ListResult:
        """Serve a page at a past revision from the store's history (continue tokens, Exact)."""
        out: list[CachedObject] = []
        cursor = start_after
        while True:
            try:
                result = await self.store.range(prefix, start_after=cursor,
                                                limit=max(limit, 500) if limit else 0,
                                                revision=revision)
            except Compacted:
                raise errors.Expired(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter, or use the "
                    "continue token in this response to retrieve the remainder of the results. "
                    "Continuing with the provided token results in an inconsistent list - objects "
                    "that were created, modified, or deleted between the time the first chunk was "
                    "returned and now may show up in the list.") from None
            except FutureRevision:
                raise errors.Timeout(f"Too large resource version: {revision}",
                                     retry_after=1) from None
            for kv in result.items:
                obj, raw = decode(kv.value, kv.mod_revision)
                if matches is None or matches(obj):
                    out.append(CachedObject(kv.key, obj, raw, kv.mod_revision))
                    if limit and len(out) > limit:
                        break
            if limit and len(out) > limit:
                page = out[:limit]
                token = encode_continue(revision, page[-1].key, prefix)
                return ListResult(page, str(revision), token, None)
            if not result.more or not result.items:
                return ListResult(out, str(revision))
            cursor = result.items[-1].key

    # -- create ------------------------------------------------------------------------------
    async def create(self, rt: ResourceType, namespace: str, body: dict[str, Any],
                     opts: WriteOptions) -> dict[str, Any]:
        obj = self.prepare_create(rt, namespace, body, opts, track=False)
        await strategy.track_managed_fields_async(rt, None, obj, opts, operation="Update")
        return await self.finish_create(rt, namespace, obj, opts)

    async def finish_create(self, rt: ResourceType, namespace: str, obj: dict[str, Any],
                            opts: WriteOptions) -> dict[str, Any]:
        """Validate and admit a prepared object, then store it with its quota charge."""
        self._check_namespace(rt, namespace)
        strategy.for_type(rt).validate_create(self, rt, obj)
        self.admission.validate_create(self, rt, obj, opts)
        obj = await self.admission.admit_create(self, rt, obj, opts, _options("Create", opts))
        if opts.dry_run:
            obj["metadata"]["resourceVersion"] = ""
            return obj
        return await self._store_new(rt, obj)

    def prepare_create(self, rt: ResourceType, namespace: str, body: dict[str, Any],
                       opts: WriteOptions, *, track: bool = True) -> dict[str, Any]:
        obj = body
        check_type_meta(rt, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.invalid(rt.kind, "", [errors.Cause("FieldValueTypeInvalid",
                                 "Invalid value: must be an object", "metadata")], rt.group)
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and body_ns != namespace:
                raise errors.BadRequest("the namespace of the provided object does not match the "
                                        "namespace sent on the request")
            meta["namespace"] = namespace
        elif meta.get("namespace"):
            meta.pop("namespace")
        if not meta.get("name") and isinstance(meta.get("generateName"), str) and meta["generateName"]:
            meta["name"] = meta["generateName"] + "".join(
                random.choice(GENERATE_ALPHABET) for _ in range(5))
        for server_field in ("uid", "resourceVersion", "deletionTimestamp",
                             "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(server_field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339()
        if rt.generation or rt.custom is not None:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        strategy.decode_check(rt, obj, opts)
        strat = strategy.for_type(rt)
        strat.prepare_create(self, rt, obj, opts)
        self.admission.mutate_create(self, rt, obj, opts)
        strategy.validate_common(self, rt, obj, opts)
        if rt.has_status and rt.custom is not None:
            pass  # custom resources keep status given on create, as upstream
        if track:
            strategy.track_managed_fields(rt, None, obj, opts, operation="Update")
        return obj

    async def _store_new(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        meta.pop("resourceVersion", None)
        raw = encode_for_store(obj)
        key = rt.key(meta.get("namespace", ""), meta["name"])
        claims = serviceips.claims(self, rt, obj)
        charges = self.admission.charges(self, rt, obj)
        if not charges and not claims:
            try:
                kv = await self.store.create(key, raw)
            except KeyExists:
                raise self._exists(rt, meta["name"]) from None
        else:
            # One charge at a time per namespace on this server: racing charges would only
            # lose their compare-and-swap and retry.  Across servers the CAS still decides.
            async with self._quota_locks.setdefault(meta["namespace"], asyncio.Lock()):
                for _ in range(MAX_UPDATE_RETRIES * 5):
                    charges = self.admission.charges(self, rt, obj)
                    try:
                        kv = (await self.store.txn([TxnOp("create", key, raw), *charges,
                                                    *claims]))[0]
                        break
                    except KeyExists as e:
                        if e.args and serviceips.is_address_key(e.args[0]):
                            raise serviceaddresses.already_allocated(
                                obj, e.args[0].rsplit("/", 1)[-1]) from None
                        raise self._exists(rt, meta["name"]) from None
                    except (RevisionMismatch, KeyNotFound):
                        await self._catch_up()  # another server charged: start from there
                else:
                    raise errors.Conflict(f'Operation cannot be fulfilled on {rt.qualified} '
                                          f'"{meta["name"]}": the namespace\'s quota is changing '
                                          "too often, please retry", name=meta["name"],
                                          group=rt.group, kind=rt.plural)
                # the next charge must see this one
                await self.cacher.wait_for(kv.mod_revision)
        await self.cacher.wait_for(kv.mod_revision)
        meta["resourceVersion"] = str(kv.mod_revision)
        return obj

    @staticmethod
    def _exists(rt: ResourceType, name: str) -> errors.AlreadyExists:
        return errors.AlreadyExists(f'{rt.qualified} "{name}" already exists', name=name,
                                    group=rt.group, kind=rt.plural)

    def _check_namespace(self, rt: ResourceType, namespace: str) -> None:
        if not rt.namespaced:
            return
        ns = self.read(NAMESPACES, "", namespace)
        if ns is None:
            raise errors.NotFound(f'namespaces "{namespace}" not found', name=namespace,
                                  kind="namespaces")
        if ns.obj.get("metadata", {}).get("deletionTimestamp") or \
                ns.obj.get("status", {}).get("phase") == "Terminating":
            raise errors.Forbidden(
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated", name=namespace, kind="namespaces",
                causes=[errors.Cause("NamespaceTerminating",
                                     f"namespace {namespace} is being terminated",
                                     "metadata.namespace")])

    # -- update ------------------------------------------------------------------------------
    async def update(self, rt: ResourceType, namespace: str, name: str, body: dict[str, Any],
                     opts: WriteOptions, *, subresource: str = "") -> tuple[dict[str, Any], bool]:
        """PUT: replace the object (or its status); creates when absent for kinds that allow it."""
        check_type_meta(rt, body)
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            raise errors.BadRequest("metadata is required and must be an object")
        if meta.get("name") and meta["name"] != name:
            raise errors.BadRequest(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})")
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise errors.BadRequest("the namespace of the provided object does not match the "
                                    "namespace sent on the request")
        expected = meta.get("resourceVersion") or ""
        key = rt.key(namespace, name)
        if self.cacher.get(key) is None and not subresource and strategy.for_type(rt).allow_create_on_update:
            if expected:
                raise not_found(rt, name)
            meta.setdefault("name", name)
            return await self.create(rt, namespace, body, opts), True

        def mutate(current: dict[str, Any]) -> dict[str, Any]:
            if expected and expected != current["metadata"].get("resourceVersion"):
                raise conflict(rt, name)
            new = body
            new.setdefault("metadata", {})["name"] = name
            return new

        return await self.guaranteed_update(rt, namespace, name, mutate, opts,
                                            subresource=subresource, has_precondition=bool(expected)), False

    async def guaranteed_update(self, rt: ResourceType, namespace: str, name: str,
                                mutate: Callable[[dict[str, Any]], dict[str, Any]],
                                opts: WriteOptions, *, subresource: str = "",
                                has_precondition: bool = False,
                                operation: str = "Update") -> dict[str, Any]:
        """Read-modify-CAS loop (kube's GuaranteedUpdate): retry on races unless the caller
        pinned a resourceVersion, in which case a race is the client's 409."""
        key = rt.key(namespace, name)
        strat = strategy.for_type(rt)
        for _ in range(MAX_UPDATE_RETRIES):
            cached = self.cacher.get(key)
            if cached is None:
                raise not_found(rt, name)
            current = orjson.loads(cached.raw)
            new = mutate(orjson.loads(cached.raw))
            if not isinstance(new, dict):
                raise errors.BadRequest("the object must be a JSON object")
            check_type_meta(rt, new)
            strategy.prepare_update(self, rt, current, new, opts, subresource=subresource)
            strat.validate_update(self, rt, current, new)
            self.admission.validate_update(self, rt, current, new, opts, subresource)
            new = await self.admission.admit_update(self, rt, current, new, opts, subresource,
                                                    _options("Update", opts))
            await strategy.track_managed_fields_async(rt, current, new, opts,
                                                      operation=operation, subresource=subresource)
            if semantically_equal(current, new):
                return current
            charges = self.admission.charges_update(self, rt, current, new)
            if opts.dry_run:
                return new
            meta = new["metadata"]
            if strat.ready_to_delete(new):
                try:
                    kv = await self._commit(TxnOp("delete", key, expected=cached.mod_revision),
                                            serviceips.releases(self, rt, current))
                except RevisionMismatch:
                    if has_precondition:
                        raise conflict(rt, name) from None
                    await self._catch_up()
                    continue
                except KeyNotFound:
                    raise not_found(rt, name) from None
                await self.cacher.wait_for(kv.mod_revision)
                meta["resourceVersion"] = str(kv.mod_revision)
                return new
            meta.pop("resourceVersion", None)
            try:
                kv = await self._commit(
                    TxnOp("update", key, encode_for_store(new), expected=cached.mod_revision),
                    [*serviceips.claims(self, rt, new, current),
                     *serviceips.releases(self, rt, current, new), *charges], new)
            except RevisionMismatch:
                if has_precondition:
                    raise conflict(rt, name) from None
                await self._catch_up()
                continue
            except KeyNotFound:
                raise not_found(rt, name) from None
            await self.cacher.wait_for(kv.mod_revision)
            meta["resourceVersion"] = str(kv.mod_revision)
            return new
        raise errors.Conflict(f'Operation cannot be fulfilled on {rt.qualified} "{name}": too many '
                              "concurrent updates, please retry", name=name, group=rt.group,
                              kind=rt.plural)

    async def _commit(self, op: TxnOp, alongside: list[TxnOp],
                      obj: dict[str, Any] | None = None) -> KeyValue:
        """One write of an object, with the writes that must land with it (a Service's
        IPAddresses); a race on those reads as a race on the object (retry on a fresh look),
        an address someone else holds as upstream's 422."""
        if not alongside:
            if op.kind == "delete":
                return await self.store.delete(op.key, expected_mod_revision=op.expected)
            return await self.store.update(op.key, op.value, expected_mod_revision=op.expected)
        try:
            return (await self.store.txn([op, *alongside]))[0]
        except KeyExists as e:
            if obj is not None and e.args and serviceips.is_address_key(e.args[0]):
                raise serviceaddresses.already_allocated(obj, e.args[0].rsplit("/", 1)[-1]) \
                    from None
            raise
        except (KeyNotFound, RevisionMismatch) as e:
            if getattr(e, "key", e.args[0] if e.args else op.key) != op.key:
                raise RevisionMismatch(op.key, op.expected, 0) from None
            raise

    async def _catch_up(self) -> None:
        rev = await self.store.current_revision()
        await self.cacher.wait_for(rev)

    # -- delete ------------------------------------------------------------------------------
    async def delete(self, rt: ResourceType, namespace: str, name: str, *,
                     propagation: str = "", grace_seconds: int | None = None,
                     preconditions: dict[str, Any] | None = None,
                     opts: WriteOptions) -> tuple[dict[str, Any], bool]:
        """Returns (object, deleted_now). With finalizers the object stays, marked for deletion."""
        key = rt.key(namespace, name)
        strat = strategy.for_type(rt)
        for _ in range(MAX_UPDATE_RETRIES):
            cached = self.cacher.get(key)
            if cached is None:
                raise not_found(rt, name)
            obj = orjson.loads(cached.raw)
            meta = obj["metadata"]
            if preconditions:
                if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
                    raise errors.Conflict(
                        f'Operation cannot be fulfilled on {rt.qualified} "{name}": Precondition '
                        f'failed: UID in precondition: {preconditions["uid"]}, UID in object meta: '
                        f'{meta.get("uid")}', name=name, group=rt.group, kind=rt.plural)
                if preconditions.get("resourceVersion") and \
                        preconditions["resourceVersion"] != meta.get("resourceVersion"):
                    raise errors.Conflict(
                        f'Operation cannot be fulfilled on {rt.qualified} "{name}": Precondition '
                        f'failed: ResourceVersion in precondition: '
                        f'{preconditions["resourceVersion"]}, ResourceVersion in object meta: '
                        f'{meta.get("resourceVersion")}', name=name, group=rt.group,
                        kind=rt.plural)
            self.admission.validate_delete(self, rt, obj, opts)
            delete_options = _options("Delete", opts)
            if propagation:
                delete_options["propagationPolicy"] = propagation
            if grace_seconds is not None:
                delete_options["gracePeriodSeconds"] = grace_seconds
            await self.admission.admit_delete(self, rt, obj, opts, delete_options)
            finalizers = list(meta.get("finalizers") or [])
            policy = propagation or strat.default_propagation
            marked = bool(meta.get("deletionTimestamp"))
            if policy == "Orphan" and "orphan" not in finalizers and not marked:
                finalizers.append("orphan")
            elif policy == "Foreground" and "foregroundDeletion" not in finalizers and not marked:
                finalizers.append("foregroundDeletion")
            extra = strat.deletion_finalizers(rt, obj)
            for f in extra:
                if f not in finalizers and not marked:
                    finalizers.append(f)
            if finalizers or strat.graceful_delete(rt, obj, grace_seconds):
                if marked and finalizers == list(meta.get("finalizers") or []):
                    return obj, False  # already being deleted: idempotent
                meta["finalizers"] = finalizers
                if not marked:
                    meta["deletionTimestamp"] = rfc3339()
                    meta["deletionGracePeriodSeconds"] = strat.deletion_grace(obj, grace_seconds)
                strat.on_delete_marked(rt, obj)
                if opts.dry_run:
                    return obj, False
                meta.pop("resourceVersion", None)
                try:
                    kv = await self.store.update(key, encode_for_store(obj),
                                                 expected_mod_revision=cached.mod_revision)
                except RevisionMismatch:
                    await self._catch_up()
                    continue
                except KeyNotFound:
                    raise not_found(rt, name) from None
                await self.cacher.wait_for(kv.mod_revision)
                meta["resourceVersion"] = str(kv.mod_revision)
                return obj, False
            if opts.dry_run:
                return obj, True
            try:
                kv = await self._commit(TxnOp("delete", key, expected=cached.mod_revision),
                                        serviceips.releases(self, rt, obj))
            except RevisionMismatch:
                await self._catch_up()
                continue
            except KeyNotFound:
                raise not_found(rt, name) from None
            await self.cacher.wait_for(kv.mod_revision)
            meta["resourceVersion"] = str(kv.mod_revision)
            return obj, True
        raise errors.Conflict(f'Operation cannot be fulfilled on {rt.qualified} "{name}": too many '
                              "concurrent updates", name=name, group=rt.group, kind=rt.plural)


# -- helpers ---------------------------------------------------------------------------------
def _options(kind: str, opts: WriteOptions) -> dict[str, Any]:
    """The request's Create/Update/DeleteOptions, as admission webhooks receive them."""
    out: dict[str, Any] = {"kind": f"{kind}Options", "apiVersion": "meta.k8s.io/v1"}
    if opts.dry_run:
        out["dryRun"] = ["All"]
    if opts.field_manager and kind != "Delete":
        out["fieldManager"] = opts.field_manager
    return out


def check_type_meta(rt: ResourceType, obj: dict[str, Any]) -> None:
    """apiVersion/kind must name this resource; absent ones are inferred (kopf posts events so)."""
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if api_version is None or api_version == "":
        obj["apiVersion"] = rt.group_version
    elif not isinstance(api_version, str):
        raise errors.BadRequest("apiVersion must be a string")
    elif api_version != rt.group_version:
        raise errors.BadRequest(
            f"the API version in the data ({api_version}) does not match the expected API version "
            f"({rt.group_version})")
    if kind is None or kind == "":
        obj["kind"] = rt.kind
    elif kind != rt.kind:
        raise errors.BadRequest(
            f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")


def semantically_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal ignoring resourceVersion (and managedFields timestamps)."""
    def strip(o: dict[str, Any]) -> dict[str, Any]:
        o = dict(o)
        meta = dict(o.get("metadata") or {})
        meta.pop("resourceVersion", None)
        mf = meta.pop("managedFields", None)
        if mf:
            meta["managedFields"] = [{k: v for k, v in e.items() if k != "time"}
                                     for e in mf if isinstance(e, dict)]
        o["metadata"] = meta
        return o
    return strip(a) == strip(b)


def encode_for_store(obj: dict[str, Any]) -> bytes:
    raw = orjson.dumps(obj)
    if len(raw) > MAX_OBJECT_BYTES:  # what etcd takes in one request (--max-request-bytes)
        raise errors.RequestEntityTooLarge(f"Request entity too large: the object is {len(raw)} "
                                           f"bytes, limit is {MAX_OBJECT_BYTES}")
    return raw


def not_found(rt: ResourceType, name: str) -> errors.NotFound:
    return errors.NotFound(f'{rt.qualified} "{name}" not found', name=name, group=rt.group,
                           kind=rt.plural)


def conflict(rt: ResourceType, name: str) -> errors.Conflict:
    return errors.Conflict(
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        name=name, group=rt.group, kind=rt.plural)


def parse_rv(value: str) -> int:
    try:
        rv = int(value)
        if rv < 0:
            raise ValueError
        return rv
    except (TypeError, ValueError):
        raise errors.BadRequest(f'invalid resource version "{value}"') from None


def encode_continue(revision: int, last_key: str, prefix: str) -> str:
    token = orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": last_key[len(prefix):]})
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


def decode_continue(token: str, prefix: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded))
        rv = int(data["rv"])
        start = data["start"]
        if not isinstance(start, str) or rv <= 0 or ".." in start:
            raise ValueError
    except Exception:
        raise errors.BadRequest("continue key is not valid: illegal base64 data") from None
    return rv, prefix + start
