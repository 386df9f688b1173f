"""`kubectl debug`: ephemeral containers in a running pod (``--target`` shares its PID
namespace), ``--copy-to``, ``node/NAME``; the ``pods/ephemeralcontainers`` rules (422s) and
Pod Security over them."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import TEST_NODE, Platform, wait_until


def get_pod(platform: Platform, ns: str, name: str) -> dict:
    out = platform.kubectl("-n", ns, "get", "pod", name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def state(platform: Platform, ns: str, pod: str, container: str, key: str) -> str:
    """The state (running / terminated / waiting) of a container of any kind, or ''."""
    status = get_pod(platform, ns, pod).get("status") or {}
    for s in (status.get(key) or []):
        if s.get("name") == container:
            return next(iter(s.get("state") or {}), "")
    return ""


def sleeper(platform: Platform, ns: str, name: str = "target") -> None:
    platform.kubectl("-n", ns, "run", name, "--image=busybox", "--", "sleep", "3600")
    wait_until("the pod running",
               lambda: state(platform, ns, name, name, "containerStatuses") == "running", 60)


@pytest.fixture
def privileged_namespace(platform: Platform) -> str:
    name = f"p-{uuid.uuid4().hex[:8]}"
    platform.kubectl("create", "namespace", name)
    platform.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=privileged")
    wait_until(f"namespace {name} filled in", lambda: platform.kubectl(
        "-n", name, "get", "serviceaccount/default", check=False).returncode == 0)
    yield name
    platform.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_debug_target_sees_the_targets_processes(platform: Platform, namespace: str) -> None:
    sleeper(platform, namespace)
    out = platform.kubectl("-n", namespace, "debug", "target", "--image=busybox",
                           "--target=target", "--profile=baseline", "-c", "dbg", "--", "ps")
    assert "Targeting container" in out.stderr + out.stdout
    wait_until("the debug container ran",
               lambda: state(platform, namespace, "target", "dbg",
                             "ephemeralContainerStatuses") == "terminated", 60)
    logs = platform.kubectl("-n", namespace, "logs", "target", "-c", "dbg").stdout
    assert "sleep 3600" in logs, logs  # the target's init process, in the shared PID namespace
    pod = get_pod(platform, namespace, "target")
    assert [c["name"] for c in pod["spec"]["ephemeralContainers"]] == ["dbg"]
    done = pod["status"]["ephemeralContainerStatuses"][0]
    assert done["restartCount"] == 0 and done["state"]["terminated"]["exitCode"] == 0
    # never restarted: it stays terminated while the pod runs on
    assert state(platform, namespace, "target", "target", "containerStatuses") == "running"


def test_debug_it_attaches_to_the_ephemeral_container(platform: Platform, namespace: str) -> None:
    from tests.e2e.test_tty import in_terminal

    sleeper(platform, namespace)
    shown = in_terminal(platform, ["-n", namespace, "debug", "target", "-it", "--image=busybox",
                                   "--target=target", "--profile=baseline", "-c", "sh1", "--",
                                   "sh"], "ps; tty\nexit\n")
    assert "sleep 3600" in shown and "/dev/pts/0" in shown, shown
    assert platform.kubectl("-n", namespace, "exec", "target", "-c", "sh1", "--", "true",
                            check=False).returncode != 0  # exited, and not restarted


def test_pod_security_applies_to_debug_containers(platform: Platform, namespace: str) -> None:
    """kubectl's default ("general") profile adds SYS_PTRACE, which baseline refuses: a
    tenant's debug container is refused, as upstream; a cluster admin's is admitted (with
    the warning), since debugging is an administrator's act."""
    sleeper(platform, namespace)
    platform.kubectl("-n", namespace, "create", "role", "debugger", "--verb=get,patch,update",
                     "--resource=pods,pods/ephemeralcontainers")
    platform.kubectl("-n", namespace, "create", "rolebinding", "debugger", "--role=debugger",
                     "--user=tenant-debugger")
    refused = platform.kubectl("-n", namespace, "debug", "target", "--image=busybox",
                               "--target=target", "--as=tenant-debugger", "--", "true",
                               check=False)
    assert refused.returncode != 0 and "SYS_PTRACE" in refused.stderr, refused
    assert not get_pod(platform, namespace, "target")["spec"].get("ephemeralContainers")
    admitted = platform.kubectl("-n", namespace, "debug", "target", "--image=busybox",
                                "--target=target", "-c", "dbg", "--", "true")
    assert 'would violate PodSecurity "baseline' in admitted.stderr, admitted
    wait_until("the debug container ran", lambda: state(
        platform, namespace, "target", "dbg", "ephemeralContainerStatuses") == "terminated", 60)


def test_debug_copy_to_makes_a_new_pod(platform: Platform, namespace: str) -> None:
    sleeper(platform, namespace)
    platform.kubectl("-n", namespace, "debug", "target", "--image=busybox", "--copy-to=copy",
                     "--profile=baseline", "-c", "dbg", "--", "sleep", "3600")
    wait_until("the copy running", lambda: state(platform, namespace, "copy", "dbg",
                                                 "containerStatuses") == "running", 60)
    names = [c["name"] for c in get_pod(platform, namespace, "copy")["spec"]["containers"]]
    assert names == ["target", "dbg"]


def test_debug_node_runs_in_the_hosts_namespaces(platform: Platform,
                                                 privileged_namespace: str) -> None:
    wait_until("the node registered", lambda: platform.kubectl(
        "get", "node", TEST_NODE, check=False).returncode == 0, 60)
    out = platform.kubectl("-n", privileged_namespace, "debug", f"node/{TEST_NODE}",
                           "--image=busybox", "--profile=sysadmin", "--",
                           "sh", "-c", "cat /proc/1/comm; ls /proc | grep -c '^[0-9]'")
    name = next(w for w in (out.stdout + out.stderr).split() if w.startswith("node-debugger-"))
    wait_until("the node debug pod finished",
               lambda: (get_pod(platform, privileged_namespace, name).get("status") or {})
               .get("phase") == "Succeeded", 60)
    pod = get_pod(platform, privileged_namespace, name)
    assert pod["spec"]["nodeName"] == TEST_NODE
    assert pod["spec"]["hostPID"] and pod["spec"]["hostNetwork"] and pod["spec"]["hostIPC"]
    comm, count = platform.kubectl("-n", privileged_namespace, "logs", name).stdout.split()[:2]
    assert comm != "sh" and int(count) > 20  # the host's init and the host's processes


def test_debug_node_mounts_the_hosts_root(platform: Platform, privileged_namespace: str) -> None:
    wait_until("the node registered", lambda: platform.kubectl(
        "get", "node", TEST_NODE, check=False).returncode == 0, 60)
    out = platform.kubectl("-n", privileged_namespace, "debug", f"node/{TEST_NODE}",
                           "--image=busybox", "--profile=sysadmin", "--", "cat",
                           "/host/etc/os-release")
    name = next(w for w in (out.stdout + out.stderr).split() if w.startswith("node-debugger-"))
    pod = get_pod(platform, privileged_namespace, name)
    assert pod["spec"]["volumes"][0].get("hostPath", {}).get("path") == "/", pod["spec"]
    wait_until("the node debug pod finished",
               lambda: (get_pod(platform, privileged_namespace, name).get("status") or {})
               .get("phase") in ("Succeeded", "Failed"), 60)
    logs = platform.kubectl("-n", privileged_namespace, "logs", name).stdout
    assert "ID=" in logs, logs


def test_debug_node_is_refused_in_a_baseline_namespace(platform: Platform, namespace: str) -> None:
    wait_until("the node registered", lambda: platform.kubectl(
        "get", "node", TEST_NODE, check=False).returncode == 0, 60)
    out = platform.kubectl("-n", namespace, "debug", f"node/{TEST_NODE}", "--image=busybox",
                           "--", "true", check=False)
    assert out.returncode != 0 and "host namespaces" in out.stderr, out


def test_ephemeral_containers_are_validated_as_upstream(platform: Platform, namespace: str,
                                                        k8s) -> None:  # noqa: ANN001
    client, api_client = k8s
    core = client.CoreV1Api(api_client)
    sleeper(platform, namespace)

    def patch(containers: list[dict]) -> object:
        return core.patch_namespaced_pod_ephemeralcontainers(
            "target", namespace, {"spec": {"ephemeralContainers": containers}})

    def replace(containers: list[dict]) -> object:
        pod = core.read_namespaced_pod_ephemeralcontainers("target", namespace)
        body = api_client.sanitize_for_serialization(pod)
        body["spec"]["ephemeralContainers"] = containers
        return core.replace_namespaced_pod_ephemeralcontainers("target", namespace, body)

    def refused(call, containers: list[dict]) -> dict:  # noqa: ANN001
        with pytest.raises(client.ApiException) as info:
            call(containers)
        assert info.value.status == 422, info.value.body
        return json.loads(info.value.body)

    first = {"name": "dbg", "image": "busybox", "command": ["true"]}
    patch([first])
    fields = lambda body: {c.get("field") for c in body["details"]["causes"]}  # noqa: E731
    assert fields(refused(replace, [])) == {"spec.ephemeralContainers"}  # removal
    assert fields(refused(replace, [{**first, "command": ["false"]}])) == \
        {"spec.ephemeralContainers[dbg]"}  # a change
    body = refused(patch, [{"name": "target", "image": "busybox"},
                           {"name": "p", "image": "busybox", "ports": [{"containerPort": 80}]},
                           {"name": "t", "image": "busybox", "targetContainerName": "nope"}])
    assert {"spec.ephemeralContainers[1].name", "spec.ephemeralContainers[2].ports",
            "spec.ephemeralContainers[3].targetContainerName"} <= fields(body), body
    # nothing but the ephemeral containers changes through the subresource
    pod = core.read_namespaced_pod_ephemeralcontainers("target", namespace)
    body = api_client.sanitize_for_serialization(pod)
    body["metadata"].setdefault("labels", {})["sneaky"] = "yes"
    body["spec"]["containers"][0]["image"] = "other"
    body["spec"]["ephemeralContainers"].append({"name": "dbg2", "image": "busybox",
                                                "command": ["true"]})
    core.replace_namespaced_pod_ephemeralcontainers("target", namespace, body)
    stored = get_pod(platform, namespace, "target")
    assert [c["name"] for c in stored["spec"]["ephemeralContainers"]] == ["dbg", "dbg2"]
    assert stored["spec"]["containers"][0]["image"] == "busybox"
    assert "sneaky" not in (stored["metadata"].get("labels") or {})
    # and an ordinary update may not add one
    with pytest.raises(client.ApiException) as info:
        core.patch_namespaced_pod("target", namespace, {"spec": {"ephemeralContainers": [
            {"name": "dbg3", "image": "busybox"}]}})
    assert info.value.status == 422


def test_unknown_pods_are_404s_with_details(platform: Platform, namespace: str) -> None:
    out = platform.kubectl("-n", namespace, "debug", "nopod", "--image=busybox", "--", "true",
                           check=False)
    assert out.returncode == 1 and 'pods "nopod" not found' in out.stderr, out
    assert "panic" not in out.stderr
