"""Writes the served CRD manifests (``../<plural>.yaml``) from their annotated sources.

Each kind has one annotated source (``source/<plural>.yaml``): a CRD whose versions are a
template plus a list of names, and whose single schema marks in which versions a field
exists, so that the six versions' schemas cannot drift apart:

- ``x-atoll-since: vN`` / ``x-atoll-until: vN`` on a property: the first / last version
  that has it (default: every version);
- ``x-atoll-override: {vN: {key: value}}``: keys that differ in a version (``null`` removes
  the key, e.g. a default that version lacks);
- ``x-atoll-embed: <file>#<property>``: the node is that property of another source's
  schema, markers and all (a VirtualMachineReplicaSet's ``template.spec`` is a VM's ``spec``
  in each version, so the two cannot drift apart either).

``python -m atoll.api.vmoperator.generate`` rewrites the manifests; a test checks that the
committed ones match (``--check`` does the same from the command line).
"""

from __future__ import annotations

import copy
import sys
from importlib import resources
from typing import Any

import yaml

SINCE, UNTIL, OVERRIDE = "x-atoll-since", "x-atoll-until", "x-atoll-override"
EMBED = "x-atoll-embed"
TEMPLATE, VERSIONS = "x-atoll-version-template", "x-atoll-versions"
HEADER = ("# {kind}: vm-operator's API in every served version (v1alpha6 stored), plus Atoll's\n"
          "# additions, which say \"Atoll:\" in their descriptions.  GENERATED from\n"
          "# source/{file} by atoll.api.vmoperator.generate: edit the source, not this file.\n"
          "# Installed by the API server at start-up (atoll.apiserver.builtin_crds); plain CRD\n"
          "# YAML, so `kubectl apply -f` installs it on any Kubernetes cluster too.\n")


def version_key(version: str) -> int:
    """v1alpha1 < v1alpha2 < ... (the only versions this API has)."""
    return int(version.rsplit("alpha", 1)[1])


def has_version(node: dict[str, Any], version: str) -> bool:
    low, high = node.get(SINCE), node.get(UNTIL)
    v = version_key(version)
    return (low is None or version_key(low) <= v) and (high is None or v <= version_key(high))


def project(node: Any, version: str) -> Any:
    """The schema node as ``version`` has it, without the markers."""
    if isinstance(node, list):
        return [project(n, version) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in (SINCE, UNTIL, OVERRIDE):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: project(child, version) for name, child in value.items()
                        if not isinstance(child, dict) or has_version(child, version)}
        else:
            out[key] = project(value, version)
    for key, value in ((node.get(OVERRIDE) or {}).get(version) or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    if isinstance(out.get("required"), list) and isinstance(out.get("properties"), dict):
        out["required"] = [r for r in out["required"] if r in out["properties"]]
        if not out["required"]:
            del out["required"]
    return out


def _source(file: str) -> dict[str, Any]:
    root = resources.files("atoll.api.vmoperator")
    return yaml.safe_load(root.joinpath("source", file).read_text(encoding="utf-8"))


def embed(node: Any) -> Any:
    """``node`` with every ``x-atoll-embed`` replaced by the property it names (its own
    other keys, e.g. a description, kept over the embedded ones)."""
    if isinstance(node, list):
        return [embed(n) for n in node]
    if not isinstance(node, dict):
        return node
    if EMBED in node:
        file, _, prop = str(node[EMBED]).partition("#")
        other = _source(file)["spec"][TEMPLATE]["schema"]["openAPIV3Schema"]
        inner = embed(copy.deepcopy(other["properties"][prop]))
        inner.update({k: v for k, v in node.items() if k != EMBED})
        return inner
    return {k: embed(v) for k, v in node.items()}


def expand(source: dict[str, Any]) -> dict[str, Any]:
    """The plain CRD of an annotated source: one entry per version, v1alpha6 the storage one."""
    crd = embed(copy.deepcopy(source))
    spec = crd["spec"]
    template = spec.pop(TEMPLATE)
    names = spec.pop(VERSIONS)
    storage = max((v["name"] for v in names), key=version_key)
    versions = []
    for entry in names:
        name = entry["name"]
        version: dict[str, Any] = {"name": name, "served": True, "storage": name == storage}
        for key in ("deprecated", "deprecationWarning"):
            if key in entry:
                version[key] = entry[key]
        version["subresources"] = copy.deepcopy(template.get("subresources") or {})
        version["additionalPrinterColumns"] = copy.deepcopy(
            entry.get("additionalPrinterColumns", template.get("additionalPrinterColumns") or []))
        version["schema"] = project(template["schema"], name)
        versions.append(version)
    spec["versions"] = versions
    return crd


def render(file: str) -> str:
    source = _source(file)
    body = yaml.safe_dump(expand(source), sort_keys=False, width=100)
    return HEADER.format(kind=source["spec"]["names"]["kind"], file=file) + "---\n" + body


def main(argv: list[str]) -> int:
    from atoll.api.vmoperator import CRD_FILES

    root = resources.files("atoll.api.vmoperator")
    stale = []
    for file in CRD_FILES:
        text = render(file)
        target = root.joinpath(file)
        if target.read_text(encoding="utf-8") != text:
            stale.append(file)
            if "--check" not in argv:
                with resources.as_file(target) as path:
                    path.write_text(text, encoding="utf-8")
    if stale and "--check" in argv:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
