"""Turning a request path into (group, version, namespace, resource, name, subresource).

Paths follow the Kubernetes layout::

    /api/v1/<plural>[/<name>[/<sub>]]                      cluster scope, or all namespaces
    /api/v1/namespaces/<ns>/<plural>[/<name>[/<sub>]]      namespaced
    /apis/<group>/<version>/...                            the same under a group

``/api/v1/namespaces/<name>/status`` (and ``/finalize``) address the
Namespace object itself, not a collection.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclass(frozen=True, slots=True)
class ResourcePath:
    group: str
    version: str
    namespace: str
    plural: str
    name: str
    subresource: str
    #: the remaining segments under the subresource (pods/x/proxy/<path>)
    rest: tuple[str, ...] = ()


def parse(path: str) -> ResourcePath | tuple[str, str] | None:
    """ResourcePath for a resource request; (group, version) for a discovery document;
    None when the path is not under /api or /apis."""
    segs = [s for s in path.split("/") if s]
    if not segs:
        return None
    if segs[0] == "api":
        if len(segs) < 2:
            return None
        group, version, rest = "", segs[1], segs[2:]
    elif segs[0] == "apis":
        if len(segs) == 2:
            return (segs[1], "")  # /apis/<group>: the group's document
        if len(segs) < 3:
            return None
        group, version, rest = segs[1], segs[2], segs[3:]
    else:
        return None
    if not rest:
        return (group, version)
    if rest[0] == "namespaces" and len(rest) >= 3 and not (
            group == "" and len(rest) == 3 and rest[2] in NAMESPACE_SUBRESOURCES):
        ns, plural, tail = rest[1], rest[2], rest[3:]
        name = tail[0] if tail else ""
        sub = tail[1] if len(tail) > 1 else ""
        return ResourcePath(group, version, ns, plural, name, sub, tuple(tail[2:]))
    plural, tail = rest[0], rest[1:]
    name = tail[0] if tail else ""
    sub = tail[1] if len(tail) > 1 else ""
    return ResourcePath(group, version, "", plural, name, sub, tuple(tail[2:]))
