"""VirtualMachine: what moved or changed form between v1alpha1 … v1alpha6.

As vm-operator's conversion functions map them: v1alpha1's lower-case power states and
modes, ``vmMetadata`` (a transport and a ConfigMap/Secret) against ``bootstrap``,
``networkInterfaces`` against ``network.interfaces`` (named eth0, eth1, ...),
``resourcePolicyName`` and ``advancedOptions`` against ``reserved`` and ``advanced``,
``status.host``/``vmIp`` against ``status.nodeName``/``network.primaryIP4``; v1alpha3 and
v1alpha4's ``spec.cdrom`` against v1alpha5's ``spec.hardware.cdrom``; ``status.host``
(until v1alpha3) against ``status.nodeName``.  Everything else is the same field in every
version that has it; the engine (``engine``) keeps what a version lacks.
"""

from __future__ import annotations

from typing import Any

from atoll.api.vmoperator.conversion.common import d, lower_first, upper_first
from atoll.api.vmoperator.conversion.engine import Shape

#: v1alpha1 networkType <-> the network's kind (and API group)
NETWORK_TYPES = {
    "vsphere-distributed": ("netoperator.vmware.com/v1alpha1", "Network"),
    "nsx-t": ("vmware.com/v1alpha1", "VirtualNetwork"),
    "nsx-t-subnet": ("crd.nsx.vmware.com/v1alpha1", "Subnet"),
    "nsx-t-subnetset": ("crd.nsx.vmware.com/v1alpha1", "SubnetSet"),
}
MODES = ("powerOffMode", "suspendMode", "restartMode")


# -- v1alpha3 / v1alpha4: spec.cdrom; v1alpha2 / v1alpha3: status.host -----------------------------
def cdrom_up(obj: dict[str, Any]) -> None:
    spec = d(obj, "spec")
    if "cdrom" in spec:
        spec.setdefault("hardware", {})["cdrom"] = spec.pop("cdrom")


def cdrom_down(obj: dict[str, Any]) -> None:
    spec = d(obj, "spec")
    hardware = d(spec, "hardware")
    if "cdrom" in hardware:
        spec["cdrom"] = hardware["cdrom"]


def host_up(obj: dict[str, Any]) -> None:
    status = d(obj, "status")
    if "host" in status:
        host = status.pop("host")
        status.setdefault("nodeName", host)


def host_down(obj: dict[str, Any]) -> None:
    status = d(obj, "status")
    if "nodeName" in status:
        status["host"] = status["nodeName"]


def _both(*hooks: Any) -> Any:
    def run(obj: dict[str, Any]) -> None:
        for hook in hooks:
            hook(obj)
    return run


# -- v1alpha1 ------------------------------------------------------------------------------------
def _metadata_to_bootstrap(meta: dict[str, Any]) -> dict[str, Any] | None:
    name = meta.get("secretName") or meta.get("configMapName") or ""
    transport = meta.get("transport")
    out: dict[str, Any] = {}
    if transport in ("ExtraConfig", "CloudInit"):
        out["cloudInit"] = {}
        if name:
            key = "guestinfo.userdata" if transport == "ExtraConfig" else "user-data"
            out["cloudInit"]["rawCloudConfig"] = {"name": name, "key": key}
    elif transport == "OvfEnv":
        out["linuxPrep"] = {"hardwareClockIsUTC": True}
        out["vAppConfig"] = {"rawProperties": name}
    elif transport == "vAppConfig":
        out["vAppConfig"] = {"rawProperties": name}
    elif transport == "Sysprep":
        out["sysprep"] = {}
        if name:
            out["sysprep"]["rawSysprep"] = {"name": name, "key": "unattend"}
    return out or None


def _bootstrap_to_metadata(boot: dict[str, Any]) -> dict[str, Any] | None:
    name, transport = "", ""
    cloud, sysprep, vapp = boot.get("cloudInit"), boot.get("sysprep"), boot.get("vAppConfig")
    if isinstance(cloud, dict):
        raw = d(cloud, "rawCloudConfig")
        name = raw.get("name") or ""
        transport = "ExtraConfig" if raw.get("key") == "guestinfo.userdata" else "CloudInit"
    elif isinstance(sysprep, dict):
        transport, name = "Sysprep", d(sysprep, "rawSysprep").get("name") or ""
    elif isinstance(vapp, dict):
        name = vapp.get("rawProperties") or ""
        transport = "OvfEnv" if isinstance(boot.get("linuxPrep"), dict) else "vAppConfig"
    if not transport:
        return None
    out = {"transport": transport}
    if name:
        out["secretName"] = name
    return out


def _nic_up(i: int, nic: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": f"eth{i}"}
    if nic.get("networkName") or nic.get("networkType"):
        network: dict[str, Any] = {"name": nic.get("networkName") or ""}
        if nic.get("networkType") in NETWORK_TYPES:
            network["apiVersion"], network["kind"] = NETWORK_TYPES[nic["networkType"]]
        out["network"] = network
    return out


def _nic_down(nic: dict[str, Any]) -> dict[str, Any]:
    network = d(nic, "network")
    if not network:
        return {}
    out: dict[str, Any] = {"networkName": network.get("name") or ""}
    for kind_name, (_, kind) in NETWORK_TYPES.items():
        if network.get("kind") == kind:
            out["networkType"] = kind_name
    return out


def v1alpha1_up(obj: dict[str, Any]) -> None:
    spec = d(obj, "spec")
    if spec:
        if isinstance(spec.get("powerState"), str):
            spec["powerState"] = upper_first(spec["powerState"])
        for mode in MODES:
            if isinstance(spec.get(mode), str):
                spec[mode] = upper_first(spec[mode])
        meta = spec.pop("vmMetadata", None)
        if isinstance(meta, dict):
            boot = _metadata_to_bootstrap(meta)
            if boot is not None:
                spec["bootstrap"] = boot
        nics = spec.pop("networkInterfaces", None)
        if isinstance(nics, list) and nics:
            spec["network"] = {"interfaces": [_nic_up(i, n if isinstance(n, dict) else {})
                                              for i, n in enumerate(nics)]}
        if spec.get("resourcePolicyName"):
            spec["reserved"] = {"resourcePolicyName": spec.pop("resourcePolicyName")}
        options = spec.pop("advancedOptions", None)
        if isinstance(options, dict):
            advanced: dict[str, Any] = {}
            if "changeBlockTracking" in options:
                advanced["changeBlockTracking"] = options["changeBlockTracking"]
            prov = d(options, "defaultVolumeProvisioningOptions")
            if prov.get("eagerZeroed"):
                advanced["defaultVolumeProvisioningMode"] = "ThickEagerZero"
            elif prov.get("thinProvisioned") is True:
                advanced["defaultVolumeProvisioningMode"] = "Thin"
            elif prov.get("thinProvisioned") is False:
                advanced["defaultVolumeProvisioningMode"] = "Thick"
            if advanced:
                spec["advanced"] = advanced
    status = d(obj, "status")
    if status:
        if isinstance(status.get("powerState"), str):
            status["powerState"] = upper_first(status["powerState"])
        if "host" in status:
            status["nodeName"] = status.pop("host")
        network: dict[str, Any] = {}
        if status.get("vmIp"):
            network["primaryIP4"] = status["vmIp"]
        if status.get("hostName"):
            network["hostName"] = status["hostName"]
        nics = status.get("networkInterfaces")
        if isinstance(nics, list) and nics:
            network["interfaces"] = [{
                "name": n.get("interfaceID") or f"eth{i}",
                "ip": {"macAddr": n.get("macAddress") or "",
                       "addresses": [{"address": a} for a in n.get("ipAddresses") or []]}}
                for i, n in enumerate(nics) if isinstance(n, dict)]
        if network:
            status["network"] = network
        for vol in status.get("volumes") or []:
            if isinstance(vol, dict) and "diskUuid" in vol:
                vol["diskUUID"] = vol.pop("diskUuid")


def v1alpha1_down(obj: dict[str, Any]) -> None:
    spec = d(obj, "spec")
    if spec:
        if isinstance(spec.get("powerState"), str):
            spec["powerState"] = lower_first(spec["powerState"])
        for mode in MODES:
            if isinstance(spec.get(mode), str):
                spec[mode] = lower_first(spec[mode])
        meta = _bootstrap_to_metadata(d(spec, "bootstrap"))
        if meta is not None:
            spec["vmMetadata"] = meta
        nics = d(spec, "network").get("interfaces")
        if isinstance(nics, list) and nics:
            spec["networkInterfaces"] = [_nic_down(n) for n in nics if isinstance(n, dict)]
        policy = d(spec, "reserved").get("resourcePolicyName")
        if policy:
            spec["resourcePolicyName"] = policy
        advanced = d(spec, "advanced")
        options: dict[str, Any] = {}
        if "changeBlockTracking" in advanced:
            options["changeBlockTracking"] = advanced["changeBlockTracking"]
        mode = advanced.get("defaultVolumeProvisioningMode")
        prov = {"Thin": {"thinProvisioned": True}, "Thick": {"thinProvisioned": False},
                "ThickEagerZero": {"eagerZeroed": True}}.get(mode)
        if prov:
            options["defaultVolumeProvisioningOptions"] = prov
        if options:
            spec["advancedOptions"] = options
        if not spec.get("imageName") and d(spec, "image").get("name"):
            spec["imageName"] = spec["image"]["name"]
    status = d(obj, "status")
    if status:
        if isinstance(status.get("powerState"), str):
            status["powerState"] = lower_first(status["powerState"])
        if "nodeName" in status:
            status["host"] = status["nodeName"]
        network = d(status, "network")
        if network.get("primaryIP4"):
            status["vmIp"] = network["primaryIP4"]
        if network.get("hostName"):
            status["hostName"] = network["hostName"]
        nics = network.get("interfaces")
        if isinstance(nics, list) and nics:
            status["networkInterfaces"] = [{
                "interfaceID": n.get("name") or "",
                "macAddress": d(n, "ip").get("macAddr") or "",
                "ipAddresses": [a.get("address") for a in d(n, "ip").get("addresses") or []
                                if isinstance(a, dict) and a.get("address")]}
                for n in nics if isinstance(n, dict)]
        for vol in status.get("volumes") or []:
            if isinstance(vol, dict) and "diskUUID" in vol:
                vol["diskUuid"] = vol["diskUUID"]
        for c in status.get("conditions") or []:
            if isinstance(c, dict) and c.get("type") == "VirtualMachineCreated":
                status["phase"] = "Created" if c.get("status") == "True" else "Creating"
                break


V1ALPHA1 = Shape(
    up=v1alpha1_up, down=v1alpha1_down,
    hub_paths=("spec.bootstrap.cloudInit.rawCloudConfig", "spec.bootstrap.vAppConfig",
               "spec.bootstrap.sysprep.rawSysprep", "spec.bootstrap.linuxPrep",
               "spec.network.interfaces.[].name", "spec.network.interfaces.[].network",
               "spec.reserved.resourcePolicyName", "spec.advanced.changeBlockTracking",
               "spec.advanced.defaultVolumeProvisioningMode", "status.nodeName",
               "status.network.primaryIP4", "status.network.hostName",
               "status.network.interfaces", "status.volumes.[].diskUUID"),
    spoke_paths=("spec.vmMetadata", "spec.networkInterfaces.[].networkName",
                 "spec.networkInterfaces.[].networkType", "spec.resourcePolicyName",
                 "spec.advancedOptions", "status.host", "status.vmIp", "status.hostName",
                 "status.networkInterfaces", "status.volumes.[].diskUuid", "status.phase"))
HOST = Shape(up=host_up, down=host_down, hub_paths=("status.nodeName",),
             spoke_paths=("status.host",))
CDROM_AND_HOST = Shape(up=_both(cdrom_up, host_up), down=_both(cdrom_down, host_down),
                       hub_paths=("spec.hardware.cdrom", "status.nodeName"),
                       spoke_paths=("spec.cdrom", "status.host"))
CDROM = Shape(up=cdrom_up, down=cdrom_down, hub_paths=("spec.hardware.cdrom",),
              spoke_paths=("spec.cdrom",))

SHAPES = {"v1alpha1": V1ALPHA1, "v1alpha2": HOST, "v1alpha3": CDROM_AND_HOST,
          "v1alpha4": CDROM}
