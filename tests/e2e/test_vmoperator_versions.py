"""Every VM Operator version through real kubectl: manifests written for v1alpha1, v1alpha2,
v1alpha3, v1alpha5 and v1alpha6 apply unchanged and read back in every other version; a
v1alpha3 watch sees an object written in v1alpha6; v1alpha1 carries its deprecation warning.

No VM here is placed (its image does not exist), so no QEMU starts.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import yaml

from tests.conftest import Platform

GROUP = "vmoperator.vmware.com"
VERSIONS = [f"v1alpha{i}" for i in range(1, 7)]
IMAGE = "photon-5-not-uploaded"

SAMPLES = {
    "v1alpha1": """apiVersion: vmoperator.vmware.com/v1alpha1
kind: VirtualMachine
metadata: {name: legacy}
spec:
  imageName: %(image)s
  className: best-effort-small
  powerState: poweredOff
  storageClass: wcpglobal-storage-profile
  vmMetadata: {secretName: legacy-cloud-init, transport: CloudInit}
  networkInterfaces:
  - {networkType: vsphere-distributed, networkName: primary}
  ports:
  - {name: ssh, port: 22, protocol: TCP, ip: ""}
""",
    "v1alpha2": """apiVersion: vmoperator.vmware.com/v1alpha2
kind: VirtualMachine
metadata: {name: second}
spec:
  imageName: %(image)s
  className: best-effort-small
  powerState: PoweredOff
  bootstrap:
    cloudInit:
      rawCloudConfig: {name: second-user-data, key: user-data}
  network:
    interfaces:
    - name: eth0
      network: {apiVersion: netoperator.vmware.com/v1alpha1, kind: Network, name: primary}
""",
    "v1alpha3": """apiVersion: vmoperator.vmware.com/v1alpha3
kind: VirtualMachine
metadata: {name: third}
spec:
  imageName: %(image)s
  className: best-effort-small
  powerState: PoweredOff
  cdrom:
  - {name: cdrom1, image: {name: tools-iso, kind: VirtualMachineImage}, connected: true}
  advanced: {bootDiskCapacity: 20Gi}
""",
    "v1alpha5": """apiVersion: vmoperator.vmware.com/v1alpha5
kind: VirtualMachine
metadata: {name: fifth}
spec:
  imageName: %(image)s
  className: best-effort-small
  powerState: PoweredOff
  bootOptions: {firmware: EFI, bootDelay: 5s, efiSecureBoot: Disabled}
  promoteDisksMode: Online
  hardware:
    cdrom:
    - {name: cdrom1, image: {name: tools-iso, kind: VirtualMachineImage}}
""",
    "v1alpha6": """apiVersion: vmoperator.vmware.com/v1alpha6
kind: VirtualMachine
metadata: {name: sixth}
spec:
  imageName: %(image)s
  className: best-effort-small
  powerState: PoweredOff
  resources:
    requests: {cpu: 500m, memory: 1Gi}
  cpuAdvanced: {hotAddEnabled: true}
  bootOptions: {firmware: BIOS}
  network:
    interfaces:
    - name: eth0
      network: {apiVersion: netoperator.vmware.com/v1alpha1, kind: Network, name: primary}
      ipamModes: [IPv4]
      mtu: 1500
""",
}


def get(platform: Platform, ns: str, version: str, name: str) -> dict[str, Any]:
    out = platform.kubectl("get", f"virtualmachines.{version}.{GROUP}", name, "-n", ns,
                           "-o", "yaml").stdout
    return yaml.safe_load(out)


def contains(big: Any, small: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and contains(big[k], v)
                                             for k, v in small.items())
    return big == small


def namespace(platform: Platform) -> str:
    ns = f"versions-{uuid.uuid4().hex[:6]}"
    platform.kubectl("create", "namespace", ns)
    return ns


def test_samples_apply_and_read_back_in_every_version(platform: Platform) -> None:
    ns = namespace(platform)
    try:
        for version, text in SAMPLES.items():
            manifest = text % {"image": IMAGE}
            result = platform.kubectl("apply", "-n", ns, "-f", "-", input=manifest)
            if version == "v1alpha1":
                assert f"Warning: {GROUP}/v1alpha1 VirtualMachine is deprecated" in \
                    result.stderr, result.stderr
            else:
                assert "deprecated" not in result.stderr, result.stderr
            applied = yaml.safe_load(manifest)
            name = applied["metadata"]["name"]
            for other in VERSIONS:
                obj = get(platform, ns, other, name)
                assert obj["apiVersion"] == f"{GROUP}/{other}"
                assert obj["spec"]["className"] == "best-effort-small"
                assert obj["spec"]["powerState"] == ("poweredOff" if other == "v1alpha1"
                                                     else "PoweredOff")
            # and in its own version it is what was applied (plus defaults)
            mine = get(platform, ns, version, name)
            assert contains(mine["spec"], applied["spec"]), (version, mine["spec"])
            # stored in v1alpha6 with nothing left over (v1alpha1's ports are kept aside)
            hub = get(platform, ns, "v1alpha6", name)
            notes = hub["metadata"].get("annotations") or {}
            assert (f"{GROUP}/conversion-{version}" in notes) == (version == "v1alpha1"), notes
        # the shapes as each version has them
        old = get(platform, ns, "v1alpha1", "second")
        assert old["spec"]["vmMetadata"] == {"transport": "CloudInit",
                                             "secretName": "second-user-data"}
        assert old["spec"]["networkInterfaces"] == [{"networkName": "primary",
                                                     "networkType": "vsphere-distributed"}]
        assert get(platform, ns, "v1alpha6", "third")["spec"]["hardware"]["cdrom"][0][
            "name"] == "cdrom1"
        assert get(platform, ns, "v1alpha3", "fifth")["spec"]["cdrom"][0]["name"] == "cdrom1"
        assert get(platform, ns, "v1alpha2", "legacy")["spec"]["bootstrap"] == {
            "cloudInit": {"rawCloudConfig": {"name": "legacy-cloud-init", "key": "user-data"}}}
        kept = get(platform, ns, "v1alpha3", "sixth")
        assert json.loads(kept["metadata"]["annotations"][f"{GROUP}/conversion"])["spec"][
            "resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
        # an edit in v1alpha3 keeps what v1alpha3 cannot show
        platform.kubectl("patch", f"virtualmachines.v1alpha3.{GROUP}", "sixth", "-n", ns,
                         "--type=merge", "-p", json.dumps({"spec": {"className": "c2"}}))
        now = get(platform, ns, "v1alpha6", "sixth")
        assert now["spec"]["className"] == "c2"
        assert now["spec"]["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
        assert now["spec"]["network"]["interfaces"][0]["ipamModes"] == ["IPv4"]
        # tables: each version's own columns
        table = platform.kubectl("get", f"virtualmachines.v1alpha1.{GROUP}", "-n", ns).stdout
        assert "PRIMARY-IP " in table.splitlines()[0] + " ", table
        assert "legacy" in table
        # a v1alpha1 field v1alpha6 lacks survives a read and write elsewhere
        platform.kubectl("label", f"virtualmachines.v1alpha6.{GROUP}", "legacy", "-n", ns,
                         "tier=old")
        assert get(platform, ns, "v1alpha1", "legacy")["spec"]["ports"][0]["name"] == "ssh"
    finally:
        platform.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_watch_in_v1alpha3_sees_a_v1alpha6_write(platform: Platform) -> None:
    ns = namespace(platform)
    try:
        base = f"/apis/{GROUP}/v1alpha3/namespaces/{ns}/virtualmachines"
        listed = json.loads(platform.kubectl("get", "--raw", base).stdout)
        rv = listed["metadata"]["resourceVersion"]
        platform.kubectl("apply", "-n", ns, "-f", "-", input=SAMPLES["v1alpha6"] % {
            "image": IMAGE})
        out = platform.kubectl("get", "--raw", f"{base}?watch=1&resourceVersion={rv}"
                               "&timeoutSeconds=2", timeout=30).stdout
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert events and events[0]["type"] == "ADDED", out
        obj = events[0]["object"]
        assert obj["apiVersion"] == f"{GROUP}/v1alpha3"
        assert obj["metadata"]["name"] == "sixth"
        assert "resources" not in obj["spec"] and f"{GROUP}/conversion" in \
            obj["metadata"]["annotations"]
        # managedFields record the version each manager wrote in
        platform.kubectl("patch", f"virtualmachines.v1alpha3.{GROUP}", "sixth", "-n", ns,
                         "--type=merge", "-p", '{"metadata":{"labels":{"a":"b"}}}',
                         "--field-manager=old-client")
        raw = json.loads(platform.kubectl("get", "--raw", f"{base}/sixth").stdout)
        versions = {m["manager"]: m["apiVersion"] for m in raw["metadata"]["managedFields"]}
        assert versions["old-client"] == f"{GROUP}/v1alpha3", versions
        assert f"{GROUP}/v1alpha6" in versions.values(), versions
    finally:
        platform.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_the_crd_reads_as_upstreams(platform: Platform) -> None:
    crd = json.loads(platform.kubectl("get", "crd", f"virtualmachines.{GROUP}", "-o",
                                      "json").stdout)
    assert crd["spec"]["conversion"]["strategy"] == "Webhook"
    assert [v["name"] for v in crd["spec"]["versions"]] == VERSIONS
    assert [v["name"] for v in crd["spec"]["versions"] if v["storage"]] == ["v1alpha6"]
    assert crd["status"]["storedVersions"] == ["v1alpha6"]
