"""CustomResourceDefinitions end to end: establish, validate, prune, default, print, explain,
status and scale subresources, several versions, deletion; and a kopf operator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import Platform


def crd_yaml(group: str, scope: str = "Namespaced") -> str:
    return f"""apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.{group}}}
spec:
  group: {group}
  scope: {scope}
  names: {{plural: widgets, singular: widget, kind: Widget, shortNames: [wg], categories: [all]}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {{}}
      scale: {{specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}}
    additionalPrinterColumns:
    - {{name: Size, type: integer, jsonPath: .spec.size}}
    - {{name: Color, type: string, jsonPath: .spec.color, priority: 1}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {{type: integer, minimum: 1, maximum: 10}}
              color: {{type: string, enum: [red, blue], default: red}}
              replicas: {{type: integer}}
          status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"""


@pytest.fixture
def crd_group(platform: Platform) -> str:
    group = f"t{uuid.uuid4().hex[:6]}.example.com"
    platform.kubectl("apply", "-f", "-", input=crd_yaml(group))
    platform.kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}",
                     "--timeout=20s")
    yield group
    platform.kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)


def widget(ns: str, name: str, spec: str, version: str = "v1", group: str = "") -> str:
    return (f"apiVersion: {group}/{version}\nkind: Widget\nmetadata: {{name: {name}, "
            f"namespace: {ns}}}\nspec: {spec}\n")


def test_custom_resource_lifecycle(platform: Platform, namespace: str, crd_group: str) -> None:
    g = crd_group
    # kubectl asks for strict field validation: an unknown field is refused, by path ...
    strict = platform.kubectl("apply", "-f", "-", check=False,
                              input=widget(namespace, "w1", "{size: 3, junk: 1}", group=g))
    assert strict.returncode != 0 and 'unknown field "spec.junk"' in strict.stderr
    # ... and pruned when validation is off
    platform.kubectl("apply", "--validate=false", "-f", "-",
                     input=widget(namespace, "w1", "{size: 3, junk: 1}", group=g))
    obj = json.loads(platform.kubectl("get", f"widgets.{g}", "w1", "-n", namespace, "-o",
                                      "json").stdout)
    assert obj["spec"] == {"size": 3, "color": "red"}  # defaulted, pruned
    assert obj["metadata"]["generation"] == 1
    table = platform.kubectl("get", f"widgets.{g}", "-n", namespace).stdout
    assert "SIZE" in table and "COLOR" not in table and "3" in table
    wide = platform.kubectl("get", f"widgets.{g}", "-n", namespace, "-o", "wide").stdout
    assert "COLOR" in wide and "red" in wide
    bad = platform.kubectl("apply", "-f", "-", check=False,
                           input=widget(namespace, "w2", "{size: 99}", group=g))
    assert bad.returncode != 0 and "spec.size" in bad.stderr
    bad = platform.kubectl("apply", "-f", "-", check=False,
                           input=widget(namespace, "w3", "{color: green}", group=g))
    assert bad.returncode != 0 and "spec.size" in bad.stderr and "green" in bad.stderr
    # the other served version sees the same object
    other = json.loads(platform.kubectl("get", "--raw",
                                        f"/apis/{g}/v1beta1/namespaces/{namespace}/widgets/w1"
                                        ).stdout)
    assert other["apiVersion"] == f"{g}/v1beta1" and other["spec"]["size"] == 3
    # status subresource: the main resource ignores status, /status ignores spec
    platform.kubectl("patch", f"widgets.{g}", "w1", "-n", namespace, "--type", "merge",
                     "--subresource", "status", "-p", '{"status":{"phase":"Ready","replicas":2}}')
    platform.kubectl("patch", f"widgets.{g}", "w1", "-n", namespace, "--type", "merge",
                     "-p", '{"status":{"phase":"Ignored"},"spec":{"size":4}}')
    obj = json.loads(platform.kubectl("get", f"widgets.{g}", "w1", "-n", namespace, "-o",
                                      "json").stdout)
    assert obj["status"]["phase"] == "Ready" and obj["spec"]["size"] == 4
    assert obj["metadata"]["generation"] == 2
    platform.kubectl("scale", f"widgets.{g}", "w1", "-n", namespace, "--replicas", "5")
    assert platform.kubectl("get", f"widgets.{g}", "w1", "-n", namespace, "-o",
                            "jsonpath={.spec.replicas}").stdout == "5"
    explain = platform.kubectl("explain", f"widgets.{g}.spec").stdout
    assert "size" in explain
    assert "wg" in platform.kubectl("api-resources", f"--api-group={g}").stdout


def test_crd_deletion_removes_objects(platform: Platform, namespace: str) -> None:
    g = f"t{uuid.uuid4().hex[:6]}.example.com"
    platform.kubectl("apply", "-f", "-", input=crd_yaml(g))
    platform.kubectl("wait", "--for=condition=Established", f"crd/widgets.{g}", "--timeout=20s")
    platform.kubectl("apply", "-f", "-", input=widget(namespace, "w1", "{size: 1}", group=g))
    platform.kubectl("delete", "crd", f"widgets.{g}", "--timeout=30s")
    gone = platform.kubectl("get", "--raw", f"/apis/{g}/v1/namespaces/{namespace}/widgets",
                            check=False)
    assert gone.returncode != 0
    # re-creating it starts empty
    platform.kubectl("apply", "-f", "-", input=crd_yaml(g))
    platform.kubectl("wait", "--for=condition=Established", f"crd/widgets.{g}", "--timeout=20s")
    out = json.loads(platform.kubectl("get", "--raw",
                                      f"/apis/{g}/v1/namespaces/{namespace}/widgets").stdout)
    assert out["items"] == []
    platform.kubectl("delete", "crd", f"widgets.{g}", "--timeout=30s")


def test_invalid_crds_are_refused(platform: Platform) -> None:
    bad = crd_yaml("bad.example.com").replace("metadata: {name: widgets.bad.example.com}",
                                              "metadata: {name: wrong.bad.example.com}")
    result = platform.kubectl("apply", "-f", "-", input=bad, check=False)
    assert result.returncode != 0 and "metadata.name" in result.stderr
    nonstructural = crd_yaml("ns.example.com").replace("size: {type: integer, minimum: 1, "
                                                       "maximum: 10}", "size: {minimum: 1}")
    result = platform.kubectl("apply", "-f", "-", input=nonstructural, check=False)
    assert result.returncode != 0 and "type" in result.stderr


OPERATOR = '''
import kopf

@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.posting.enabled = True
    settings.watching.server_timeout = 30

@kopf.on.create("{group}", "v1", "widgets")
def create_fn(spec, name, namespace, logger, **kwargs):
    import kubernetes
    kubernetes.config.load_kube_config()
    kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, {{
        "metadata": {{"name": f"{{name}}-made"}}, "data": {{"size": str(spec["size"])}}}})
    return {{"made": True}}
'''


def test_kopf_operator_reconciles(platform: Platform, namespace: str, crd_group: str,
                                  tmp_path) -> None:
    op = tmp_path / "operator.py"
    op.write_text(OPERATOR.format(group=crd_group))
    env = dict(os.environ, KUBECONFIG=str(platform.kubeconfig))
    kopf_bin = os.path.join(os.path.dirname(sys.executable), "kopf")
    proc = subprocess.Popen([kopf_bin, "run", "--standalone", "--namespace", namespace, str(op)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        platform.kubectl("apply", "-f", "-", input=widget(namespace, "k1", "{size: 7}",
                                                          group=crd_group))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = platform.kubectl("get", "cm", "k1-made", "-n", namespace, "-o",
                                   "jsonpath={.data.size}", check=False)
            if got.returncode == 0 and got.stdout == "7":
                break
            time.sleep(0.3)
        else:
            proc.kill()
            out = proc.communicate()[0]
            pytest.fail(f"kopf operator did not reconcile:\n{out[-3000:]}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = json.loads(platform.kubectl("get", f"widgets.{crd_group}", "k1", "-n",
                                                 namespace, "-o", "json").stdout).get("status", {})
            if status.get("create_fn") == {"made": True}:
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"kopf did not record handler status: {status}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
