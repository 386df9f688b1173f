"""Terminals: `kubectl run -it`, `exec -it` and `attach -it` under a real pseudo-terminal
(util-linux `script`), window sizes reaching the container's pty, and a tty container that
outlives an agent restart (its shim owns the pty master)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess

from tests.conftest import Platform, kill_and_await_restart, kubectl_binary, wait_until


def in_terminal(platform: Platform, args: list[str], typed: str, *, rows: int = 24,
                cols: int = 80, timeout: float = 90) -> str:
    """kubectl ``args`` run on a pty of ``rows`` x ``cols`` with ``typed`` as keystrokes;
    what the terminal showed, without carriage returns."""
    line = f"stty rows {rows} cols {cols}; exec {shlex.join([kubectl_binary(), *args])}"
    env = dict(os.environ, KUBECONFIG=str(platform.kubeconfig),
               KUBECACHEDIR=str(platform.cache_dir))
    out = subprocess.run(["script", "-qec", line, "/dev/null"], input=typed, text=True,
                         capture_output=True, env=env, timeout=timeout)
    return (out.stdout + out.stderr).replace("\r", "")


def pod(platform: Platform, ns: str, name: str) -> dict:
    out = platform.kubectl("-n", ns, "get", "pod", name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def running(platform: Platform, ns: str, name: str, restarts: int = 0) -> bool:
    statuses = (pod(platform, ns, name).get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) and
                                  s.get("restartCount", 0) >= restarts for s in statuses)


def test_run_it_gives_a_terminal(platform: Platform, namespace: str) -> None:
    shown = in_terminal(platform, ["-n", namespace, "run", "-it", "--rm", "--restart=Never",
                                   "--image=busybox", "tt", "--", "sh"], "tty\nexit\n")
    lines = shown.splitlines()
    assert any(line.startswith("/dev/pts/") for line in lines), shown
    assert any(line.startswith("/ # ") for line in lines), shown  # the prompt came through
    wait_until("the pod removed", lambda: not pod(platform, namespace, "tt"), 30)


def test_exec_it_has_a_terminal_of_the_clients_size(platform: Platform, namespace: str) -> None:
    platform.kubectl("-n", namespace, "run", "sleeper", "--image=busybox", "--", "sleep", "3600")
    wait_until("the pod running", lambda: running(platform, namespace, "sleeper"), 60)
    shown = in_terminal(platform, ["-n", namespace, "exec", "-it", "sleeper", "--", "sh"],
                        "tty\nstty size\nexit\n", rows=33, cols=101)
    assert "/dev/pts/" in shown, shown
    assert "33 101" in shown.splitlines(), shown


def test_attach_it_relays_the_pty_and_survives_an_agent_restart(platform: Platform,
                                                               namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "term", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sh"],
                                 "stdin": True, "tty": True}]}}))
    wait_until("the pod running", lambda: running(platform, namespace, "term"), 60)
    # kubectl attach sends a size one larger, then the real one, to make the program redraw;
    # the typed line may overtake the second resize, so the shell waits for it (bounded)
    typed = ('for i in $(seq 100); do [ "$(stty size)" = "40 120" ] && break; sleep 0.05; '
             'done; stty size; tty\nexit\n')
    shown = in_terminal(platform, ["-n", namespace, "attach", "-it", "term"], typed,
                        rows=40, cols=120)
    assert "40 120" in shown.splitlines(), shown  # the resize reached the container's pty
    assert "/dev/pts/0" in shown.splitlines(), shown
    # the shell exited and was restarted; the agent restarts under the new one
    wait_until("the restarted shell", lambda: running(platform, namespace, "term", 1), 60)
    kill_and_await_restart(f"agent --kubeconfig {platform.data_dir / 'agent.kubeconfig'}")

    def attach_again() -> bool:
        try:
            return "again-2" in in_terminal(platform, ["-n", namespace, "attach", "-it", "term"],
                                            "echo again-$((1+1))\nexit\n", timeout=30
                                            ).splitlines()
        except subprocess.TimeoutExpired:
            return False
    wait_until("attach after an agent restart", attach_again, 60, 1.0)
    # the terminal's output is the container's stdout log (the shell exited: --previous)
    logs = platform.kubectl("-n", namespace, "logs", "--previous", "term").stdout
    assert "again-2" in logs.replace("\r", "").splitlines(), logs
