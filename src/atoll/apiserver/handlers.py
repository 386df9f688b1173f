"""HTTP handlers for resource requests: parse, call ``ObjectService``, render.

One entry point, ``ResourceHandler.handle``, dispatches by method, by whether
a name is present and by subresource, the way kube-apiserver's installer wires
its REST verbs.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import orjson
from aiohttp import web

from atoll.api import errors, managedfields, patch as patching, printers, resources, selectors
from atoll.api.kinds import ResourceType
from atoll.api.timestamps import rfc3339
from atoll.apiserver import (conversion, http, listoptions, scale, strategy, subresources,
                             watch)
from atoll.apiserver.admission import noderestriction
from atoll.apiserver.objects import ObjectService, WriteOptions, check_type_meta, conflict
from atoll.apiserver.registry import Registry
from atoll.apiserver.routing import ResourcePath
from atoll.storage.cacher import CachedObject

PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+json": "apply",
}
UNSUPPORTED_PATCH = ("the body of the request was in an unknown format - accepted media types "
                     "include: application/json-patch+json, application/merge-patch+json, "
                     "application/apply-patch+yaml, application/strategic-merge-patch+json")
#: namespaces the server keeps, as NamespaceLifecycle admission does upstream
IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
CUSTOM_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                      "application/apply-patch+yaml")
#: the verb each HTTP method asks of a named object or its subresource
METHOD_VERBS = {"GET": "get", "PUT": "update", "PATCH": "patch", "POST": "create",
                "DELETE": "delete"}
#: subresources served here; the others (exec, log, ...) belong to the agent proxy
LOCAL_SUBRESOURCES = {"", "status", "scale", "finalize", "binding", "eviction", "approval",
                      "token", "ephemeralcontainers"}


def _multi_version(rt: ResourceType) -> bool:
    """Whether objects of ``rt`` may be stored in another version than the one served."""
    return rt.custom is not None or bool(rt.storage_version)


#: kinds whose registries upstream build with ``ReturnDeletedObject: true``: a DELETE answers
#: with the object as deleted, not a Status (typed clients decode it as the kind)
RETURNS_DELETED_OBJECT = frozenset({"/Pod", "/Namespace", "/Service", "/ServiceAccount",
                                    "/PersistentVolume", "/PersistentVolumeClaim",
                                    "storage.k8s.io/StorageClass"})


class ResourceHandler:
    def __init__(self, svc: ObjectService, registry: Registry,
                 subresource_proxy: Callable[..., Any] | None = None) -> None:
        self.svc = svc
        self.registry = registry
        self.subresource_proxy = subresource_proxy

    async def handle(self, request: web.Request, path: ResourcePath) -> web.StreamResponse:
        rt = self.registry.lookup(path.group, path.version, path.plural)
        if rt is None:
            raise errors.NotFound("the server could not find the requested resource")
        if path.namespace and not rt.namespaced:
            raise errors.NotFound("the server could not find the requested resource")
        if path.subresource and rt.subresource(path.subresource) is None:
            raise errors.NotFound("the server could not find the requested resource")
        if path.subresource and path.subresource not in LOCAL_SUBRESOURCES:
            if self.subresource_proxy is None:
                raise errors.ServiceUnavailable(
                    f"{path.subresource} is served by the host agent, which is not available")
            return await self.subresource_proxy(request, rt, path)
        if path.subresource and METHOD_VERBS.get(request.method) not in \
                rt.subresource(path.subresource).verbs:
            # e.g. PUT or PATCH on pods/binding: upstream serves only what the endpoint declares
            raise errors.MethodNotAllowed("the server does not allow this method on the requested "
                                          "resource")
        if rt.group == "metrics.k8s.io":
            metrics_api = request.app.get("metrics_api")
            if metrics_api is None:
                raise errors.ServiceUnavailable("the resource metrics API is not available")
            return await metrics_api.handle(request, rt, path)
        if rt.group == "tenancy.atoll.dev":
            return await request.app["projects_api"].handle(request, rt, path)
        if rt.verbs == ("create",):
            return await self._review(request, rt, path)
        method = request.method
        if not path.name:
            if rt.namespaced and not path.namespace and method != "GET":
                raise errors.MethodNotAllowed(
                    "the server does not allow this method on the requested resource")
            if method == "GET":
                if http.query_bool(request.query, "watch"):
                    return await watch.serve(request, self.svc, self.registry, rt, path.namespace,
                                             self._matcher(request, rt), self._render_one(request, rt))
                return await self._list(request, rt, path.namespace)
            if method == "POST":
                return await self._create(request, rt, path.namespace)
            if method == "DELETE" and "deletecollection" in rt.verbs:
                return await self._delete_collection(request, rt, path.namespace)
            raise errors.MethodNotAllowed("the server does not allow this method on the requested "
                                          "resource")
        if method == "GET":
            if path.subresource == "scale":
                return http.json_response(scale.get(self.svc, rt, path.namespace, path.name))
            cached = self.svc.get(rt, path.namespace, path.name)
            return self._respond_object(request, rt, cached.obj, raw=cached.raw)
        if method == "PUT":
            return await self._update(request, rt, path)
        if method == "PATCH":
            return await self._patch(request, rt, path)
        if method == "DELETE" and not path.subresource:
            return await self._delete(request, rt, path)
        if method == "POST" and path.subresource in ("binding", "eviction"):
            return await self._bind_or_evict(request, rt, path)
        if method == "POST" and path.subresource == "token":
            return await self._token_request(request, rt, path)
        raise errors.MethodNotAllowed("the server does not allow this method on the requested "
                                      "resource")

    # -- rendering ---------------------------------------------------------------------------
    def _serve_version(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Custom resources are stored in one version and served in each (conversion None);
        built-ins served in several versions convert (``resources.convert``)."""
        if _multi_version(rt) and obj.get("apiVersion") != rt.group_version:
            if rt.custom is None:
                return resources.convert(rt.kind_key, obj, rt.group_version)
            if conversion.converter(rt) is not None:
                return conversion.serve(rt, obj)
            obj = dict(obj)
            obj["apiVersion"] = rt.group_version
        return obj

    @staticmethod
    def _store_version(rt: ResourceType, st: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """A body of the served version ``rt`` as the storage version ``st``."""
        if st is rt:
            return obj
        if rt.custom is None:
            return resources.convert(rt.kind_key, obj, st.group_version)
        if conversion.converter(rt) is not None:
            return conversion.store(rt, st, obj)
        obj["apiVersion"] = st.group_version
        return obj

    def _respond_object(self, request: web.Request, rt: ResourceType, obj: dict[str, Any], *,
                        raw: bytes | None = None, status: int = 200,
                        warnings: list[str] | None = None) -> web.Response:
        headers = http.warning_headers(self._warnings(rt, warnings))
        if http.wants_table(request):
            table = self._table(request, rt, [obj], obj["metadata"].get("resourceVersion", ""))
            return http.json_response(table, status, headers)
        if http.wants_partial_metadata(request):
            return http.json_response({"kind": "PartialObjectMetadata",
                                       "apiVersion": "meta.k8s.io/v1",
                                       "metadata": obj.get("metadata", {})}, status, headers)
        if raw is not None and (not _multi_version(rt) or
                                obj.get("apiVersion") == rt.group_version):
            return http.raw_json_response(raw, status, headers)
        return http.json_response(self._serve_version(rt, obj), status, headers)

    def _warnings(self, rt: ResourceType, warnings: list[str] | None) -> list[str]:
        out = list(warnings or [])
        if rt.custom is not None and rt.custom.deprecation_warning:
            out.append(rt.custom.deprecation_warning)
        return out

    def _table(self, request: web.Request, rt: ResourceType, objs: list[dict[str, Any]],
               resource_version: str, continue_token: str = "",
               remaining: int | None = None) -> dict[str, Any]:
        include = request.query.get("includeObject", "Metadata")
        if include not in ("Metadata", "Object", "None"):
            raise errors.BadRequest(f'includeObject: unsupported value "{include}"')
        objs = [self._serve_version(rt, o) for o in objs]
        now = time.time()
        if rt.custom is not None:
            cols = rt.custom.printer_columns
            return printers.table(rt.kind_key, objs, now, include_object=include,
                                  columns=printers.crd_columns(cols),
                                  cells_fn=lambda o, n: printers.crd_cells(cols, o, n),
                                  resource_version=resource_version,
                                  continue_token=continue_token, remaining=remaining)
        return printers.table(rt.kind_key, objs, now, include_object=include,
                              resource_version=resource_version, continue_token=continue_token,
                              remaining=remaining)

    def _render_one(self, request: web.Request, rt: ResourceType) -> Callable[[dict[str, Any], bytes], bytes]:
        """How a watch encodes each object: raw JSON, or a one-row Table for ``kubectl get -w``."""
        if http.wants_table(request):
            first = [True]

            def as_table(obj: dict[str, Any], raw: bytes) -> bytes:
                table = self._table(request, rt, [obj], obj["metadata"].get("resourceVersion", ""))
                if not first[0]:
                    table["columnDefinitions"] = []
                first[0] = False
                return orjson.dumps(table)
            return as_table
        if http.wants_partial_metadata(request):
            return lambda obj, raw: orjson.dumps({"kind": "PartialObjectMetadata",
                                                  "apiVersion": "meta.k8s.io/v1",
                                                  "metadata": obj.get("metadata", {})})
        if _multi_version(rt):
            gv = rt.group_version

            def convert(obj: dict[str, Any], raw: bytes) -> bytes:
                if obj.get("apiVersion") == gv:
                    return raw
                return orjson.dumps(self._serve_version(rt, obj))
            return convert
        return watch.raw_render

    # -- list --------------------------------------------------------------------------------
    def _matcher(self, request: web.Request, rt: ResourceType) -> Callable[[dict[str, Any]], bool] | None:
        q = request.query
        label_text = q.get("labelSelector", "")
        field_text = q.get("fieldSelector", "")
        label_sel = selectors.parse_label_selector(label_text) if label_text else None
        field_sel = selectors.parse_field_selector(field_text) if field_text else None
        if field_sel is not None:
            if rt.custom is not None:
                supported = {"metadata.name", "metadata.namespace"} | {
                    p.lstrip(".") for p in rt.custom.selectable_fields}
            else:
                supported = selectors.supported_fields(rt.kind_key)
            for f in field_sel.fields:
                if f not in supported:
                    raise errors.BadRequest(f'field label not supported: {f}')
        if label_sel is None and field_sel is None:
            return None
        # selectable fields are the served version's paths; metadata is the same in each
        converted = conversion.converter(rt) is not None and field_sel is not None and any(
            not f.startswith("metadata.") for f in field_sel.fields)

        def matches(obj: dict[str, Any]) -> bool:
            if label_sel is not None and not label_sel.matches(
                    (obj.get("metadata") or {}).get("labels") or {}):
                return False
            if field_sel is not None:
                if rt.custom is not None:
                    fields = selectors.custom_field_set(
                        self._serve_version(rt, obj) if converted else obj,
                        rt.custom.selectable_fields)
                else:
                    fields = selectors.field_set(rt.kind_key, obj)
                if not field_sel.matches(fields):
                    return False
            return True
        return matches

    async def _list(self, request: web.Request, rt: ResourceType, namespace: str) -> web.Response:
        q = request.query
        limit = http.query_int(q, "limit", 0, minimum=0) or 0
        listoptions.check_list(q)
        rvm = q.get("resourceVersionMatch", "")
        rv = q.get("resourceVersion", "")
        result = await self.svc.list(rt, namespace, matches=self._matcher(request, rt),
                                     limit=limit, continue_token=q.get("continue", ""),
                                     resource_version=rv, resource_version_match=rvm)
        headers = http.warning_headers(self._warnings(rt, None))
        if http.wants_table(request):
            table = self._table(request, rt, [c.obj for c in result.items],
                                result.resource_version, result.continue_token, result.remaining)
            return http.json_response(table, headers=headers)
        meta: dict[str, Any] = {"resourceVersion": result.resource_version}
        if result.continue_token:
            meta["continue"] = result.continue_token
            if result.remaining is not None:
                meta["remainingItemCount"] = result.remaining
        head = orjson.dumps({"kind": rt.list_kind, "apiVersion": rt.group_version,
                             "metadata": meta})
        if http.wants_partial_metadata(request):
            items = b",".join(orjson.dumps({"kind": "PartialObjectMetadata",
                                            "apiVersion": "meta.k8s.io/v1",
                                            "metadata": c.obj.get("metadata", {})})
                              for c in result.items)
            head = orjson.dumps({"kind": "PartialObjectMetadataList",
                                 "apiVersion": "meta.k8s.io/v1", "metadata": meta})
        elif _multi_version(rt):
            items = b",".join(c.raw if c.obj.get("apiVersion") == rt.group_version
                              else orjson.dumps(self._serve_version(rt, c.obj))
                              for c in result.items)
        else:
            items = b",".join(c.raw for c in result.items)
        body = head[:-1] + b',"items":[' + items + b"]}"
        return http.raw_json_response(body, headers=headers)

    # -- writes ------------------------------------------------------------------------------
    def _write_options(self, request: web.Request) -> WriteOptions:
        q = request.query
        dry = q.getall("dryRun", [])
        for d in dry:
            if d != "All":
                raise errors.BadRequest(f'dryRun: unsupported value "{d}"')
        fv = q.get("fieldValidation", "Warn") or "Warn"
        if fv not in ("Strict", "Warn", "Ignore"):
            raise errors.BadRequest(f'fieldValidation: unsupported value "{fv}", supported values: '
                                    '"Ignore", "Strict", "Warn"')
        manager = q.get("fieldManager", "")
        if len(manager) > 128:
            raise errors.Invalid("fieldManager: Too long: may not be more than 128 bytes")
        if not manager:
            agent = request.headers.get("User-Agent", "")
            manager = agent.split("/")[0].split(" ")[0] if agent else "unknown"
        size = request.content_length
        return WriteOptions(dry_run=bool(dry), field_manager=manager, field_validation=fv,
                            user=request.get("user_name", ""), user_info=request.get("user"),
                            large=size is None or size > http.OFFLOAD_BYTES,
                            api_version=self._request_version(request))

    def _request_version(self, request: web.Request) -> str:
        """The version a converted kind's managedFields entries record: the request's."""
        path = request.get("resource_path")
        rt = self.registry.lookup(path.group, path.version, path.plural) if path else None
        return rt.group_version if rt is not None and conversion.converter(rt) else ""

    async def _body(self, request: web.Request) -> dict[str, Any]:
        data = await http.read_body(request)
        return await http.decode_object_async(data, request.headers.get("Content-Type", ""))

    def _to_storage(self, rt: ResourceType, obj: dict[str, Any], opts: WriteOptions,
                    subresource: str = "") -> tuple[ResourceType, dict[str, Any]]:
        """Check a body against the served version, then address the storage version."""

        check_type_meta(rt, obj)
        st = self.registry.storage_type(rt)
        if st is not rt and conversion.converter(rt) is not None:
            conversion.admit_request(rt, obj, opts, subresource)
        return st, self._store_version(rt, st, obj)

    async def _create(self, request: web.Request, rt: ResourceType, namespace: str) -> web.Response:
        opts = self._write_options(request)
        body = await self._body(request)
        st, body = self._to_storage(rt, body, opts)
        obj = await self.svc.create(st, namespace, body, opts)
        return self._respond_object(request, rt, obj, status=201, warnings=opts.warnings)

    async def _update(self, request: web.Request, rt: ResourceType, path: ResourcePath) -> web.Response:
        opts = self._write_options(request)
        body = await self._body(request)
        if path.subresource == "scale":
            obj = await scale.update(self.svc, rt, path.namespace, path.name, body, opts)
            return http.json_response(obj)
        if path.subresource == "finalize":
            return await self._finalize(request, rt, path, body, opts)
        st, body = self._to_storage(rt, body, opts, path.subresource)
        obj, created = await self.svc.update(st, path.namespace, path.name, body, opts,
                                             subresource=path.subresource)
        return self._respond_object(request, rt, obj, status=201 if created else 200,
                                    warnings=opts.warnings)

    async def _finalize(self, request: web.Request, rt: ResourceType, path: ResourcePath,
                        body: dict[str, Any], opts: WriteOptions) -> web.Response:
        """Namespaces' ``/finalize``: only spec.finalizers changes."""
        finalizers = (body.get("spec") or {}).get("finalizers") or []
        if not isinstance(finalizers, list):
            raise errors.BadRequest("spec.finalizers must be a list")

        def mutate(current: dict[str, Any]) -> dict[str, Any]:
            current.setdefault("spec", {})["finalizers"] = finalizers
            return current
        # NamespaceStrategy keeps spec on ordinary updates; bypass it here.
        obj = await self.svc.guaranteed_update(rt, path.namespace, path.name, mutate, opts,
                                               subresource="finalize")
        return self._respond_object(request, rt, obj)

    async def _patch(self, request: web.Request, rt: ResourceType, path: ResourcePath) -> web.Response:
        opts = self._write_options(request)
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        kind = PATCH_TYPES.get(ctype)
        if kind is None:
            raise errors.UnsupportedMediaType(UNSUPPORTED_PATCH)
        data = await http.read_body(request)
        patch_doc = await http.decode_patch_async(data, ctype)
        if path.subresource == "scale":
            obj = await scale.patch(self.svc, rt, path.namespace, path.name, kind, patch_doc, opts)
            return http.json_response(obj)
        st = self.registry.storage_type(rt)
        if kind == "strategic" and rt.custom is not None:
            raise errors.UnsupportedMediaType(
                "the body of the request was in an unknown format - accepted media types "
                "include: " + ", ".join(CUSTOM_PATCH_TYPES))
        if kind == "apply":
            return await self._apply(request, rt, st, path, patch_doc, opts)
        if kind in ("merge", "strategic") and not isinstance(patch_doc, dict):
            raise errors.BadRequest("the patch must be a JSON object")
        schema = strategy.schema_for(rt) if kind == "strategic" else None
        pinned = bool(kind in ("merge", "strategic") and isinstance(patch_doc, dict)
                      and isinstance(patch_doc.get("metadata"), dict)
                      and patch_doc["metadata"].get("resourceVersion"))

        def mutate(current: dict[str, Any]) -> dict[str, Any]:
            served = self._serve_version(rt, current)
            if kind == "json":
                new = patching.json_patch(served, patch_doc)
            elif kind == "merge":
                new = patching.merge_patch(served, patch_doc)
            else:
                new = patching.strategic_merge_patch(served, patch_doc, schema)
            if not isinstance(new, dict):
                raise errors.BadRequest("the patched object must be a JSON object")
            want_rv = (new.get("metadata") or {}).get("resourceVersion")
            if pinned and want_rv != current["metadata"].get("resourceVersion"):
                raise conflict(rt, path.name)
            if kind == "json" and want_rv and want_rv != current["metadata"].get("resourceVersion"):
                raise conflict(rt, path.name)
            check_type_meta(rt, new)
            if st is not rt and conversion.converter(rt) is not None:
                conversion.admit_request(rt, new, opts, path.subresource)
            return self._store_version(rt, st, new)

        obj = await self.svc.guaranteed_update(st, path.namespace, path.name, mutate, opts,
                                               subresource=path.subresource,
                                               has_precondition=pinned)
        return self._respond_object(request, rt, obj, warnings=opts.warnings)

    async def _apply(self, request: web.Request, rt: ResourceType, st: ResourceType,
                     path: ResourcePath, applied: Any, opts: WriteOptions) -> web.Response:

        if not isinstance(applied, dict):
            raise errors.BadRequest("the apply configuration must be an object")
        if not request.query.get("fieldManager"):
            raise errors.BadRequest("PATCH, application/apply-patch+yaml requires a non-empty "
                                    "fieldManager query parameter")
        force = http.query_bool(request.query, "force")
        meta = applied.get("metadata")
        if not isinstance(meta, dict):
            raise errors.BadRequest("metadata is required")
        if meta.get("name") not in (None, path.name):
            raise errors.BadRequest(f"the name of the object ({meta.get('name')}) does not match "
                                    f"the name on the URL ({path.name})")
        if "managedFields" in meta:
            raise errors.BadRequest("metadata.managedFields must be nil")

        check_type_meta(rt, applied)
        schema = strategy.schema_for(rt)
        ignore_status = rt.has_status and path.subresource != "status"
        key = st.key(path.namespace, path.name)
        if self.svc.cacher.get(key) is None and not path.subresource:
            new = managedfields.apply(None, applied, manager=opts.field_manager, force=force,
                                      schema=schema, api_version=rt.group_version,
                                      now=rfc3339(), ignore_status=ignore_status)
            new.setdefault("metadata", {})["name"] = path.name
            if st is not rt and conversion.converter(rt) is not None:
                conversion.admit_request(rt, new, opts, path.subresource)
            new = self._store_version(rt, st, new)
            managed = new["metadata"].get("managedFields")
            obj = self.svc.prepare_create(st, path.namespace, new, opts)
            if managed:
                obj["metadata"]["managedFields"] = managed
            try:
                obj = await self.svc.finish_create(st, path.namespace, obj, opts)
            except errors.AlreadyExists:
                pass  # lost a race with another creator: fall through to update
            else:
                return self._respond_object(request, rt, obj, status=201, warnings=opts.warnings)

        def mutate(current: dict[str, Any]) -> dict[str, Any]:
            live = self._serve_version(rt, current)
            new = managedfields.apply(live, applied, manager=opts.field_manager, force=force,
                                      schema=schema, api_version=rt.group_version,
                                      now=rfc3339(), ignore_status=ignore_status)
            if st is not rt and conversion.converter(rt) is not None:
                conversion.admit_request(rt, new, opts, path.subresource)
            return self._store_version(rt, st, new)

        obj = await self.svc.guaranteed_update(st, path.namespace, path.name, mutate, opts,
                                               subresource=path.subresource, operation="Apply")
        return self._respond_object(request, rt, obj, warnings=opts.warnings)

    # -- delete ------------------------------------------------------------------------------
    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        data = await http.read_body(request)
        opts: dict[str, Any] = {}
        if data.strip():
            opts = await http.decode_object_async(data, request.headers.get("Content-Type", ""))
        q = request.query
        if "propagationPolicy" in q:
            opts["propagationPolicy"] = q["propagationPolicy"]
        if "gracePeriodSeconds" in q:
            opts["gracePeriodSeconds"] = http.query_int(q, "gracePeriodSeconds")
        if "orphanDependents" in q:
            opts["orphanDependents"] = http.query_bool(q, "orphanDependents")
        if q.getall("dryRun", []):
            opts["dryRun"] = q.getall("dryRun")
        policy = opts.get("propagationPolicy") or ""
        if opts.get("orphanDependents") is True and not policy:
            policy = "Orphan"
        if policy not in ("", "Orphan", "Background", "Foreground"):
            raise errors.BadRequest(f'propagationPolicy: Unsupported value: "{policy}": supported '
                                    'values: "Foreground", "Background", "Orphan"')
        opts["propagationPolicy"] = policy
        grace = opts.get("gracePeriodSeconds")
        if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
            raise errors.BadRequest("gracePeriodSeconds must be an integer")
        pre = opts.get("preconditions")
        if pre is not None and not isinstance(pre, dict):
            raise errors.BadRequest("preconditions must be an object")
        for d in opts.get("dryRun") or []:
            if d != "All":
                raise errors.BadRequest(f'dryRun: unsupported value "{d}"')
        return opts

    async def _delete(self, request: web.Request, rt: ResourceType, path: ResourcePath) -> web.Response:
        options = await self._delete_options(request)
        if rt.kind_key == "/Namespace" and path.name in IMMORTAL_NAMESPACES:
            raise errors.Forbidden(f'namespaces "{path.name}" is forbidden: this namespace may '
                                   "not be deleted", name=path.name, kind="namespaces")
        st = self.registry.storage_type(rt)
        wopts = WriteOptions(dry_run=bool(options.get("dryRun")), user=request.get("user_name", ""),
                             user_info=request.get("user"))  # NodeRestriction judges deletes
        obj, deleted = await self.svc.delete(
            st, path.namespace, path.name, propagation=options["propagationPolicy"],
            grace_seconds=options.get("gracePeriodSeconds"),
            preconditions=options.get("preconditions"), opts=wopts)
        if deleted:
            if rt.custom is not None or rt.kind_key in RETURNS_DELETED_OBJECT:
                return self._respond_object(request, rt, obj)
            return http.json_response({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": path.name, "group": rt.group, "kind": rt.plural,
                            "uid": obj["metadata"].get("uid", "")}})
        return self._respond_object(request, rt, obj, status=202)

    async def _delete_collection(self, request: web.Request, rt: ResourceType,
                                 namespace: str) -> web.Response:
        options = await self._delete_options(request)
        st = self.registry.storage_type(rt)
        matches = self._matcher(request, rt)
        wopts = WriteOptions(dry_run=bool(options.get("dryRun")), user=request.get("user_name", ""),
                             user_info=request.get("user"))  # NodeRestriction judges deletes
        deleted: list[dict[str, Any]] = []
        for cached in self.svc.cacher.list(st.prefix(namespace)):
            if matches is not None and not matches(cached.obj):
                continue
            meta = cached.obj["metadata"]
            try:
                obj, _ = await self.svc.delete(
                    st, meta.get("namespace", ""), meta["name"],
                    propagation=options["propagationPolicy"],
                    grace_seconds=options.get("gracePeriodSeconds"), opts=wopts)
            except errors.NotFound:
                continue
            deleted.append(self._serve_version(rt, obj))
        return http.json_response({"kind": rt.list_kind, "apiVersion": rt.group_version,
                                   "metadata": {"resourceVersion": str(self.svc.cacher.revision)},
                                   "items": deleted})

    # -- pods/binding, pods/eviction, serviceaccounts/token (apiserver.subresources) ----------
    async def _bind_or_evict(self, request: web.Request, rt: ResourceType,
                             path: ResourcePath) -> web.Response:
        body = await self._body(request)
        return await subresources.bind_or_evict(self.svc, rt, path, body,
                                                self._write_options(request))

    async def _token_request(self, request: web.Request, rt: ResourceType,
                             path: ResourcePath) -> web.Response:
        issuer = request.app.get("token_issuer")
        if issuer is None:
            raise errors.ServiceUnavailable("no token issuer is configured")
        sa = self.svc.get(rt, path.namespace, path.name).obj
        body = await self._body(request)
        return subresources.token_request(self.svc, issuer, sa, path, body,
                                          noderestriction.node_name(request.get("user")))

    # -- reviews -----------------------------------------------------------------------------
    async def _review(self, request: web.Request, rt: ResourceType, path: ResourcePath) -> web.Response:
        if request.method != "POST" or path.name:
            raise errors.MethodNotAllowed("the server does not allow this method on the requested "
                                          "resource")
        body = await self._body(request)
        reviewer = request.app.get("token_reviewer" if rt.kind == "TokenReview" else "reviewer")
        if reviewer is None:
            raise errors.ServiceUnavailable("access reviews are not available")
        result = await reviewer(request, rt, path, body)
        return http.json_response(result, status=201)


def object_items(cached: list[CachedObject]) -> list[dict[str, Any]]:
    return [c.obj for c in cached]
