"""Containers with stdin: `kubectl run -i`, `kubectl attach -i`, stdinOnce, agent restarts."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time

from tests.conftest import Platform, kill_and_await_restart, kubectl_binary, wait_until


def running(platform: Platform, ns: str, name: str) -> bool:
    out = platform.kubectl("-n", ns, "get", "pod", name, "-o", "json", check=False)
    return out.returncode == 0 and json.loads(out.stdout)["status"].get("phase") == "Running"


def attach_and_say(platform: Platform, ns: str, pod: str, word: str) -> str:
    """`kubectl attach -i` with an open stdin: say a line, read until it comes back, leave.
    (With a container that keeps running, kubectl waits for more after its stdin ends, as
    upstream, so the session is ended from this side.)"""
    proc = subprocess.Popen([kubectl_binary(), "-n", ns, "attach", "-i", pod],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                            env=dict(os.environ, KUBECONFIG=str(platform.kubeconfig),
                                     KUBECACHEDIR=str(platform.cache_dir)))
    assert proc.stdin is not None and proc.stdout is not None
    seen = ""
    try:
        proc.stdin.write(word + "\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 20
        while word not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()
                if not line:
                    break
                seen += line
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return seen


def test_run_interactive_pipes_stdin(platform: Platform, namespace: str) -> None:
    out = platform.kubectl("-n", namespace, "run", "-i", "--rm", "--restart=Never",
                           "--image=busybox", "once", "--", "sh", "-c", "read x; echo got-$x",
                           input="hello\n", timeout=90)
    assert "got-hello" in out.stdout, out
    wait_until("the pod removed", lambda: platform.kubectl(
        "-n", namespace, "get", "pod", "once", check=False).returncode != 0, 30)


def test_attach_feeds_stdin_again_and_again(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=json.dumps({  # stdin kept open across sessions
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox", "stdin": True,
                                 "command": ["cat"]}]}}))
    wait_until("the pod running", lambda: running(platform, namespace, "echo"), 60)
    for word in ("first", "second"):
        assert word in attach_and_say(platform, namespace, "echo", word)
    # the agent restarts; the container's stdin is the shim's, so it still works
    kill_and_await_restart(f"agent --kubeconfig {platform.data_dir / 'agent.kubeconfig'}")
    wait_until("attach after an agent restart",
               lambda: "third" in attach_and_say(platform, namespace, "echo", "third"), 60, 1.0)
    logs = platform.kubectl("-n", namespace, "logs", "echo").stdout.split()
    assert logs == ["first", "second", "third"]


def test_stdin_once_ends_with_the_first_session(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "oneshot", "namespace": namespace},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "busybox", "stdin": True, "stdinOnce": True,
            "command": ["sh", "-c", "cat; echo eof-seen"]}]}}))
    wait_until("the pod running", lambda: running(platform, namespace, "oneshot"), 60)
    platform.kubectl("-n", namespace, "attach", "-i", "oneshot", input="payload\n", timeout=60)
    wait_until("the container to see EOF and finish", lambda: json.loads(platform.kubectl(
        "-n", namespace, "get", "pod", "oneshot", "-o", "json").stdout)["status"].get("phase")
        == "Succeeded", 30)
    assert platform.kubectl("-n", namespace, "logs", "oneshot").stdout.split() == \
        ["payload", "eof-seen"]
