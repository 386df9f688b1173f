"""`atoll namespace create|describe|list`: hand a team a namespace with a budget, people and VM
choices, and find the ones you were given.

``create`` applies (server-side apply, so re-running it changes what changed)
the objects of ``api.tenancy.Bundle``; ``-o yaml`` prints them instead, for a
Git repository.  ``describe`` shows budget and usage, defaults, people, VM
classes, images and the pod security level at a glance.  ``list`` names the
namespaces the caller works in (``tenancy.atoll.dev`` projects: where they hold
a role, or all of them for whoever may list namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

from atoll.api import errors, tenancy
from atoll.api.resources.node_v1 import DEFAULT_RUNTIME_CLASS_LABEL, POD_VM_CLASS
from atoll.api.vmoperator import names as vmnames
from atoll.cli.common import admin_kubeconfig_path, resolve_kubeconfig
from atoll.client import kubeconfig
from atoll.client.rest import ApiClient, resource_path
from atoll.controllers.vmoperator.classes import default_classes

APPLY = "application/apply-patch+yaml"
PROJECTS_GROUP = "tenancy.atoll.dev"
MANAGER = "atoll-namespace"
PLURALS = {"Namespace": ("", "v1", "namespaces"), "ResourceQuota": ("", "v1", "resourcequotas"),
           "LimitRange": ("", "v1", "limitranges"),
           "RoleBinding": (tenancy.RBAC, "v1", "rolebindings"),
           "VirtualMachineClass": (vmnames.GROUP, vmnames.VERSION, "virtualmachineclasses")}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("namespace", aliases=["ns"],
                       help="namespaces as a product: budget, people, VM classes and images")
    nsub = p.add_subparsers(dest="namespace_command", metavar="COMMAND", required=True)
    c = nsub.add_parser("create", help="create (or update) a namespace with its quota, defaults, "
                                       "role bindings, VM classes and images")
    c.add_argument("name")
    c.add_argument("--cpu", default="", help="CPU budget (requests and limits), e.g. 8")
    c.add_argument("--memory", default="", help="memory budget, e.g. 16Gi")
    c.add_argument("--storage-class", action="append", default=[], metavar="CLASS[=SIZE]",
                   help="a StorageClass the namespace's claims may use, with an optional "
                        "budget (repeatable; once given, other classes are refused)")
    c.add_argument("--storage", action="append", default=[], metavar="CLASS=SIZE",
                   help="storage budget per StorageClass, without assigning classes "
                        "(repeatable)")
    c.add_argument("--pods", type=int, default=None, help="at most this many pods")
    c.add_argument("--vms", type=int, default=None, help="at most this many VirtualMachines")
    c.add_argument("--vm-class", action="append", default=[], metavar="CLASS",
                   help="a VirtualMachineClass the namespace's VMs may use (repeatable; "
                        "default: the default classes)")
    c.add_argument("--image", action="append", default=[], metavar="IMAGE",
                   help="an image the namespace's VMs may use (repeatable; default: any)")
    for role, text in (("owner", "may do everything in it, including granting access"),
                       ("edit", "may create, change and delete workloads in it"),
                       ("view", "may read it (not Secrets)")):
        c.add_argument(f"--{role}", action="append", default=[], metavar="WHO",
                       help=f"a user who {text} (repeatable; group:NAME for a group)")
    c.add_argument("--pod-security", default="baseline",
                   choices=["privileged", "baseline", "restricted"],
                   help="Pod Security level enforced (default: baseline: no host access)")
    c.add_argument("--pod-vms", action="store_true",
                   help="run every pod of the namespace in its own VM (RuntimeClass atoll-vm) "
                        "unless it names another RuntimeClass")
    c.add_argument("-o", "--output", choices=["yaml", "json"], default=None,
                   help="print the objects instead of applying them")
    _connection_flags(c)
    c.set_defaults(func=create)
    d = nsub.add_parser("describe", help="budget and usage, defaults, people, VM classes, images")
    d.add_argument("name")
    _connection_flags(d)
    d.set_defaults(func=describe)
    ls = nsub.add_parser("list", aliases=["ls"],
                         help="the namespaces you work in (where you hold a role)")
    ls.add_argument("-o", "--output", choices=["name"], default=None,
                    help="print only the names")
    _connection_flags(ls)
    ls.set_defaults(func=list_namespaces)


def _connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", default=None, help="credentials for the API server")
    p.add_argument("--data-dir", default=None,
                   help="use the administrator kubeconfig of this server data dir")


def _client(args: argparse.Namespace) -> ApiClient:
    path = admin_kubeconfig_path(Path(args.data_dir)) if args.data_dir \
        else resolve_kubeconfig(args.kubeconfig)
    return ApiClient(kubeconfig.load(path), user_agent=MANAGER)


def bundle_from(args: argparse.Namespace) -> tenancy.Bundle:
    storage: dict[str, str] = {}
    for item in args.storage:
        klass, sep, size = item.partition("=")
        if not sep or not klass or not size:
            raise ValueError(f"--storage wants CLASS=SIZE (e.g. fast=100Gi), not {item!r}")
        storage[klass] = size
    classes: list[str] = []
    for item in args.storage_class:
        klass, sep, size = item.partition("=")
        if not klass or (sep and not size):
            raise ValueError(f"--storage-class wants CLASS or CLASS=SIZE (e.g. fast=100Gi), "
                             f"not {item!r}")
        classes.append(klass)
        if size:
            storage[klass] = size
    for flag, value in (("--pods", args.pods), ("--vms", args.vms)):
        if value is not None and value < 0:
            raise ValueError(f"{flag} must not be negative")
    return tenancy.Bundle(args.name, cpu=args.cpu, memory=args.memory, storage=storage,
                          pods=args.pods, vms=args.vms, vm_classes=list(dict.fromkeys(args.vm_class)),
                          images=list(dict.fromkeys(args.image)),
                          storage_classes=list(dict.fromkeys(classes)),
                          people={"owner": args.owner, "edit": args.edit, "view": args.view},
                          pod_security=args.pod_security)


def create(args: argparse.Namespace) -> int:
    bundle = bundle_from(args)
    objects = bundle.objects()
    if args.pod_vms:
        for obj in objects:
            if obj["kind"] == "Namespace":
                obj["metadata"].setdefault("labels", {})[DEFAULT_RUNTIME_CLASS_LABEL] = \
                    POD_VM_CLASS
    if args.output:
        doc = {"apiVersion": "v1", "kind": "List", "items": objects}
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False) if args.output == "yaml"
                         else orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    return asyncio.run(_apply_all(_client(args), bundle, objects))


async def _apply_all(client: ApiClient, bundle: tenancy.Bundle, objects: list[dict[str, Any]]) -> int:
    try:
        if bundle.vm_classes:
            objects = objects + await _classes(client, bundle)
        for obj in objects:
            group, version, plural = PLURALS[obj["kind"]]
            meta = obj["metadata"]
            path = resource_path(group, version, plural, meta.get("namespace", ""), meta["name"])
            await client.patch(path, obj, content_type=APPLY,
                               fieldManager=MANAGER, force="true")
            where = f" in {meta['namespace']}" if meta.get("namespace") else ""
            print(f"{obj['kind'].lower()}/{meta['name']}{where} applied")
    finally:
        await client.close()
    return 0


async def _classes(client: ApiClient, bundle: tenancy.Bundle) -> list[dict[str, Any]]:
    """The bound classes: a default class by name, or a copy of a class found elsewhere."""
    defaults = {c["metadata"]["name"]: c for c in default_classes(bundle.name)}
    out = []
    existing: dict[str, dict[str, Any]] | None = None
    for name in bundle.vm_classes:
        if name in defaults:
            klass = defaults[name]
            klass["metadata"]["labels"] = {tenancy.MANAGED_LABEL: "true"}
            out.append(klass)
            continue
        if existing is None:
            body = await client.get(resource_path(vmnames.GROUP, vmnames.VERSION,
                                                  "virtualmachineclasses"))
            existing = {}
            for c in body.get("items") or []:
                existing.setdefault(c["metadata"]["name"], c)
        if name not in existing:
            raise ValueError(f"VM class {name!r} is neither a default class "
                             f"({', '.join(sorted(defaults))}) nor defined in any namespace")
        out.append({"apiVersion": vmnames.API_VERSION, "kind": "VirtualMachineClass",
                    "metadata": {"name": name, "namespace": bundle.name,
                                 "labels": {tenancy.MANAGED_LABEL: "true"}},
                    "spec": existing[name].get("spec") or {}})
    return out


def list_namespaces(args: argparse.Namespace) -> int:
    items = asyncio.run(_projects(_client(args)))
    if args.output == "name":
        sys.stdout.write("".join(f"{ns['metadata']['name']}\n" for ns in items))
        return 0
    width = max([len("NAME")] + [len(ns["metadata"]["name"]) for ns in items]) + 3
    lines = [f"{'NAME':<{width}}STATUS"]
    lines += [f"{ns['metadata']['name']:<{width}}{(ns.get('status') or {}).get('phase', '')}"
              for ns in items]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


async def _projects(client: ApiClient) -> list[dict[str, Any]]:
    """The caller's projects; a server without the projects API: the namespaces, if allowed."""
    try:
        try:
            body = await client.get(resource_path(PROJECTS_GROUP, "v1", "projects"))
        except errors.NotFound:
            body = await client.get("/api/v1/namespaces")
    finally:
        await client.close()
    return sorted(body.get("items") or [], key=lambda ns: ns["metadata"]["name"])


def describe(args: argparse.Namespace) -> int:
    sys.stdout.write(asyncio.run(_describe(_client(args), args.name)))
    return 0


async def _describe(client: ApiClient, name: str) -> str:
    try:
        ns = await client.get(f"/api/v1/namespaces/{name}")
        quotas = (await client.get(f"/api/v1/namespaces/{name}/resourcequotas")).get("items") or []
        limits = (await client.get(f"/api/v1/namespaces/{name}/limitranges")).get("items") or []
        bindings = (await client.get(resource_path(tenancy.RBAC, "v1", "rolebindings", name))
                    ).get("items") or []
        try:
            classes = (await client.get(resource_path(vmnames.GROUP, vmnames.VERSION,
                                                      "virtualmachineclasses", name))
                       ).get("items") or []
        except errors.NotFound:
            classes = []
    finally:
        await client.close()
    meta = ns["metadata"]
    annotations = meta.get("annotations") or {}
    lines = [f"Name:          {name}",
             f"Status:        {(ns.get('status') or {}).get('phase', '')}",
             f"Pod security:  {(meta.get('labels') or {}).get(tenancy.POD_SECURITY_ENFORCE, 'not set')}",
             ""]
    lines.append("Budget (used / hard):")
    if not quotas:
        lines.append("  no quota")
    for q in quotas:
        hard = (q.get("spec") or {}).get("hard") or {}
        used = (q.get("status") or {}).get("used") or {}
        for key in sorted(hard):
            lines.append(f"  {key:<58} {str(used.get(key, '-')):>12} / {hard[key]}")
    lines.append("")
    lines.append("Container defaults:")
    if not limits:
        lines.append("  none")
    for lr in limits:
        for item in (lr.get("spec") or {}).get("limits") or []:
            lines.append(f"  {item.get('type')}: request {_amounts(item.get('defaultRequest'))}, "
                         f"limit {_amounts(item.get('default'))}")
    lines.append("")
    lines.append("People:")
    if not bindings:
        lines.append("  nobody has been given access")
    for b in sorted(bindings, key=lambda b: b["metadata"]["name"]):
        ref = b.get("roleRef") or {}
        who = ", ".join(_who(s) for s in b.get("subjects") or [])
        lines.append(f"  {ref.get('name', ''):<10} {who}   ({b['metadata']['name']})")
    lines.append("")
    bound = tenancy.allowed_names(annotations, tenancy.VM_CLASSES_ANNOTATION)
    lines.append("VM classes:    " + (", ".join(sorted(c["metadata"]["name"] for c in classes
                                                        if bound is None or
                                                        c["metadata"]["name"] in bound))
                                      or "none"))
    images = tenancy.allowed_names(annotations, tenancy.VM_IMAGES_ANNOTATION)
    lines.append("Images:        " + (", ".join(images) if images is not None else "any"))
    storage = tenancy.allowed_names(annotations, tenancy.STORAGE_CLASSES_ANNOTATION)
    lines.append("Storage:       " + (", ".join(storage) if storage is not None else "any"))
    return "\n".join(lines) + "\n"


def _amounts(d: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in (d or {}).items()) or "-"


def _who(s: dict[str, Any]) -> str:
    kind = s.get("kind")
    if kind == "Group":
        return f"group:{s.get('name')}"
    if kind == "ServiceAccount":
        return f"serviceaccount:{s.get('namespace')}:{s.get('name')}"
    return str(s.get("name"))
