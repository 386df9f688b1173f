"""The aggregation layer: local APIServices, and a tiny extension API server started here (a
host process on loopback, behind a selector-less Service whose Endpoints point at it) reached
through the API server by kubectl."""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterator

import pytest
from aiohttp import web

from tests.conftest import Platform, wait_until
from tests.httpsserver import CertAuthority, ThreadedServer, new_ca

GROUP, VERSION = "wardle.example.com", "v1alpha1"
EXT_NS = "wardle"


class Wardle:
    """Serves wardle.example.com/v1alpha1 flunders, remembering who the proxy said called."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(f"/apis/{GROUP}/{VERSION}", self.resources)
        app.router.add_get(f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/flunders", self.list)
        return app

    def _record(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = next((v for rdn in (peer or {}).get("subject", ()) for k, v in rdn
                   if k == "commonName"), "")
        self.seen.append({"path": request.path, "peer": cn,
                          "user": request.headers.get("X-Remote-User"),
                          "groups": request.headers.getall("X-Remote-Group", []),
                          "authorization": request.headers.get("Authorization")})

    async def resources(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{GROUP}/{VERSION}",
            "resources": [{"name": "flunders", "singularName": "flunder", "namespaced": True,
                           "kind": "Flunder", "verbs": ["get", "list"],
                           "shortNames": ["fl"]}]})

    async def list(self, request: web.Request) -> web.Response:
        self._record(request)
        ns = request.match_info["ns"]
        item = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Flunder",
                "metadata": {"name": "my-flunder", "namespace": ns,
                             "creationTimestamp": "2026-01-01T00:00:00Z"}}
        return web.json_response({"apiVersion": f"{GROUP}/{VERSION}", "kind": "FlunderList",
                                  "metadata": {"resourceVersion": "1"}, "items": [item]})


def api(platform: Platform, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(platform.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=platform.ssl_context(), timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def available(platform: Platform, name: str) -> dict[str, Any] | None:
    status, obj = api(platform, "GET", f"/apis/apiregistration.k8s.io/v1/apiservices/{name}")
    if status != 200:
        return None
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c["type"] == "Available"), None)


@pytest.fixture(scope="module")
def wardle(platform: Platform, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Wardle, CertAuthority]]:
    """The extension server, trusting the front proxy CA the platform publishes."""
    _, cm = api(platform, "GET",
                "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication")
    front_proxy_ca = cm["data"]["requestheader-client-ca-file"].encode()
    assert json.loads(cm["data"]["requestheader-allowed-names"]) == ["front-proxy-client"]
    ca = new_ca("wardle-ca")
    cert, key = ca.issue(tmp_path_factory.mktemp("wardle"), "wardle",
                         dns=(f"api.{EXT_NS}.svc",))
    server = Wardle()
    running = ThreadedServer(server.app(), cert, key, client_ca=front_proxy_ca).start()
    platform.kubectl("create", "namespace", EXT_NS, check=False)
    platform.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": EXT_NS},
         "spec": {"ports": [{"port": 443, "targetPort": running.port}]}},
        {"apiVersion": "v1", "kind": "Endpoints",
         "metadata": {"name": "api", "namespace": EXT_NS},
         "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": running.port}]}]},
    ]}))
    yield server, ca
    api(platform, "DELETE", f"/apis/apiregistration.k8s.io/v1/apiservices/{VERSION}.{GROUP}")
    platform.kubectl("delete", "namespace", EXT_NS, "--wait=false", check=False)
    running.stop()


def test_local_apiservices_for_every_built_in_group_version(platform: Platform) -> None:
    for name in ("v1.", "v1.apps", "v1.admissionregistration.k8s.io", "v2.autoscaling"):
        cond = wait_until(f"{name} available", lambda n=name: available(platform, n))
        assert (cond["status"], cond["reason"]) == ("True", "Local")
    out = platform.kubectl("get", "apiservices", "v1.apps").stdout.split("\n")
    assert out[0].split() == ["NAME", "SERVICE", "AVAILABLE", "AGE"]
    assert out[1].split()[:3] == ["v1.apps", "Local", "True"]


def test_apiservice_validation(platform: Platform) -> None:
    status, body = api(platform, "POST", "/apis/apiregistration.k8s.io/v1/apiservices", {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1.wrong.example.com"},
        "spec": {"group": "right.example.com", "version": "v1", "groupPriorityMinimum": 0,
                 "versionPriority": 5000, "caBundle": "eA==", "insecureSkipTLSVerify": True,
                 "service": {"namespace": "x"}}})
    assert status == 422, body
    fields = {c["field"] for c in body["details"]["causes"]}
    assert fields >= {"metadata.name", "spec.groupPriorityMinimum", "spec.versionPriority",
                      "spec.service.name", "spec.insecureSkipTLSVerify"}


def test_extension_api_server_through_the_aggregator(platform: Platform, wardle) -> None:
    server, ca = wardle
    status, body = api(platform, "POST", "/apis/apiregistration.k8s.io/v1/apiservices", {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": f"{VERSION}.{GROUP}"},
        "spec": {"group": GROUP, "version": VERSION, "groupPriorityMinimum": 1000,
                 "versionPriority": 15, "caBundle": ca.bundle,
                 "service": {"namespace": EXT_NS, "name": "api", "port": 443}}})
    assert status == 201, body
    cond = wait_until("the APIService passes its check", lambda: (
        c := available(platform, f"{VERSION}.{GROUP}")) and c["status"] == "True" and c)
    assert cond["reason"] == "Passed"
    # discovery: legacy and aggregated (kubectl api-resources) both carry the group
    _, groups = api(platform, "GET", "/apis")
    assert any(g["name"] == GROUP for g in groups["groups"])
    _, group = api(platform, "GET", f"/apis/{GROUP}")
    assert group["preferredVersion"]["groupVersion"] == f"{GROUP}/{VERSION}"
    out = platform.kubectl("api-resources", f"--api-group={GROUP}").stdout
    assert "flunders" in out and "Flunder" in out
    listed = json.loads(platform.kubectl("get", "flunders", "-n", "default", "-o",
                                         "json").stdout)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["my-flunder"]
    assert "my-flunder" in platform.kubectl("get", "fl", "-n", "default").stdout
    seen = [s for s in server.seen if s["path"].endswith("/flunders")][-1]
    assert seen["peer"] == "front-proxy-client"  # the proxy's own certificate
    assert seen["user"] == "kubernetes-admin" and "system:masters" in seen["groups"]
    assert seen["authorization"] is None  # the caller's credentials stay here


def test_apiservice_without_its_service_is_unavailable(platform: Platform) -> None:
    name = f"v1.missing-{uuid.uuid4().hex[:6]}.example.com"
    group = name.split(".", 1)[1]
    status, body = api(platform, "POST", "/apis/apiregistration.k8s.io/v1/apiservices", {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": name},
        "spec": {"group": group, "version": "v1", "groupPriorityMinimum": 1000,
                 "versionPriority": 15, "insecureSkipTLSVerify": True,
                 "service": {"namespace": "default", "name": "not-there"}}})
    assert status == 201, body
    try:
        cond = wait_until("the check fails", lambda: (
            c := available(platform, name)) and c["status"] == "False" and c)
        assert cond["reason"] == "ServiceNotFound"
        assert cond["message"] == 'service/not-there in "default" is not present'
        status, body = api(platform, "GET", f"/apis/{group}/v1/namespaces/default/things")
        assert status == 503 and body["reason"] == "ServiceUnavailable", body
    finally:
        api(platform, "DELETE", f"/apis/apiregistration.k8s.io/v1/apiservices/{name}")
