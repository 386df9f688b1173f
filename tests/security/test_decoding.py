"""No request-sized denial of service through decoding, validation or patterns (issue 18).

Every case runs against the real platform, most as a namespace user holding only ``edit``:
the exact 429-byte YAML alias bomb and its neighbours (other endpoints, the lenient
"YAML sent as JSON" path, patch bodies, merge keys, long strings), nesting 2000 levels deep,
bodies and objects over upstream's 3 MiB / 1.5 MiB limits, media types that are not
JSON/YAML/protobuf (415), a backtracking ``pattern`` (RE2: linear), patterns RE2 cannot
compile and a 300-level schema (422 at CRD create).  ``/readyz`` is asked throughout by a
probe thread and must answer within a second.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
import uuid
from typing import Any, Iterator

import pytest

from tests.conftest import Platform, wait_until
from tests.security import tenants

SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SSAR_HEAD = ("apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectAccessReview\n"
             "spec: {resourceAttributes: {verb: get, resource: pods}}")
GROUP = "dec.example.com"


def alias_bomb(head: str = SSAR_HEAD, levels: str = "bcdefghi") -> bytes:
    """The reproduction of issue 18 (../shared/acceptance/security makes the same bytes)."""
    lines = [head, 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for n in levels:
        lines.append(f"{n}: &{n} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = n
    return ("\n".join(lines) + "\n").encode()


class Client:
    """Raw HTTPS as one identity: exact bytes, exact headers (or none), status and body back."""

    def __init__(self, platform: Platform, cert: str, key: str) -> None:
        self.port = platform.port
        self.ctx = ssl.create_default_context(cafile=str(platform.data_dir / "pki" / "ca.crt"))
        self.ctx.load_cert_chain(cert, key)

    def call(self, method: str, path: str, body: bytes | None = None,
             ctype: str | None = "application/json", *, chunked: bool = False,
             timeout: float = 60) -> tuple[int, bytes, float]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                           timeout=timeout)
        headers = {"Accept": "application/json"}
        if ctype is not None:
            headers["Content-Type"] = ctype
        start = time.monotonic()
        try:
            if chunked and body is not None:
                conn.request(method, path, body=iter([body[i:i + 65536]
                                                      for i in range(0, len(body), 65536)]),
                             headers=headers, encode_chunked=True)
            else:
                conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, data, time.monotonic() - start
        finally:
            conn.close()

    def status(self, *args: Any, **kw: Any) -> tuple[int, dict[str, Any]]:
        code, data, _ = self.call(*args, **kw)
        doc = json.loads(data) if data else {}
        if code >= 400:
            assert doc.get("kind") == "Status" and doc.get("code") == code, data[:300]
        return code, doc


class ReadyzProbe:
    """Asks ``/readyz`` every 20 ms on its own thread; the slowest answer is what counts."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.samples: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                code, _, took = self.client.call("GET", "/readyz", ctype=None, timeout=10)
                self.samples.append(took)
                self.failures += code != 200
            except OSError:
                self.failures += 1
            self._stop.wait(0.02)

    def __enter__(self) -> "ReadyzProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=20)

    def assert_responsive(self, limit: float = 1.0) -> None:
        assert self.samples, "the probe got no answer at all"
        assert self.failures == 0, f"{self.failures} /readyz probes failed"
        assert max(self.samples) < limit, f"/readyz took {max(self.samples):.3f}s"


@pytest.fixture(scope="module")
def tenant(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """(namespace, client as an edit-only user, client as the administrator)."""
    tmp = tmp_path_factory.mktemp("decoding")
    ns, _, kubeconfig = tenants.edit_only_user(platform, tmp, "dec")
    pki = platform.data_dir / "pki"
    admin = Client(platform, str(pki / "admin.crt"), str(pki / "admin.key"))
    mallory = Client(platform, *tenants.cert_files(kubeconfig))
    wait_until("the tenant may write configmaps", lambda: mallory.call(
        "GET", f"/api/v1/namespaces/{ns}/configmaps", ctype=None)[0] == 200, timeout=60)
    yield ns, mallory, admin
    platform.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def configmap(name: str, size: int = 0, **extra: Any) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                       "data": {"x": "a" * size}, **extra}).encode()


def crd(plural: str, schema: dict[str, Any]) -> bytes:
    kind = plural.capitalize()[:-1]
    return json.dumps({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"plural": plural, "singular": plural[:-1], "kind": kind},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": schema}}]}}).encode()


CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def install_crd(admin: Client, plural: str, schema: dict[str, Any]) -> str:
    code, data, _ = admin.call("POST", CRDS, crd(plural, schema))
    assert code in (201, 409), data[:300]
    wait_until(f"{plural} served", lambda: admin.call(
        "GET", f"/apis/{GROUP}/v1/{plural}", ctype=None)[0] == 200, timeout=30)
    return plural


# -- the alias bomb and its neighbours -----------------------------------------------------------
def test_the_issue_alias_bomb_is_refused_small_fast_and_readyz_answers(tenant) -> None:
    ns, mallory, _ = tenant
    bomb = alias_bomb()
    assert len(bomb) in range(420, 470)
    with ReadyzProbe(mallory) as probe:
        code, data, took = mallory.call("POST", SSAR, bomb, "application/yaml")
        assert 400 <= code < 500 and len(data) < 100_000, (code, len(data))
        assert took < 5, f"the bomb took {took:.1f}s to refuse"
        assert b"aliasing" in data
        # nine levels more than that took the server down: ten bombs at once
        threads = [threading.Thread(target=mallory.call, args=("POST", SSAR, alias_bomb(
            levels="bcdefghijklmnopq"), "application/yaml")) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    probe.assert_responsive()
    # and an honest review still works
    honest = SSAR_HEAD.replace("resource: pods", f"resource: pods, namespace: {ns}")
    code, review = mallory.status("POST", SSAR, honest.encode(), "application/yaml")
    assert code == 201 and review["status"]["allowed"] is True


def test_bomb_neighbours_are_refused_on_every_decoder(tenant) -> None:
    ns, mallory, _ = tenant
    cms = f"/api/v1/namespaces/{ns}/configmaps"
    cm_head = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}"
    code, _ = mallory.status("POST", cms, configmap("target"))
    assert code == 201
    merge_bomb = ["apiVersion: v1\nkind: ConfigMap\nmetadata: {name: merged}",
                  "a: &a {k0: 1, k1: 2, k2: 3, k3: 4, k4: 5, k5: 6, k6: 7, k7: 8, k8: 9}"]
    prev = "a"
    for n in "bcdefghijkl":
        merge_bomb.append(f"{n}: &{n} {{<<: [" + ",".join([f"*{prev}"] * 9) + "]}")
        prev = n
    long_string = (cm_head + "\ns: &s '" + "x" * 100_000 + "'\nb: [" +
                   ",".join(["*s"] * 200) + "]\n").encode()
    cases = [
        ("POST", cms, "application/yaml", alias_bomb(cm_head)),
        ("POST", cms, "application/json", alias_bomb(cm_head)),  # YAML sent as JSON
        ("POST", cms, "application/yaml", "\n".join(merge_bomb).encode()),
        ("POST", cms, "application/yaml", long_string),
        ("POST", cms, "application/yaml", b"a: &a [*a]\n"),  # an anchor holding itself
        ("PUT", f"{cms}/target", "application/yaml", alias_bomb(cm_head)),
        ("PATCH", f"{cms}/target?fieldManager=m", "application/apply-patch+yaml",
         alias_bomb("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: target}")),
        ("PATCH", f"{cms}/target", "application/merge-patch+json", alias_bomb("data: {}")),
        ("PATCH", f"{cms}/target", "application/strategic-merge-patch+json",
         alias_bomb("data: {}")),
        ("DELETE", f"{cms}/target", "application/yaml", alias_bomb("kind: DeleteOptions")),
    ]
    with ReadyzProbe(mallory) as probe:
        for method, path, ctype, body in cases:
            code, data, took = mallory.call(method, path, body, ctype)
            assert code in (400, 413), (method, path, ctype, code, data[:200])
            assert len(data) < 10_000 and took < 5, (method, path, len(data), took)
    probe.assert_responsive()
    code, cm = mallory.status("GET", f"{cms}/target", ctype=None)
    assert code == 200 and cm["data"] == {"x": ""}
    for name in ("bomb", "merged"):
        assert mallory.call("GET", f"{cms}/{name}", ctype=None)[0] == 404


def test_ordinary_yaml_with_anchors_and_merge_keys_still_works(tenant) -> None:
    ns, mallory, _ = tenant
    body = (b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: anchors\n"
            b"  labels: &l {app: web, tier: front}\n  annotations: *l\n"
            b"data:\n  <<: *l\n  tier: back\n  port: '80'\n")
    code, cm = mallory.status("POST", f"/api/v1/namespaces/{ns}/configmaps", body,
                              "application/yaml")
    assert code == 201, cm
    assert cm["metadata"]["annotations"] == {"app": "web", "tier": "front"}
    assert cm["data"] == {"app": "web", "tier": "back", "port": "80"}


# -- nesting -----------------------------------------------------------------------------------
def test_deep_nesting_is_a_4xx_never_a_500(tenant) -> None:
    ns, mallory, _ = tenant
    cms = f"/api/v1/namespaces/{ns}/configmaps"
    head = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"deep"},"data":'
    yhead = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\ndata: "
    chain = b"a0: &a0 [1]\n" + b"".join(b"a%d: &a%d [*a%d]\n" % (i, i, i - 1)
                                       for i in range(1, 1100))
    with ReadyzProbe(mallory) as probe:
        for body, ctype in (
                (head + b'{"a":' * 2000 + b"1" + b"}" * 2000 + b"}", "application/json"),
                (head + b"[" * 2000 + b"]" * 2000 + b"}", "application/json"),
                (yhead + b"[" * 2000 + b"]" * 2000 + b"\n", "application/yaml"),
                (yhead + b"\n" + b"".join(b" " * i + b"a:\n" for i in range(1, 2000)) + b"x\n",
                 "application/yaml"),
                (yhead + b"- " * 2000 + b"x\n", "application/yaml"),
                (chain, "application/yaml"),  # nesting made by aliases, not by the text
                (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "application/json"),
        ):
            code, data, _ = mallory.call("POST", cms, body, ctype)
            assert code == 400, (body[:80], code, data[:200])
        # deep enough to overflow the server's recursion, shallow enough to parse: a 422
        code, status = mallory.status("POST", cms, head + b'{"a":' * 300 + b"1" + b"}" * 300
                                      + b"}")
        assert code == 422, status
        assert status["details"]["causes"][0]["field"].startswith("data.a.a.a")
    probe.assert_responsive()


def test_deeply_nested_custom_resources(tenant) -> None:
    _, _, admin = tenant
    plural = install_crd(admin, "freeforms", {"type": "object",
                                              "x-kubernetes-preserve-unknown-fields": True})
    path = f"/apis/{GROUP}/v1/namespaces/default/{plural}"

    def nested(name: str, levels: int) -> bytes:
        return (json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "Freeform",
                            "metadata": {"name": name}})[:-1] + ',"spec":' +
                '{"a":' * levels + "1" + "}" * levels + "}").encode()

    code, obj = admin.status("POST", path, nested("deep90", 90))
    assert code == 201, obj.get("message")
    code, obj = admin.status("PATCH", f"{path}/deep90?fieldManager=m",
                             nested("deep90", 90), "application/apply-patch+yaml")
    assert code == 200, obj.get("message")
    for levels in (150, 250, 900):
        code, obj = admin.status("POST", path, nested(f"deep{levels}", levels))
        assert code == 422 and obj["details"]["causes"][0]["field"].startswith("spec.a.a"), obj
    # JSON patch copies can nest an object into itself, or double it at every operation
    ops = [{"op": "copy", "from": "/spec", "path": "/spec/a/b"} for _ in range(20)]
    code, obj = admin.status("PATCH", f"{path}/deep90", json.dumps(ops).encode(),
                             "application/json-patch+json")
    assert code == 422 and "nested too deeply" in obj["message"], obj
    code, obj = admin.status("POST", path, nested("doubles", 1))
    assert code == 201, obj
    ops = [{"op": "copy", "from": "/spec", "path": f"/spec/k{i}"} for i in range(40)]
    code, obj = admin.status("PATCH", f"{path}/doubles", json.dumps(ops).encode(),
                             "application/json-patch+json")
    assert code == 413, obj


# -- sizes ---------------------------------------------------------------------------------------
def test_request_and_object_size_limits(tenant) -> None:
    ns, mallory, admin = tenant
    cms = f"/api/v1/namespaces/{ns}/configmaps"
    with ReadyzProbe(mallory) as probe:
        # under the 3 MiB request limit, a ConfigMap over 1 MiB of data is invalid (422, as
        # upstream validates before its store refuses 1.5 MiB objects); over it, 413
        for name, size, chunked, code_, limit in (
                ("cm3m", 3_000_000, False, 422, b"1048576"),
                ("cm16", 1_600_000, False, 422, b"1048576"),
                ("cm32", 3_200_000, False, 413, b"3145728"),
                ("chunked", 3_200_000, True, 413, b"3145728")):
            code, data, _ = mallory.call("POST", cms, configmap(name, size), chunked=chunked)
            assert code == code_ and limit in data, (name, code, data[:200])
            assert json.loads(data)["reason"] == ("Invalid" if code_ == 422
                                                  else "RequestEntityTooLarge")
            assert mallory.call("GET", f"{cms}/{name}", ctype=None)[0] == 404
    probe.assert_responsive()
    # a patch that grows an object past the limit is refused too
    code, _ = mallory.status("POST", cms, configmap("grows", 1_000_000))
    assert code == 201
    code, status = mallory.status("PATCH", f"{cms}/grows", json.dumps(
        {"data": {"y": "b" * 700_000}}).encode(), "application/merge-patch+json")
    assert code == 422 and "1048576" in status["message"], status  # ConfigMap data cap
    # ConfigMap data is capped at 1 MiB on its own, as upstream's MaxConfigMapSize
    code, status = mallory.status("POST", cms, configmap("over-1mib", 1_100_000))
    assert code == 422 and "may not be more than 1048576 bytes" in status["message"], status
    # 1.4 MB is within the object limit (a custom resource)
    plural = install_crd(admin, "blobs", {"type": "object",
                                          "x-kubernetes-preserve-unknown-fields": True})
    body = json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "Blob", "metadata": {"name": "b14"},
                       "data": "x" * 1_400_000}).encode()
    code, data, _ = admin.call("POST", f"/apis/{GROUP}/v1/namespaces/default/{plural}", body)
    assert code == 201, data[:300]
    # and 1.6 MB is over it: 413 with upstream's 1.5 MiB figure
    body = json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "Blob", "metadata": {"name": "b16"},
                       "data": "x" * 1_600_000}).encode()
    code, data, _ = admin.call("POST", f"/apis/{GROUP}/v1/namespaces/default/{plural}", body)
    assert code == 413 and b"1572864" in data, data[:300]
    # a patch that grows an object past the object limit is refused the same way
    code, data, _ = admin.call("PATCH", f"/apis/{GROUP}/v1/namespaces/default/{plural}/b14",
                               json.dumps({"more": "y" * 300_000}).encode(),
                               "application/merge-patch+json")
    assert code == 413 and b"1572864" in data, data[:300]


def test_json_patch_operation_limit(tenant) -> None:
    ns, mallory, _ = tenant
    cms = f"/api/v1/namespaces/{ns}/configmaps"
    code, _ = mallory.status("POST", cms, configmap("ops"))
    assert code == 201
    ops = [{"op": "test", "path": "/data/x", "value": ""}] * 10_001
    code, status = mallory.status("PATCH", f"{cms}/ops", json.dumps(ops).encode(),
                                  "application/json-patch+json")
    assert code == 413 and "10000" in status["message"], status


# -- media types -----------------------------------------------------------------------------------
@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "text/yaml",
                                   "application/x-www-form-urlencoded", "*/*", "text/json"])
def test_bodies_of_other_media_types_are_415(tenant, ctype: str | None) -> None:
    ns, mallory, _ = tenant
    name = f"mt-{uuid.uuid4().hex[:6]}"
    code, status = mallory.status("POST", f"/api/v1/namespaces/{ns}/configmaps",
                                  configmap(name), ctype)
    assert code == 415 and status["reason"] == "UnsupportedMediaType", status
    assert "application/json, application/yaml" in status["message"]
    assert mallory.call("GET", f"/api/v1/namespaces/{ns}/configmaps/{name}",
                        ctype=None)[0] == 404


@pytest.mark.parametrize("ctype", ["", None])
def test_a_body_without_a_media_type_is_json_as_upstream_reads_it(tenant,
                                                                  ctype: str | None) -> None:
    """kube-apiserver takes its first media type (JSON) when there is none; the official
    Python client sends its bodies so.  YAML without a type is still bounded."""
    ns, mallory, _ = tenant
    cms = f"/api/v1/namespaces/{ns}/configmaps"
    name = f"nt-{uuid.uuid4().hex[:6]}"
    assert mallory.status("POST", cms, configmap(name), ctype)[0] == 201
    assert mallory.status("PUT", f"{cms}/{name}", configmap(name, 3), ctype)[0] == 200
    code, data, _ = mallory.call("POST", cms, alias_bomb("kind: ConfigMap"), ctype)
    assert code == 400 and len(data) < 10_000
    assert mallory.status("DELETE", f"{cms}/{name}", b'{"kind":"DeleteOptions"}', ctype)[0] \
        == 200


def test_patch_and_delete_bodies_of_other_media_types_are_415(tenant) -> None:
    ns, mallory, _ = tenant
    cms = f"/api/v1/namespaces/{ns}/configmaps"
    code, _ = mallory.status("POST", cms, configmap("mt-target"))
    assert code == 201
    assert mallory.status("PATCH", f"{cms}/mt-target", b'{"data":{"y":"1"}}', "text/plain")[0] \
        == 415
    assert mallory.status("PATCH", f"{cms}/mt-target", b'{"data":{"y":"1"}}', None)[0] == 415
    assert mallory.status("DELETE", f"{cms}/mt-target", b'{"kind":"DeleteOptions"}',
                          "application/xml")[0] == 415
    assert mallory.status("PUT", f"{cms}/mt-target", configmap("mt-target"), "text/plain")[0] \
        == 415
    # a DELETE without a body needs no type
    assert mallory.status("DELETE", f"{cms}/mt-target", None, None)[0] == 200


# -- CRD patterns and schemas --------------------------------------------------------------------
def test_a_backtracking_pattern_is_answered_at_once(tenant) -> None:
    _, mallory, admin = tenant
    plural = install_crd(admin, "redos", {"type": "object", "properties": {
        "s": {"type": "string", "pattern": "^(a+)+$"}}})
    path = f"/apis/{GROUP}/v1/namespaces/default/{plural}"
    with ReadyzProbe(mallory) as probe:
        for n in (41, 5000):
            body = json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "Redo",
                               "metadata": {"name": f"r{n}"}, "s": "a" * (n - 1) + "!"}).encode()
            code, data, took = admin.call("POST", path, body)
            assert code == 422 and b"should match" in data, (code, data[:300])
            assert took < 1.0, f"{took:.2f}s for a {n}-character value"
    probe.assert_responsive()
    good = json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "Redo", "metadata": {"name": "ok"},
                       "s": "a" * 41}).encode()
    assert admin.call("POST", path, good)[0] == 201


@pytest.mark.parametrize("pattern", ["(?=a)", "(?!a)b", "(?<=a)b", r"(a)\1", "a{1001}"])
def test_patterns_re2_cannot_compile_are_refused_at_create(tenant, pattern: str) -> None:
    _, _, admin = tenant
    plural = f"pats{uuid.uuid4().hex[:6]}s"
    code, status = admin.status("POST", CRDS, crd(plural, {"type": "object", "properties": {
        "s": {"type": "string", "pattern": pattern}}}))
    assert code == 422, status
    field = "spec.versions[0].schema.openAPIV3Schema.properties[s].pattern"
    assert any(c["field"] == field for c in status["details"]["causes"]), status
    assert "must be a valid regular expression" in status["message"]


@pytest.mark.parametrize("levels", [80, 300, 1000])
def test_a_deep_schema_is_422_at_create(tenant, levels: int) -> None:
    _, _, admin = tenant
    plural = f"deep{levels}s"
    marker = {"type": "object", "properties": {"a": "NEST"}}  # the text, not the object:
    body = crd(plural, marker)  # json.dumps itself cannot nest 2000 levels
    inner = b'{"type":"string"}'
    for _ in range(levels):
        inner = b'{"type":"object","properties":{"a":' + inner + b"}}"
    body = body.replace(b'{"type": "object", "properties": {"a": "NEST"}}', inner)
    code, data, _ = admin.call("POST", CRDS, body)
    status = json.loads(data)
    assert status["kind"] == "Status", data[:300]
    if levels < 500:
        assert code == 422 and "nested too deeply" in status["message"], status
    else:  # past what the JSON decoder reads at all
        assert code == 400 and "depth" in status["message"], status
    assert admin.call("GET", f"{CRDS}/{plural}.{GROUP}", ctype=None)[0] == 404
