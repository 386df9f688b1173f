"""OpenAPI v3 documents per group-version, built from upstream's schemas and from CRDs.

kubectl reads them to decide it may ask the server to validate
(``fieldValidation`` on each PATCH operation), to compute strategic merge
patches for built-in kinds (merge keys on the schemas) and for ``explain``.
Documents are built on first request and cached until the registry changes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from atoll.api import crdschema, schemas
from atoll.api.kinds import ResourceType
from atoll.apiserver import openapi_proto
from atoll.apiserver.registry import Registry

META = "io.k8s.apimachinery.pkg.apis.meta.v1."
PATCH_CONTENT_BUILTIN = ("application/json-patch+json", "application/merge-patch+json",
                         "application/strategic-merge-patch+json", "application/apply-patch+yaml")
PATCH_CONTENT_CUSTOM = ("application/json-patch+json", "application/merge-patch+json",
                        "application/apply-patch+yaml")


def _convert(node: Any) -> Any:
    """kubernetes-validate's JSON-schema dialect to OpenAPI 3 (refs and nullable types)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                out[k] = "#/components/schemas/" + v.rsplit("/", 1)[-1]
            elif k == "type" and isinstance(v, list):
                types = [t for t in v if t != "null"]
                if len(types) == 1:
                    out[k] = types[0]
                elif types:
                    out[k] = types[0]
            else:
                out[k] = _convert(v)
        return out
    if isinstance(node, list):
        return [_convert(v) for v in node]
    return node


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref.rsplit("/", 1)[-1])
        for v in node.values():
            _refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _refs(v, found)


def _closure(names: set[str]) -> dict[str, Any]:
    defs = schemas.definitions()
    out: dict[str, Any] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in out or name not in defs:
            continue
        out[name] = _convert(defs[name])
        found: set[str] = set()
        _refs(defs[name], found)
        todo.extend(found - out.keys())
    return out


class OpenAPI:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._docs: dict[str, bytes] = {}
        self._generation = -1

    def _refresh(self) -> None:
        if self._generation != self.registry.generation:
            self._docs = {}
            self._generation = self.registry.generation

    def _gv_paths(self) -> list[tuple[str, str, str]]:
        out = []
        for group, versions in self.registry.groups().items():
            for v in versions:
                key = f"api/{v}" if not group else f"apis/{group}/{v}"
                out.append((key, group, v))
        return out

    def index(self) -> dict[str, Any]:
        self._refresh()
        paths = {}
        for key, group, version in self._gv_paths():
            digest = hashlib.sha512(self.document(group, version)).hexdigest()[:32].upper()
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
        return {"paths": paths}

    def document(self, group: str, version: str) -> bytes:
        self._refresh()
        key = f"{group}/{version}"
        doc = self._docs.get(key)
        if doc is None:
            doc = orjson.dumps(self._build(group, version))
            self._docs[key] = doc
        return doc

    def _build(self, group: str, version: str) -> dict[str, Any]:
        components: dict[str, Any] = {}
        paths: dict[str, Any] = {}
        wanted: set[str] = {META + "Status", META + "DeleteOptions", META + "ObjectMeta",
                            META + "ListMeta", META + "APIResourceList", META + "Patch"}
        for rt in self.registry.resources(group, version):
            if rt.custom is not None:
                comp = crdschema.component_name(rt.group, rt.version, rt.kind)
                crd = self._crd_doc(rt)
                if crd is not None:
                    schema, list_schema = crdschema.openapi_v3_for_crd_version(crd, rt.version)
                    components[comp] = schema
                    components[comp + "List"] = list_schema
                kind_ref = comp
            else:
                name = schemas.definition_name_for(rt.group, rt.version, rt.kind)
                if name is None:
                    continue
                wanted.add(name)
                list_name = schemas.definition_name_for(rt.group, rt.version, rt.list_kind)
                if list_name:
                    wanted.add(list_name)
                kind_ref = name
            self._paths_for(rt, kind_ref, paths)
        components.update({k: v for k, v in _closure(wanted).items() if k not in components})
        return {
            "openapi": "3.0.0",
            "info": {"title": "Atoll", "version": "v1.37.0"},
            "paths": paths,
            "components": {"schemas": components},
        }

    def swagger_v2(self) -> bytes:
        """One Swagger 2.0 document over every group-version, derived from the v3 documents."""
        self._refresh()
        doc = self._docs.get("v2")
        if doc is None:
            definitions: dict[str, Any] = {}
            paths: dict[str, Any] = {}
            for _, group, version in self._gv_paths():
                v3 = orjson.loads(self.document(group, version))
                definitions.update(v3["components"]["schemas"])
                for path, item in v3["paths"].items():
                    paths[path] = _v2_path_item(item)
            doc = orjson.dumps(_v2_refs({
                "swagger": "2.0",
                "info": {"title": "Atoll", "version": "v1.37.0"},
                "paths": paths,
                "definitions": definitions,
            }))
            self._docs["v2"] = doc
        return doc

    def swagger_v2_protobuf(self) -> bytes:
        """The same document as gnostic's protobuf (kubectl's form for validating Lists)."""
        self._refresh()
        doc = self._docs.get("v2pb")
        if doc is None:
            doc = openapi_proto.encode_document(orjson.loads(self.swagger_v2()))
            self._docs["v2pb"] = doc
        return doc

    def _crd_doc(self, rt: ResourceType) -> dict[str, Any] | None:
        return self.registry_crd(rt.custom.crd_name)

    #: set by the app: a function returning a CRD object by name from the watch cache
    registry_crd: Any = staticmethod(lambda name: None)

    def _paths_for(self, rt: ResourceType, kind_ref: str, paths: dict[str, Any]) -> None:
        base = f"/api/{rt.version}" if not rt.group else f"/apis/{rt.group}/{rt.version}"
        if rt.namespaced:
            collection = f"{base}/namespaces/{{namespace}}/{rt.plural}"
        else:
            collection = f"{base}/{rt.plural}"
        item = f"{collection}/{{name}}"
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        ref = {"$ref": f"#/components/schemas/{kind_ref}"}
        ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
        params = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
        if rt.namespaced:
            params.append({"name": "namespace", "in": "path", "required": True,
                           "schema": {"type": "string"}})
        write_params = [
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
            {"name": "fieldValidation", "in": "query",
             "schema": {"type": "string", "uniqueItems": True}},
        ]
        if "create" in rt.verbs and rt.verbs == ("create",):
            paths[f"{base}/{rt.plural}"] = {"post": {
                "operationId": f"create{rt.kind}", "x-kubernetes-action": "post",
                "x-kubernetes-group-version-kind": gvk, "parameters": write_params,
                "requestBody": {"content": {"*/*": {"schema": ref}}}, "responses": ok}}
            return
        content_types = PATCH_CONTENT_CUSTOM if rt.custom is not None else PATCH_CONTENT_BUILTIN
        patch_schema = {"$ref": f"#/components/schemas/{META}Patch"}
        paths[item] = {
            "parameters": params,
            "get": {"operationId": f"read{rt.kind}", "x-kubernetes-action": "get",
                    "x-kubernetes-group-version-kind": gvk, "responses": ok},
            "put": {"operationId": f"replace{rt.kind}", "x-kubernetes-action": "put",
                    "x-kubernetes-group-version-kind": gvk, "parameters": write_params,
                    "requestBody": {"content": {"*/*": {"schema": ref}}}, "responses": ok},
            "patch": {"operationId": f"patch{rt.kind}", "x-kubernetes-action": "patch",
                      "x-kubernetes-group-version-kind": gvk,
                      "parameters": write_params + [{"name": "force", "in": "query",
                                                     "schema": {"type": "boolean"}}],
                      "requestBody": {"content": {ct: {"schema": patch_schema}
                                                  for ct in content_types}},
                      "responses": ok},
            "delete": {"operationId": f"delete{rt.kind}", "x-kubernetes-action": "delete",
                       "x-kubernetes-group-version-kind": gvk, "responses": ok},
        }
        coll_params = params[1:]
        paths[collection] = {
            "parameters": coll_params,
            "get": {"operationId": f"list{rt.kind}", "x-kubernetes-action": "list",
                    "x-kubernetes-group-version-kind": gvk, "responses": ok},
            "post": {"operationId": f"create{rt.kind}", "x-kubernetes-action": "post",
                     "x-kubernetes-group-version-kind": gvk, "parameters": write_params,
                     "requestBody": {"content": {"*/*": {"schema": ref}}}, "responses": ok},
        }
        for sub in rt.subresources:
            if sub.name in ("status", "scale"):
                paths[f"{item}/{sub.name}"] = {
                    "parameters": params,
                    "patch": {"operationId": f"patch{rt.kind}{sub.name.title()}",
                              "x-kubernetes-action": "patch",
                              "x-kubernetes-group-version-kind": (
                                  gvk if not sub.kind else {"group": sub.group or rt.group,
                                                            "version": sub.version or rt.version,
                                                            "kind": sub.kind}),
                              "parameters": write_params,
                              "requestBody": {"content": {ct: {"schema": patch_schema}
                                                          for ct in content_types}},
                              "responses": ok}}


def _v2_path_item(item: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3 path item as Swagger 2.0: body parameters, flat parameter types."""
    out: dict[str, Any] = {}
    for key, op in item.items():
        if key == "parameters":
            out[key] = [_v2_param(p) for p in op]
            continue
        op2 = {k: v for k, v in op.items() if k not in ("requestBody", "responses", "parameters")}
        params = [_v2_param(p) for p in op.get("parameters") or []]
        body = op.get("requestBody")
        if body:
            content = body.get("content") or {}
            schema = next(iter(content.values()), {}).get("schema", {})
            params.append({"name": "body", "in": "body", "required": True, "schema": schema})
            op2["consumes"] = [ct for ct in content if ct != "*/*"] or ["application/json"]
        if params:
            op2["parameters"] = params
        op2["produces"] = ["application/json", "application/yaml"]
        op2["responses"] = {
            code: {"description": r.get("description", ""),
                   **({"schema": r["content"]["application/json"]["schema"]}
                      if "application/json" in (r.get("content") or {}) else {})}
            for code, r in (op.get("responses") or {}).items()}
        out[key] = op2
    return out


def _v2_param(param: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in param.items() if k != "schema"}
    out.update(param.get("schema") or {"type": "string"})
    return out


def _v2_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (v.replace("#/components/schemas/", "#/definitions/")
                    if k == "$ref" and isinstance(v, str) else _v2_refs(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_v2_refs(v) for v in node]
    return node
