"""What a guest is told at boot: user-data, meta-data, network config, kernel command line."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from atoll.agent.runtime.qemu import Disk, LaunchConfig, Nic, command_line
from atoll.agent.vms import bootstrap as vmbootstrap
from atoll.agent.vms.network import VMAddress, mac_address, tap_name

ADDR = VMAddress(ip="10.88.0.7", prefixlen=16, gateway="10.88.0.1", mac="52:54:00:01:02:03",
                 tap="vmabc")


def vm(**cloud_init: object) -> dict:
    return {"metadata": {"name": "web", "namespace": "ns", "uid": "u-1"},
            "spec": {"bootstrap": {"cloudInit": cloud_init}}}


def test_cloud_config_rendered_with_ssh_keys() -> None:
    doc = vmbootstrap.user_data(vm(cloudConfig={"runcmd": ["echo hi"]},
                                   sshAuthorizedKeys=["ssh-ed25519 AAA a@b"]))
    assert doc.startswith("#cloud-config\n")
    parsed = yaml.safe_load(doc)
    assert parsed == {"runcmd": ["echo hi"], "ssh_authorized_keys": ["ssh-ed25519 AAA a@b"]}


def test_raw_cloud_config_from_secret() -> None:
    v = vm(rawCloudConfig={"name": "boot", "key": "ud"})
    assert vmbootstrap.raw_secret_ref(v) == ("boot", "ud")
    secret = {"metadata": {"name": "boot"},
              "data": {"ud": base64.b64encode(b"#!/bin/sh\necho raw\n").decode()}}
    raw = vmbootstrap.secret_value(secret, "ud")
    assert vmbootstrap.user_data(v, raw) == "#!/bin/sh\necho raw\n"
    with pytest.raises(vmbootstrap.BootstrapError, match="no key"):
        vmbootstrap.secret_value(secret, "other")


def test_meta_data_network_config_and_cmdline() -> None:
    v = vm(instanceID="i-42")
    assert yaml.safe_load(vmbootstrap.meta_data(v)) == {"instance-id": "i-42",
                                                        "local-hostname": "web"}
    net = vmbootstrap.network_config(ADDR)
    assert net["ethernets"]["eth0"]["addresses"] == ["10.88.0.7/16"]
    assert net["ethernets"]["eth0"]["match"] == {"macaddress": ADDR.mac}
    line = vmbootstrap.kernel_cmdline(ADDR, "web", "quiet")
    assert "ip=10.88.0.7::10.88.0.1:255.255.0.0:web:eth0:off" in line and line.endswith("quiet")


def test_names_are_stable_and_short() -> None:
    assert len(tap_name("0123456789abcdef-0123")) <= 15
    assert mac_address("x") == mac_address("x") != mac_address("y")


def test_qemu_command_line_kernel_and_disk_boot(tmp_path: Path) -> None:
    cfg = LaunchConfig(name="ns/web", uuid="u-1", cpus=2, memory_mib=512, accel="tcg",
                       kernel=tmp_path / "vmlinuz", cmdline="console=ttyS0",
                       disks=[Disk(tmp_path / "seed.iso", "raw", readonly=True)],
                       nics=[Nic("vmabc", ADDR.mac)])
    argv = command_line(cfg, tmp_path)
    assert argv[argv.index("-machine") + 1].startswith("microvm,accel=tcg")
    assert "virtio-blk-device,drive=disk0" in argv and "-daemonize" in argv
    cfg.kernel = None
    argv = command_line(cfg, tmp_path)
    assert argv[argv.index("-machine") + 1] == "q35,accel=tcg"
    assert "virtio-blk-pci,drive=disk0,bootindex=0" in argv
