"""``pods/proxy``, ``services/proxy`` and ``nodes/proxy`` through the real kubectl.

One pod serves a page and a CGI script that prints what reached it (headers as
``HTTP_*``, the query string), so the relay's path, query and header handling are
checked from the backend's side.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import Platform, wait_until

WEB = """apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {ns}, labels: {{app: web}}}}
spec:
  containers:
  - name: web
    image: busybox
    ports: [{{name: http, containerPort: 8080}}]
    command: [sh, -c]
    args:
    - |
      mkdir -p /w/cgi-bin
      echo proxied > /w/index.html
      printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nenv\\n' > /w/cgi-bin/env
      chmod +x /w/cgi-bin/env
      exec httpd -f -p 8080 -h /w
    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: http}}
  - {{name: other, port: 81, targetPort: 8080}}
---
apiVersion: v1
kind: Service
metadata: {{name: nobody, namespace: {ns}}}
spec:
  selector: {{app: nobody-has-this}}
  ports: [{{port: 80}}]
"""


@pytest.fixture(scope="module")
def web(platform: Platform) -> str:
    ns = "proxy-e2e"
    platform.kubectl("create", "namespace", ns, check=False)
    platform.kubectl("apply", "-f", "-", input=WEB.format(ns=ns))
    platform.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/web", "--timeout=120s",
                     timeout=150)
    return ns


def raw(platform: Platform, path: str, check: bool = True) -> str:
    return platform.kubectl("get", "--raw", path, check=check).stdout


def test_pod_proxy_by_port_number_and_name(platform: Platform, web: str) -> None:
    assert raw(platform, f"/api/v1/namespaces/{web}/pods/web:8080/proxy/") == "proxied\n"
    assert raw(platform, f"/api/v1/namespaces/{web}/pods/web:http/proxy/index.html") == \
        "proxied\n"
    assert raw(platform, f"/api/v1/namespaces/{web}/pods/http:web:8080/proxy/") == "proxied\n"


def test_path_query_and_headers_reach_the_backend_without_credentials(
        platform: Platform, web: str) -> None:
    env = raw(platform, f"/api/v1/namespaces/{web}/pods/web:8080/proxy/cgi-bin/env?a=1&b=2")
    assert "QUERY_STRING=a=1&b=2" in env.splitlines()
    assert "HTTP_AUTHORIZATION" not in env and "REMOTE_USER" not in env


def test_a_url_ending_at_proxy_is_redirected_to_the_slash(platform: Platform, web: str) -> None:
    out = platform.kubectl("get", "--raw", f"/api/v1/namespaces/{web}/pods/web:8080/proxy",
                           "-v=6", check=False)
    assert "301 Moved Permanently" in out.stderr


def test_service_proxy_resolves_named_target_ports(platform: Platform, web: str) -> None:
    assert raw(platform, f"/api/v1/namespaces/{web}/services/web:http/proxy/") == "proxied\n"
    assert raw(platform, f"/api/v1/namespaces/{web}/services/web:81/proxy/") == "proxied\n"
    # a multi-port Service needs the port named
    out = platform.kubectl("get", "--raw", f"/api/v1/namespaces/{web}/services/web/proxy/",
                           check=False)
    assert out.returncode != 0 and "no unnamed service port" in out.stderr


def test_service_without_ready_backends_is_503(platform: Platform, web: str) -> None:
    out = platform.kubectl("get", "--raw", f"/api/v1/namespaces/{web}/services/nobody/proxy/",
                           check=False)
    assert out.returncode != 0
    assert 'no endpoints available for service "nobody"' in out.stderr


def test_selectorless_service_uses_its_endpoints(platform: Platform, web: str) -> None:
    ip = platform.kubectl("-n", web, "get", "pod", "web", "-o",
                          "jsonpath={.status.podIP}").stdout
    platform.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "manual",
                                                                  "namespace": web},
             "spec": {"ports": [{"port": 80}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual",
                                                                    "namespace": web},
             "subsets": [{"addresses": [{"ip": ip}], "ports": [{"port": 8080}]}]}]}))
    assert raw(platform, f"/api/v1/namespaces/{web}/services/manual/proxy/") == "proxied\n"


def test_unreachable_pod_port_is_503_not_a_hang(platform: Platform, web: str) -> None:
    out = platform.kubectl("get", "--raw", f"/api/v1/namespaces/{web}/pods/web:9/proxy/",
                           check=False, timeout=30)
    assert out.returncode != 0 and "ServiceUnavailable" in out.stderr


def test_node_proxy_reaches_the_agent(platform: Platform) -> None:
    node = wait_until("a node", lambda: platform.kubectl(
        "get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout)
    assert raw(platform, f"/api/v1/nodes/{node}/proxy/healthz").strip() == "ok"
    summary = json.loads(raw(platform, f"/api/v1/nodes/{node}/proxy/stats/summary"))
    assert summary["node"]["nodeName"] == node


def test_proxy_is_authorized_as_its_own_subresource(platform: Platform, web: str) -> None:
    platform.kubectl("-n", web, "create", "role", "reader", "--verb=get", "--resource=pods")
    platform.kubectl("-n", web, "create", "rolebinding", "reader", "--role=reader",
                     "--user=proxy-reader")
    assert platform.kubectl("-n", web, "get", "pod", "web", "--as=proxy-reader").returncode == 0
    out = platform.kubectl("get", "--raw", f"/api/v1/namespaces/{web}/pods/web:8080/proxy/",
                           "--as=proxy-reader", check=False)
    assert out.returncode != 0 and 'cannot get resource "pods/proxy"' in out.stderr


def test_discovery_lists_the_proxy_subresources(platform: Platform) -> None:
    core = json.loads(raw(platform, "/api/v1"))
    names = {r["name"] for r in core["resources"]}
    assert {"pods/proxy", "services/proxy", "nodes/proxy"} <= names
