"""DRS in a 2-host dev cluster: two VMs burning CPU on one host, the other idle.

The load is real (TCG guests spin real host CPU in their QEMU threads) and measured by the
agents, not taken from requests (the VMs request nothing).  Manual: a MigrationRecommendation
appears and nothing moves, pass after pass; FullyAutomated: DRS migrates one VM to the idle
host, drops the recommendation, and then leaves the two hosts alone (one burner each: moving
either back would only mirror the imbalance).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import TEST_SLOT
from tests.e2e.devcluster import DevCluster
from tests.e2e.test_vms import GROUP

HOST = "vmoperator.atoll.dev/host"
NS = "drs"
REASON = "migration.atoll.dev/reason"
BURN = "while :; do :; done &"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cluster = DevCluster(tmp_path_factory.mktemp("drs"), 2, f"adrs{TEST_SLOT}-")
    cluster.start()
    try:
        built = cluster.atoll("image", "build", "tiny", timeout=900)
        assert built.returncode == 0, built.stdout + built.stderr
        cluster.kubectl("create", "namespace", NS)
        yield cluster
    finally:
        cluster.stop()


def burner(name: str, host: str) -> str:
    return json.dumps({
        "apiVersion": f"{GROUP}/v1alpha3", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NS, "labels": {HOST: host}},
        "spec": {"className": "best-effort-xsmall", "imageName": "tiny",
                 "powerState": "PoweredOn",
                 "bootstrap": {"cloudInit": {"cloudConfig": {"runcmd": [BURN]}}}}})


def policy(dev: DevCluster) -> dict[str, Any]:
    return dev.get("balancingpolicy", "default")


def set_policy(dev: DevCluster, **spec: Any) -> None:
    dev.kubectl("patch", "balancingpolicy", "default", "--type=merge", "-p",
                json.dumps({"spec": spec}))


def passes(dev: DevCluster) -> int:
    return int((policy(dev).get("status") or {}).get("passes") or 0)


def drs_migrations(dev: DevCluster) -> list[dict[str, Any]]:
    return [m for m in dev.get("vmim", "-n", NS).get("items", [])
            if (m["metadata"].get("labels") or {}).get(REASON) == "drs"]


def host_of(dev: DevCluster, name: str) -> str:
    return (dev.get("vm", "-n", NS, name).get("metadata") or {}).get("labels", {}).get(HOST, "")


def test_manual_recommends_and_fully_automated_moves_a_burner(dev: DevCluster) -> None:
    dev.wait("the default BalancingPolicy", lambda: policy(dev), 60)
    assert policy(dev)["spec"]["automationLevel"] == "Manual"  # nothing moves unasked
    bad = dev.kubectl("patch", "balancingpolicy", "default", "--type=merge", "-p",
                      '{"spec": {"migrationThreshold": 9, "automationLevel": "Sometimes"}}',
                      check=False)
    assert bad.returncode and "spec.migrationThreshold" in bad.stderr, bad.stderr
    assert "spec.automationLevel" in bad.stderr, bad.stderr
    set_policy(dev, migrationThreshold=5, intervalSeconds=10)
    for name in ("burn-a", "burn-b"):
        dev.kubectl("apply", "-f", "-", input=burner(name, dev.host(1)))

    def recommended() -> dict[str, Any] | None:
        items = dev.get("migrationrecommendations", "-n", NS).get("items", [])
        return items[0] if items else None
    rec = dev.wait("a recommendation", recommended, 240)
    assert rec["spec"]["vmName"] in ("burn-a", "burn-b"), rec
    assert (rec["spec"]["sourceNode"], rec["spec"]["targetNode"]) == (dev.host(1), dev.host(2))
    assert " -> " in rec["spec"]["expectedImprovement"] and rec["spec"]["priority"] <= 5
    # Manual: passes go by, the recommendation stays, nothing migrates
    seen = passes(dev)
    dev.wait("two more passes", lambda: passes(dev) >= seen + 2, 90)
    assert drs_migrations(dev) == [] and recommended() is not None
    load = json.loads(dev.get("node", dev.host(1))["metadata"]["annotations"][
        "drs.atoll.dev/load"])
    assert set(load["vms"]) == {f"{NS}/burn-a", f"{NS}/burn-b"}, load
    assert load["cpu"]["workloads"] >= 500, load  # measured, though they request nothing

    set_policy(dev, automationLevel="FullyAutomated")
    asked = time.monotonic()

    def moved() -> list[dict[str, Any]] | None:
        done = [m for m in drs_migrations(dev) if (m.get("status") or {}).get("phase") ==
                "Succeeded"]
        return done or None
    done = dev.wait("a DRS migration", moved, 180)
    assert len(done) == 1, done
    print(f"\nFullyAutomated -> DRS migration Succeeded: {time.monotonic() - asked:.1f} s")
    mover = done[0]["spec"]["vmName"]
    assert done[0]["status"]["targetNode"] == dev.host(2)
    stayer = ({"burn-a", "burn-b"} - {mover}).pop()
    assert host_of(dev, mover) == dev.host(2) and host_of(dev, stayer) == dev.host(1)
    dev.wait("the recommendation dropped", lambda: recommended() is None, 60)
    events = dev.get("events", "-n", NS, "--field-selector", f"involvedObject.name={mover}")
    assert "DRSMigration" in [e["reason"] for e in events["items"]]
    # balanced now: later passes (on reports taken after the move) leave both VMs alone
    seen = passes(dev)
    dev.wait("two passes after the move", lambda: passes(dev) >= seen + 2, 120)
    assert len(drs_migrations(dev)) == 1
    assert host_of(dev, mover) == dev.host(2) and host_of(dev, stayer) == dev.host(1)
    status = policy(dev)["status"]
    assert {h["name"] for h in status["hosts"]} == {dev.host(1), dev.host(2)}, status
