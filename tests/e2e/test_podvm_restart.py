"""Pod-VMs survive their agent: after a kill -9 the next agent takes the VM over untouched (same
QEMU, container and restart count; logs and exec go on), and a VM that died meanwhile is a
crashed sandbox whose container restarts per restartPolicy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from atoll.agent.podvm.runtime import unavailable
from atoll.agent.podvm.vm import MARKER
from tests.conftest import TEST_NODE, Platform, pids_of, wait_until
from tests.e2e.test_pods import pod_yaml, wait_pod

pytestmark = pytest.mark.skipif(bool(unavailable()), reason=unavailable() or "")
NODE = "atoll-own-node"  # the own_platform fixture's host
TICKER = ("echo $(date +%s)-$RANDOM > /tmp/started; i=0; "
          "while :; do echo tick $i; i=$((i+1)); sleep 0.5; done")


def qemu_pids(uid: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", MARKER + uid], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def status(pod: dict) -> dict:
    return ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]


def ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def ticks(text: str) -> list[int]:
    return [int(line.split()[1]) for line in text.splitlines()
            if line.startswith("tick ") and line.split()[1].isdigit()]


def start_ticker(p: Platform, name: str) -> dict:
    p.kubectl("create", "namespace", "vms")
    wait_until("namespace vms filled in", lambda: p.kubectl(
        "-n", "vms", "get", "serviceaccount/default", check=False).returncode == 0, 60)
    p.kubectl("apply", "-f", "-", input=pod_yaml(
        "vms", name, TICKER, restart="Always", extra="  runtimeClassName: atoll-vm")
        .replace(f"nodeName: {TEST_NODE}", f"nodeName: {NODE}"))
    return wait_pod(p, "vms", name, lambda pod: "running" in (status(pod).get("state") or {})
                    and ready(pod), timeout=240)


def kill_agent(p: Platform) -> list[int]:
    marker = f"agent --kubeconfig {p.data_dir / 'agent.kubeconfig'}"
    old = pids_of(marker)
    assert old
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    return old


def await_new_agent(p: Platform, old: list[int]) -> None:
    marker = f"agent --kubeconfig {p.data_dir / 'agent.kubeconfig'}"
    wait_until("atoll up starting a new agent", lambda: bool(set(pids_of(marker)) - set(old)),
               30)


def test_a_killed_agent_leaves_the_pod_vm_running_and_its_successor_takes_it_over(
        own_platform: Platform) -> None:
    p = own_platform
    pod = start_ticker(p, "ticker")
    uid, before = pod["metadata"]["uid"], status(pod)
    assert before["restartCount"] == 0
    (qemu,) = qemu_pids(uid)
    started = p.kubectl("exec", "-n", "vms", "ticker", "--", "cat", "/tmp/started").stdout
    assert "-" in started
    wait_until("ticks in the log", lambda: len(ticks(
        p.kubectl("logs", "-n", "vms", "ticker").stdout)) >= 3, 60)
    seen = ticks(p.kubectl("logs", "-n", "vms", "ticker").stdout)

    old = kill_agent(p)
    assert qemu_pids(uid) == [qemu]  # QEMU and the guest run on without an agent
    await_new_agent(p, old)
    # exec through the new agent: the same container, never restarted (its start stamp)
    wait_until("exec through the new agent", lambda: p.kubectl(
        "exec", "-n", "vms", "ticker", "--", "cat", "/tmp/started",
        check=False).stdout == started, 120)
    assert qemu_pids(uid) == [qemu]
    pod = wait_pod(p, "vms", "ticker", ready, timeout=60)
    after = status(pod)
    assert after["containerID"] == before["containerID"] and after["restartCount"] == 0
    assert "running" in after["state"] and not after.get("lastState")
    # kubectl logs: the lines from before the restart, then new ones from the same loop
    wait_until("new ticks", lambda: max(ticks(
        p.kubectl("logs", "-n", "vms", "ticker").stdout)) > max(seen) + 4, 60)
    now = ticks(p.kubectl("logs", "-n", "vms", "ticker").stdout)
    assert now[:len(seen)] == seen and now == sorted(set(now))  # kept, in order, none twice
    lost = sorted(set(range(max(now) + 1)) - set(now))
    print(f"ticks lost around the kill -9: {lost}")  # shown with -s: those in flight, if any
    assert p.kubectl("exec", "-n", "vms", "ticker", "--", "sh", "-c", "exit 3",
                     check=False).returncode == 3

    p.kubectl("delete", "pod", "-n", "vms", "ticker", "--wait=true", timeout=120)
    wait_until("the pod's QEMU gone", lambda: not qemu_pids(uid), 30)


def test_a_pod_vm_that_died_with_its_agent_down_restarts_as_a_crashed_sandbox(
        own_platform: Platform) -> None:
    p = own_platform
    pod = start_ticker(p, "crashing")
    uid, before = pod["metadata"]["uid"], status(pod)
    (qemu,) = qemu_pids(uid)
    run = p.data_dir / "agent-run" / "podvm" / "vms" / uid
    virtiofsd = json.loads((run / "vm.json").read_text())["pids"]["virtiofsd"][0]
    wait_until("ticks in the log", lambda: "tick 0" in p.kubectl(
        "logs", "-n", "vms", "crashing").stdout, 60)

    old = kill_agent(p)
    os.kill(qemu, signal.SIGKILL)  # the VM dies while no agent watches it
    await_new_agent(p, old)
    # as kubelet after a sandbox died: the container restarts (restartPolicy Always) in a
    # new VM, counted in restartCount, its last state the crash
    pod = wait_pod(p, "vms", "crashing", lambda pod: status(pod).get("restartCount") == 1
                   and "running" in (status(pod).get("state") or {}) and ready(pod),
                   timeout=240)
    last = status(pod)["lastState"]["terminated"]
    assert last["exitCode"] == 255 and "stopped while no agent watched" in last["message"]
    assert status(pod)["containerID"] != before["containerID"]
    assert qemu_pids(uid) and qemu not in qemu_pids(uid) and len(qemu_pids(uid)) == 1
    assert not os.path.exists(f"/proc/{virtiofsd}")  # nothing of the dead VM left
    deadline = time.monotonic() + 60
    while "tick 0" not in p.kubectl("logs", "-n", "vms", "crashing").stdout:
        assert time.monotonic() < deadline, "the restarted container logs nothing"
        time.sleep(0.5)
    assert "tick 0" in p.kubectl("logs", "-n", "vms", "crashing", "--previous").stdout
    p.kubectl("delete", "pod", "-n", "vms", "crashing", "--wait=true", timeout=120)
    wait_until("the pod's QEMU gone", lambda: not qemu_pids(uid), 30)


def test_a_pod_vm_deleted_with_its_agent_down_is_torn_down_by_the_next_agent(
        own_platform: Platform) -> None:
    p = own_platform
    pod = start_ticker(p, "gone")
    uid = pod["metadata"]["uid"]
    (qemu,) = qemu_pids(uid)
    run = p.data_dir / "agent-run" / "podvm" / "vms" / uid
    virtiofsd = json.loads((run / "vm.json").read_text())["pids"]["virtiofsd"][0]
    old = kill_agent(p)
    p.kubectl("delete", "pod", "-n", "vms", "gone", "--grace-period=0", "--force")
    assert qemu_pids(uid) == [qemu]
    await_new_agent(p, old)
    wait_until("the deleted pod's QEMU gone", lambda: not qemu_pids(uid), 120)
    wait_until("its virtiofsd and run directory gone", lambda: not os.path.exists(
        f"/proc/{virtiofsd}") and not run.exists(), 60)
