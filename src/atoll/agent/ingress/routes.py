"""Which backend an HTTP request goes to, by upstream's Ingress matching rules: the rule
whose ``host`` equals the request's (a ``*.`` wildcard covers exactly one label; a rule
without host covers all), then the longest matching path (``Exact`` before ``Prefix`` of
the same length; ``Prefix`` matches whole path elements; ``ImplementationSpecific`` is
``Prefix`` here), else the Ingress's ``defaultBackend``.  Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from atoll.api.resources.networking_v1 import ingress_is_atolls

Obj = dict[str, Any]


@dataclass(frozen=True)
class Backend:
    namespace: str
    service: str
    port: int | str  # number or the Service port's name


def host_matches(rule_host: str, host: str) -> bool:
    if not rule_host:
        return True
    if rule_host.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == rule_host[2:]
    return rule_host == host


def path_matches(path_type: str, rule_path: str, path: str) -> bool:
    if path_type == "Exact":
        return path == rule_path
    base = rule_path.rstrip("/")
    if not base:
        return True  # "/" covers everything
    return path == base or path.startswith(base + "/")


def _backend(namespace: str, spec: Any) -> Backend | None:
    service = (spec or {}).get("service") if isinstance(spec, dict) else None
    if not isinstance(service, dict) or not service.get("name"):
        return None
    port = service.get("port") or {}
    number, name = port.get("number"), port.get("name")
    if not number and not name:
        return None
    return Backend(namespace, service["name"], int(number) if number else str(name))


def route(ingresses: Iterable[Obj], host: str, path: str) -> Backend | None:
    host = host.split(":", 1)[0].lower().rstrip(".")
    best: tuple[int, int, Backend] | None = None  # (path length, exact, backend)
    defaults: list[Backend] = []
    for ing in sorted(ingresses, key=lambda i: (i["metadata"].get("namespace", ""),
                                                 i["metadata"].get("name", ""))):
        if not ingress_is_atolls(ing):
            continue
        ns, spec = ing["metadata"].get("namespace", ""), ing.get("spec") or {}
        if (b := _backend(ns, spec.get("defaultBackend"))) is not None:
            defaults.append(b)
        for rule in spec.get("rules") or []:
            if not isinstance(rule, dict) or not host_matches(str(rule.get("host") or ""), host):
                continue
            for p in ((rule.get("http") or {}).get("paths") or []):
                if not isinstance(p, dict):
                    continue
                rule_path = str(p.get("path") or "/")
                if not path_matches(p.get("pathType") or "Prefix", rule_path, path):
                    continue
                b = _backend(ns, p.get("backend"))
                if b is None:
                    continue
                rank = (len(rule_path), int(p.get("pathType") == "Exact"))
                if best is None or rank > best[:2]:
                    best = (*rank, b)
    if best is not None:
        return best[2]
    return defaults[0] if defaults else None
