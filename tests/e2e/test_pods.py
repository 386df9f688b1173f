"""Pods run for real on the test platform's host agent: runc containers, CNI network, volumes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import (TEST_BRIDGE, TEST_NODE, TEST_POD_PREFIX, Platform, wait_until,
                            kill_and_await_restart, run_dir)


def pod_yaml(ns: str, name: str, script: str, *, restart: str = "Never", extra: str = "",
             container_extra: str = "", image: str = "busybox") -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  nodeName: {TEST_NODE}
  restartPolicy: {restart}
  terminationGracePeriodSeconds: 5
{extra}
  containers:
  - name: c
    image: {image}
    command: [sh, -c, {json.dumps(script)}]
{container_extra}
"""


def get_pod(platform: Platform, ns: str, name: str) -> dict[str, Any]:
    return json.loads(platform.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout)


def wait_pod(platform: Platform, ns: str, name: str, check: Callable[[dict[str, Any]], bool],
             timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = get_pod(platform, ns, name)
        if check(pod):
            return pod
        time.sleep(0.2)
    raise AssertionError(f"pod {name} never reached the condition: "
                         f"{json.dumps(pod.get('status'), indent=1)[:3000]}")


def phase(p: str) -> Callable[[dict[str, Any]], bool]:
    return lambda pod: (pod.get("status") or {}).get("phase") == p


def wait_node(platform: Platform, timeout: float = 60) -> None:
    """The agent registers its Node just after the platform is ready."""
    deadline = time.monotonic() + timeout
    while platform.kubectl("get", "node", TEST_NODE, check=False).returncode != 0:
        assert time.monotonic() < deadline, "the test node never registered"
        time.sleep(0.2)


def state(pod: dict[str, Any]) -> dict[str, Any]:
    return ((pod.get("status") or {}).get("containerStatuses") or [{}])[0].get("state") or {}


def log_of(platform: Platform, pod: dict[str, Any], attempt: int = 0) -> str:
    path = platform.data_dir / "agent" / "pods" / pod["metadata"]["uid"] / "logs" / "c" / \
        f"{attempt}.log"
    return path.read_text()


def test_pod_runs_to_completion_with_status(platform: Platform, namespace: str) -> None:
    platform.kubectl("create", "configmap", "cfg", "-n", namespace, "--from-literal=color=blue")
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "done", "echo hello $GREETING $COLOR $(cat /cfg/color) $POD_NAME; "
                           f"ip -4 addr show eth0 | grep -q {TEST_POD_PREFIX}",
        container_extra="""    env:
    - {name: GREETING, value: hi}
    - {name: COLOR, valueFrom: {configMapKeyRef: {name: cfg, key: color}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    volumeMounts: [{name: cfg, mountPath: /cfg}]""",
        extra="  volumes: [{name: cfg, configMap: {name: cfg}}]"))
    pod = wait_pod(platform, namespace, "done", phase("Succeeded"))
    status = pod["status"]
    assert status["podIP"].startswith(TEST_POD_PREFIX) and status["hostIP"]
    assert status["startTime"] and status["qosClass"] == "BestEffort"
    term = state(pod)["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert status["containerStatuses"][0]["containerID"].startswith("atoll://")
    assert "hello hi blue blue done" in log_of(platform, pod)
    # the host agent tells the story in Events, as the kubelet does
    reasons = wait_until("the agent's events for the pod", lambda: (r := platform.kubectl(
        "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=done",
        "-o", "jsonpath={.items[*].reason}").stdout.split()) and
        {"Pulled", "Created", "Started"} <= set(r) and r, timeout=30)
    assert "Failed" not in reasons, reasons


def test_crash_loop_restarts_with_back_off(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=pod_yaml(namespace, "crash", "echo boom; exit 3",
                                                      restart="Always"))
    pod = wait_pod(platform, namespace, "crash",
                   lambda p: ((p.get("status") or {}).get("containerStatuses") or [{}])[0]
                   .get("restartCount", 0) >= 2)
    cs = pod["status"]["containerStatuses"][0]
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    wait_pod(platform, namespace, "crash",
             lambda p: state(p).get("waiting", {}).get("reason") == "CrashLoopBackOff")


def test_oom_killed_and_bad_references(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "oom", "dd if=/dev/zero of=/dev/null bs=64M count=1",
        container_extra="    resources: {limits: {memory: 16Mi}}"))
    pod = wait_pod(platform, namespace, "oom", phase("Failed"))
    assert state(pod)["terminated"]["reason"] == "OOMKilled"
    platform.kubectl("apply", "-f", "-", input=pod_yaml(namespace, "noimage", "true",
                                                      image="nowhere/nothing:1"))
    pod = wait_pod(platform, namespace, "noimage",
                   lambda p: state(p).get("waiting", {}).get("reason") in ("ErrImagePull",
                                                                            "ImagePullBackOff"))
    assert "nowhere/nothing:1" in state(pod)["waiting"]["message"]
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "nocm", "true",
        container_extra="    env: [{name: X, valueFrom: {configMapKeyRef: {name: absent, "
                        "key: k}}}]"))
    pod = wait_pod(platform, namespace, "nocm",
                   lambda p: state(p).get("waiting", {}).get("reason") ==
                   "CreateContainerConfigError")
    assert 'configmap "absent" not found' in state(pod)["waiting"]["message"]


def test_readiness_probe_and_pod_to_pod_traffic(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "web", "mkdir -p /www && echo it-works > /www/index.html && "
                          "exec httpd -f -p 8080 -h /www",
        restart="Always",
        container_extra="""    readinessProbe:
      httpGet: {path: /index.html, port: 8080}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1"""))
    web = wait_pod(platform, namespace, "web",
                   lambda p: any(c.get("type") == "Ready" and c.get("status") == "True"
                                 for c in (p.get("status") or {}).get("conditions") or []))
    ip = web["status"]["podIP"]
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "client", f"wget -q -O - http://{ip}:8080/index.html"))
    client = wait_pod(platform, namespace, "client",
                      lambda p: (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"))
    assert client["status"]["phase"] == "Succeeded", log_of(platform, client)
    assert "it-works" in log_of(platform, client)


def test_failing_probes_tell_why_in_events(platform: Platform, namespace: str) -> None:
    """kubelet's Unhealthy and Killing events, with the probe's own reason."""
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "sick", "touch /alive; exec sleep 3600", restart="Always",
        container_extra="""    readinessProbe:
      httpGet: {path: /, port: 8080}
      periodSeconds: 1
    livenessProbe:
      exec: {command: [sh, -c, "echo not-alive-anymore; test -e /nothing"]}
      periodSeconds: 1
      failureThreshold: 2"""))

    def messages() -> dict[str, list[str]]:
        items = json.loads(platform.kubectl(
            "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=sick",
            "-o", "json").stdout)["items"]
        out: dict[str, list[str]] = {}
        for e in items:
            out.setdefault(e["reason"], []).append(e["message"])
        return out

    seen = wait_until("Unhealthy and Killing events", lambda: (m := messages()).get(
        "Killing") and len(m.get("Unhealthy", [])) >= 2 and m, timeout=60, interval=0.5)
    unhealthy = seen["Unhealthy"]
    assert any(u.startswith('Readiness probe failed: Get "http://') and
               "connect: connection refused" in u for u in unhealthy), unhealthy
    assert any(u == "Liveness probe failed: not-alive-anymore" for u in unhealthy), unhealthy
    assert seen["Killing"] == ["Container c failed liveness probe, will be restarted"]


def test_mount_failures_and_stops_are_events(platform: Platform, namespace: str) -> None:
    """FailedMount names the missing volume source; deleting a pod records Killing."""
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "nomount", "sleep 3600",
        extra="  volumes: [{name: v, configMap: {name: absent-cm}}]",
        container_extra="    volumeMounts: [{name: v, mountPath: /v}]"))
    platform.kubectl("apply", "-f", "-", input=pod_yaml(namespace, "stopper", "sleep 3600",
                                                      restart="Always"))

    def events_of(name: str) -> list[tuple[str, str]]:
        items = json.loads(platform.kubectl(
            "-n", namespace, "get", "events", "--field-selector", f"involvedObject.name={name}",
            "-o", "json").stdout)["items"]
        return [(e["reason"], e["message"]) for e in items]

    failed = wait_until("FailedMount", lambda: [m for r, m in events_of("nomount")
                                                if r == "FailedMount"], timeout=60)
    assert "absent-cm" in failed[0], failed
    wait_pod(platform, namespace, "stopper", phase("Running"))
    platform.kubectl("-n", namespace, "delete", "pod", "stopper", "--wait=false")
    wait_until("Killing", lambda: ("Killing", "Stopping container c") in events_of("stopper"),
               timeout=60)


def _netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def test_graceful_delete_leaves_nothing_behind(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "term", "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done",
        restart="Always"))
    pod = wait_pod(platform, namespace, "term", phase("Running"))
    uid = pod["metadata"]["uid"]
    netns = json.loads((platform.data_dir / "agent" / "pods" / uid / "network.json")
                       .read_text())["netns"]
    assert _netns_exists(netns)
    ip = pod["status"]["podIP"]
    lease = next((platform.data_dir / "agent" / "cni" / "ipam").glob(f"*/{ip}"))
    v1 = Path("/sys/fs/cgroup/memory")
    cgroup = (v1 if v1.is_dir() else Path("/sys/fs/cgroup")) / "atoll" / TEST_NODE / f"{uid}-c"
    assert cgroup.is_dir() and lease.exists()
    host_veth = _host_peer(netns)
    assert host_veth in _bridge_ports()
    started = time.monotonic()
    platform.kubectl("delete", "pod", "term", "-n", namespace, "--timeout=30s")
    assert time.monotonic() - started < 5  # SIGTERM was honoured; no wait for the grace period
    assert not (platform.data_dir / "agent" / "pods" / uid).exists()
    assert not _netns_exists(netns)
    assert not lease.exists() and not cgroup.exists()
    assert host_veth not in _bridge_ports()  # the pod's veth went with its netns
    leftovers = [d for d in (run_dir(platform.data_dir) / "containers").glob("*/meta.json")
                 if json.loads(d.read_text())["pod_uid"] == uid]
    assert leftovers == []


def _host_peer(netns: str) -> str:
    """The host-side name of the pod's veth (its peer index, as ``eth0@ifN`` shows it)."""
    out = subprocess.run(["ip", "-n", netns, "-o", "link", "show", "eth0"], capture_output=True,
                         text=True, check=True).stdout
    index = int(out.split(":")[1].strip().split("@if")[1])
    link = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return next(line.split(":")[1].strip() for line in link.splitlines()
                if line.split(":")[0].strip() == str(index))


def _bridge_ports() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "master", TEST_BRIDGE], capture_output=True,
                         text=True).stdout
    return [line.split(":")[1].strip() for line in out.splitlines() if line.strip()]


def test_agent_restart_keeps_containers_running(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "steady", "echo start; sleep 3600", restart="Always"))
    pod = wait_pod(platform, namespace, "steady", phase("Running"))
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("//")[1]
    started = json.loads((run_dir(platform.data_dir) / "containers" / cid / "state" /
                          "started.json").read_text())
    # `atoll up` restarts the agent; the container's process never stopped
    kill_and_await_restart(f"agent --kubeconfig {platform.data_dir / 'agent.kubeconfig'}")
    os.kill(started["pid"], 0)  # still alive
    platform.kubectl("delete", "pod", "steady", "-n", namespace, "--timeout=30s")
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(started["pid"], 0)
            time.sleep(0.1)



def test_runc_is_the_runtime(platform: Platform) -> None:
    wait_node(platform)
    node = json.loads(platform.kubectl("get", "node", TEST_NODE, "-o", "json").stdout)
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("runc://")
    assert any(c["type"] == "Ready" and c["status"] == "True"
               for c in node["status"]["conditions"])
    names = [n for image in node["status"]["images"] for n in image["names"]]
    assert "docker.io/library/busybox:latest" in names
    assert all(image["sizeBytes"] > 0 for image in node["status"]["images"])
    lease = json.loads(platform.kubectl("get", "lease", TEST_NODE, "-n", "kube-node-lease",
                                        "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == TEST_NODE
    out = subprocess.run(["runc", "--version"], capture_output=True, text=True)
    assert out.returncode == 0


def test_kubectl_logs_and_exec(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "chatty", "for i in 1 2 3; do echo line-$i; done; echo oops >&2; "
                             "sleep 3600", restart="Always"))
    wait_pod(platform, namespace, "chatty", phase("Running"))
    deadline = time.monotonic() + 20
    out = ""
    while time.monotonic() < deadline and "oops" not in out:
        out = platform.kubectl("logs", "chatty", "-n", namespace).stdout
    assert out.splitlines()[:3] == ["line-1", "line-2", "line-3"] and "oops" in out
    tail = platform.kubectl("logs", "chatty", "-n", namespace, "--tail=1").stdout
    assert tail.strip() == "oops"
    stamped = platform.kubectl("logs", "chatty", "-n", namespace, "--timestamps").stdout
    assert stamped.splitlines()[0].endswith("Z line-1")
    result = platform.kubectl("exec", "chatty", "-n", namespace, "--", "sh", "-c",
                              "echo in-$HOSTNAME; echo err >&2")
    assert result.stdout.strip() == "in-chatty" and result.stderr.strip() == "err"
    failed = platform.kubectl("exec", "chatty", "-n", namespace, "--", "sh", "-c", "exit 7",
                              check=False)
    assert failed.returncode == 7
    piped = platform.kubectl("exec", "-i", "chatty", "-n", namespace, "--", "cat",
                             input="through-stdin\n")
    assert piped.stdout == "through-stdin\n"
    follow = subprocess.run(
        [os.environ.get("KUBECTL", "") or _kubectl(), "logs", "-f", "chatty", "-n", namespace,
         "--request-timeout=3s"],
        env=dict(os.environ, KUBECONFIG=str(platform.kubeconfig)), capture_output=True,
        text=True, timeout=30)
    assert "line-1" in follow.stdout  # -f streams (and stops at the request timeout)


def _kubectl() -> str:
    from tests.conftest import kubectl_binary
    return kubectl_binary()


def test_imported_image_runs(platform: Platform, namespace: str, tmp_path: Path) -> None:
    from tests.imagebuild import busybox_layer, docker_save, layer_tar

    app = layer_tar({"data/message": b"from-the-image\n"}, dirs=("data",))
    archive = docker_save(tmp_path / "app.tar", [busybox_layer(), app], tag="example.com/app:1",
                          config={"Env": ["PATH=/bin", "MODE=imported"], "WorkingDir": "/data",
                                  "Entrypoint": ["sh", "-c"]})
    import sys
    subprocess.run([sys.executable, "-m", "atoll.cli.main", "image", "import", str(archive),
                    "--data-dir", str(platform.data_dir / "agent")], check=True,
                   capture_output=True)
    manifest = f"""apiVersion: v1
kind: Pod
metadata: {{name: imported, namespace: {namespace}}}
spec:
  nodeName: {TEST_NODE}
  restartPolicy: Never
  containers:
  - name: c
    image: example.com/app:1
    args: ["echo $MODE $(pwd) $(cat message)"]
"""
    platform.kubectl("apply", "-f", "-", input=manifest)
    pod = wait_pod(platform, namespace, "imported", phase("Succeeded"))
    assert log_of(platform, pod).split(" F ", 1)[1].strip() == "imported /data from-the-image"


def test_deleting_the_node_removes_its_pods_and_the_agent_registers_again(
        platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "doomed", "sleep 3600", restart="Always"))
    pod = wait_pod(platform, namespace, "doomed", phase("Running"))
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("//")[1]
    pid = json.loads((run_dir(platform.data_dir) / "containers" / cid / "state" /
                      "started.json").read_text())["pid"]
    uid = pod["metadata"]["uid"]
    platform.kubectl("delete", "node", TEST_NODE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        gone = platform.kubectl("get", "pod", "doomed", "-n", namespace, check=False)
        if gone.returncode != 0 and not (platform.data_dir / "agent" / "pods" / uid).exists():
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the pod of a deleted node was not removed")
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
    deadline = time.monotonic() + 30
    while platform.kubectl("get", "node", TEST_NODE, check=False).returncode != 0:
        assert time.monotonic() < deadline, "the agent did not register its node again"
        time.sleep(0.2)
    # what hung off the old Node (its servers' slices, its storage capacity) is back
    node_uid = json.loads(platform.kubectl("get", "node", TEST_NODE, "-o", "json").stdout)[
        "metadata"]["uid"]

    def published(kind: str, name: str) -> dict | None:
        got = platform.kubectl("-n", "kube-system", "get", kind, name, "-o", "json",
                               check=False)
        return json.loads(got.stdout) if got.returncode == 0 else None
    for service in ("kube-dns", "atoll-ingress"):
        wait_until(f"the {service} slice published again",
                   lambda service=service: published("endpointslice", f"{service}-{TEST_NODE}"),
                   60)
    wait_until("the storage capacity published under the new Node", lambda: [
        r.get("uid") for r in ((published("csistoragecapacity", f"atoll-local-{TEST_NODE}")
                                or {}).get("metadata") or {}).get("ownerReferences") or []]
        == [node_uid], 90)


def test_init_containers_volumes_and_security_context(platform: Platform, namespace: str) -> None:
    platform.kubectl("create", "secret", "generic", "creds", "-n", namespace,
                     "--from-literal=password=s3cret")
    manifest = f"""apiVersion: v1
kind: Pod
metadata: {{name: full, namespace: {namespace}, labels: {{tier: web}}}}
spec:
  nodeName: {TEST_NODE}
  restartPolicy: Never
  securityContext: {{runAsUser: 1000, runAsGroup: 1000}}
  initContainers:
  - name: prepare
    image: busybox
    command: [sh, -c, "echo prepared > /work/ready"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: c
    image: busybox
    command: [sh, -c]
    args:
    - |
      set -e
      test "$(id -u)" = 1000
      cat /work/ready
      cat /secret/password; echo
      cat /info/labels; echo
      ls /mem > /dev/null
      if touch /rootfile 2>/dev/null; then echo writable-root; exit 1; fi
      echo ok
    securityContext:
      readOnlyRootFilesystem: true
      capabilities: {{drop: [ALL]}}
    volumeMounts:
    - {{name: work, mountPath: /work}}
    - {{name: secret, mountPath: /secret}}
    - {{name: info, mountPath: /info}}
    - {{name: mem, mountPath: /mem}}
  volumes:
  - {{name: work, emptyDir: {{}}}}
  - {{name: secret, secret: {{secretName: creds}}}}
  - name: info
    downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}
  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 8Mi}}}}
"""
    platform.kubectl("apply", "-f", "-", input=manifest)
    pod = wait_pod(platform, namespace, "full",
                   lambda p: (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"))
    init = pod["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["reason"] == "Completed", platform.kubectl(
        "logs", "full", "-n", namespace, "-c", "prepare").stdout
    log = log_of(platform, pod)
    assert pod["status"]["phase"] == "Succeeded", log
    for expected in ("prepared", "s3cret", 'tier="web"', " F ok"):
        assert expected in log


def test_liveness_failure_restarts_the_container(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "sick", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600",
        restart="Always",
        container_extra="""    livenessProbe:
      exec: {command: [test, -f, /tmp/healthy]}
      periodSeconds: 1
      failureThreshold: 2"""))
    pod = wait_pod(platform, namespace, "sick",
                   lambda p: ((p.get("status") or {}).get("containerStatuses") or [{}])[0]
                   .get("restartCount", 0) >= 1, timeout=60)
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 137


def test_api_server_restart_does_not_disturb_pods(own_platform: Platform) -> None:
    platform, namespace = own_platform, "default"
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "calm", "sleep 3600", restart="Always").replace(TEST_NODE, "atoll-own-node"))
    pod = wait_pod(platform, namespace, "calm", phase("Running"))
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("//")[1]
    pid = json.loads((run_dir(platform.data_dir) / "containers" / cid / "state" /
                      "started.json").read_text())["pid"]
    # `atoll up` restarts the API server; the agent reconnects and changes nothing
    kill_and_await_restart(f"server --data-dir {platform.data_dir}", timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if platform.kubectl("get", "pod", "calm", "-n", namespace, check=False).returncode == 0:
            break
        time.sleep(0.3)
    os.kill(pid, 0)  # the container never stopped
    # and the agent still manages it: a delete stops it
    platform.kubectl("delete", "pod", "calm", "-n", namespace, "--timeout=60s")
    with pytest.raises(ProcessLookupError):
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)


def test_job_runs_to_completion_and_failure(platform: Platform, namespace: str) -> None:
    job = f"""apiVersion: batch/v1
kind: Job
metadata: {{name: count, namespace: {namespace}}}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      containers: [{{name: c, image: busybox, command: [sh, -c, "echo done"]}}]
"""
    platform.kubectl("apply", "-f", "-", input=job)
    platform.kubectl("wait", "--for=condition=complete", "job/count", "-n", namespace,
                     "--timeout=60s")
    status = json.loads(platform.kubectl("get", "job", "count", "-n", namespace, "-o",
                                         "json").stdout)["status"]
    assert status["succeeded"] == 3 and status.get("failed", 0) == 0
    assert status["completionTime"] and status["startTime"]
    failing = job.replace("name: count", "name: broken").replace(
        '"echo done"', '"exit 1"').replace("completions: 3", "backoffLimit: 1\n  completions: 1")
    platform.kubectl("apply", "-f", "-", input=failing)
    platform.kubectl("wait", "--for=condition=failed", "job/broken", "-n", namespace,
                     "--timeout=60s")
    broken = json.loads(platform.kubectl("get", "job", "broken", "-n", namespace, "-o",
                                         "json").stdout)["status"]
    assert broken["failed"] == 2
    assert any(c["type"] == "Failed" and c["reason"] == "BackoffLimitExceeded"
               for c in broken["conditions"])
    for job_name, wanted in (("count", {"SuccessfulCreate", "Completed"}),
                             ("broken", {"SuccessfulCreate", "BackoffLimitExceeded"})):
        wait_until(f"job {job_name}'s events", lambda: wanted <= set(platform.kubectl(
            "-n", namespace, "get", "events", "--field-selector",
            f"involvedObject.name={job_name},involvedObject.kind=Job",
            "-o", "jsonpath={.items[*].reason}").stdout.split()), timeout=30)


def test_deployment_rolls_out_and_back(platform: Platform, namespace: str) -> None:
    deploy = f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {namespace}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sh, -c, "echo v=$VERSION; sleep 3600"]
        env: [{{name: VERSION, value: "1"}}]
        readinessProbe: {{exec: {{command: ["true"]}}, periodSeconds: 1}}
"""
    platform.kubectl("apply", "-f", "-", input=deploy)
    platform.kubectl("rollout", "status", "deploy/web", "-n", namespace, "--timeout=90s")
    platform.kubectl("apply", "-f", "-", input=deploy.replace('value: "1"', 'value: "2"'))
    out = platform.kubectl("rollout", "status", "deploy/web", "-n", namespace,
                           "--timeout=90s").stdout
    assert "successfully rolled out" in out
    rs = json.loads(platform.kubectl("get", "rs", "-n", namespace, "-l", "app=web", "-o",
                                     "json").stdout)["items"]
    by_revision = {r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]:
                   r["spec"]["replicas"] for r in rs}
    assert by_revision == {"1": 0, "2": 3}
    # the controllers' Events, as upstream's: the Deployment scales its sets, each set
    # creates and deletes its pods
    reasons = wait_until("the workload controllers' events", lambda: (r := set(platform.kubectl(
        "-n", namespace, "get", "events", "-o", "jsonpath={.items[*].reason}").stdout.split()))
        and {"ScalingReplicaSet", "SuccessfulCreate", "SuccessfulDelete"} <= r and r, timeout=30)
    assert "FailedCreate" not in reasons
    pods = json.loads(platform.kubectl("get", "pods", "-n", namespace, "-l", "app=web", "-o",
                                       "json").stdout)["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 3
    assert all(c["value"] == "2" for p in live for c in p["spec"]["containers"][0]["env"])
    platform.kubectl("rollout", "undo", "deploy/web", "-n", namespace)
    platform.kubectl("rollout", "status", "deploy/web", "-n", namespace, "--timeout=90s")
    dep = json.loads(platform.kubectl("get", "deploy", "web", "-n", namespace, "-o",
                                      "json").stdout)
    assert dep["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "1"
    assert dep["status"]["updatedReplicas"] == 3 and dep["status"]["availableReplicas"] == 3
    platform.kubectl("scale", "deploy/web", "-n", namespace, "--replicas=1")
    platform.kubectl("rollout", "status", "deploy/web", "-n", namespace, "--timeout=60s")


def test_daemonset_runs_one_pod_per_fitting_node(platform: Platform, namespace: str) -> None:
    ds = f"""apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {{kubernetes.io/hostname: {TEST_NODE}}}
      containers: [{{name: c, image: busybox, command: [sleep, "3600"]}}]
"""
    wait_node(platform)
    platform.kubectl("apply", "-f", "-", input=ds)
    platform.kubectl("rollout", "status", "ds/agent", "-n", namespace, "--timeout=60s")
    status = json.loads(platform.kubectl("get", "ds", "agent", "-n", namespace, "-o",
                                         "json").stdout)["status"]
    assert status["desiredNumberScheduled"] == 1 and status["numberReady"] == 1
    pods = json.loads(platform.kubectl("get", "pods", "-n", namespace, "-l", "app=agent", "-o",
                                       "json").stdout)["items"]
    assert [p["spec"]["nodeName"] for p in pods] == [TEST_NODE]
    # a new template replaces the pod
    platform.kubectl("apply", "-f", "-", input=ds.replace('"3600"', '"3601"'))
    platform.kubectl("rollout", "status", "ds/agent", "-n", namespace, "--timeout=60s")
    pods = json.loads(platform.kubectl("get", "pods", "-n", namespace, "-l", "app=agent", "-o",
                                       "json").stdout)["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert [p["spec"]["containers"][0]["command"][1] for p in live] == ["3601"]
    wait_until("the DaemonSet's events", lambda: {"SuccessfulCreate", "SuccessfulDelete"} <= set(
        platform.kubectl("-n", namespace, "get", "events", "--field-selector",
                         "involvedObject.kind=DaemonSet", "-o",
                         "jsonpath={.items[*].reason}").stdout.split()), timeout=30)


def test_statefulset_orders_pods_and_keeps_claims(platform: Platform, namespace: str) -> None:
    sts = f"""apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {namespace}}}
spec:
  replicas: 3
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sh, -c, "hostname > /data/who; sleep 3600"]
        readinessProbe: {{exec: {{command: [test, -f, /data/who]}}, periodSeconds: 1}}
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
"""
    platform.kubectl("apply", "-f", "-", input=sts)
    platform.kubectl("rollout", "status", "sts/db", "-n", namespace, "--timeout=90s")
    pods = json.loads(platform.kubectl("get", "pods", "-n", namespace, "-l", "app=db", "-o",
                                       "json").stdout)["items"]
    by_name = {p["metadata"]["name"]: p for p in pods}
    assert sorted(by_name) == ["db-0", "db-1", "db-2"]
    started = [by_name[f"db-{i}"]["status"]["startTime"] for i in range(3)]
    assert started == sorted(started)  # OrderedReady: each after the one before
    claims = json.loads(platform.kubectl("get", "pvc", "-n", namespace, "-o",
                                         "json").stdout)["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == ["data-db-0", "data-db-1",
                                                              "data-db-2"]
    messages = wait_until("the StatefulSet's events", lambda: (m := platform.kubectl(
        "-n", namespace, "get", "events", "--field-selector", "involvedObject.kind=StatefulSet",
        "-o", "jsonpath={.items[*].message}").stdout) and "db-2 in StatefulSet db" in m and m,
        timeout=30)
    assert "create Pod db-0 in StatefulSet db successful" in messages
    platform.kubectl("scale", "sts/db", "-n", namespace, "--replicas=1")
    platform.kubectl("rollout", "status", "sts/db", "-n", namespace, "--timeout=60s")
    deadline = time.monotonic() + 60
    while True:
        names = sorted(p["metadata"]["name"] for p in json.loads(platform.kubectl(
            "get", "pods", "-n", namespace, "-l", "app=db", "-o", "json").stdout)["items"])
        if names == ["db-0"]:
            break
        assert time.monotonic() < deadline, names
        time.sleep(0.3)
    # claims stay when pods go, as upstream
    assert len(json.loads(platform.kubectl("get", "pvc", "-n", namespace, "-o",
                                           "json").stdout)["items"]) == 3


def test_kubectl_attach_streams_output(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "talker", "sleep 1; i=0; while true; do i=$((i+1)); echo tick-$i; "
                             "sleep 0.2; done", restart="Always"))
    wait_pod(platform, namespace, "talker", phase("Running"))
    from tests.conftest import kubectl_binary

    proc = subprocess.Popen([kubectl_binary(), "attach", "talker", "-n", namespace],
                            env=dict(os.environ, KUBECONFIG=str(platform.kubeconfig)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the first line streams through
        assert line.startswith("tick-"), line
    finally:
        proc.kill()
        proc.wait()


def test_deployment_that_cannot_progress_reports_it(platform: Platform, namespace: str) -> None:
    deploy = f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: stuck, namespace: {namespace}}}
spec:
  replicas: 1
  progressDeadlineSeconds: 3
  selector: {{matchLabels: {{app: stuck}}}}
  template:
    metadata: {{labels: {{app: stuck}}}}
    spec:
      containers: [{{name: c, image: "nowhere/absent:1"}}]
"""
    platform.kubectl("apply", "-f", "-", input=deploy)
    out = platform.kubectl("rollout", "status", "deploy/stuck", "-n", namespace,
                           "--timeout=60s", check=False)
    assert out.returncode != 0 and "exceeded its progress deadline" in out.stderr, out
