"""RuntimeClass and pod overhead through kubectl on the real platform: the built-in
``atoll-vm`` class, a class applied with an overhead and the pods using it (overhead stored,
counted by the scheduler and the quota), what a pod-VM cannot honour refused at admission, a
namespace made for pod-VMs, and the host agent failing a pod whose handler it has no runtime
for with the kubelet's reason."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

from tests.conftest import TEST_NODE, Platform, wait_until

VM_OVERHEAD = {"cpu": "100m", "memory": "64Mi"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def apply(platform: Platform, doc: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return platform.kubectl("apply", "-f", "-", input=doc, check=check)


def get(platform: Platform, *args: str) -> dict[str, Any]:
    return json.loads(platform.kubectl("get", *args, "-o", "json").stdout)


def pod_doc(ns: str, name: str, *, runtime_class: str = "", spec: str = "",
            resources: str = "") -> str:
    rc = f"  runtimeClassName: {runtime_class}\n" if runtime_class else ""
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
{rc}  terminationGracePeriodSeconds: 1
{spec}  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
{resources}"""


@pytest.fixture
def runtime_class(platform: Platform):
    names: list[str] = []

    def make(handler: str, extra: str = "") -> str:
        name = unique("rc")
        apply(platform, f"apiVersion: node.k8s.io/v1\nkind: RuntimeClass\n"
                        f"metadata: {{name: {name}}}\nhandler: {handler}\n{extra}")
        names.append(name)
        return name
    yield make
    for name in names:
        platform.kubectl("delete", "runtimeclass", name, "--wait=false", check=False)


def sandbox_failure(platform: Platform, ns: str, name: str) -> dict[str, Any] | None:
    """The container's waiting state once the agent said why it cannot make the sandbox."""
    statuses = (get(platform, "pod", name, "-n", ns).get("status") or {}) \
        .get("containerStatuses") or []
    state = (statuses[0].get("state") or {}).get("waiting") if statuses else None
    return state if state and state.get("reason") != "ContainerCreating" else None


def test_builtin_class_listed(platform: Platform) -> None:
    out = platform.kubectl("get", "runtimeclass", "atoll-vm").stdout.split("\n")
    assert out[0].split() == ["NAME", "HANDLER", "AGE"]
    assert out[1].split()[:2] == ["atoll-vm", "atoll-vm"]
    rc = get(platform, "runtimeclass", "atoll-vm")
    assert rc["overhead"]["podFixed"] == VM_OVERHEAD
    # an immutable handler, as upstream
    bad = platform.kubectl("patch", "runtimeclass", "atoll-vm", "--type=merge", "-p",
                           '{"handler": "runc"}', check=False)
    assert bad.returncode != 0 and "handler: Invalid value" in bad.stderr
    assert "field is immutable" in bad.stderr


def test_node_reports_its_runtime_handlers(platform: Platform) -> None:
    def handlers() -> list[str] | None:  # the first status the agent posts carries them
        out = platform.kubectl("get", "node", TEST_NODE, "-o", "json", check=False)
        if out.returncode != 0:
            return None
        return [h["name"] for h in (json.loads(out.stdout).get("status") or {})
                .get("runtimeHandlers") or []] or None
    names = wait_until("the node's runtime handlers", handlers, timeout=60)
    assert "" in names and "runc" in names


def test_overhead_stored_charged_and_the_pod_runs(platform: Platform, namespace: str,
                                                  runtime_class: Any) -> None:
    klass = runtime_class("runc", "overhead:\n  podFixed: {cpu: 250m, memory: 120Mi}\n")
    apply(platform, f"apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: budget, "
                    f"namespace: {namespace}}}\nspec:\n  hard: {{requests.memory: 1Gi}}\n")
    resources = "    resources: {requests: {memory: 80Mi}, limits: {memory: 80Mi}}\n"
    apply(platform, pod_doc(namespace, "p", runtime_class=klass, resources=resources))
    pod = get(platform, "pod", "p", "-n", namespace)
    assert pod["spec"]["overhead"] == {"cpu": "250m", "memory": "120Mi"}
    used = get(platform, "resourcequota", "budget", "-n", namespace)["status"]["used"]
    assert used["requests.memory"] == "200Mi"  # 80Mi + the class's 120Mi
    # handler runc is this host's runtime: the pod runs as any other
    wait_until("the pod running", lambda: (get(platform, "pod", "p", "-n", namespace)
                                          .get("status") or {}).get("phase") == "Running",
               timeout=120, interval=0.5)
    # a pod that brings an overhead of its own is refused as upstream refuses it
    bad = apply(platform, pod_doc(namespace, "q", runtime_class=klass,
                                  spec="  overhead: {cpu: 1}\n"), check=False)
    assert bad.returncode != 0
    assert "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead" \
        in bad.stderr
    missing = apply(platform, pod_doc(namespace, "r", runtime_class="no-such-class"),
                    check=False)
    assert 'pod rejected: RuntimeClass "no-such-class" not found' in missing.stderr


def test_scheduler_counts_the_overhead(platform: Platform, namespace: str,
                                       runtime_class: Any) -> None:
    node = get(platform, "node", TEST_NODE)
    cpu = node["status"]["allocatable"]["cpu"]
    # the class's overhead alone takes the whole node: a 10m pod fits without it, not with it
    klass = runtime_class("runc", f"overhead:\n  podFixed: {{cpu: \"{cpu}\"}}\n")
    resources = "    resources: {requests: {cpu: 10m}}\n"
    apply(platform, pod_doc(namespace, "fits", resources=resources))
    apply(platform, pod_doc(namespace, "big", runtime_class=klass, resources=resources))

    def unschedulable() -> str | None:
        conditions = (get(platform, "pod", "big", "-n", namespace).get("status") or {}) \
            .get("conditions") or []
        for c in conditions:
            if c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable":
                return c.get("message")
        return None
    message = wait_until("the pod unschedulable", unschedulable, timeout=60, interval=0.5)
    assert "Insufficient cpu" in message
    fits = wait_until("the small pod bound", lambda: get(platform, "pod", "fits", "-n",
                                                         namespace)["spec"].get("nodeName"),
                      timeout=60, interval=0.5)
    assert fits == TEST_NODE
    assert not get(platform, "pod", "big", "-n", namespace)["spec"].get("nodeName")


def test_what_a_pod_vm_cannot_honour_is_refused(platform: Platform, namespace: str) -> None:
    platform.kubectl("label", "namespace", namespace,
                     "pod-security.kubernetes.io/enforce=privileged", "--overwrite")
    out = apply(platform, pod_doc(namespace, "hostnet", runtime_class="atoll-vm",
                                  spec="  hostNetwork: true\n"), check=False)
    assert out.returncode != 0
    assert 'pods "hostnet" is forbidden: a pod-VM (RuntimeClass "atoll-vm", handler ' \
           '"atoll-vm") cannot honour spec.hostNetwork' in out.stderr
    priv = pod_doc(namespace, "priv", runtime_class="atoll-vm").replace(
        "    command:", "    securityContext: {privileged: true}\n    command:")
    out = apply(platform, priv, check=False)
    assert "spec.containers[0].securityContext.privileged" in out.stderr
    # the same pod under runc is admitted (not run: a dry run)
    platform.kubectl("apply", "--dry-run=server", "-f", "-",
                     input=pod_doc(namespace, "hostnet", spec="  hostNetwork: true\n"))


def test_namespace_for_pod_vms_and_the_agent_without_their_runtime(
        platform: Platform, runtime_class: Any) -> None:
    ns = unique("vms")
    subprocess.run([sys.executable, "-m", "atoll.cli.main", "namespace", "create", ns,
                    "--pod-vms", "--kubeconfig", str(platform.kubeconfig)], check=True,
                   capture_output=True, text=True, timeout=120)
    try:
        labels = get(platform, "namespace", ns)["metadata"]["labels"]
        assert labels["atoll.dev/default-runtime-class"] == "atoll-vm"
        wait_until("the namespace filled in", lambda: platform.kubectl(
            "-n", ns, "get", "serviceaccount/default", check=False).returncode == 0)
        resources = "    resources: {requests: {cpu: 10m, memory: 16Mi}, " \
                    "limits: {cpu: 100m, memory: 64Mi}}\n"
        apply(platform, pod_doc(ns, "vm", resources=resources))
        pod = get(platform, "pod", "vm", "-n", ns)
        assert pod["spec"]["runtimeClassName"] == "atoll-vm"
        assert pod["spec"]["overhead"] == VM_OVERHEAD

        # a handler no host has: the sandbox fails with the CRI's words, never runs under runc
        other = runtime_class("gvisor")
        apply(platform, pod_doc(ns, "gv", runtime_class=other, resources=resources))
        state = wait_until("the sandbox failure", lambda: sandbox_failure(platform, ns, "gv"),
                           timeout=90, interval=0.5)
        assert state["reason"] == "CreatePodSandboxError"
        assert state["message"] == ("Failed to create pod sandbox: rpc error: code = Unknown "
                                    "desc = failed to get sandbox runtime: no runtime for "
                                    "\"gvisor\" is configured")
        wait_until("the FailedCreatePodSandBox event", lambda: "no runtime for \"gvisor\"" in
                   platform.kubectl("get", "events", "-n", ns, "--field-selector",
                                    "involvedObject.name=gv,reason=FailedCreatePodSandBox").stdout,
                   timeout=30, interval=0.5)

        node = get(platform, "node", TEST_NODE)
        handlers = [h["name"] for h in node["status"].get("runtimeHandlers") or []]
        if "atoll-vm" not in handlers:  # until the pod-VM runtime is registered
            state = wait_until("the pod-VM sandbox failure",
                               lambda: sandbox_failure(platform, ns, "vm"),
                               timeout=90, interval=0.5)
            assert state["reason"] == "CreatePodSandboxError"
            assert 'no runtime for "atoll-vm" is configured' in state["message"]
    finally:
        platform.kubectl("delete", "namespace", ns, "--wait=false", check=False)
