"""Stream fidelity: exec/attach on a container that is not running say why (not "Invalid
response status"), a v5 client's close of stdin is the command's end of file, stdin in
websocket TEXT frames (the official Python client), and 404s carry ``details``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.conftest import Platform, wait_until


def phase(platform: Platform, ns: str, name: str) -> str:
    out = platform.kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.status.phase}",
                           check=False)
    return out.stdout if out.returncode == 0 else ""


def sleeper(platform: Platform, ns: str) -> None:
    platform.kubectl("-n", ns, "run", "sleeper", "--image=busybox", "--", "sleep", "3600")
    wait_until("the pod running", lambda: phase(platform, ns, "sleeper") == "Running", 60)


def test_exec_into_a_stopped_container_says_so(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "two", "namespace": namespace},
        "spec": {"restartPolicy": "Never", "containers": [
            {"name": "long", "image": "busybox", "command": ["sleep", "3600"]},
            {"name": "short", "image": "busybox", "command": ["true"]}]}}))
    wait_until("the short container done", lambda: "terminated" in platform.kubectl(
        "-n", namespace, "get", "pod", "two", "-o",
        "jsonpath={.status.containerStatuses[?(@.name=='short')].state}").stdout, 60)
    out = platform.kubectl("-n", namespace, "exec", "two", "-c", "short", "--", "true",
                           check=False)
    assert out.returncode != 0
    assert "cannot exec in a stopped container" in out.stderr, out.stderr
    assert "Invalid response status" not in out.stderr
    out = platform.kubectl("-n", namespace, "exec", "two", "-c", "nope", "--", "true",
                           check=False)
    assert "container nope is not valid for pod two" in out.stderr, out.stderr


def test_exec_into_a_completed_pod_says_so(platform: Platform, namespace: str) -> None:
    platform.kubectl("-n", namespace, "run", "done", "--image=busybox", "--restart=Never",
                     "--", "true")
    wait_until("the pod done", lambda: phase(platform, namespace, "done") == "Succeeded", 60)
    raw = platform.kubectl("get", "--raw", f"/api/v1/namespaces/{namespace}/pods/done/exec"
                           "?command=true", check=False)
    assert "cannot exec into a container in a completed pod" in raw.stderr, raw


def test_closing_stdin_ends_the_commands_input(platform: Platform, namespace: str) -> None:
    sleeper(platform, namespace)
    out = platform.kubectl("-n", namespace, "exec", "-i", "sleeper", "--", "sh", "-c",
                           "wc -c; echo after-eof", input="hello\n", timeout=30)
    assert out.stdout.split() == ["6", "after-eof"], out


def test_stdin_in_text_frames(platform: Platform, namespace: str, k8s) -> None:  # noqa: ANN001
    from kubernetes.stream import stream

    client, api_client = k8s
    sleeper(platform, namespace)
    core = client.CoreV1Api(api_client)
    resp = stream(core.connect_get_namespaced_pod_exec, "sleeper", namespace,
                  command=["head", "-n", "1"], stdin=True, stdout=True, stderr=True, tty=False,
                  _preload_content=False)
    try:
        resp.write_stdin("typed-as-text\n")  # a str: the client sends a TEXT frame
        seen = ""
        wait_until("the echo", lambda: (resp.update(timeout=1), resp.peek_stdout())[1], 20)
        seen = resp.read_stdout()
        assert seen == "typed-as-text\n"
    finally:
        resp.close()


def test_not_found_statuses_carry_details(platform: Platform, namespace: str) -> None:
    def get(path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(platform.url + path,
                                        context=platform.ssl_context()) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    code, body = get(f"/api/v1/namespaces/{namespace}/pods/nopod/ephemeralcontainers")
    assert code == 404 and body["details"] == {"name": "nopod", "kind": "pods"}, body
    code, body = get(f"/api/v1/namespaces/{namespace}/pods/nopod/exec")
    assert code == 404 and body["details"]["name"] == "nopod", body
    code, body = get("/api/v1/nosuchthing")
    assert code == 404 and body["details"] == {}, body
    assert list(body)[-2:] == ["details", "code"]  # upstream's field order
