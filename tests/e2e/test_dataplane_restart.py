"""The dataplane survives its agent: after a kill -9 the Service and policy tables stay, a TCP
connection through a cluster IP keeps passing data, new ones are made while no agent runs,
and the next agent takes the tables over in place (same chain handles, never a listing
without the Service).  A sync the kernel refuses (our table taken by another owner) is a
Warning Event and a False Node condition, True again once a sync succeeds."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading

from tests.conftest import Platform, pids_of, slot_bridge, wait_until

NODE = "atoll-own-node"  # the own_platform fixture's host
SVC_TABLE = f"atoll_svc_{slot_bridge(2)}".replace("-", "_")
POL_TABLE = f"atoll_pol_{slot_bridge(2)}".replace("-", "_")

APP = """apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [nc, -ll, -p, "9000", -e, cat]
        readinessProbe: {tcpSocket: {port: 9000}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  ports: [{port: 9000}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: friends-only, namespace: default}
spec:
  podSelector: {matchLabels: {app: echo}}
  ingress: [{from: [{podSelector: {matchLabels: {role: friend}}}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: stranger, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: friend, namespace: default, labels: {role: friend}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
"""


def _json(platform: Platform, *args: str) -> dict:
    return json.loads(platform.kubectl(*args, "-o", "json").stdout)


def _nft(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nft", *args], capture_output=True, text=True)


def _handles(family: str, table: str) -> dict[str, str]:
    """Chain name -> kernel handle (a chain deleted and made again gets a new one)."""
    out = _nft("-a", "list", "table", family, table).stdout
    return dict(re.findall(r"^\s*chain (\S+) \{ # handle (\d+)", out, re.M))


def _echo(sock: socket.socket, text: bytes) -> bytes:
    sock.sendall(text)
    got = b""
    while len(got) < len(text):
        chunk = sock.recv(64)
        if not chunk:
            break
        got += chunk
    return got


def _new_connection_echoes(ip: str) -> bool:
    try:
        with socket.create_connection((ip, 9000), timeout=3) as s:
            s.settimeout(3)
            return _echo(s, b"fresh\n") == b"fresh\n"
    except OSError:
        return False


def _reaches(platform: Platform, pod: str, ip: str) -> bool:
    out = platform.kubectl("exec", pod, "--", "sh", "-c",
                           f"echo hi | timeout 3 nc {ip} 9000", check=False)
    return out.stdout.strip() == "hi"


def _ready(platform: Platform) -> int:
    got = platform.kubectl("get", "endpoints", "echo", "-o", "json", check=False)
    if got.returncode != 0:
        return 0  # not written yet
    return sum(len(s.get("addresses") or []) for s in json.loads(got.stdout).get("subsets") or [])


def _condition(platform: Platform, type_: str) -> dict:
    got = platform.kubectl("get", "node", NODE, "-o", "json", check=False)
    if got.returncode != 0:
        return {}  # not registered yet
    node = json.loads(got.stdout)
    return next((c for c in node["status"].get("conditions") or [] if c["type"] == type_), {})


def test_a_killed_agent_leaves_rules_and_connections_and_its_successor_takes_over(
        own_platform: Platform) -> None:
    p = own_platform
    p.kubectl("apply", "-f", "-", input=APP)
    wait_until("both echo endpoints ready", lambda: _ready(p) == 2, 120)
    for pod in ("stranger", "friend"):
        wait_until(f"{pod} running", lambda: (_json(p, "get", "pod", pod).get("status") or {})
                   .get("phase") == "Running", 90)
    cip = _json(p, "get", "service", "echo")["spec"]["clusterIP"]
    wait_until("the cluster IP answering", lambda: _new_connection_echoes(cip), 30)
    wait_until("the friend let in", lambda: _reaches(p, "friend", cip), 30)
    assert not _reaches(p, "stranger", cip)  # the policy blocks it
    conn = socket.create_connection((cip, 9000), timeout=5)
    conn.settimeout(5)
    assert _echo(conn, b"before\n") == b"before\n"
    svc_handles, pol_handles = _handles("ip", SVC_TABLE), _handles("inet", POL_TABLE)
    assert svc_handles and pol_handles

    # watch the table through the restart: every listing must still program the Service
    gaps: list[str] = []
    listings = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal listings
        while not stop.is_set():
            out = _nft("list", "table", "ip", SVC_TABLE).stdout
            listings += 1
            if f"{cip} . tcp . 9000 : goto service-" not in out:
                gaps.append(out[:200])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    marker = f"agent --kubeconfig {p.data_dir / 'agent.kubeconfig'}"
    old = pids_of(marker)
    assert old
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    # no agent now (`atoll up` waits a second before starting another)
    down = 0
    while not set(pids_of(marker)) - set(old):
        assert _new_connection_echoes(cip), "a new connection failed with the agent down"
        down += 1
    assert down >= 1
    assert _echo(conn, b"during\n") == b"during\n"
    assert _nft("list", "table", "inet", POL_TABLE).returncode == 0

    # the new agent's first sync is over the old table: prove it synced by a change
    p.kubectl("create", "service", "clusterip", "later", "--tcp=9001:9000")
    later = _json(p, "get", "service", "later")["spec"]["clusterIP"]
    wait_until("the new agent programming a new Service",
               lambda: later in _nft("list", "table", "ip", SVC_TABLE).stdout, 60)
    stop.set()
    watcher.join()
    assert not gaps, f"{len(gaps)} of {listings} listings lacked the Service: {gaps[0]}"
    after = _handles("ip", SVC_TABLE)
    assert {c: after.get(c) for c in svc_handles} == svc_handles  # taken over in place
    assert _echo(conn, b"after\n") == b"after\n"
    conn.close()
    wait_until("the new agent answering exec", lambda: _reaches(p, "friend", cip), 60)
    assert not _reaches(p, "stranger", cip)  # still blocked
    after = _handles("inet", POL_TABLE)
    assert {c: after.get(c) for c in pol_handles} == pol_handles


def test_a_refused_sync_is_an_event_and_a_condition_until_one_succeeds(
        own_platform: Platform) -> None:
    """A real failing table state: our Service table replaced by one another process owns
    (``flags owner``): nft refuses every write to it with EPERM until that process exits,
    when the kernel removes its table."""
    p = own_platform
    condition = "atoll.dev/ServiceProxyHealthy"
    wait_until("the first proxy sync reported",
               lambda: _condition(p, condition).get("status") == "True", 60)
    assert _nft("delete", "table", "ip", SVC_TABLE).returncode == 0
    holder = subprocess.Popen(["nft", "-i"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdin is not None
        holder.stdin.write(f"add table ip {SVC_TABLE} {{ flags owner; }}\n")
        holder.stdin.flush()
        wait_until("the table owned by another process", lambda: "flags owner" in _nft(
            "list", "table", "ip", SVC_TABLE).stdout, 10)
        p.kubectl("create", "service", "clusterip", "poke", "--tcp=80:8080")  # a change
        failing = wait_until("the condition False", lambda: (
            c := _condition(p, condition)).get("status") == "False" and c, 60)
        assert failing["reason"] == "SyncProxyRulesFailed"
        assert "Operation not permitted" in failing["message"], failing

        def event() -> dict | None:
            items = _json(p, "get", "events", "-n", "default")["items"]
            # the first (partial) sync fails otherwise: the table it knew is gone
            return next((e for e in items if e["reason"] == "SyncProxyRulesFailed"
                         and e["involvedObject"].get("name") == NODE
                         and "Operation not permitted" in e["message"]), None)

        ev = wait_until("the Warning Event on the Node", event, 30)
        assert ev["type"] == "Warning" and ev["involvedObject"]["kind"] == "Node"
        assert ev["message"].startswith("sync failed: ") and len(ev["message"]) < 500
        assert pids_of(f"agent --kubeconfig {p.data_dir / 'agent.kubeconfig'}")  # alive
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(timeout=10)
    # the kernel dropped the owned table; a retry (back-off at most 30 s) succeeds
    ok = wait_until("the condition True again", lambda: (
        c := _condition(p, condition)).get("status") == "True" and c, 90)
    assert ok["reason"] == "Synced"
    poke = _json(p, "get", "service", "poke")["spec"]["clusterIP"]
    listing = _nft("list", "table", "ip", SVC_TABLE).stdout
    assert "flags owner" not in listing and poke in listing
