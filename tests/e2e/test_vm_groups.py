"""VirtualMachineGroups on real QEMU (TCG): members link by `spec.groupName`, power on in
boot order with their delays, off together, a forced sync puts a hand-changed member back,
a member added later follows, deleting the group deletes its members; bad groups are 422s
naming the field."""

from __future__ import annotations

import json
from typing import Any

from atoll.api.timestamps import parse_rfc3339
from tests.conftest import Platform, wait_until
from tests.e2e.test_vms import tiny_image  # noqa: F401 (a fixture)

GROUP = "vmoperator.vmware.com"
VMG = f"virtualmachinegroups.v1alpha6.{GROUP}"
SET_AT = "vmoperator.atoll.dev/group-power-set-at"


def vm(ns: str, name: str, image: str) -> str:
    return json.dumps({"apiVersion": f"{GROUP}/v1alpha5", "kind": "VirtualMachine",
                       "metadata": {"name": name, "namespace": ns},
                       "spec": {"className": "best-effort-xsmall", "imageName": image,
                                "powerState": "PoweredOff", "groupName": "app"}})


def group(ns: str, members: list[list[str]], delay: str = "3s", **spec: Any) -> str:
    order = [{"members": [{"name": m} for m in entry]} for entry in members]
    if len(order) > 1:
        order[1]["powerOnDelay"] = delay
    return json.dumps({"apiVersion": f"{GROUP}/v1alpha5", "kind": "VirtualMachineGroup",
                       "metadata": {"name": "app", "namespace": ns},
                       "spec": {"bootOrder": order, **spec}})


def get(platform: Platform, resource: str, ns: str, name: str) -> dict[str, Any]:
    out = platform.kubectl("get", resource, name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def spec_power(platform: Platform, ns: str, name: str) -> str:
    return (get(platform, "vm", ns, name).get("spec") or {}).get("powerState", "")


def set_at(platform: Platform, ns: str, name: str) -> float:
    return parse_rfc3339(get(platform, "vm", ns, name)["metadata"]["annotations"][SET_AT]) or 0


def power(platform: Platform, ns: str, state: str) -> None:
    platform.kubectl("patch", VMG, "app", "-n", ns, "--type=merge",
                     "-p", json.dumps({"spec": {"powerState": state}}))


def test_boot_order_delays_power_off_and_membership(platform: Platform, namespace: str,
                                                    tiny_image: str) -> None:  # noqa: F811
    for name in ("db", "web"):
        platform.kubectl("apply", "-f", "-", input=vm(namespace, name, tiny_image))
    platform.kubectl("apply", "-f", "-", input=group(namespace, [["db"], ["web"]]))
    linked = wait_until("both members linked", lambda: (lambda g: g if [
        (m["name"], {c["type"]: c["status"] for c in m["conditions"]}.get("GroupLinked"))
        for m in (g.get("status") or {}).get("members") or []] == [("db", "True"),
                                                                  ("web", "True")] else None)(
        get(platform, VMG, namespace, "app")), timeout=60, interval=0.3)
    assert (linked["spec"].get("powerState") or "") == ""  # no power state: hands off
    for name in ("db", "web"):
        refs = get(platform, "vm", namespace, name)["metadata"]["ownerReferences"]
        assert [(r["kind"], r["name"]) for r in refs] == [("VirtualMachineGroup", "app")]
        assert spec_power(platform, namespace, name) == "PoweredOff"

    power(platform, namespace, "PoweredOn")
    wait_until("web powered on", lambda: spec_power(platform, namespace, "web") == "PoweredOn",
               timeout=60, interval=0.2)
    started = parse_rfc3339(get(platform, VMG, namespace, "app")["status"][
        "lastUpdatedPowerStateTime"])
    db_at, web_at = set_at(platform, namespace, "db"), set_at(platform, namespace, "web")
    assert started <= db_at < started + 3, (started, db_at)
    assert web_at - started >= 3.0, (started, web_at)  # the second entry's delay
    ready = wait_until("the group Ready (both running)", lambda: (lambda g: g if any(
        c["type"] == "Ready" and c["status"] == "True" for c in (g.get("status") or {})
        .get("conditions") or []) else None)(get(platform, VMG, namespace, "app")),
        timeout=240, interval=0.5)
    assert {m["name"]: m["powerState"] for m in ready["status"]["members"]} == \
        {"db": "PoweredOn", "web": "PoweredOn"}
    assert all(m["placement"]["node"] for m in ready["status"]["members"])

    # a member changed by hand keeps its state until a forced sync puts it back
    platform.kubectl("patch", "vm", "db", "-n", namespace, "--type=merge",
                     "-p", '{"spec": {"powerState": "PoweredOff"}}')
    wait_until("db out of sync", lambda: any(
        m["name"] == "db" and any(c["type"] == "PowerStateSynced" and c["status"] == "False"
                                  for c in m["conditions"])
        for m in (get(platform, VMG, namespace, "app").get("status") or {}).get("members", [])),
        timeout=120, interval=0.5)
    assert spec_power(platform, namespace, "db") == "PoweredOff"
    platform.kubectl("patch", VMG, "app", "-n", namespace, "--type=merge",
                     "-p", '{"spec": {"nextForcePowerStateSyncTime": "NOW"}}')
    forced = get(platform, VMG, namespace, "app")["spec"]["nextForcePowerStateSyncTime"]
    assert parse_rfc3339(forced) is not None, forced  # "now" became the time
    wait_until("db on again", lambda: spec_power(platform, namespace, "db") == "PoweredOn",
               timeout=60, interval=0.2)

    # a member added to a powered-on group follows it
    platform.kubectl("apply", "-f", "-", input=vm(namespace, "cache", tiny_image))
    platform.kubectl("apply", "-f", "-", input=group(namespace, [["db"], ["web", "cache"]],
                                                     powerState="PoweredOn"))
    wait_until("cache powered on", lambda: spec_power(platform, namespace, "cache") ==
               "PoweredOn", timeout=60, interval=0.2)

    power(platform, namespace, "PoweredOff")
    wait_until("every member off", lambda: all(spec_power(platform, namespace, name) ==
                                               "PoweredOff" for name in ("db", "web", "cache")),
               timeout=60, interval=0.2)

    # the group goes: so do its members (their owner)
    platform.kubectl("delete", VMG, "app", "-n", namespace, "--wait=true", timeout=60)
    wait_until("the members collected", lambda: json.loads(platform.kubectl(
        "get", "vm", "-n", namespace, "-o", "json").stdout)["items"] == [],
        timeout=120, interval=0.5)


def test_bad_groups_are_refused_with_the_field(platform: Platform, namespace: str) -> None:
    def refused(manifest: str, field: str) -> None:
        out = platform.kubectl("apply", "-f", "-", input=manifest, check=False)
        assert out.returncode != 0 and field in out.stderr, out.stderr

    refused(group(namespace, [["a"], ["b"]], delay="soon"), "spec.bootOrder[1].powerOnDelay")
    refused(group(namespace, [["a", "a"]]), "spec.bootOrder[0].members[1]")
    itself = json.loads(group(namespace, [["a"]]))
    itself["spec"]["bootOrder"][0]["members"].append({"name": "app",
                                                     "kind": "VirtualMachineGroup"})
    refused(json.dumps(itself), "spec.bootOrder[0].members[1]")
    refused(group(namespace, [["a"]], nextForcePowerStateSyncTime="tomorrow"),
            "spec.nextForcePowerStateSyncTime")
    platform.kubectl("apply", "-f", "-", input=group(namespace, [["a"]], powerState="PoweredOn"))
    emptied = platform.kubectl("patch", VMG, "app", "-n", namespace, "--type=json",
                               "-p", '[{"op": "remove", "path": "/spec/powerState"}]',
                               check=False)
    assert emptied.returncode != 0 and "spec.powerState" in emptied.stderr, emptied.stderr


def test_anti_affinity_keeps_group_members_apart(platform: Platform, namespace: str,
                                                 tiny_image: str) -> None:  # noqa: F811
    """One host here: the second member that must not share a host with the first waits,
    with the reason, until the first is gone; affinity outside a group is refused."""
    def member(name: str, **spec: Any) -> str:
        return json.dumps({"apiVersion": f"{GROUP}/v1alpha5", "kind": "VirtualMachine",
                           "metadata": {"name": name, "namespace": namespace,
                                        "labels": {"app": "db"}},
                           "spec": {"className": "best-effort-xsmall", "imageName": tiny_image,
                                    "powerState": "PoweredOff", **spec}})
    apart = {"vmAntiAffinity": {"requiredDuringSchedulingPreferredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}},
         "topologyKey": "kubernetes.io/hostname"}]}}
    platform.kubectl("apply", "-f", "-", input=member("db-1", groupName="pair"))
    wait_until("db-1 placed", lambda: (get(platform, "vm", namespace, "db-1")["metadata"].get(
        "labels") or {}).get("vmoperator.atoll.dev/host"), timeout=60, interval=0.3)
    platform.kubectl("apply", "-f", "-", input=member("db-2", groupName="pair", affinity=apart))

    def placement_of(name: str) -> dict[str, Any]:
        return next((c for c in (get(platform, "vm", namespace, name).get("status") or {})
                     .get("conditions") or []
                     if c["type"] == "VirtualMachineConditionPlacementReady"), {})
    waiting = wait_until("db-2 kept apart", lambda: (lambda c: c if c.get("reason") ==
                                                     "AffinityRulesNotMet" else None)(
        placement_of("db-2")), timeout=60, interval=0.3)
    assert "anti-affinity" in waiting["message"], waiting
    platform.kubectl("delete", "vm", "db-1", "-n", namespace, "--wait=true", timeout=120)
    wait_until("db-2 placed once db-1 is gone", lambda: placement_of("db-2").get("status") ==
               "True", timeout=60, interval=0.3)
    out = platform.kubectl("apply", "-f", "-", check=False, input=member("loner", affinity=apart))
    assert out.returncode != 0 and "spec.affinity" in out.stderr, out.stderr
