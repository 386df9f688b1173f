"""Hostile input never gets a 500 and never stops the server (hypothesis over real HTTP)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import Platform

PATHS = [
    "/api/v1/namespaces/default/configmaps",
    "/api/v1/namespaces/default/configmaps/fuzz",
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces",
    "/apis/apps/v1/namespaces/default/deployments",
    "/apis/apps/v1/namespaces/default/deployments/fuzz/scale",
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/fuzz.example.com",
    "/apis/rbac.authorization.k8s.io/v1/clusterroles/fuzz",  # a DELETE of the list would
                                                              # remove every role (then restored)
    "/api/v1/namespaces/default/services",
    "/apis/batch/v1/namespaces/default/jobs",
]
CONTENT_TYPES = ["application/json", "application/yaml", "application/merge-patch+json",
                 "application/json-patch+json", "application/strategic-merge-patch+json",
                 "application/apply-patch+yaml", "text/plain", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["metadata", "spec", "name", "kind", "apiVersion", "data", "labels",
                         "containers", "op", "path", "value", "selector", "x"]) | st.text(max_size=8),
        children, max_size=5),
    max_leaves=25)

objects = st.fixed_dictionaries(
    {"metadata": st.fixed_dictionaries({"name": st.sampled_from(["fuzz", "Bad_Name", "", "a" * 300])},
                                       optional={"labels": json_values,
                                                 "resourceVersion": json_values,
                                                 "finalizers": json_values})},
    optional={"apiVersion": st.sampled_from(["v1", "apps/v1", "bogus/v9", ""]),
              "kind": st.sampled_from(["ConfigMap", "Deployment", "Pod", "Nope"]),
              "data": json_values, "spec": json_values})

bodies = st.one_of(objects.map(lambda o: json.dumps(o).encode()),
                   json_values.map(lambda o: json.dumps(o).encode()),
                   st.binary(max_size=200))


def call(platform: Platform, ctx: ssl.SSLContext, method: str, path: str, body: bytes | None,
         ctype: str, query: str) -> int:
    req = urllib.request.Request(platform.url + path + query, data=body, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        payload = e.read()
        if e.code >= 400:
            status = json.loads(payload)
            assert status["kind"] == "Status" and status["code"] == e.code, payload[:300]
        return e.code


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "GET"]),
       path=st.sampled_from(PATHS), body=bodies, ctype=st.sampled_from(CONTENT_TYPES),
       query=st.sampled_from(["", "?dryRun=All", "?fieldValidation=Strict", "?labelSelector=a%20in",
                              "?fieldSelector=x", "?limit=-1", "?resourceVersion=abc",
                              "?fieldManager=f&force=true", "?continue=zz", "?watch=maybe"]))
def test_no_request_gets_a_500(platform: Platform, method: str, path: str, body: bytes,
                               ctype: str, query: str) -> None:
    ctx = platform.ssl_context()
    code = call(platform, ctx, method, path, body if method != "GET" else None, ctype, query)
    assert code < 500, (method, path, body[:200], ctype, query, code)


def test_server_still_serves_after_fuzzing(platform: Platform) -> None:
    ctx = platform.ssl_context()
    assert call(platform, ctx, "GET", "/api/v1/namespaces/default", None, "", "") == 200


def test_known_bad_bodies_are_4xx(platform: Platform) -> None:
    """Cases the fuzzer once found: kind-specific defaulting must only see well-typed objects."""
    ctx = platform.ssl_context()
    for path, body in (("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", b'{"spec":true}'),
                       ("/apis/apps/v1/namespaces/default/deployments", b'{"spec":[]}'),
                       ("/api/v1/namespaces/default/pods", b'{"metadata":{"name":"p"},"spec":1}')):
        code = call(platform, ctx, "POST", path, body, "application/json", "")
        assert 400 <= code < 500, (path, code)
