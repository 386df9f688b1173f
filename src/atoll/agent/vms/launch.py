"""Everything a VM's QEMU needs before it starts: hardware, image files, disks, seed, config.

``LaunchPreparer`` reads the VM's class and image from the API, fetches the image's blobs
into the host cache, makes the copy-on-write boot disk, attaches the claims' volumes, and builds
the cloud-init seed; ``launch_config`` assembles QEMU's ``LaunchConfig`` once the NIC and the
accelerator are known.  A problem its owner can fix is a ``VMSetupError``, which the worker
turns into a condition (and a back-off), never a crash.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atoll.agent.runtime import accel
from atoll.agent.runtime.qemu import Disk, LaunchConfig, Nic
from atoll.agent.storage import claims, localvolumes
from atoll.agent.vms import bootstrap as vmbootstrap
from atoll.agent.vms.network import AddressUnavailable, InterfaceRequest, VMAddress, VMNetwork
from atoll.api import errors, quantity
from atoll.api.vmoperator import names as n
from atoll.client.rest import ApiClient

MIB = 1024 * 1024

#: the VM's blob store: digest and size in, local path out
FetchBlob = Callable[[str, int], Awaitable[Path]]


class VMSetupError(Exception):
    """A VM cannot be started for a reason its owner can fix; becomes a condition."""

    def __init__(self, condition: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.condition, self.reason, self.message = condition, reason, message


@dataclass
class Resources:
    """What the VM's class and image give it: vCPUs, memory, boot files and disks."""

    cpus: int
    memory_mib: int
    content: dict[str, Any]   # the image's spec.content
    kernel: Path | None
    initrd: Path | None
    disks: list[Disk]         # boot disk (if any), then the claims


class LaunchPreparer:
    """Prepares the files of one VM: disks under ``disks_dir``, the seed under ``run_dir``."""

    def __init__(self, client: ApiClient, fetch_blob: FetchBlob, *, disks_dir: Path,
                 run_dir: Path, volumes_dir: Path, node: str, qemu_img: str,
                 moving_from: str = "") -> None:
        self.client = client
        self.fetch_blob = fetch_blob
        self.disks = disks_dir
        self.run = run_dir
        self.store = localvolumes.shared(volumes_dir)
        self.node = node
        self.qemu_img = qemu_img
        #: a live migration from this host prepares the VM here: its local volumes are made
        #: here, empty, to be filled by the migration's disk mirror
        self.moving_from = moving_from

    async def resources(self, vm: dict[str, Any]) -> Resources:
        """The class's hardware, the image's kernel/initrd/disk, and the claims as disks."""
        ns = vm["metadata"]["namespace"]
        cpus, memory = await self.hardware(vm)
        image = await self.image(vm)
        content = (image.get("spec") or {}).get("content") or {}
        kernel = await self.blob(content.get("kernel"))
        initrd = await self.blob(content.get("initrd"))
        disks: list[Disk] = []
        if content.get("disk"):
            disks.append(await self.boot_disk(vm, content["disk"]))
        if kernel is None and not disks:
            raise VMSetupError(n.IMAGE_READY, "ImageNotBootable",
                               f"image {image['metadata']['name']} has neither a kernel nor a disk")
        disks += await self.volumes(vm, ns)
        return Resources(cpus, memory, content, kernel, initrd, disks)

    async def hardware(self, vm: dict[str, Any]) -> tuple[int, int]:
        """(vCPUs, MiB of memory) from the VM's VirtualMachineClass."""
        ns, name = vm["metadata"]["namespace"], (vm.get("spec") or {}).get("className", "")
        try:
            klass = await self.client.get(n.class_path(ns, name))
        except errors.NotFound:
            raise VMSetupError(n.CLASS_READY, "NotFound",
                               f"VirtualMachineClass {name} not found in {ns}") from None
        hw = (klass.get("spec") or {}).get("hardware") or {}
        cpus = int(hw.get("cpus") or 1)
        memory = int(quantity.parse(hw.get("memory") or "512Mi") // MIB)
        return max(1, cpus), max(64, memory)

    async def image(self, vm: dict[str, Any]) -> dict[str, Any]:
        ref = (vm.get("status") or {}).get("image") or {}
        kind, name = ref.get("kind", ""), ref.get("name", "")
        if not name:
            raise VMSetupError(n.IMAGE_READY, "NotResolved", "the image is not resolved yet")
        try:
            return await self.client.get(n.image_path(kind, name, vm["metadata"]["namespace"]))
        except errors.NotFound:
            raise VMSetupError(n.IMAGE_READY, "NotFound", f"{kind} {name} not found") from None

    async def blob(self, ref: dict[str, Any] | None) -> Path | None:
        if not ref:
            return None
        try:
            return await self.fetch_blob(str(ref["digest"]), int(ref.get("size") or 0))
        except errors.NotFound:
            raise VMSetupError(n.IMAGE_READY, "ContentMissing",
                               f"the content library has no {ref.get('digest')}") from None
        except (OSError, ValueError, KeyError) as e:
            raise VMSetupError(n.IMAGE_READY, "ContentUnavailable", str(e)) from None

    async def boot_disk(self, vm: dict[str, Any], ref: dict[str, Any]) -> Disk:
        """A copy-on-write qcow2 over the cached image, grown to ``advanced.bootDiskCapacity``."""
        boot = self.disks / "boot.qcow2"
        if not boot.exists():
            base = await self.blob(ref)
            assert base is not None
            self.disks.mkdir(parents=True, exist_ok=True)
            argv = [self.qemu_img, "create", "-q", "-f", "qcow2", "-F",
                    str(ref.get("format") or "qcow2"), "-b", str(base), str(boot) + ".tmp"]
            capacity = ((vm.get("spec") or {}).get("advanced") or {}).get("bootDiskCapacity")
            if capacity:
                size = int(quantity.parse(capacity))
                if size < int(ref.get("virtualSize") or 0):
                    raise VMSetupError(n.STORAGE_READY, "BootDiskTooSmall",
                                       f"bootDiskCapacity {capacity} is smaller than the image")
                argv.append(str(size))
            await _run(argv, n.STORAGE_READY, "BootDiskFailed")
            (boot.parent / (boot.name + ".tmp")).rename(boot)
        return Disk(boot, format="qcow2", serial="boot")

    async def vmstate_disk(self) -> Path:
        """The VM's hidden vmstate qcow2 (1 MiB of virtual size: a snapshot's RAM goes in
        its vmstate area, beyond that), made once."""
        return await vmstate_disk(self.qemu_img, self.disks)

    async def volumes(self, vm: dict[str, Any], ns: str) -> list[Disk]:
        """PersistentVolumeClaims as extra disks, each on its bound PV's backing.

        Block: the volume's raw file (or the local PV's path) is the disk.  Filesystem: the
        disk is ``disk.img`` inside the mounted filesystem, as KubeVirt does.  The data is
        the claim's: a later VM with the same claim sees the same disk."""
        out = []
        uid = vm["metadata"]["uid"]
        for vol in (vm.get("spec") or {}).get("volumes") or []:
            ref = vol.get("persistentVolumeClaim") or {}
            claim = ref.get("claimName")
            if not claim:
                continue
            try:
                path = await self._claim_disk(ns, str(claim), f"vm-{uid}")
            except (claims.ClaimError, localvolumes.LocalVolumeError, OSError) as e:
                raise VMSetupError(n.STORAGE_READY, "VolumeNotReady",
                                   f"PersistentVolumeClaim {claim}: {e}") from None
            out.append(Disk(path, format="raw", readonly=bool(ref.get("readOnly")),
                            serial=str(vol.get("name"))[:20]))
        return out

    async def _claim_disk(self, ns: str, name: str, user: str) -> Path:
        async def fetch(kind: str, obj: str) -> dict[str, Any] | None:
            path = f"/api/v1/persistentvolumes/{obj}" if kind == "PersistentVolume" else \
                f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{obj}"
            try:
                return await self.client.get(path)
            except errors.NotFound:
                return None

        volume = await claims.resolve(fetch, name, self.node, self.moving_from)
        if volume.local is not None:
            self.disks.mkdir(parents=True, exist_ok=True)  # the use lasts as long as this
            local = volume.local
            if self.moving_from and not claims.on_node(volume.pv, self.node):
                local = dataclasses.replace(local, source="")  # the mirror brings the data
            path = await self.store.acquire(local, user, self.disks)
        elif volume.host_path is not None:
            path = Path(str(volume.host_path.get("path") or ""))
        else:
            path = Path(volume.path)
        if not path.is_absolute() or not path.exists():
            raise claims.ClaimError(f"{path} does not exist on this host")
        if volume.mode == localvolumes.BLOCK:
            return path
        return await localvolumes.filesystem_disk(path, volume.size or (1 << 62))

    async def attach(self, network: VMNetwork, vm: dict[str, Any]) -> VMAddress:
        """The NIC the VM's spec asks for, on this host's pod network."""
        request = interface_request(vm, network.ipam.network, str(network.ipam.gateway))
        try:
            return await network.attach(vm["metadata"]["uid"], request)
        except AddressUnavailable as e:
            raise VMSetupError(n.NETWORK_READY, "AddressUnavailable",
                               f"spec.network.interfaces[0].addresses: {e}") from None

    async def release_claims(self, uid: str, *, remove: bool = False) -> None:
        """The VM is gone from this host: its claims' volumes may be unmounted.  ``remove``:
        the VM went on to another host with its local volumes, whose copies here go."""
        user = f"vm-{uid}"
        used = [h for h in self.store.handles()
                if (self.store.dir(h) / localvolumes.USERS / user).exists()]
        await self.store.release(user)
        if remove:
            for handle in used:
                await self.store.remove(handle)

    async def seed(self, vm: dict[str, Any], host: str, address: VMAddress) -> Path:
        """The cloud-init NoCloud seed (``cidata``): user data, instance id, network config."""
        from atoll.vmimage.seed import make_seed

        ns = vm["metadata"]["namespace"]
        raw = None
        ref = vmbootstrap.raw_secret_ref(vm)
        try:
            if ref is not None:
                try:
                    secret = await self.client.get(f"/api/v1/namespaces/{ns}/secrets/{ref[0]}")
                except errors.NotFound:
                    raise vmbootstrap.BootstrapError(f"Secret {ref[0]} not found") from None
                raw = vmbootstrap.secret_value(secret, ref[1])
            user_data = vmbootstrap.user_data(vm, raw)
        except vmbootstrap.BootstrapError as e:
            raise VMSetupError(n.BOOTSTRAP_READY, "BootstrapDataInvalid", str(e)) from None
        seed = self.run / "seed.iso"
        self.run.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(make_seed, seed, vmbootstrap.instance_id(vm), host, user_data,
                                vmbootstrap.network_config(address, vm))
        return seed


def interface_request(vm: dict[str, Any],
                      pod_network: ipaddress.IPv4Network | ipaddress.IPv6Network,
                      gateway: str) -> InterfaceRequest:
    """What ``spec.network.interfaces`` asks of the VM's one NIC, checked against the host's pod
    network (the only network there is, the namespace's default: ``network.name`` empty).

    A request this host cannot honour is a ``VirtualMachineNetworkReady`` condition, never
    silently dropped: another network (``NetworkNotFound``), a second interface, a static
    address outside the pod range or of another prefix (``AddressUnavailable``; a taken one is
    found when it is claimed), a gateway other than the bridge's (``GatewayUnavailable``)."""
    network = (vm.get("spec") or {}).get("network") or {}
    interfaces = network.get("interfaces") or [] if isinstance(network, dict) else []
    if not isinstance(interfaces, list) or not interfaces:
        return InterfaceRequest()
    if len(interfaces) > 1:
        raise VMSetupError(n.NETWORK_READY, "InterfacesNotSupported",
                           f"spec.network.interfaces: {len(interfaces)} interfaces; a VM here "
                           "has one, on the pod network")
    nic = interfaces[0] if isinstance(interfaces[0], dict) else {}
    ref = nic.get("network") if isinstance(nic.get("network"), dict) else {}
    if ref.get("name"):
        raise VMSetupError(n.NETWORK_READY, "NetworkNotFound",
                           f"spec.network.interfaces[0].network.name: network {ref['name']!r} "
                           "does not exist; leave the name out for the namespace's default "
                           "network (the pod network)")
    ip = None
    for i, text in enumerate(nic.get("addresses") or []):
        at = f"spec.network.interfaces[0].addresses[{i}]"
        try:
            iface = ipaddress.ip_interface(str(text))
        except ValueError:
            raise VMSetupError(n.NETWORK_READY, "AddressUnavailable",
                               f"{at}: {text!r} is not an address in CIDR form") from None
        if ip is not None or iface.version != pod_network.version:
            raise VMSetupError(n.NETWORK_READY, "AddressUnavailable",
                               f"{at}: {text}: the pod network {pod_network} gives a VM one "
                               f"IPv{pod_network.version} address")
        if iface.ip not in pod_network or ("/" in str(text) and
                                           iface.network.prefixlen != pod_network.prefixlen):
            raise VMSetupError(n.NETWORK_READY, "AddressUnavailable",
                               f"{at}: {text} is not on this host's pod network {pod_network}")
        ip = str(iface.ip)
    route = True
    gw = nic.get("gateway4")
    if gw == "None":
        route = False  # vm-operator's word for no default gateway
    elif gw and str(gw) != gateway:
        raise VMSetupError(n.NETWORK_READY, "GatewayUnavailable",
                           f"spec.network.interfaces[0].gateway4: {gw} is not this host's pod "
                           f"network gateway {gateway}; leave it out or set it to that")
    return InterfaceRequest(ip=ip, route=route)


async def vmstate_disk(qemu_img: str, disks: Path) -> Path:
    path = disks / "vmstate.qcow2"
    if not path.exists():
        disks.mkdir(parents=True, exist_ok=True)
        tmp = disks / "vmstate.qcow2.tmp"
        await _run([qemu_img, "create", "-q", "-f", "qcow2", str(tmp), "1M"], n.STORAGE_READY,
                   "VMStateDiskFailed")
        tmp.rename(path)
    return path


def launch_config(vm: dict[str, Any], uid: str, res: Resources, *, accelerator: str,
                  address: VMAddress, host: str) -> LaunchConfig:
    """QEMU's launch: the resources, the seed already among ``res.disks``, one NIC."""
    return LaunchConfig(
        name=f"{vm['metadata']['namespace']}/{vm['metadata']['name']}", uuid=uid, cpus=res.cpus,
        memory_mib=res.memory_mib, accel=accelerator, kernel=res.kernel, initrd=res.initrd,
        cmdline=vmbootstrap.kernel_cmdline(
            address, host, " ".join(filter(None, (
                accel.tcg_kernel_args() if accelerator == "tcg" else "",
                res.content.get("kernelArgs", ""))))),
        disks=res.disks, nics=[Nic(address.tap, address.mac)])


async def _run(argv: list[str], condition: str, reason: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise VMSetupError(condition, reason, out.decode(errors="replace").strip()[-500:])
