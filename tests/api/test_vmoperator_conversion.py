"""Conversion between the VM Operator API's six versions: round trips are identity.

v1alpha6 → vX → v1alpha6 for objects of the hub's schema, vX → v1alpha6 → vX for objects
valid in vX, and chains through several versions, for every kind: with objects drawn from
the CRDs' own schemas (hypothesis), plus the mappings upstream's conversion functions make
(v1alpha1's shapes, v1alpha3's cdrom and host) checked by hand.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from atoll.api import crdconversion, crdschema, vmoperator
from atoll.api.vmoperator import generate
from atoll.api.vmoperator.conversion import ANNOTATION, HUB, converters
from atoll.api.vmoperator.conversion.engine import residue_key

GROUP = "vmoperator.vmware.com"
VERSIONS = [f"v1alpha{i}" for i in range(1, 7)]
KINDS = ["VirtualMachine", "VirtualMachineClass", "VirtualMachineImage",
         "ClusterVirtualMachineImage", "VirtualMachineService"]
CRDS = {c["spec"]["names"]["kind"]: c for c in vmoperator.definitions()}
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def schema(kind: str, version: str) -> dict[str, Any]:
    return next(v for v in CRDS[kind]["spec"]["versions"]
                if v["name"] == version)["schema"]["openAPIV3Schema"]


def gv(version: str) -> str:
    return f"{GROUP}/{version}"


# -- objects from a schema ------------------------------------------------------------------------
WORDS = st.sampled_from(["a", "b", "web", "eth0", "eth1", "x-1", "vm-a", "10.0.0.1"])
QUANTITIES = st.sampled_from(["1", "2Gi", "500m", "20Gi", "4"])
TIMES = st.sampled_from(["2026-01-02T03:04:05Z", "2025-12-31T23:59:59Z"])
DIGESTS = st.sampled_from(["sha256:" + "ab" * 32, "sha256:" + "01" * 32])
FREE = st.dictionaries(st.sampled_from(["k", "mode", "size"]), WORDS, max_size=2)


def values(node: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Objects valid in ``node``'s schema (small, with every field optional)."""
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if node.get("x-kubernetes-int-or-string"):
        return st.one_of(st.integers(0, 64), QUANTITIES) if "pattern" in node else \
            st.one_of(st.integers(1, 65535), WORDS)
    t = node.get("type")
    if t == "string":
        if node.get("format") == "date-time":
            return TIMES
        if "pattern" in node:
            return DIGESTS
        return WORDS
    if t == "integer":
        return st.integers(node.get("minimum", 0), 100)
    if t == "boolean":
        return st.booleans()
    if t == "array":
        items = node["items"]
        keys = node.get("x-kubernetes-list-map-keys") or (
            ["name"] if "name" in (items.get("properties") or {}) else [])
        inner = values(items, depth + 1)
        if keys:
            inner = inner.map(lambda item: item if isinstance(item, dict) else {})
            return st.lists(inner, max_size=2 if depth < 4 else 0,
                            unique_by=lambda i: tuple(str(i.get(k)) for k in keys)).map(
                lambda items: [i for i in items if all(k in i for k in keys)])
        return st.lists(inner, max_size=2 if depth < 4 else 0)
    if t == "object" or "properties" in node:
        props = node.get("properties")
        if props:
            required = set(node.get("required") or ())
            return st.fixed_dictionaries(
                {k: values(v, depth + 1) for k, v in props.items() if k in required},
                optional={k: values(v, depth + 1) for k, v in props.items()
                          if k not in required and k not in ("apiVersion", "kind", "metadata")})
        if isinstance(node.get("additionalProperties"), dict):
            return st.dictionaries(WORDS, values(node["additionalProperties"], depth + 1),
                                   max_size=2)
        return FREE
    return WORDS


def objects(kind: str, version: str) -> st.SearchStrategy[dict[str, Any]]:
    meta = st.fixed_dictionaries({"name": st.just("obj")}, optional={
        "labels": st.dictionaries(st.sampled_from(["app", "tier"]), WORDS, max_size=2),
        # (an empty annotations map that a conversion annotation came and went from is not
        # told apart from none)
        "annotations": st.dictionaries(st.sampled_from(["note", "owner"]), WORDS, min_size=1,
                                       max_size=2)})
    return st.tuples(meta, values(schema(kind, version))).map(
        lambda mb: {**mb[1], "apiVersion": gv(version), "kind": kind, "metadata": mb[0]})


def valid_in(kind: str, version: str, obj: dict[str, Any]) -> list[str]:
    s = crdschema.StructuralSchema(schema(kind, version))
    return s.unknown_fields(obj) + [c.field for c in s.validate(obj)]


# -- the fuzzed round trips -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", VERSIONS[:-1])
def test_hub_to_version_and_back_is_identity(kind: str, version: str) -> None:
    conv = converters()[kind]

    @FUZZ
    @given(objects(kind, HUB))
    def check(hub: dict[str, Any]) -> None:
        spoke = conv.convert(copy.deepcopy(hub), gv(version))
        assert spoke["apiVersion"] == gv(version)
        assert valid_in(kind, version, spoke) == []
        assert conv.convert(spoke, gv(HUB)) == hub
    check()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", VERSIONS[:-1])
def test_version_to_hub_and_back_is_identity(kind: str, version: str) -> None:
    conv = converters()[kind]

    @FUZZ
    @given(objects(kind, version))
    def check(spoke: dict[str, Any]) -> None:
        hub = conv.convert(copy.deepcopy(spoke), gv(HUB))
        assert valid_in(kind, HUB, hub) == []
        assert conv.convert(hub, gv(version)) == spoke
    check()


@pytest.mark.parametrize("kind", KINDS)
def test_chains_through_every_version_are_identity(kind: str) -> None:
    conv = converters()[kind]

    @FUZZ
    @given(objects(kind, HUB), st.permutations(VERSIONS[:-1]))
    def check(hub: dict[str, Any], order: list[str]) -> None:
        obj = copy.deepcopy(hub)
        for version in order:
            obj = conv.convert(obj, gv(version))
        assert conv.convert(obj, gv(HUB)) == hub
    check()


# -- what the conversions map, by hand ------------------------------------------------------------
HUB_VM = {
    "apiVersion": gv(HUB), "kind": "VirtualMachine",
    "metadata": {"name": "web", "namespace": "ns"},
    "spec": {
        "className": "best-effort-small", "imageName": "ubuntu", "powerState": "PoweredOn",
        "powerOffMode": "TrySoft",
        "bootstrap": {"cloudInit": {"rawCloudConfig": {"name": "web-data", "key": "user-data"}}},
        "network": {"interfaces": [{"name": "eth0", "network": {
            "apiVersion": "netoperator.vmware.com/v1alpha1", "kind": "Network",
            "name": "primary"}, "mtu": 1400}]},
        "hardware": {"cdrom": [{"name": "cd1"}]},
        "resources": {"requests": {"cpu": "1"}},
        "bootOptions": {"firmware": "EFI"},
    },
    "status": {"nodeName": "host-1", "powerState": "PoweredOn",
               "network": {"primaryIP4": "10.0.0.5"}},
}


def convert(obj: dict[str, Any], version: str) -> dict[str, Any]:
    return converters()[obj["kind"]].convert(copy.deepcopy(obj), gv(version))


def test_v1alpha1_shapes_as_upstream_maps_them() -> None:
    old = convert(HUB_VM, "v1alpha1")
    assert old["spec"]["powerState"] == "poweredOn"
    assert old["spec"]["powerOffMode"] == "trySoft"
    assert old["spec"]["vmMetadata"] == {"transport": "CloudInit", "secretName": "web-data"}
    assert old["spec"]["networkInterfaces"] == [{"networkName": "primary",
                                                 "networkType": "vsphere-distributed"}]
    assert old["status"]["host"] == "host-1" and old["status"]["vmIp"] == "10.0.0.5"
    assert "bootstrap" not in old["spec"] and "network" not in old["spec"]
    saved = json.loads(old["metadata"]["annotations"][ANNOTATION])
    assert saved["spec"]["resources"] == {"requests": {"cpu": "1"}}
    assert saved["apiVersion"] == gv(HUB)


def test_v1alpha1_manifest_converts_up() -> None:
    old = {"apiVersion": gv("v1alpha1"), "kind": "VirtualMachine",
           "metadata": {"name": "legacy"},
           "spec": {"imageName": "centos", "className": "small", "powerState": "poweredOff",
                    "vmMetadata": {"configMapName": "legacy-md", "transport": "ExtraConfig"},
                    "networkInterfaces": [{"networkType": "nsx-t", "networkName": "seg"}],
                    "ports": [{"port": 22, "ip": "", "name": "ssh", "protocol": "TCP"}],
                    "resourcePolicyName": "pool"}}
    hub = convert(old, HUB)
    assert hub["spec"]["powerState"] == "PoweredOff"
    assert hub["spec"]["bootstrap"] == {"cloudInit": {"rawCloudConfig": {
        "name": "legacy-md", "key": "guestinfo.userdata"}}}
    assert hub["spec"]["network"]["interfaces"] == [{"name": "eth0", "network": {
        "name": "seg", "apiVersion": "vmware.com/v1alpha1", "kind": "VirtualNetwork"}}]
    assert hub["spec"]["reserved"] == {"resourcePolicyName": "pool"}
    # what v1alpha6 cannot hold (ports, the ConfigMap rather than a Secret) is kept
    assert "ports" not in hub["spec"]
    assert json.loads(hub["metadata"]["annotations"][residue_key("v1alpha1")])["spec"][
        "ports"][0]["name"] == "ssh"
    assert convert(hub, "v1alpha1") == old


def test_v1alpha3_cdrom_and_host() -> None:
    mid = convert(HUB_VM, "v1alpha3")
    assert mid["spec"]["cdrom"] == [{"name": "cd1"}] and "hardware" not in mid["spec"]
    assert mid["status"]["host"] == mid["status"]["nodeName"] == "host-1"
    up = convert({**mid, "metadata": {"name": "web", "namespace": "ns"}}, HUB)
    assert up["spec"]["hardware"] == {"cdrom": [{"name": "cd1"}]}
    assert "host" not in up["status"]


def test_a_change_made_in_an_old_version_wins_and_the_rest_is_restored() -> None:
    mid = convert(HUB_VM, "v1alpha3")
    mid["spec"]["className"] = "best-effort-large"
    mid["spec"]["network"]["interfaces"][0]["mtu"] = 9000
    hub = convert(mid, HUB)
    assert hub["spec"]["className"] == "best-effort-large"
    assert hub["spec"]["network"]["interfaces"][0]["mtu"] == 9000
    assert hub["spec"]["resources"] == {"requests": {"cpu": "1"}}  # from the annotation
    assert hub["spec"]["bootOptions"] == {"firmware": "EFI"}
    assert ANNOTATION not in (hub["metadata"].get("annotations") or {})


def test_nothing_lost_means_no_annotation() -> None:
    small = {"apiVersion": gv(HUB), "kind": "VirtualMachineClass", "metadata": {"name": "c"},
             "spec": {"hardware": {"cpus": 2, "memory": "4Gi"}}}
    for version in VERSIONS:
        out = convert(small, version)
        assert "annotations" not in out["metadata"], version
        assert out["spec"] == small["spec"]


def test_image_v1alpha1_keeps_its_facts_in_spec() -> None:
    hub = {"apiVersion": gv(HUB), "kind": "VirtualMachineImage",
           "metadata": {"name": "vmi-1", "namespace": "ns"},
           "status": {"name": "ubuntu-22.04", "type": "OVF", "providerItemID": "item-1",
                      "osInfo": {"type": "linux", "version": "22.04"},
                      "providerContentVersion": "3"}}
    old = convert(hub, "v1alpha1")
    assert old["spec"] == {"type": "OVF", "osInfo": {"type": "linux", "version": "22.04"},
                           "imageID": "item-1"}
    assert old["status"] == {"imageName": "ubuntu-22.04", "contentVersion": "3"}
    assert convert(old, HUB) == hub


# -- the manifests and the definitions ------------------------------------------------------------
def test_committed_manifests_match_their_sources() -> None:
    for file in vmoperator.CRD_FILES:
        text = generate.render(file)
        assert (vmoperator.resources.files(vmoperator.__name__).joinpath(file)
                .read_text(encoding="utf-8")) == text, f"run python -m {generate.__name__}"


def test_definitions_declare_the_in_process_webhook() -> None:
    for kind in KINDS:
        spec = CRDS[kind]["spec"]
        assert spec["conversion"]["strategy"] == "Webhook"
        assert spec["conversion"]["webhook"]["clientConfig"]["service"] == \
            crdconversion.IN_PROCESS_SERVICE
        assert crdconversion.in_process(spec) is not None
        assert [v["name"] for v in spec["versions"] if v["storage"]] == [HUB]
        assert [v["name"] for v in spec["versions"] if v.get("deprecated")] == ["v1alpha1"]
        for v in spec["versions"]:
            assert crdschema.check_structural(v["schema"]["openAPIV3Schema"], "s") == []


def test_user_crds_may_not_use_webhook_conversion() -> None:
    crd = copy.deepcopy(CRDS["VirtualMachineClass"])
    crd["spec"]["group"] = "example.com"
    crd["metadata"]["name"] = "virtualmachineclasses.example.com"
    causes = crdschema.check_crd(crd)
    assert [c.field for c in causes] == ["spec.conversion.strategy"]
    crd = copy.deepcopy(CRDS["VirtualMachineClass"])
    crd["spec"]["conversion"]["webhook"]["clientConfig"] = {"url": "https://evil.example/"}
    assert [c.field for c in crdschema.check_crd(crd)] == ["spec.conversion.strategy"]
