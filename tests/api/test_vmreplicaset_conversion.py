"""VirtualMachineReplicaSet's versions (v1alpha3 … v1alpha6): its template is a VM, whose
``cdrom`` moved between versions; round trips through every version are identity, fuzzed
from the hub and from each spoke, and by hand."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given

from atoll.api.vmoperator.conversion import HUB, converters
from tests.api.test_vmoperator_conversion import FUZZ, gv, objects, valid_in

KIND = "VirtualMachineReplicaSet"
SPOKES = ["v1alpha3", "v1alpha4", "v1alpha5"]


def test_served_from_v1alpha3() -> None:
    assert converters()[KIND].versions() == ["v1alpha3", "v1alpha4", "v1alpha5", "v1alpha6"]


@pytest.mark.parametrize("version", SPOKES)
def test_hub_to_spoke_and_back_is_identity(version: str) -> None:
    conv = converters()[KIND]

    @FUZZ
    @given(objects(KIND, HUB))
    def check(hub: dict[str, Any]) -> None:
        spoke = conv.convert(copy.deepcopy(hub), gv(version))
        assert valid_in(KIND, version, spoke) == []
        assert conv.convert(spoke, gv(HUB)) == hub
    check()


@pytest.mark.parametrize("version", SPOKES)
def test_spoke_to_hub_and_back_is_identity(version: str) -> None:
    conv = converters()[KIND]

    @FUZZ
    @given(objects(KIND, version))
    def check(spoke: dict[str, Any]) -> None:
        hub = conv.convert(copy.deepcopy(spoke), gv(HUB))
        assert valid_in(KIND, HUB, hub) == []
        assert conv.convert(hub, gv(version)) == spoke
    check()


def test_the_templates_cdrom_moves_under_hardware() -> None:
    cdrom = [{"name": "iso", "image": {"name": "installer", "kind": "VirtualMachineImage"}}]
    spoke = {"apiVersion": gv("v1alpha3"), "kind": KIND, "metadata": {"name": "web"},
             "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                      "template": {"metadata": {"labels": {"app": "web"}},
                                   "spec": {"className": "small", "cdrom": cdrom}}}}
    conv = converters()[KIND]
    hub = conv.convert(copy.deepcopy(spoke), gv(HUB))
    template = hub["spec"]["template"]["spec"]
    assert template["hardware"]["cdrom"] == cdrom and "cdrom" not in template
    assert "annotations" not in hub["metadata"]  # nothing the hub could not hold
    assert conv.convert(hub, gv("v1alpha3")) == spoke
