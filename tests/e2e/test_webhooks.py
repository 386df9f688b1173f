"""Admission webhooks against the real server: a webhook server started here (HTTPS with a CA
of the test's own), configurations created through the API, kubectl as the client.

Every configuration selects only the namespace of its test (``namespaceSelector``), so the
platform's own writes never reach these webhooks, and each test deletes what it created.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Iterator

import pytest
from aiohttp import web

from tests.conftest import Platform, free_port
from tests.httpsserver import CertAuthority, ThreadedServer, new_ca

ADMISSION = "/apis/admissionregistration.k8s.io/v1"


# -- the webhook server ------------------------------------------------------------------------
class HookServer:
    """Answers AdmissionReviews by path: mutate, mutate-a, mutate-b, deny, slow, record."""

    def __init__(self) -> None:
        self.calls: dict[str, list[dict[str, Any]]] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{name}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        review = await request.json()
        req = review["request"]
        self.calls.setdefault(name, []).append({**req, "query": dict(request.query)})
        resp: dict[str, Any] = {"uid": req["uid"], "allowed": True}
        obj = req.get("object") or {}
        labels = (obj.get("metadata") or {}).get("labels")
        if name.startswith("mutate"):
            key = {"mutate": "webhook-added", "mutate-a": "a", "mutate-b": "b"}[name]
            if labels is None:
                ops = [{"op": "add", "path": "/metadata/labels", "value": {key: "yes"}}]
            elif key not in labels:
                ops = [{"op": "add", "path": f"/metadata/labels/{key}", "value": "yes"}]
            else:
                ops = []
            if ops:
                resp["patchType"] = "JSONPatch"
                resp["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
            resp["warnings"] = [f"{name} was here"]
        elif name == "deny":
            target = req.get("oldObject") if req["operation"] == "DELETE" else obj
            if "deny" in ((target or {}).get("metadata") or {}).get("labels", {}):
                resp = {"uid": req["uid"], "allowed": False,
                        "status": {"message": "denied by test", "code": 403,
                                   "reason": "Forbidden"},
                        "auditAnnotations": {"decision": "deny"}}
        elif name == "slow":
            await asyncio.sleep(5)
        return web.json_response({"apiVersion": review["apiVersion"], "kind": "AdmissionReview",
                                  "response": resp})


@pytest.fixture(scope="module")
def ca() -> CertAuthority:
    return new_ca()


@pytest.fixture(scope="module")
def hooks(ca: CertAuthority, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HookServer,
                                                                              ThreadedServer]]:
    directory = tmp_path_factory.mktemp("webhook-tls")
    cert, key = ca.issue(directory, "hooks", dns=("hooks.webhook-svc.svc",))
    server = HookServer()
    running = ThreadedServer(server.app(), cert, key).start()
    yield server, running
    running.stop()


@pytest.fixture
def hook_ns(platform: Platform) -> Iterator[str]:
    """A namespace labelled for this test's webhooks only."""
    name = f"wh-{uuid.uuid4().hex[:8]}"
    platform.kubectl("create", "namespace", name)
    platform.kubectl("label", "namespace", name, f"webhook-test={name}")
    yield name
    platform.kubectl("delete", "namespace", name, "--wait=false", check=False)


# -- helpers -----------------------------------------------------------------------------------
def api(platform: Platform, method: str, path: str, body: Any = None,
        headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(platform.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, context=platform.ssl_context(), timeout=30) as r:
            return r.status, json.loads(r.read() or b"null"), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers


def hook(name: str, client_config: dict[str, Any], ns: str, **extra: Any) -> dict[str, Any]:
    h: dict[str, Any] = {
        "name": name, "clientConfig": client_config,
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                   "resources": ["configmaps"]}],
        "sideEffects": "None", "admissionReviewVersions": ["v1"],
        "namespaceSelector": {"matchLabels": {"webhook-test": ns}}}
    h.update(extra)
    return h


def url_config(server: ThreadedServer, ca: CertAuthority, path: str) -> dict[str, Any]:
    return {"url": f"{server.url}/{path}", "caBundle": ca.bundle}


class Configs:
    """Webhook configurations a test creates, deleted when it ends."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.made: list[str] = []

    def create(self, kind: str, name: str, webhooks: list[dict[str, Any]]) -> dict[str, Any]:
        plural = f"{kind.lower()}webhookconfigurations"
        status, body, _ = api(self.platform, "POST", f"{ADMISSION}/{plural}", {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": f"{kind}WebhookConfiguration",
            "metadata": {"name": name}, "webhooks": webhooks})
        assert status == 201, body
        self.made.append(f"{ADMISSION}/{plural}/{name}")
        return body

    def delete_all(self) -> None:
        for path in self.made:
            api(self.platform, "DELETE", path)


@pytest.fixture
def configs(platform: Platform) -> Iterator[Configs]:
    c = Configs(platform)
    yield c
    c.delete_all()


def configmap(ns: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "data": {"k": "v"}}


# -- the configuration kinds -------------------------------------------------------------------
def test_configurations_are_validated_with_field_paths(platform: Platform) -> None:
    bad = {"apiVersion": "admissionregistration.k8s.io/v1",
           "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "bad-hooks"},
           "webhooks": [
               {"name": "short", "clientConfig": {"url": "http://example.com/x"},
                "sideEffects": "Some", "admissionReviewVersions": ["v2"], "timeoutSeconds": 31,
                "failurePolicy": "Sometimes",
                "rules": [{"operations": ["READ"], "apiGroups": ["*"], "apiVersions": ["*"],
                           "resources": ["pods"], "scope": "Everywhere"}]},
               {"name": "dup.test.atoll.io", "clientConfig": {},
                "admissionReviewVersions": ["v1"], "sideEffects": "None"},
               {"name": "dup.test.atoll.io",
                "clientConfig": {"url": "https://a.example/", "service": {
                    "namespace": "default", "name": "x"}},
                "admissionReviewVersions": ["v1"], "sideEffects": "None"}]}
    status, body, _ = api(platform, "POST", f"{ADMISSION}/validatingwebhookconfigurations", bad)
    assert status == 422, body
    fields = {c["field"]: c["message"] for c in body["details"]["causes"]}
    assert "should be a domain with at least three segments" in fields["webhooks[0].name"]
    assert fields["webhooks[0].clientConfig.url"].startswith('Unsupported value: "http"')
    assert "Unsupported value" in fields["webhooks[0].sideEffects"]
    assert "must include at least one of v1, v1beta1" in \
        fields["webhooks[0].admissionReviewVersions"]
    assert "between 1 and 30 seconds" in fields["webhooks[0].timeoutSeconds"]
    assert "Unsupported value" in fields["webhooks[0].failurePolicy"]
    assert "Unsupported value" in fields["webhooks[0].rules[0].operations[0]"]
    assert "Unsupported value" in fields["webhooks[0].rules[0].scope"]
    assert "exactly one of url or service" in fields["webhooks[1].clientConfig"]
    assert "exactly one of url or service" in fields["webhooks[2].clientConfig"]
    assert fields["webhooks[2].name"] == 'Duplicate value: "dup.test.atoll.io"'

    missing = {"apiVersion": "admissionregistration.k8s.io/v1",
               "kind": "MutatingWebhookConfiguration", "metadata": {"name": "bad-hooks"},
               "webhooks": [{"name": "m.test.atoll.io",
                             "clientConfig": {"url": "https://127.0.0.1:1/"},
                             "reinvocationPolicy": "Always"}]}
    status, body, _ = api(platform, "POST", f"{ADMISSION}/mutatingwebhookconfigurations", missing)
    assert status == 422, body
    fields = {c["field"]: c["message"] for c in body["details"]["causes"]}
    assert fields["webhooks[0].sideEffects"].startswith("Required value")
    assert fields["webhooks[0].admissionReviewVersions"].startswith("Required value")
    assert "Unsupported value" in fields["webhooks[0].reinvocationPolicy"]


def test_defaults_and_printing(platform: Platform, configs: Configs) -> None:
    made = configs.create("Mutating", "defaults-test", [{
        "name": "d.test.atoll.io", "sideEffects": "None", "admissionReviewVersions": ["v1"],
        "clientConfig": {"service": {"namespace": "default", "name": "nowhere"}},
        "namespaceSelector": {"matchLabels": {"webhook-test": "none"}},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                   "resources": ["configmaps"]}]}])
    h = made["webhooks"][0]
    assert (h["failurePolicy"], h["matchPolicy"], h["timeoutSeconds"],
            h["reinvocationPolicy"]) == ("Fail", "Equivalent", 10, "Never")
    assert h["objectSelector"] == {} and h["rules"][0]["scope"] == "*"
    assert h["clientConfig"]["service"]["port"] == 443
    out = platform.kubectl("get", "mutatingwebhookconfigurations", "defaults-test").stdout
    assert out.split("\n")[0].split() == ["NAME", "WEBHOOKS", "AGE"]
    assert out.split("\n")[1].split()[:2] == ["defaults-test", "1"]


# -- calling webhooks --------------------------------------------------------------------------
def test_mutating_webhook_adds_a_label_and_warns(platform: Platform, hooks, ca: CertAuthority,
                                                 configs: Configs, hook_ns: str) -> None:
    server, running = hooks
    configs.create("Mutating", f"mutate-{hook_ns}", [
        hook("mutate.test.atoll.io", url_config(running, ca, "mutate"), hook_ns)])
    result = platform.kubectl("-n", hook_ns, "create", "configmap", "one", "--from-literal=a=b")
    assert "Warning: mutate was here" in result.stderr
    labels = json.loads(platform.kubectl("-n", hook_ns, "get", "configmap", "one", "-o",
                                         "json").stdout)["metadata"]["labels"]
    assert labels == {"webhook-added": "yes"}
    req = server.calls["mutate"][-1]
    assert req["operation"] == "CREATE" and req["namespace"] == hook_ns and req["name"] == "one"
    assert req["kind"] == {"group": "", "version": "v1", "kind": "ConfigMap"}
    assert req["resource"] == {"group": "", "version": "v1", "resource": "configmaps"}
    assert req["requestKind"] == req["kind"] and req["oldObject"] is None
    assert req["userInfo"]["username"] == "kubernetes-admin"
    assert "system:masters" in req["userInfo"]["groups"]
    assert req["dryRun"] is False and req["options"]["kind"] == "CreateOptions"
    assert req["query"] == {"timeout": "10s"}
    # an update is sent with the old object
    platform.kubectl("-n", hook_ns, "label", "configmap", "one", "more=1")
    req = server.calls["mutate"][-1]
    assert req["operation"] == "UPDATE" and req["oldObject"]["metadata"]["name"] == "one"
    # a namespace the selector does not pick is left alone
    platform.kubectl("create", "namespace", f"{hook_ns}-x")
    try:
        platform.kubectl("-n", f"{hook_ns}-x", "create", "configmap", "two")
        got = json.loads(platform.kubectl("-n", f"{hook_ns}-x", "get", "configmap", "two", "-o",
                                          "json").stdout)
        assert "labels" not in got["metadata"]
    finally:
        platform.kubectl("delete", "namespace", f"{hook_ns}-x", "--wait=false", check=False)


def test_validating_webhook_denies_with_its_message(platform: Platform, hooks, ca: CertAuthority,
                                                   configs: Configs, hook_ns: str) -> None:
    _, running = hooks
    configs.create("Validating", f"deny-{hook_ns}", [
        hook("deny.test.atoll.io", url_config(running, ca, "deny"), hook_ns,
             rules=[{"operations": ["CREATE", "DELETE"], "apiGroups": [""],
                     "apiVersions": ["v1"], "resources": ["configmaps"]}])])
    status, body, _ = api(platform, "POST", f"/api/v1/namespaces/{hook_ns}/configmaps",
                          configmap(hook_ns, "bad", {"deny": "1"}))
    assert status == 403, body
    assert body["message"] == 'admission webhook "deny.test.atoll.io" denied the request: ' \
                              "denied by test"
    assert body["reason"] == "Forbidden"
    result = platform.kubectl("-n", hook_ns, "create", "configmap", "fine", check=False)
    assert result.returncode == 0, result.stderr
    # deletes are admitted too: the webhook sees the old object
    platform.kubectl("-n", hook_ns, "label", "configmap", "fine", "deny=1")
    result = platform.kubectl("-n", hook_ns, "delete", "configmap", "fine", check=False)
    assert result.returncode != 0
    assert 'admission webhook "deny.test.atoll.io" denied the request: denied by test' in \
        result.stderr
    audit = (platform.data_dir / "audit.log").read_text()
    assert '"deny.test.atoll.io/decision":"deny"' in audit


def test_failure_policy_on_an_unreachable_webhook(platform: Platform, ca: CertAuthority,
                                                 configs: Configs, hook_ns: str) -> None:
    nowhere = {"url": f"https://127.0.0.1:{free_port()}/hook", "caBundle": ca.bundle}
    configs.create("Validating", f"ignore-{hook_ns}", [
        hook("ignore.test.atoll.io", nowhere, hook_ns, failurePolicy="Ignore")])
    platform.kubectl("-n", hook_ns, "create", "configmap", "passes")
    configs.create("Validating", f"fail-{hook_ns}", [
        hook("fail.test.atoll.io", nowhere, hook_ns, failurePolicy="Fail")])
    status, body, _ = api(platform, "POST", f"/api/v1/namespaces/{hook_ns}/configmaps",
                          configmap(hook_ns, "blocked"))
    assert status == 500, body
    assert body["reason"] == "InternalError"
    assert 'failed calling webhook "fail.test.atoll.io": failed to call webhook' in \
        body["message"]
    assert api(platform, "GET", f"/api/v1/namespaces/{hook_ns}/configmaps/blocked")[0] == 404


def test_timeout_is_enforced_per_call(platform: Platform, hooks, ca: CertAuthority, configs: Configs,
                                      hook_ns: str) -> None:
    _, running = hooks
    configs.create("Validating", f"slow-{hook_ns}", [
        hook("slow.test.atoll.io", url_config(running, ca, "slow"), hook_ns, timeoutSeconds=1)])
    start = time.monotonic()
    status, body, _ = api(platform, "POST", f"/api/v1/namespaces/{hook_ns}/configmaps",
                          configmap(hook_ns, "late"))
    assert time.monotonic() - start < 4
    assert status == 500 and "context deadline exceeded" in body["message"], body


def test_untrusted_certificate_fails_the_call(platform: Platform, hooks, configs: Configs,
                                              hook_ns: str) -> None:
    _, running = hooks
    other = new_ca("someone-else")
    configs.create("Validating", f"tls-{hook_ns}", [
        hook("tls.test.atoll.io", url_config(running, other, "record"), hook_ns)])
    status, body, _ = api(platform, "POST", f"/api/v1/namespaces/{hook_ns}/configmaps",
                          configmap(hook_ns, "untrusted"))
    assert status == 500 and "certificate" in body["message"], body


def test_object_selector(platform: Platform, hooks, ca: CertAuthority, configs: Configs,
                         hook_ns: str) -> None:
    _, running = hooks
    configs.create("Mutating", f"objsel-{hook_ns}", [
        hook("objsel.test.atoll.io", url_config(running, ca, "mutate"), hook_ns,
             objectSelector={"matchExpressions": [{"key": "hook", "operator": "In",
                                                   "values": ["yes"]}]})])
    api(platform, "POST", f"/api/v1/namespaces/{hook_ns}/configmaps",
        configmap(hook_ns, "picked", {"hook": "yes"}))
    api(platform, "POST", f"/api/v1/namespaces/{hook_ns}/configmaps",
        configmap(hook_ns, "skipped", {"hook": "no"}))
    picked = api(platform, "GET", f"/api/v1/namespaces/{hook_ns}/configmaps/picked")[1]
    skipped = api(platform, "GET", f"/api/v1/namespaces/{hook_ns}/configmaps/skipped")[1]
    assert picked["metadata"]["labels"].get("webhook-added") == "yes"
    assert "webhook-added" not in skipped["metadata"]["labels"]


def test_dry_run_reaches_webhooks_without_side_effects(platform: Platform, hooks, ca: CertAuthority,
                                                       configs: Configs, hook_ns: str) -> None:
    server, running = hooks
    configs.create("Validating", f"dry-{hook_ns}", [
        hook("dry.test.atoll.io", url_config(running, ca, "record"), hook_ns,
             sideEffects="NoneOnDryRun")])
    before = len(server.calls.get("record", []))
    status, body, _ = api(platform, "POST",
                          f"/api/v1/namespaces/{hook_ns}/configmaps?dryRun=All",
                          configmap(hook_ns, "dry"))
    assert status == 201, body
    req = server.calls["record"][before]
    assert req["dryRun"] is True and req["options"]["dryRun"] == ["All"]
    assert api(platform, "GET", f"/api/v1/namespaces/{hook_ns}/configmaps/dry")[0] == 404


def test_reinvocation_if_needed(platform: Platform, hooks, ca: CertAuthority, configs: Configs,
                                hook_ns: str) -> None:
    server, running = hooks
    a_before = len(server.calls.get("mutate-a", []))
    configs.create("Mutating", f"a-{hook_ns}", [
        hook("a.test.atoll.io", url_config(running, ca, "mutate-a"), hook_ns,
             reinvocationPolicy="IfNeeded")])
    configs.create("Mutating", f"b-{hook_ns}", [
        hook("b.test.atoll.io", url_config(running, ca, "mutate-b"), hook_ns)])
    status, body, _ = api(platform, "POST", f"/api/v1/namespaces/{hook_ns}/configmaps",
                          configmap(hook_ns, "twice"))
    assert status == 201, body
    assert body["metadata"]["labels"] == {"a": "yes", "b": "yes"}
    calls = server.calls["mutate-a"][a_before:]
    assert len(calls) == 2  # once, and again after b changed the object
    assert calls[1]["object"]["metadata"]["labels"] == {"a": "yes", "b": "yes"}


def test_service_backed_webhook(platform: Platform, hooks, ca: CertAuthority, configs: Configs,
                                hook_ns: str) -> None:
    """A webhook behind a Service: dialled at its endpoint, its certificate checked for
    ``<service>.<namespace>.svc``."""
    _, running = hooks
    platform.kubectl("create", "namespace", "webhook-svc", check=False)
    manifest = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "hooks", "namespace": "webhook-svc"},
         "spec": {"ports": [{"port": 443, "targetPort": running.port}]}},
        {"apiVersion": "v1", "kind": "Endpoints",
         "metadata": {"name": "hooks", "namespace": "webhook-svc"},
         "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": running.port}]}]}]}
    platform.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    try:
        configs.create("Mutating", f"svc-{hook_ns}", [
            hook("svc.test.atoll.io", {"service": {"namespace": "webhook-svc", "name": "hooks",
                                                   "path": "/mutate"},
                                       "caBundle": ca.bundle}, hook_ns)])
        status, body, _ = api(platform, "POST", f"/api/v1/namespaces/{hook_ns}/configmaps",
                              configmap(hook_ns, "via-service"))
        assert status == 201, body
        assert body["metadata"]["labels"] == {"webhook-added": "yes"}
    finally:
        platform.kubectl("delete", "namespace", "webhook-svc", "--wait=false", check=False)


def test_configurations_themselves_are_never_sent_to_webhooks(platform: Platform, ca: CertAuthority,
                                                              configs: Configs) -> None:
    nowhere = {"url": f"https://127.0.0.1:{free_port()}/hook", "caBundle": ca.bundle}
    configs.create("Validating", "locks-itself", [{
        "name": "lock.test.atoll.io", "clientConfig": nowhere, "failurePolicy": "Fail",
        "sideEffects": "None", "admissionReviewVersions": ["v1"],
        "rules": [{"operations": ["*"], "apiGroups": ["admissionregistration.k8s.io"],
                   "apiVersions": ["*"], "resources": ["*"]}]}])
    status, body, _ = api(platform, "DELETE",
                          f"{ADMISSION}/validatingwebhookconfigurations/locks-itself")
    assert status == 200, body
