"""Regenerate src/atoll/api/proto_fields.json from upstream's generated.proto files.

    python scripts/gen_proto_fields.py API_DIR APIMACHINERY_DIR APIEXTENSIONS_DIR

(checkouts of k8s.io/api, k8s.io/apimachinery and k8s.io/apiextensions-apiserver).
The table holds only wire facts: per message, field number → JSON name, type and
cardinality.  JSON names come from the upstream OpenAPI schemas where the proto
name differs (``$ref``, ``x-kubernetes-*``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

API_GROUPS = ["core/v1", "apps/v1", "batch/v1", "coordination/v1", "rbac/v1", "storage/v1",
              "events/v1", "policy/v1", "networking/v1", "authorization/v1",
              "authentication/v1", "autoscaling/v1", "autoscaling/v2", "discovery/v1",
              "scheduling/v1", "certificates/v1", "node/v1"]
MACHINERY = ["pkg/apis/meta/v1", "pkg/runtime", "pkg/runtime/schema", "pkg/util/intstr",
             "pkg/api/resource"]
FIELD = re.compile(r"^\s*(optional|repeated|required)?\s*(map<\s*([\w.]+)\s*,\s*([\w.]+)\s*>|[\w.]+)"
                   r"\s+(\w+)\s*=\s*(\d+)")
SCHEMA_PROPS_NAMES = {"ref": "$ref", "schema": "$schema"}
SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float",
           "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64"}


def parse(text: str) -> dict[str, dict[str, list]]:
    package = re.search(r"^package ([\w.]+);", text, re.M).group(1)
    out: dict[str, dict[str, list]] = {}
    stack: list[str] = []
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"message (\w+) \{", line)
        if m:
            stack.append(m.group(1))
            out[".".join([package, *stack])] = {}
            continue
        if line == "}" and stack:
            stack.pop()
            continue
        f = FIELD.match(line)
        if f and stack:
            label, typ, key_t, val_t, name, num = f.groups()
            current = ".".join([package, *stack])
            if key_t:
                out[current][num] = [name, "map", _qualify(val_t, package), 0]
            else:
                out[current][num] = [name, _qualify(typ, package), "", 1 if label == "repeated" else 0]
    return out


def _qualify(typ: str, package: str) -> str:
    if typ in SCALARS:
        return typ
    if typ.startswith("."):
        return typ[1:]
    return f"{package}.{typ}"


GO_FIELD = re.compile(r'^\s*\w+\s+(\*?)[\w.\[\]*]+\s+`json:"([^"]*)".*?protobuf:"[a-z0-9]+,(\d+),')


def go_zero_omitted(directory: Path, package: str, table: dict[str, dict[str, list]]) -> None:
    """Mark fields Go leaves out of JSON when zero (not a pointer, ``omitempty``).

    The wire carries non-pointer zero values, and pointer fields only when set, so
    without this mark ``replicas: 0`` and an unset ``hostPort`` would look alike.
    """
    for path in sorted(directory.glob("*.go")):
        if path.name.endswith("_test.go") or path.name.startswith(("zz_", "generated")):
            continue
        struct = None
        for line in path.read_text().splitlines():
            m = re.match(r"^type (\w+) struct \{", line)
            if m:
                struct = m.group(1)
                continue
            if line.startswith("}"):
                struct = None
                continue
            f = GO_FIELD.match(line) if struct else None
            if f is None:
                continue
            pointer, tag, num = f.groups()
            spec = table.get(f"{package}.{struct}", {}).get(num)
            if spec is not None:
                spec[3] = spec[3] or 0
                if not pointer and "omitempty" in tag.split(",")[1:] and not spec[3]:
                    spec.append(1)


def json_names(table: dict[str, dict[str, list]]) -> None:
    """Rename fields whose JSON name differs, using the OpenAPI schemas."""
    import importlib.resources

    defs = json.loads((importlib.resources.files("kubernetes_validate") /
                       "kubernetes-json-schema/v1.37.0-local/_definitions.json").read_text())["$defs"]
    for message, fields in table.items():
        definition = defs.get("io." + message.removeprefix("k8s.io.").replace("_apiserver", "-apiserver"))
        props = (definition or {}).get("properties") or {}
        norm = {re.sub(r"[^a-z0-9]", "", p.lower()): p for p in props}
        for spec in fields.values():
            if message.endswith(".JSONSchemaProps"):
                spec[0] = SCHEMA_PROPS_NAMES.get(spec[0], spec[0])
                if spec[0].startswith("xKubernetes"):
                    spec[0] = re.sub(r"([A-Z])", lambda m: "-" + m.group(1).lower(), spec[0])
            if props and spec[0] not in props:
                spec[0] = norm.get(re.sub(r"[^a-z0-9]", "", spec[0].lower()), spec[0])


def main() -> None:
    api, machinery, ext = (Path(p) for p in sys.argv[1:4])
    table: dict[str, dict[str, list]] = {}
    dirs = [api / group for group in API_GROUPS] + [machinery / pkg for pkg in MACHINERY]
    dirs.append(ext / "pkg/apis/apiextensions/v1")
    for directory in dirs:
        text = (directory / "generated.proto").read_text()
        table.update(parse(text))
        package = re.search(r"^package ([\w.]+);", text, re.M).group(1)
        go_zero_omitted(directory, package, table)
    json_names(table)
    out = Path(__file__).resolve().parent.parent / "src/atoll/api/proto_fields.json"
    out.write_text(json.dumps(table, separators=(",", ":"), sort_keys=True))
    print(f"{len(table)} messages → {out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
