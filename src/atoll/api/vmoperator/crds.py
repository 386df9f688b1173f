"""The VM Operator's CustomResourceDefinitions (``vmoperator.vmware.com``, v1alpha3), as data.

Field names follow upstream vm-operator's v1alpha3 types so manifests written for
vSphere apply unchanged; Atoll's additions (an image's ``spec.content``, a VM's
``status.accelerator``) are marked.  The schemas are built with a few small
helpers rather than written out as YAML: the same shapes (conditions, object
references, quantities) recur in every kind.
"""

from __future__ import annotations

from typing import Any

from atoll.api.vmoperator.names import GROUP, VERSION

Schema = dict[str, Any]


def s(description: str = "", **extra: Any) -> Schema:
    out: Schema = {"type": "string", **extra}
    if description:
        out["description"] = description
    return out


def i(description: str = "", **extra: Any) -> Schema:
    out: Schema = {"type": "integer", **extra}
    if description:
        out["description"] = description
    return out


def b(description: str = "") -> Schema:
    return {"type": "boolean", **({"description": description} if description else {})}


def obj(doc: str = "", /, required: list[str] | None = None, **props: Schema) -> Schema:
    """An object schema; ``doc`` is positional so that a property may be called description."""
    out: Schema = {"type": "object", "properties": props}
    if doc:
        out["description"] = doc
    if required:
        out["required"] = required
    return out


def arr(items: Schema, description: str = "", **extra: Any) -> Schema:
    out: Schema = {"type": "array", "items": items, **extra}
    if description:
        out["description"] = description
    return out


def free(description: str = "", /) -> Schema:
    """Any JSON object, kept as written (cloud-config documents, for one)."""
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
            **({"description": description} if description else {})}


def quantity(description: str = "") -> Schema:
    return {"anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
                       r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
            **({"description": description} if description else {})}


def int_or_string(description: str = "") -> Schema:
    return {"anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            **({"description": description} if description else {})}


MODE = s("Hard, Soft, or TrySoft (Soft, then Hard after a timeout)",
         enum=["Hard", "Soft", "TrySoft"], default="TrySoft")
CONDITIONS = arr(obj(required=["type", "status"], type=s(), status=s(enum=["True", "False",
                                                                           "Unknown"]),
                     reason=s(), message=s(), lastTransitionTime=s(format="date-time"),
                     observedGeneration=i(format="int64")),
                 **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
RESOURCES = obj(cpu=quantity(), memory=quantity(), storage=quantity())
LOCAL_REF = obj(apiVersion=s(), kind=s(), name=s())

VM_SPEC = obj(
    "The desired state of a VirtualMachine.",
    className=s("the VirtualMachineClass (in the VM's namespace) giving its size"),
    imageName=s("a VirtualMachineImage or ClusterVirtualMachineImage, by name or display name"),
    image=obj("the image as a typed reference (instead of imageName)",
              kind=s(enum=["VirtualMachineImage", "ClusterVirtualMachineImage"]), name=s()),
    storageClass=s("StorageClass of the VM's own disks"),
    powerState=s("PoweredOn, PoweredOff or Suspended", enum=["PoweredOn", "PoweredOff",
                                                             "Suspended"], default="PoweredOn"),
    powerOffMode=MODE, suspendMode=MODE, restartMode=MODE,
    nextRestartTime=s("write \"now\" to restart the VM; the server stores the time"),
    minHardwareVersion=i(),
    instanceUUID=s(), biosUUID=s(),
    guestID=s(),
    bootstrap=obj(
        "how the guest is initialized on first boot",
        cloudInit=obj(instanceID=s(), cloudConfig=free("a cloud-config document"),
                      rawCloudConfig=obj("a Secret key holding the whole user-data",
                                         name=s(), key=s()),
                      sshAuthorizedKeys=arr(s()),
                      waitOnNetwork4=b(), waitOnNetwork6=b()),
        linuxPrep=free(), sysprep=free(), vAppConfig=free()),
    network=obj(
        hostName=s(), domainName=s(), disabled=b(), nameservers=arr(s()), searchDomains=arr(s()),
        interfaces=arr(obj(
            required=["name"], name=s(), network=obj(apiVersion=s(), kind=s(), name=s()),
            addresses=arr(s()), dhcp4=b(), dhcp6=b(), gateway4=s(), gateway6=s(), mtu=i(),
            nameservers=arr(s()), searchDomains=arr(s()),
            routes=arr(obj(to=s(), via=s(), metric=i()))))),
    volumes=arr(obj(
        required=["name"], name=s(),
        persistentVolumeClaim=obj(required=["claimName"], claimName=s(), readOnly=b(),
                                  instanceVolumeClaim=free())),
        **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
    readinessProbe=obj(tcpSocket=obj(host=s(), port=int_or_string()),
                       guestHeartbeat=obj(thresholdStatus=s(enum=["green", "yellow", "red"])),
                       guestInfo=arr(obj(key=s(), value=s())),
                       timeoutSeconds=i(minimum=1), periodSeconds=i(minimum=1)),
    advanced=obj(bootDiskCapacity=quantity(), defaultVolumeProvisioningMode=s(),
                 changeBlockTracking=b()),
    reserved=obj(resourcePolicyName=s()),
    crypto=free(), cdrom=arr(free()), groupName=s(),
)

VM_STATUS = obj(
    powerState=s(), host=s(), nodeName=s("Atoll: the Node the VM runs on"),
    accelerator=s("Atoll: kvm or tcg"),
    uniqueID=s(), biosUUID=s(), instanceUUID=s(), hardwareVersion=i(),
    class_=LOCAL_REF, image=LOCAL_REF,
    network=obj(primaryIP4=s(), primaryIP6=s(), hostName=s(),
                interfaces=arr(obj(name=s(), deviceKey=i(),
                                   ip=obj(macAddr=s(), autoConfigurationEnabled=b(),
                                          addresses=arr(obj(address=s(), origin=s(),
                                                            state=s())))))),
    volumes=arr(obj(name=s(), attached=b(), error=s(), diskUUID=s(), limit=quantity(),
                    used=quantity(), type=s())),
    changeBlockTracking=b(), lastRestartTime=s(),
    conditions=CONDITIONS,
)
VM_STATUS["properties"]["class"] = VM_STATUS["properties"].pop("class_")

CLASS_SPEC = obj(
    controllerName=s(), description=s(),
    hardware=obj(cpus=i(minimum=1), memory=quantity(),
                 devices=free(), instanceStorage=free()),
    policies=obj(resources=obj(requests=RESOURCES, limits=RESOURCES)),
    configSpec=free(), reservedProfileID=s(), reservedSlots=i(),
)

CONTENT_FILE = obj(required=["digest"], digest=s(pattern=r"^sha256:[0-9a-f]{64}$"),
                   size=i(format="int64"), format=s(), virtualSize=i(format="int64"))
IMAGE_SPEC = obj(
    providerRef=obj(apiVersion=s(), kind=s(), name=s()),
    content=obj("Atoll: the image's files in the Supervisor's content library",
                kernel=CONTENT_FILE, initrd=CONTENT_FILE, disk=CONTENT_FILE,
                kernelArgs=s()),
)
IMAGE_STATUS = obj(
    name=s("display name"), type=s(), firmware=s(), productInfo=free(),
    capabilities=arr(s()), osInfo=obj(id=s(), type=s(), version=s()),
    diskInfo=obj(capacity=quantity(), size=quantity()),
    providerContentVersion=s(), providerItemID=s(), conditions=CONDITIONS,
)

SERVICE_SPEC = obj(
    type=s(enum=["ClusterIP", "LoadBalancer", "ExternalName"]),
    ports=arr(obj(required=["name", "protocol", "port", "targetPort"], name=s(),
                  protocol=s(), port=i(), targetPort=i())),
    selector={"type": "object", "additionalProperties": {"type": "string"}},
    loadBalancerIP=s(), loadBalancerSourceRanges=arr(s()), clusterIp=s(), externalName=s(),
)
SERVICE_STATUS = obj(loadBalancer=obj(ingress=arr(obj(ip=s(), hostname=s()))),
                     conditions=CONDITIONS)


def _crd(kind: str, plural: str, short: str, scope: str, spec: Schema, status: Schema,
         columns: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}",
                     "labels": {"app.kubernetes.io/managed-by": "atoll"}},
        "spec": {
            "group": GROUP, "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                      "listKind": f"{kind}List", "shortNames": [short],
                      "categories": ["vmoperator"]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object", "description": f"{kind} of the VM Operator API.",
                    "properties": {"apiVersion": s(), "kind": s(), "metadata": {"type": "object"},
                                   "spec": spec, "status": status}}},
            }],
        },
    }


def _col(name: str, path: str, type_: str = "string", priority: int = 0) -> dict[str, Any]:
    out = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        out["priority"] = priority
    return out


AGE = _col("Age", ".metadata.creationTimestamp", "date")
IMAGE_COLUMNS = [_col("Display-Name", ".status.name"), _col("Type", ".status.type"),
                 _col("OS", ".status.osInfo.id", priority=1),
                 _col("Capacity", ".status.diskInfo.capacity", priority=1),
                 _col("Ready", ".status.conditions[?(@.type=='Ready')].status"), AGE]


def definitions() -> list[dict[str, Any]]:
    """Every CRD of the VM Operator, newest schema."""
    return [
        _crd("VirtualMachine", "virtualmachines", "vm", "Namespaced", VM_SPEC, VM_STATUS, [
            _col("Power-State", ".status.powerState"), _col("Class", ".spec.className"),
            _col("Image", ".spec.imageName"), _col("Primary-IP4", ".status.network.primaryIP4"),
            _col("Node", ".status.nodeName", priority=1), AGE]),
        _crd("VirtualMachineClass", "virtualmachineclasses", "vmclass", "Namespaced", CLASS_SPEC,
             obj(ready=b(), conditions=CONDITIONS), [
                 _col("CPU", ".spec.hardware.cpus", "integer"),
                 _col("Memory", ".spec.hardware.memory"), AGE]),
        _crd("VirtualMachineImage", "virtualmachineimages", "vmi", "Namespaced", IMAGE_SPEC,
             IMAGE_STATUS, IMAGE_COLUMNS),
        _crd("ClusterVirtualMachineImage", "clustervirtualmachineimages", "cvmi", "Cluster",
             IMAGE_SPEC, IMAGE_STATUS, IMAGE_COLUMNS),
        _crd("VirtualMachineService", "virtualmachineservices", "vmservice", "Namespaced",
             SERVICE_SPEC, SERVICE_STATUS, [_col("Type", ".spec.type"), AGE]),
    ]
