"""The API server driven by the real kubectl, as users drive it."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

from atoll.apiserver import openapi_proto


from tests.conftest import Platform

CM = """apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}, namespace: {ns}, labels: {{app: x, tier: {tier}}}}}
data: {{k: v}}
"""

DEPLOY = """apiVersion: apps/v1
kind: Deployment
metadata: {{name: d1, namespace: {ns}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: d1}}}}
  template:
    metadata: {{labels: {{app: d1}}}}
    spec:
      containers:
      - name: c
        image: busybox
        command: [sleep, "3600"]
        env: [{{name: A, value: "1"}}]
        ports: [{{containerPort: 80}}]
      - name: side
        image: busybox
"""


def test_api_resources_and_versions(platform: Platform) -> None:
    out = platform.kubectl("api-resources").stdout
    for expected in ("pods", "deployments", "customresourcedefinitions", "rolebindings",
                     "leases", "storageclasses", "jobs", "selfsubjectaccessreviews"):
        assert any(line.split()[0] == expected for line in out.splitlines()[1:]), expected
    assert "ns" in out and "deploy" in out
    version = json.loads(platform.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["major"] == "1"


def test_a_group_document_per_group(platform: Platform) -> None:
    """GET /apis/<group> is its APIGroup (client-go's legacy discovery asks for it)."""
    for group, preferred in (("apps", "apps/v1"),
                             ("vmoperator.vmware.com", "vmoperator.vmware.com/v1alpha6")):
        doc = json.loads(platform.kubectl("get", "--raw", f"/apis/{group}").stdout)
        assert doc["kind"] == "APIGroup" and doc["name"] == group
        assert doc["preferredVersion"]["groupVersion"] == preferred
    missing = platform.kubectl("get", "--raw", "/apis/no.such.group", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_builtin_namespaces(platform: Platform) -> None:
    out = platform.kubectl("get", "ns", "-o", "name").stdout.split()
    for ns in ("namespace/default", "namespace/kube-system", "namespace/kube-public",
               "namespace/kube-node-lease"):
        assert ns in out


def test_apply_is_idempotent_and_server_side(platform: Platform, namespace: str) -> None:
    manifest = CM.format(name="cm1", ns=namespace, tier="a")
    assert "created" in platform.kubectl("apply", "-f", "-", input=manifest).stdout
    assert "unchanged" in platform.kubectl("apply", "-f", "-", input=manifest).stdout
    changed = manifest.replace("{k: v}", "{k: v2}")
    assert "configured" in platform.kubectl("apply", "-f", "-", input=changed).stdout
    assert platform.kubectl("get", "cm", "cm1", "-n", namespace, "-o",
                            "jsonpath={.data.k}").stdout == "v2"
    out = platform.kubectl("apply", "--server-side", "-f", "-", input=changed).stdout
    assert "serverside-applied" in out
    obj = json.loads(platform.kubectl("get", "cm", "cm1", "-n", namespace, "-o", "json",
                                      "--show-managed-fields").stdout)
    entries = {(m["manager"], m["operation"]): m for m in obj["metadata"]["managedFields"]}
    assert entries[("kubectl", "Apply")]["fieldsV1"] == {
        "f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}}}
    # kubectl moved client-side apply's ownership onto its server-side manager
    assert ("kubectl-client-side-apply", "Update") not in entries
    # a field the applier stops declaring is removed when nobody else owns it
    platform.kubectl("apply", "--server-side", "--field-manager", "solo", "-f", "-",
                     input=changed.replace("cm1", "cm1b"))
    platform.kubectl("apply", "--server-side", "--field-manager", "solo", "-f", "-",
                     input=changed.replace("cm1", "cm1b").replace("{k: v2}", "{other: x}"))
    data = json.loads(platform.kubectl("get", "cm", "cm1b", "-n", namespace, "-o",
                                       "jsonpath={.data}").stdout)
    assert data == {"other": "x"}


def test_server_side_apply_conflict(platform: Platform, namespace: str) -> None:
    manifest = CM.format(name="ssa", ns=namespace, tier="a")
    platform.kubectl("apply", "--server-side", "--field-manager", "one", "-f", "-", input=manifest)
    other = manifest.replace("{k: v}", "{k: other}")
    result = platform.kubectl("apply", "--server-side", "--field-manager", "two", "-f", "-",
                              input=other, check=False)
    assert result.returncode != 0
    assert "conflict" in result.stderr.lower()
    platform.kubectl("apply", "--server-side", "--field-manager", "two", "--force-conflicts",
                     "-f", "-", input=other)
    assert platform.kubectl("get", "cm", "ssa", "-n", namespace, "-o",
                            "jsonpath={.data.k}").stdout == "other"


def test_selectors(platform: Platform, namespace: str) -> None:
    for name, tier in (("a1", "a"), ("b1", "b"), ("b2", "b")):
        platform.kubectl("apply", "-f", "-", input=CM.format(name=name, ns=namespace, tier=tier))
    names = lambda *sel: sorted(platform.kubectl("get", "cm", "-n", namespace, "-o", "name",
                                                 *sel).stdout.split())
    assert names("-l", "tier=b") == ["configmap/b1", "configmap/b2"]
    assert names("-l", "tier in (a)") == ["configmap/a1"]
    assert names("-l", "tier!=a,app=x") == ["configmap/b1", "configmap/b2"]
    assert names("--field-selector", "metadata.name=b2") == ["configmap/b2"]
    bad = platform.kubectl("get", "cm", "-n", namespace, "-l", "tier in (a", check=False)
    assert bad.returncode != 0
    bad = platform.kubectl("get", "cm", "-n", namespace, "--field-selector", "spec.nope=1",
                           check=False)
    assert bad.returncode != 0 and "not supported" in bad.stderr


def test_patch_types(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=CM.format(name="p", ns=namespace, tier="a"))
    platform.kubectl("patch", "cm", "p", "-n", namespace, "--type", "merge", "-p",
                     '{"data":{"m":"1"}}')
    platform.kubectl("patch", "cm", "p", "-n", namespace, "--type", "json", "-p",
                     '[{"op":"add","path":"/data/j","value":"2"}]')
    data = json.loads(platform.kubectl("get", "cm", "p", "-n", namespace, "-o",
                                       "jsonpath={.data}").stdout)
    assert data == {"k": "v", "m": "1", "j": "2"}
    bad = platform.kubectl("patch", "cm", "p", "-n", namespace, "--type", "json", "-p",
                           '[{"op":"remove","path":"/data/nope"}]', check=False)
    assert bad.returncode != 0


def test_strategic_merge_patch_on_deployment(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=DEPLOY.format(ns=namespace))
    platform.kubectl("patch", "deploy", "d1", "-n", namespace, "-p",
                     '{"spec":{"template":{"spec":{"containers":[{"name":"c","env":'
                     '[{"name":"B","value":"2"}]}]}}}}')
    dep = json.loads(platform.kubectl("get", "deploy", "d1", "-n", namespace, "-o",
                                      "json").stdout)
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["c", "side"]
    assert containers[0]["command"] == ["sleep", "3600"]
    assert [e["name"] for e in containers[0]["env"]] == ["A", "B"]
    assert dep["metadata"]["generation"] == 2
    # client-side apply of a changed manifest goes through strategic merge too
    changed = DEPLOY.format(ns=namespace).replace('value: "1"', 'value: "9"')
    platform.kubectl("apply", "-f", "-", input=changed)
    platform.kubectl("scale", "deploy", "d1", "-n", namespace, "--replicas", "0")


def test_scale_subresource(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=DEPLOY.format(ns=namespace))
    platform.kubectl("scale", "deploy", "d1", "-n", namespace, "--replicas", "3")
    assert platform.kubectl("get", "deploy", "d1", "-n", namespace, "-o",
                            "jsonpath={.spec.replicas}").stdout == "3"
    scale = json.loads(platform.kubectl("get", "--raw",
                                        f"/apis/apps/v1/namespaces/{namespace}/deployments/d1/scale"
                                        ).stdout)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
    assert scale["status"]["selector"] == "app=d1"


def test_label_annotate_and_table_output(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=CM.format(name="t1", ns=namespace, tier="a"))
    platform.kubectl("label", "cm", "t1", "-n", namespace, "color=red")
    platform.kubectl("annotate", "cm", "t1", "-n", namespace, "note=hello")
    out = platform.kubectl("get", "cm", "t1", "-n", namespace, "--show-labels").stdout
    assert "color=red" in out and "DATA" in out
    wide = platform.kubectl("get", "deploy,cm", "-n", namespace, "-o", "wide").stdout
    assert "t1" in wide
    yaml_out = platform.kubectl("get", "cm", "t1", "-n", namespace, "-o", "yaml").stdout
    assert "note: hello" in yaml_out
    platform.kubectl("label", "cm", "t1", "-n", namespace, "color-")
    assert "color" not in platform.kubectl("get", "cm", "t1", "-n", namespace, "-o",
                                           "jsonpath={.metadata.labels}").stdout
    out = platform.kubectl("get", "ns", namespace).stdout
    assert "Active" in out


def test_describe_and_explain(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=DEPLOY.format(ns=namespace))
    out = platform.kubectl("describe", "deploy", "d1", "-n", namespace).stdout
    assert "d1" in out and "busybox" in out
    explain = platform.kubectl("explain", "deployment.spec.replicas").stdout
    assert "replicas" in explain.lower()
    explain = platform.kubectl("explain", "pods.spec.containers").stdout
    assert "image" in explain


def test_create_errors_are_status(platform: Platform, namespace: str) -> None:
    bad_name = platform.kubectl("create", "configmap", "Bad_Name", "-n", namespace, check=False)
    assert bad_name.returncode != 0 and "Invalid" in bad_name.stderr
    platform.kubectl("create", "configmap", "dup", "-n", namespace)
    dup = platform.kubectl("create", "configmap", "dup", "-n", namespace, check=False)
    assert 'configmaps "dup" already exists' in dup.stderr
    missing = platform.kubectl("get", "configmap", "nope", "-n", namespace, check=False)
    assert "NotFound" in missing.stderr
    unknown = platform.kubectl("apply", "-f", "-", check=False, input=(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: u, namespace: {namespace}}}\n"
        "bogus: 1\n"))
    assert unknown.returncode != 0 and "bogus" in unknown.stderr
    no_ns = platform.kubectl("create", "configmap", "x", "-n", "no-such-ns", check=False)
    assert 'namespaces "no-such-ns" not found' in no_ns.stderr
    malformed = platform.kubectl("create", "--raw", f"/api/v1/namespaces/{namespace}/configmaps",
                                 "-f", "-", input="{bad json", check=False)
    assert malformed.returncode != 0 and "InternalError" not in malformed.stderr


def test_dry_run(platform: Platform, namespace: str) -> None:
    out = platform.kubectl("create", "configmap", "dry", "-n", namespace, "--dry-run=server",
                           "-o", "name").stdout
    assert "configmap/dry" in out
    missing = platform.kubectl("get", "configmap", "dry", "-n", namespace, check=False)
    assert missing.returncode != 0


def test_watch_sees_changes(platform: Platform, namespace: str) -> None:
    import os
    import queue
    import threading

    from tests.conftest import kubectl_binary

    proc = subprocess.Popen([kubectl_binary(), "get", "cm", "-n", namespace, "-w", "-o", "name",
                             "--request-timeout=30s"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, KUBECONFIG=str(platform.kubeconfig),
                                     KUBECACHEDIR=str(platform.cache_dir)))
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l.strip()) for l in proc.stdout], daemon=True).start()
    try:
        platform.kubectl("create", "configmap", "watched", "-n", namespace)
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=deadline - time.monotonic()))
            except queue.Empty:
                break
            if "configmap/watched" in seen:
                break
        assert "configmap/watched" in seen, seen
    finally:
        proc.kill()
        proc.wait()


def test_wait_for_condition_and_delete(platform: Platform, namespace: str) -> None:
    platform.kubectl("create", "configmap", "w", "-n", namespace)
    platform.kubectl("delete", "configmap", "w", "-n", namespace, "--timeout=20s")
    assert platform.kubectl("get", "cm", "w", "-n", namespace, check=False).returncode != 0
    platform.kubectl("create", "configmap", "w2", "-n", namespace)
    platform.kubectl("create", "configmap", "w3", "-n", namespace)
    platform.kubectl("delete", "configmap", "--all", "-n", namespace)
    assert platform.kubectl("get", "cm", "-n", namespace, "-o", "name").stdout.strip() in (
        "", "configmap/kube-root-ca.crt")


def test_namespace_deletion_empties_it(platform: Platform) -> None:
    platform.kubectl("create", "namespace", "doomed")
    platform.kubectl("create", "configmap", "c", "-n", "doomed")
    platform.kubectl("create", "secret", "generic", "s", "-n", "doomed", "--from-literal=a=b")
    platform.kubectl("delete", "namespace", "doomed", "--timeout=60s")
    assert platform.kubectl("get", "ns", "doomed", check=False).returncode != 0
    # a namespace can be re-created empty (but for the CA every namespace gets)
    platform.kubectl("create", "namespace", "doomed")
    assert platform.kubectl("get", "cm,secret", "-n", "doomed", "-o", "name").stdout.split() \
        in ([], ["configmap/kube-root-ca.crt"])
    platform.kubectl("delete", "namespace", "doomed", "--timeout=60s")


def test_auth_can_i_and_whoami(platform: Platform) -> None:
    assert platform.kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"
    out = platform.kubectl("auth", "whoami").stdout
    assert "admin" in out


def test_kubectl_create_commands_speak_protobuf(platform: Platform, namespace: str) -> None:
    """kubectl's typed clients send built-ins as protobuf: zero values must survive as upstream."""
    platform.kubectl("-n", namespace, "create", "deployment", "web", "--image=nginx",
                     "--replicas=0", "--port=80")
    platform.kubectl("-n", namespace, "create", "secret", "generic", "s", "--from-literal=p=pw")
    platform.kubectl("-n", namespace, "create", "service", "clusterip", "svc", "--tcp=80:8080")
    platform.kubectl("-n", namespace, "create", "job", "j", "--image=busybox", "--", "true")
    dep = json.loads(platform.kubectl("-n", namespace, "get", "deploy", "web", "-o",
                                      "json").stdout)
    assert dep["spec"]["replicas"] == 0
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert "tolerations" not in dep["spec"]["template"]["spec"]  # added to pods only
    secret = json.loads(platform.kubectl("-n", namespace, "get", "secret", "s", "-o",
                                         "json").stdout)
    assert secret["data"] == {"p": "cHc="}
    svc = json.loads(platform.kubectl("-n", namespace, "get", "svc", "svc", "-o", "json").stdout)
    assert svc["spec"]["ports"][0]["targetPort"] == 8080


def test_openapi_documents(platform: Platform) -> None:
    index = json.loads(platform.kubectl("get", "--raw", "/openapi/v3").stdout)
    assert "apis/apps/v1" in index["paths"] and "api/v1" in index["paths"]
    apps = json.loads(platform.kubectl("get", "--raw", index["paths"]["apis/apps/v1"][
        "serverRelativeURL"]).stdout)
    containers = apps["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"][
        "containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    v2 = json.loads(platform.kubectl("get", "--raw", "/openapi/v2").stdout)
    assert v2["swagger"] == "2.0"
    assert "io.k8s.api.apps.v1.Deployment" in v2["definitions"]
    patch_op = v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" in patch_op["consumes"]
    assert "#/components" not in json.dumps(v2)
    explain = platform.kubectl("explain", "deployment.spec.template.spec.containers").stdout
    assert "image" in explain


def test_edit_goes_through_a_patch(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=DEPLOY.format(ns=namespace))
    editor = "sed -i -e 's/image: busybox/image: busybox:1.37/'"
    out = platform.kubectl("edit", "deploy", "d1", "-n", namespace, env={"KUBE_EDITOR": editor})
    assert "edited" in out.stdout
    dep = json.loads(platform.kubectl("get", "deploy", "d1", "-n", namespace, "-o",
                                      "json").stdout)
    images = [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]]
    assert images[0] == "busybox:1.37" and len(images) == 2
    assert dep["metadata"]["generation"] == 2


def test_unquoted_yaml_scalars_in_string_fields(platform: Platform, namespace: str) -> None:
    manifest = f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: scalars, namespace: {namespace}}}
data: {{enabled: true, port: 8080}}
"""
    out = platform.kubectl("apply", "-f", "-", input=manifest)
    assert "taken as" in out.stderr  # kubectl prints the server's warning
    data = json.loads(platform.kubectl("get", "cm", "scalars", "-n", namespace, "-o",
                                       "jsonpath={.data}").stdout)
    assert data == {"enabled": "true", "port": "8080"}


LIST = """apiVersion: v1
kind: List
items:
- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: l1, namespace: {ns}}}, data: {{a: b}}}}
- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: l2, namespace: {ns}}}, {field}: {{a: b}}}}
"""


def test_apply_of_a_list_validates_each_item(platform: Platform, namespace: str) -> None:
    """kubectl validates a ``kind: List`` with the OpenAPI v2 models, which it reads only as
    protobuf: the document must decode, and each item is checked against its own kind."""
    out = platform.kubectl("apply", "-f", "-", input=LIST.format(ns=namespace, field="data"))
    assert "configmap/l1 created" in out.stdout and "configmap/l2 created" in out.stdout
    bad = platform.kubectl("apply", "-f", "-", input=LIST.format(ns=namespace, field="datax"),
                           check=False)
    assert bad.returncode != 0
    assert 'unknown field "datax" in io.k8s.api.core.v1.ConfigMap' in bad.stderr


def test_openapi_v2_protobuf_is_negotiated(platform: Platform) -> None:

    ctx, url, headers = platform.ssl_context(), platform.url, {}
    for accept in openapi_proto.ACCEPTED_TYPES:
        req = urllib.request.Request(url + "/openapi/v2", headers={**headers, "Accept": accept})
        with urllib.request.urlopen(req, context=ctx) as resp:
            assert resp.headers["Content-Type"] == openapi_proto.MEDIA_TYPE
            etag = resp.headers["ETag"]
            body = resp.read()
        assert body.startswith(b"\n\x032.0") and b"io.k8s.api.apps.v1.Deployment" in body
    req = urllib.request.Request(url + "/openapi/v2", headers={
        **headers, "Accept": openapi_proto.MEDIA_TYPE, "If-None-Match": etag})
    try:
        urllib.request.urlopen(req, context=ctx)
        raise AssertionError("a matching ETag must give 304")
    except urllib.error.HTTPError as e:
        assert e.code == 304


def test_delete_returns_the_object_where_upstream_does(platform: Platform, namespace: str) -> None:
    """Services and ServiceAccounts answer a DELETE with the deleted object (typed clients
    decode it as the kind); ConfigMaps answer with a Status."""
    platform.kubectl("-n", namespace, "create", "service", "clusterip", "gone", "--tcp=80")
    platform.kubectl("-n", namespace, "create", "serviceaccount", "gone")
    platform.kubectl("-n", namespace, "create", "configmap", "gone")
    kinds = {}
    for plural in ("services", "serviceaccounts", "configmaps"):
        req = urllib.request.Request(f"{platform.url}/api/v1/namespaces/{namespace}/{plural}/gone",
                                     method="DELETE")
        with urllib.request.urlopen(req, context=platform.ssl_context()) as resp:
            kinds[plural] = json.loads(resp.read())["kind"]
    assert kinds == {"services": "Service", "serviceaccounts": "ServiceAccount",
                     "configmaps": "Status"}


def test_status_counts_upstream_always_sends_are_there_from_creation(
        platform: Platform, namespace: str) -> None:
    """Go's status types serialize some counts even when zero; typed clients read them from
    the object a create returns, before any controller wrote its status."""
    template = {"metadata": {"labels": {"app": "z"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    spec = {"selector": {"matchLabels": {"app": "z"}}, "template": template}
    expected = {"ReplicaSet": {"replicas": 0},
                "StatefulSet": {"replicas": 0, "availableReplicas": 0},
                "DaemonSet": {"currentNumberScheduled": 0, "numberMisscheduled": 0,
                              "desiredNumberScheduled": 0, "numberReady": 0}}
    for kind, counts in expected.items():
        body = {"apiVersion": "apps/v1", "kind": kind,
                "metadata": {"name": f"z-{kind.lower()}", "namespace": namespace},
                "spec": {**spec, **({"replicas": 0} if kind != "DaemonSet" else {})}}
        created = json.loads(platform.kubectl("create", "-f", "-", "-o", "json",
                                              input=json.dumps(body)).stdout)
        status = created.get("status") or {}
        assert {k: status.get(k) for k in counts} == counts, (kind, status)
