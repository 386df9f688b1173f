"""What a guest is told at boot: cloud-init NoCloud data and the kernel command line.

Pure functions from the VirtualMachine's spec (and the address its host gave
it) to the documents of the seed disk, so they are easy to test and the same
on every host.  See docs/vm-operator.md, "Guest contract".
"""

from __future__ import annotations

import base64
from typing import Any

import yaml

from atoll.agent.vms.network import VMAddress


class BootstrapError(Exception):
    """The bootstrap data cannot be built (reason for VirtualMachineBootstrapReady=False)."""


def hostname(vm: dict[str, Any]) -> str:
    network = (vm.get("spec") or {}).get("network") or {}
    return str(network.get("hostName") or vm["metadata"]["name"])


def instance_id(vm: dict[str, Any]) -> str:
    cloud_init = ((vm.get("spec") or {}).get("bootstrap") or {}).get("cloudInit") or {}
    return str(cloud_init.get("instanceID") or vm["metadata"]["uid"])


def raw_secret_ref(vm: dict[str, Any]) -> tuple[str, str] | None:
    """(secret name, key) of ``bootstrap.cloudInit.rawCloudConfig``, if set."""
    cloud_init = ((vm.get("spec") or {}).get("bootstrap") or {}).get("cloudInit") or {}
    ref = cloud_init.get("rawCloudConfig")
    if not isinstance(ref, dict) or not ref.get("name"):
        return None
    return str(ref["name"]), str(ref.get("key") or "user-data")


def secret_value(secret: dict[str, Any], key: str) -> str:
    data = secret.get("data") or {}
    if key in data:
        try:
            return base64.b64decode(data[key]).decode()
        except (ValueError, UnicodeDecodeError):
            raise BootstrapError(f"key {key!r} of Secret {secret['metadata']['name']} is not "
                                 "base64 text") from None
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    raise BootstrapError(f"Secret {secret['metadata']['name']} has no key {key!r}")


def user_data(vm: dict[str, Any], raw: str | None = None) -> str:
    """The user-data document: the raw one from a Secret, or cloudConfig rendered as YAML,
    with ``sshAuthorizedKeys`` merged into ``ssh_authorized_keys`` either way when it is YAML."""
    cloud_init = ((vm.get("spec") or {}).get("bootstrap") or {}).get("cloudInit") or {}
    keys = [str(k) for k in cloud_init.get("sshAuthorizedKeys") or []]
    if raw is not None:
        if not keys or not raw.lstrip().startswith("#cloud-config"):
            return raw
        try:
            doc = yaml.safe_load(raw) or {}
        except yaml.YAMLError as e:
            raise BootstrapError(f"rawCloudConfig is not valid YAML: {e}") from None
        if not isinstance(doc, dict):
            raise BootstrapError("rawCloudConfig must be a #cloud-config mapping")
    else:
        doc = dict(cloud_init.get("cloudConfig") or {})
    if keys:
        doc["ssh_authorized_keys"] = [*doc.get("ssh_authorized_keys", []), *keys]
    return "#cloud-config\n" + yaml.dump(doc, Dumper=_CloudConfigDumper, default_flow_style=False,
                                         sort_keys=False, width=1 << 20, allow_unicode=True)


class _CloudConfigDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (``|``), the way people write cloud-config files
    and the way small cloud-init readers (the tiny image's) expect them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value.rstrip("\n") or value.endswith("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_CloudConfigDumper.add_representer(str, _str)


def meta_data(vm: dict[str, Any]) -> str:
    return yaml.safe_dump({"instance-id": instance_id(vm), "local-hostname": hostname(vm)},
                          sort_keys=False)


def network_config(addr: VMAddress, vm: dict[str, Any] | None = None,
                   domain: str = "cluster.local") -> dict[str, Any]:
    """cloud-init network config v2: eth0 (matched by MAC) with the host-given address (the
    VM's static one, when it asked and got it), the default route via the bridge (none for
    ``gateway4: None``) and, as pods under ``dnsPolicy: ClusterFirst`` get, the cluster DNS
    (the host's, on the bridge address) and the cluster search path, unless ``vm`` says."""
    eth: dict[str, Any] = {"match": {"macaddress": addr.mac}, "set-name": "eth0",
                           "addresses": [f"{addr.ip}/{addr.prefixlen}"]}
    if addr.route:
        eth["routes"] = [{"to": "0.0.0.0/0", "via": addr.gateway}]
    eth["nameservers"] = nameservers(addr, vm, domain)
    return {"version": 2, "ethernets": {"eth0": eth}}


def nameservers(addr: VMAddress, vm: dict[str, Any] | None,
                domain: str = "cluster.local") -> dict[str, list[str]]:
    """The guest's resolver: the VM's own ``nameservers``/``searchDomains`` (its first
    interface's before the VM's), else the cluster's.  Own servers without own search
    domains get none: the cluster's suffixes mean nothing to another resolver."""
    network = ((vm or {}).get("spec") or {}).get("network") or {}
    interfaces = [i for i in network.get("interfaces") or [] if isinstance(i, dict)]
    first = interfaces[0] if interfaces else {}

    def own(field: str) -> list[str]:
        return [str(v) for v in first.get(field) or network.get(field) or [] if v]
    servers, search = own("nameservers"), own("searchDomains")
    if not servers:
        servers = [addr.gateway]
        if not search:
            ns = ((vm or {}).get("metadata") or {}).get("namespace")
            search = [*([f"{ns}.svc.{domain}"] if ns else []), f"svc.{domain}", domain]
    out = {"addresses": servers}
    if search:
        out["search"] = search
    return out


def kernel_cmdline(addr: VMAddress | None, host: str, image_args: str = "") -> str:
    """Console on the serial port, reboot on panic, and eth0's address in the ``ip=`` form."""
    parts = ["console=ttyS0", "panic=-1"]
    if addr is not None:
        gateway = addr.gateway if addr.route else ""
        parts.append(f"ip={addr.ip}::{gateway}:{addr.netmask}:{host}:eth0:off")
    if image_args:
        parts.append(image_args)
    return " ".join(parts)
