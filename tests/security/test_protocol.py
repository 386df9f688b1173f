"""Every response answered, and HTTP hygiene as kube-apiserver has it (issue 18).

Against the real platform, as a namespace user holding only ``edit``: a body key with a
newline (stored, answered 201 with an escaped ``Warning``) and its neighbours (quotes,
unicode, a 100 KB field name, CR/LF in a URL segment, a CRD's deprecation warning);
request heads over Go's 1 MiB limit (431 with a Status, nothing echoed); malformed
requests (a short 400, logged once per client, no traceback); no version in ``Server``;
strict timeoutSeconds, resourceVersion, resourceVersionMatch and selectors; eviction
bodies that are not an Eviction of the pod.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.parse
import uuid
from typing import Any, Iterator

import pytest

from tests.conftest import Platform, wait_until
from tests.security import tenants


class Client:
    """Raw HTTPS as one identity: status, headers and body of exactly what was sent."""

    def __init__(self, platform: Platform, cert: str, key: str) -> None:
        self.port = platform.port
        self.ctx = ssl.create_default_context(cafile=str(platform.data_dir / "pki" / "ca.crt"))
        self.ctx.load_cert_chain(cert, key)

    def call(self, method: str, path: str, body: bytes | None = None,
             ctype: str = "application/json") -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": ctype,
                                                           "Accept": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def status(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        code, _, raw = self.call(method, path, data)
        doc = json.loads(raw) if raw else {}
        if code >= 400:
            assert doc.get("kind") == "Status" and doc.get("code") == code, raw[:300]
        return code, doc

    def raw(self, data: bytes, timeout: float = 20) -> bytes:
        """Send bytes as they are on a fresh TLS connection; everything until the server closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as plain:
            with self.ctx.wrap_socket(plain, server_hostname="localhost") as s:
                try:
                    s.sendall(data)
                except OSError:
                    pass  # the server may answer and close before it read everything
                out = b""
                try:
                    while chunk := s.recv(65536):
                        out += chunk
                except OSError:
                    pass
                return out


@pytest.fixture(scope="module")
def tenant(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """(namespace, client as an edit-only user, client as the administrator)."""
    tmp = tmp_path_factory.mktemp("protocol")
    ns, _, kubeconfig = tenants.edit_only_user(platform, tmp, "proto")
    pki = platform.data_dir / "pki"
    admin = Client(platform, str(pki / "admin.crt"), str(pki / "admin.key"))
    mallory = Client(platform, *tenants.cert_files(kubeconfig))
    wait_until("the tenant may write configmaps", lambda: mallory.call(
        "GET", f"/api/v1/namespaces/{ns}/configmaps")[0] == 200, timeout=60)
    yield ns, mallory, admin
    platform.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _warnings(headers: http.client.HTTPMessage) -> str:
    return ", ".join(headers.get_all("Warning") or [])


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


# -- every response answered -----------------------------------------------------------------
def test_a_key_with_a_newline_is_answered_and_readable(tenant) -> None:
    ns, mallory, _ = tenant
    body = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"nl"},"bo\\ngus":1}'
    code, headers, raw = mallory.call("POST", f"/api/v1/namespaces/{ns}/configmaps", body)
    assert code == 201, raw[:300]
    warning = _warnings(headers)
    assert warning.startswith("299 - ") and "bo\\\\ngus" in warning, warning
    got, doc = mallory.status("GET", f"/api/v1/namespaces/{ns}/configmaps/nl")
    assert got == 200 and doc["metadata"]["name"] == "nl" and "bo\ngus" not in doc
    # Strict refuses it instead, with the field named in the body
    body = body.replace(b'"nl"', b'"nl-strict"')
    code, _, raw = mallory.call("POST", f"/api/v1/namespaces/{ns}/configmaps"
                                        "?fieldValidation=Strict", body)
    assert code == 400 and b"unknown field" in raw, raw[:300]


@pytest.mark.parametrize("field", ['q"u\\o\'te', "\u00e9\u4e2d\U0001F600", "cr\rlf\n\t\x00\x7f\u0085",
                                   "long" * 25_000])
def test_unknown_field_names_reach_the_warning_escaped(tenant, field: str) -> None:
    ns, mallory, _ = tenant
    name = f"uf-{uuid.uuid4().hex[:6]}"
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                       field: 1, "data": {"k": "v"}}).encode()
    code, headers, raw = mallory.call("POST", f"/api/v1/namespaces/{ns}/configmaps", body)
    assert code == 201, raw[:300]
    warning = _warnings(headers)
    assert warning.startswith('299 - "unknown field'), warning[:200]
    assert not any(c in warning for c in "\r\n\x00\x7f"), repr(warning[:200])
    assert len(warning) < 2000, len(warning)  # upstream cuts a text to 256 runes past 4 Ki
    assert mallory.status("GET", f"/api/v1/namespaces/{ns}/configmaps/{name}")[0] == 200


def test_many_unknown_fields_are_bounded(tenant) -> None:
    ns, mallory, _ = tenant
    fields = {f"f{i}-" + "x" * 40: i for i in range(2000)}
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "many"}, **fields}).encode()
    code, headers, raw = mallory.call("POST", f"/api/v1/namespaces/{ns}/configmaps", body)
    assert code == 201, raw[:300]
    assert 0 < len(_warnings(headers)) < 8 * 1024


@pytest.mark.parametrize("segment", ["a%0d%0aSet-Cookie:%20x", "a%0ab", "%00", "a%22b"])
def test_cr_lf_in_a_url_segment_is_a_4xx(tenant, segment: str) -> None:
    ns, mallory, _ = tenant
    for method, body in (("GET", None), ("PUT", {"apiVersion": "v1", "kind": "ConfigMap",
                                                 "metadata": {"name": "x"}}),
                         ("DELETE", None)):
        code, doc = mallory.status(method, f"/api/v1/namespaces/{ns}/configmaps/{segment}", body)
        assert 400 <= code < 500, (method, code, doc)


def test_a_label_value_with_a_newline_is_answered(tenant) -> None:
    ns, mallory, _ = tenant
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "lbl", "labels": {"a": "x\ny"}},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    code, doc = mallory.status("POST", f"/api/v1/namespaces/{ns}/pods", pod)
    assert code == 422, doc
    code, doc = mallory.status("POST", f"/api/v1/namespaces/{ns}/configmaps",
                               {"metadata": {"name": "lbl", "labels": {"a\nb": "c"}}, "x\ny": 1})
    assert code == 422, doc


def test_a_deprecation_warning_with_a_newline_is_escaped(platform: Platform, tenant) -> None:
    ns, mallory, admin = tenant
    group = f"p{uuid.uuid4().hex[:6]}.example.com"
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": f"things.{group}"},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "deprecated": True,
                                  "deprecationWarning": "old\r\nSet-Cookie: x=1",
                                  "schema": {"openAPIV3Schema": {
                                      "type": "object",
                                      "x-kubernetes-preserve-unknown-fields": True}}}]}}
    code, doc = admin.status("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                             crd)
    if code == 422:  # upstream refuses a deprecationWarning that is not printable: also fine
        return
    assert code == 201, doc
    try:
        path = f"/apis/{group}/v1/namespaces/{ns}/things"
        wait_until("the CRD is served", lambda: admin.call("GET", path)[0] == 200, timeout=30)
        code, headers, raw = admin.call("POST", path, json.dumps(
            {"apiVersion": f"{group}/v1", "kind": "Thing", "metadata": {"name": "t"}}).encode())
        assert code == 201, raw[:300]
        warning = _warnings(headers)
        assert "old\\\\r\\\\nSet-Cookie" in warning and "Set-Cookie" not in headers, warning
    finally:
        admin.call("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                             f"things.{group}")


# -- head limits, malformed requests, logging, Server ----------------------------------------
def test_a_head_over_1_mib_is_431_with_a_status(tenant) -> None:
    _, mallory, _ = tenant
    marker = b"ECHO-ME-" + uuid.uuid4().hex.encode()
    one_big = (b"GET /version HTTP/1.1\r\nHost: x\r\nX-Big: " + marker + b"a" * 1_100_000
               + b"\r\n\r\n")
    many = (b"GET /version HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: %s%s\r\n" % (i, marker, b"b" * 4000) for i in range(300))
            + b"\r\n")
    long_line = b"GET /version?" + marker + b"c" * 1_100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    for request in (one_big, many, long_line):
        head, body = _split_head(mallory.raw(request))
        assert head.split(b"\r\n")[0].split(b" ")[1] == b"431", head
        status = json.loads(body)
        assert status["kind"] == "Status" and status["code"] == 431, body[:300]
        assert marker not in head + body
    # under the limit is served, as Go serves it
    ok = (b"GET /version HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 500_000
          + b"\r\nConnection: close\r\n\r\n")
    head, body = _split_head(mallory.raw(ok))
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["major"] == "1"


def test_malformed_requests_are_short_400s_logged_once(platform: Platform, tenant) -> None:
    _, mallory, _ = tenant
    marker = b"ECHO-ME-" + uuid.uuid4().hex.encode()
    bad = [b"GET /\x00" + marker + b" HTTP/1.1\r\n\r\n",
           b"GET /version HTTP/1.1\r\nHost: x\r\n" + marker + b" no colon\r\n\r\n",
           marker + b"\r\n\r\n",
           b"GET /version HTTP/1.1\r\nHost: x\r\nContent-Length: -5" + marker + b"\r\n\r\n"]
    for request in bad:
        head, body = _split_head(mallory.raw(request))
        assert head.split(b"\r\n")[0].split(b" ")[1] == b"400", head
        assert marker not in head + body and len(body) < 100, body
        assert b"aiohttp" not in head and b"Python" not in head, head
    before = platform.log_path.stat().st_size
    for i in range(200):
        mallory.raw(bad[i % len(bad)])
    assert mallory.status("GET", "/version")[0] == 200  # still serving
    with open(platform.log_path, "rb") as f:
        f.seek(before)
        added = f.read().decode(errors="replace")
    lines = [line for line in added.splitlines()
             if "malformed" in line.lower() or "Error handling request" in line]
    assert len(lines) <= 1, lines[:5]
    assert "Traceback" not in added


def test_server_header_has_no_version(tenant) -> None:
    ns, mallory, _ = tenant
    answers = [mallory.call("GET", "/version")[1], mallory.call("GET", "/nothing-here")[1],
               mallory.call("GET", f"/api/v1/namespaces/{ns}/configmaps/absent")[1],
               mallory.call("POST", f"/api/v1/namespaces/{ns}/configmaps", b"{")[1],
               mallory.call("GET", f"/api/v1/namespaces/{ns}/configmaps?watch=1"
                                   "&timeoutSeconds=1")[1]]
    servers = [h.get("Server", "") for h in answers]
    for raw in (mallory.raw(b"GARBAGE\r\n\r\n"),
                mallory.raw(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 1_100_000 + b"\r\n\r\n")):
        head, _ = _split_head(raw)
        servers += [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                    if line.lower().startswith(b"server:")]
    assert len(servers) == 7, servers
    for s in servers:
        assert "aiohttp" not in s and "Python" not in s and not any(ch.isdigit() for ch in s), s


# -- query options ---------------------------------------------------------------------------
@pytest.mark.parametrize("query", ["timeoutSeconds=-1", "timeoutSeconds=abc", "timeoutSeconds=1e3",
                                   "timeoutSeconds=99999999999999999999999",
                                   "timeoutSeconds=%201", "timeoutSeconds=1.5"])
def test_watch_timeout_seconds_is_checked(tenant, query: str) -> None:
    ns, mallory, _ = tenant
    code, doc = mallory.status("GET", f"/api/v1/namespaces/{ns}/configmaps?watch=1&{query}")
    assert code == 400, doc
    code, doc = mallory.status("GET", f"/api/v1/namespaces/{ns}/configmaps?{query}")
    assert code == 400, doc


def test_a_huge_watch_timeout_is_served_and_bounded(tenant) -> None:
    ns, mallory, _ = tenant
    conn = http.client.HTTPSConnection("127.0.0.1", mallory.port, context=mallory.ctx, timeout=10)
    try:
        conn.request("GET", f"/api/v1/namespaces/{ns}/configmaps?watch=1"
                            "&timeoutSeconds=9223372036854775807")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


@pytest.mark.parametrize("rv", ["abc", "-1", "1_0", "+5", "%205", "%D9%A5",
                                "99999999999999999999999", "1.0", "0x10"])
def test_resource_version_must_be_a_decimal_integer(tenant, rv: str) -> None:
    ns, mallory, _ = tenant
    for extra in ("", "&watch=1", "&resourceVersionMatch=NotOlderThan"):
        code, doc = mallory.status("GET", f"/api/v1/namespaces/{ns}/configmaps"
                                          f"?resourceVersion={rv}{extra}")
        assert code == 400 and "invalid resource version" in doc["message"], (extra, doc)


@pytest.mark.parametrize("query, code, text", [
    ("resourceVersionMatch=Exact", 422, "forbidden unless resourceVersion is provided"),
    ("resourceVersionMatch=Exact&resourceVersion=0", 422, 'forbidden for resourceVersion "0"'),
    ("resourceVersionMatch=Bogus&resourceVersion=1", 422, "Unsupported value"),
    ("resourceVersionMatch=NotOlderThan&resourceVersion=1&continue=x", 422,
     "forbidden when continue is provided"),
    ("sendInitialEvents=true", 422, "sendInitialEvents is forbidden for list"),
    ("watch=1&resourceVersionMatch=NotOlderThan", 422,
     "forbidden for watch unless sendInitialEvents is provided"),
    ("watch=1&resourceVersionMatch=Exact&resourceVersion=1", 422, "Unsupported value"),
    ("watch=1&sendInitialEvents=true&allowWatchBookmarks=true", 422,
     "requires setting resourceVersionMatch to NotOlderThan"),
])
def test_resource_version_match_combinations(tenant, query: str, code: int, text: str) -> None:
    ns, mallory, _ = tenant
    got, doc = mallory.status("GET", f"/api/v1/namespaces/{ns}/configmaps?{query}")
    assert got == code and text in doc["message"], doc
    if code == 422:
        assert doc["details"]["kind"] == "ListOptions"


@pytest.mark.parametrize("selector", ["a in (", "!", "a==b==c", "a=b=c", "a b", "(", "a,",
                                      "a in (b", "x>a", "\u00e9=1", "a=\u00e9", "a\x00=b", "a=\x00b",
                                      "\x00", "k" * 70_000, "a=" + "v" * 70_000, "a!", "a=(b"])
def test_bad_label_selectors_are_400(tenant, selector: str) -> None:
    ns, mallory, _ = tenant
    q = urllib.parse.quote(selector, safe="")
    for extra in ("", "&watch=1"):
        code, doc = mallory.status("GET", f"/api/v1/namespaces/{ns}/configmaps"
                                          f"?labelSelector={q}{extra}")
        assert code == 400, (selector[:30], extra, doc)


@pytest.mark.parametrize("selector, text", [
    ("spec.foo=x", "field label not supported: spec.foo"),
    ("metadata.labels=x", "field label not supported: metadata.labels"),
    (" metadata.name = x", "field label not supported:  metadata.name "),
    ("a", "invalid selector"), ("a==b==c", "invalid field selector"),
    ("metadata.name", "invalid selector"), ("a in (b)", "invalid selector"),
    ("\u00e9=1", "field label not supported"),
])
def test_bad_field_selectors_are_400(tenant, selector: str, text: str) -> None:
    ns, mallory, _ = tenant
    q = urllib.parse.quote(selector, safe="")
    for extra in ("", "&watch=1"):
        code, doc = mallory.status("GET", f"/api/v1/namespaces/{ns}/configmaps"
                                          f"?fieldSelector={q}{extra}")
        assert code == 400 and text in doc["message"], (selector, extra, doc)


# -- eviction bodies -------------------------------------------------------------------------
def test_an_eviction_body_must_be_an_eviction_of_the_pod(tenant) -> None:
    ns, mallory, _ = tenant
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ev"},
           "spec": {"nodeName": "no-such-node",
                    "containers": [{"name": "c", "image": "busybox"}]}}
    assert mallory.status("POST", f"/api/v1/namespaces/{ns}/pods", pod)[0] == 201
    url = f"/api/v1/namespaces/{ns}/pods/ev/eviction"
    good = {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "ev", "namespace": ns}}
    wrong = [
        {**good, "kind": "ConfigMap"},
        {**good, "apiVersion": "v1"},
        {**good, "apiVersion": "apps/v1", "kind": "Deployment"},
        {**good, "metadata": {"name": "other"}},
        {**good, "metadata": {}},
        {**good, "metadata": {"name": "ev", "namespace": "elsewhere"}},
        {**good, "deleteOptions": "now"},
        {**good, "deleteOptions": {"gracePeriodSeconds": "0"}},
        {**good, "deleteOptions": {"dryRun": ["Sometimes"]}},
    ]
    for body in wrong:
        code, doc = mallory.status("POST", url, body)
        assert code == 400, (body, doc)
    assert mallory.status("GET", f"/api/v1/namespaces/{ns}/pods/ev")[0] == 200
    code, doc = mallory.status("POST", url, {**good, "apiVersion": "policy/v1beta1",
                                             "deleteOptions": {"gracePeriodSeconds": 0}})
    assert code == 201, doc
    wait_until("the evicted pod is gone", lambda: mallory.status(
        "GET", f"/api/v1/namespaces/{ns}/pods/ev")[0] == 404, timeout=30)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "GET", "DELETE"])
@pytest.mark.parametrize("subresource", ["binding", "eviction"])
def test_pod_create_only_subresources_refuse_other_methods(tenant, method: str,
                                                           subresource: str) -> None:
    """As upstream: binding and eviction are create-only; an update there never reaches the
    pod's update path (which would otherwise be reached with a Binding body)."""
    ns, mallory, admin = tenant  # the administrator: the method, not RBAC, must refuse it
    name = f"sub-{subresource}-{method.lower()}"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    assert mallory.status("POST", f"/api/v1/namespaces/{ns}/pods", pod)[0] == 201
    body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"kind": "Node", "name": "elsewhere"}}
    code, doc = admin.status(method, f"/api/v1/namespaces/{ns}/pods/{name}/{subresource}",
                             body if method in ("PUT", "PATCH") else None)
    assert (code, doc.get("reason")) == (405, "MethodNotAllowed"), doc
    code, got = mallory.status("GET", f"/api/v1/namespaces/{ns}/pods/{name}")
    assert code == 200 and got["spec"].get("nodeName") != "elsewhere", got["spec"]


def test_the_write_path_still_answers_after_all_this(tenant) -> None:
    """A last check that the server took every hostile request above in its stride."""
    ns, mallory, _ = tenant
    start = time.monotonic()
    code, _ = mallory.status("POST", f"/api/v1/namespaces/{ns}/configmaps",
                             {"metadata": {"name": "after"}, "data": {"k": "v"}})
    assert code == 201 and time.monotonic() - start < 5
