"""Ingress matching as upstream defines it: hosts (exact, one-label wildcards), paths (Exact
before Prefix, whole elements, longest wins), default backends, and classes."""

from __future__ import annotations

from atoll.agent.ingress.routes import Backend, route


def _ing(name: str, rules: list, default: str = "", cls: str | None = None) -> dict:
    spec: dict = {"rules": rules}
    if default:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"number": 80}}}
    if cls:
        spec["ingressClassName"] = cls
    return {"metadata": {"name": name, "namespace": "ns"}, "spec": spec}


def _path(path: str, svc: str, kind: str = "Prefix") -> dict:
    return {"path": path, "pathType": kind,
            "backend": {"service": {"name": svc, "port": {"name": "http"}}}}


INGRESSES = [
    _ing("a", [{"host": "shop.example", "http": {"paths": [
        _path("/", "front"), _path("/api", "api"), _path("/api/v2", "v2"),
        _path("/api", "api-exact", "Exact")]}},
        {"host": "*.example", "http": {"paths": [_path("/", "wild")]}}], default="fallback"),
    _ing("b", [{"http": {"paths": [_path("/healthz", "health")]}}]),
    _ing("c", [{"host": "other.example", "http": {"paths": [_path("/", "nginx")]}}], cls="nginx"),
]


def _svc(host: str, path: str) -> str | None:
    b = route(INGRESSES, host, path)
    return b.service if b else None


def test_hosts_paths_and_defaults() -> None:
    assert _svc("shop.example", "/") == "front"
    assert _svc("shop.example:8080", "/api") == "api-exact"  # Exact wins a tie; port ignored
    assert _svc("shop.example", "/api/") == "api"
    assert _svc("shop.example", "/api/v2/x") == "v2"  # the longest prefix
    assert _svc("shop.example", "/apis") == "front"  # Prefix matches whole elements
    assert _svc("a.example", "/x") == "wild" and _svc("a.b.example", "/x") == "fallback"
    assert _svc("anything", "/healthz") == "health"  # a rule without host covers all
    assert _svc("other.example", "/") == "wild"  # not the nginx-class rule: not ours
    assert route(INGRESSES, "shop.example", "/") == Backend("ns", "front", "http")
