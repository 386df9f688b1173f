"""`atoll image import` of an OVA as vSphere exports it (an OVF descriptor and a
stream-optimised VMDK made here with qemu-img), through the real CLI into the platform's
content library; a hostile OVA is refused and publishes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import Platform, wait_until
from tests.vmimage.test_ova import descriptor, make_ova


def atoll_import(platform: Platform, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atoll.cli.main", "image", "import", str(path),
                           *args, "--kubeconfig", str(platform.kubeconfig)],
                          capture_output=True, text=True, timeout=300)


def images(platform: Platform) -> dict[str, dict]:
    items = json.loads(platform.kubectl("get", "cvmi", "-o", "json").stdout)["items"]
    return {str((i.get("status") or {}).get("name")): i for i in items}


def test_an_ova_becomes_an_image_and_a_hostile_one_nothing(platform: Platform,
                                                           tmp_path: Path,
                                                           namespace: str) -> None:
    raw = tmp_path / "d.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "64M"], check=True)
    vmdk = tmp_path / "disk1.vmdk"
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    str(raw), str(vmdk)], check=True)
    good = make_ova(tmp_path / "bar.ova", [("bar.ovf", descriptor()),
                                           ("disk1.vmdk", vmdk.read_bytes()),
                                           ("data.vmdk", vmdk.read_bytes())])
    out = atoll_import(platform, good)  # no --name: the VirtualSystem's
    assert out.returncode == 0, out.stdout + out.stderr
    assert "barvm, 2 vCPU, 512 MiB, 1 NIC, efi firmware, boot disk 64 MiB (vmdk); " \
           "1 more disk(s) not imported" in out.stderr, out.stderr
    image = wait_until("the barvm image", lambda: images(platform).get("barvm"), timeout=30)
    st = image["status"]
    assert st["diskInfo"]["capacity"] == "64Mi"
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in st["conditions"])
    disk = image["spec"]["content"]["disk"]
    assert disk["format"] == "qcow2" and disk["virtualSize"] == 64 << 20

    evil = make_ova(tmp_path / "evil.ova", [("../../escape.ovf", descriptor())])
    refused = atoll_import(platform, evil, "--name", "evil")
    assert refused.returncode == 1 and "leaves the appliance" in refused.stderr, refused.stderr
    missing = make_ova(tmp_path / "missing.ova", [("bar.ovf", descriptor())])
    refused = atoll_import(platform, missing, "--name", "missing")
    assert refused.returncode == 1 and "does not hold" in refused.stderr, refused.stderr
    assert not {"evil", "missing"} & set(images(platform))
    assert not (tmp_path.parent.parent / "escape.ovf").exists()

    # `atoll vm import`: the image in the namespace and a VM of the smallest class that fits
    big = make_ova(tmp_path / "big.ova", [("bar.ovf", descriptor().replace(
        b"<rasd:VirtualQuantity>2<", b"<rasd:VirtualQuantity>4<").replace(
        b"<rasd:VirtualQuantity>512<", b"<rasd:VirtualQuantity>6144<")),
        ("disk1.vmdk", vmdk.read_bytes()), ("data.vmdk", vmdk.read_bytes())])
    out = subprocess.run([sys.executable, "-m", "atoll.cli.main", "vm", "import", str(big),
                          "-n", namespace, "--name", "Big App (prod)", "--power-off",
                          "--kubeconfig", str(platform.kubeconfig)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    vm = json.loads(platform.kubectl("get", "vm", "big-app-prod", "-n", namespace, "-o",
                                     "json").stdout)
    assert vm["spec"]["className"] == "best-effort-large"  # 4 vCPU, 16Gi: the first that fits
    assert vm["spec"]["powerState"] == "PoweredOff"
    vmi = json.loads(platform.kubectl("get", "vmi", vm["spec"]["imageName"], "-n", namespace,
                                      "-o", "json").stdout)
    assert vmi["status"]["name"] == "Big App (prod)"
    none = subprocess.run([sys.executable, "-m", "atoll.cli.main", "vm", "import", str(big),
                           "-n", namespace, "--name", "other", "--class", "no-such-class",
                           "--kubeconfig", str(platform.kubeconfig)],
                          capture_output=True, text=True, timeout=300)
    assert none.returncode == 1 and "no VirtualMachineClass no-such-class" in none.stderr
    assert "other" not in {i["status"]["name"] for i in json.loads(platform.kubectl(
        "get", "vmi", "-n", namespace, "-o", "json").stdout)["items"]}  # nothing published
