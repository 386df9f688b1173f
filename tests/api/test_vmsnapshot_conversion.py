"""VirtualMachineSnapshot's versions (v1alpha5, v1alpha6) and the VM's snapshot fields
(``spec.currentSnapshotName``, ``status.currentSnapshot``, ``status.rootSnapshots``, from
v1alpha5) survive conversion through every version, fuzzed and by hand."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, strategies as st

from atoll.api.vmoperator.conversion import HUB, converters
from tests.api.test_vmoperator_conversion import FUZZ, gv, objects, valid_in

KIND = "VirtualMachineSnapshot"
VM_VERSIONS = [f"v1alpha{i}" for i in range(1, 6)]


def test_snapshot_served_in_v1alpha5_and_v1alpha6_only() -> None:
    assert converters()[KIND].versions() == ["v1alpha5", "v1alpha6"]


def test_snapshot_hub_to_v1alpha5_and_back_is_identity() -> None:
    conv = converters()[KIND]

    @FUZZ
    @given(objects(KIND, HUB))
    def check(hub: dict[str, Any]) -> None:
        spoke = conv.convert(copy.deepcopy(hub), gv("v1alpha5"))
        assert valid_in(KIND, "v1alpha5", spoke) == []
        assert conv.convert(spoke, gv(HUB)) == hub
    check()


def test_snapshot_v1alpha5_to_hub_and_back_is_identity() -> None:
    conv = converters()[KIND]

    @FUZZ
    @given(objects(KIND, "v1alpha5"))
    def check(spoke: dict[str, Any]) -> None:
        hub = conv.convert(copy.deepcopy(spoke), gv(HUB))
        assert valid_in(KIND, HUB, hub) == []
        assert conv.convert(hub, gv("v1alpha5")) == spoke
    check()


def test_v1alpha5_vm_ref_is_the_vm_name_in_v1alpha6() -> None:
    spoke = {"apiVersion": gv("v1alpha5"), "kind": KIND, "metadata": {"name": "s1"},
             "spec": {"vmRef": {"apiVersion": gv("v1alpha5"), "kind": "VirtualMachine",
                                "name": "web"}, "memory": True}}
    hub = converters()[KIND].convert(copy.deepcopy(spoke), gv(HUB))
    assert hub["spec"] == {"vmName": "web", "memory": True}
    assert converters()[KIND].convert(hub, gv("v1alpha5")) == spoke
    # a vmName given beside it wins
    both = copy.deepcopy(spoke)
    both["spec"]["vmName"] = "db"
    assert converters()[KIND].convert(both, gv(HUB))["spec"]["vmName"] == "db"


SNAP_VM = {
    "apiVersion": gv(HUB), "kind": "VirtualMachine",
    "metadata": {"name": "web", "namespace": "ns", "generation": 3},
    "spec": {"className": "best-effort-small", "imageName": "tiny", "powerState": "PoweredOff",
             "currentSnapshotName": "snap-2"},
    "status": {"powerState": "PoweredOn",
               "currentSnapshot": {"apiVersion": gv(HUB), "kind": KIND, "name": "snap-1"},
               "rootSnapshots": [{"apiVersion": gv(HUB), "kind": KIND, "name": "snap-0"},
                                 {"apiVersion": gv(HUB), "kind": KIND, "name": "snap-9"}]},
}


def test_vm_snapshot_fields_survive_every_older_version() -> None:
    conv = converters()["VirtualMachine"]
    for version in VM_VERSIONS:
        spoke = conv.convert(copy.deepcopy(SNAP_VM), gv(version))
        if version == "v1alpha5":
            assert spoke["spec"]["currentSnapshotName"] == "snap-2"
            assert spoke["status"]["rootSnapshots"] == SNAP_VM["status"]["rootSnapshots"]
        else:
            assert "currentSnapshotName" not in spoke["spec"]
            assert "currentSnapshot" not in spoke.get("status", {})
        assert conv.convert(spoke, gv(HUB)) == SNAP_VM


def test_vm_snapshot_fields_survive_a_status_change_in_v1alpha3() -> None:
    """What the agent does: a v1alpha3 status write keeps the v1alpha6-only fields."""
    conv = converters()["VirtualMachine"]
    old = conv.convert(copy.deepcopy(SNAP_VM), gv("v1alpha3"))
    old["status"]["powerState"] = "PoweredOff"
    hub = conv.convert(old, gv(HUB))
    assert hub["status"]["powerState"] == "PoweredOff"
    assert hub["status"]["currentSnapshot"]["name"] == "snap-1"
    assert hub["status"]["rootSnapshots"] == SNAP_VM["status"]["rootSnapshots"]
    assert hub["spec"]["currentSnapshotName"] == "snap-2"


def test_vm_snapshot_fields_through_chains_of_versions() -> None:
    conv = converters()["VirtualMachine"]

    @FUZZ
    @given(st.permutations(VM_VERSIONS))
    def check(order: list[str]) -> None:
        obj = copy.deepcopy(SNAP_VM)
        for version in order:
            obj = conv.convert(obj, gv(version))
        assert conv.convert(obj, gv(HUB)) == SNAP_VM
    check()
