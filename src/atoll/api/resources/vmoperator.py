"""VM Operator's kinds (vmoperator.vmware.com), which are served from Atoll's built-in CRDs
(``atoll.api.vmoperator``): the write rules a schema cannot state, and the kinds' storage
identity for the server parts that look their objects up (admission, node authorization).
"""

from __future__ import annotations

import json

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from atoll.api import errors, quantity, validation
from atoll.api.labelselector import label_selector_from_dict
from atoll.api.resources.base import Kind
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import Strategy
from atoll.api.timestamps import parse_go_duration, rfc3339
from atoll.api.vmoperator import webconsole
from atoll.api.vmoperator.names import GROUP, VERSION

#: where the CRD-served kinds' objects are stored (the keys depend only on group and plural)
VIRTUALMACHINES = ResourceType(GROUP, VERSION, "VirtualMachine", "virtualmachines", True)
VIRTUALMACHINECLASSES = ResourceType(GROUP, VERSION, "VirtualMachineClass",
                                     "virtualmachineclasses", True)
VIRTUALMACHINEIMAGES = ResourceType(GROUP, VERSION, "VirtualMachineImage",
                                    "virtualmachineimages", True)
CLUSTERVIRTUALMACHINEIMAGES = ResourceType(GROUP, VERSION, "ClusterVirtualMachineImage",
                                           "clustervirtualmachineimages", False)
VIRTUALMACHINEREPLICASETS = ResourceType(GROUP, VERSION, "VirtualMachineReplicaSet",
                                         "virtualmachinereplicasets", True)
VIRTUALMACHINESNAPSHOTS = ResourceType(GROUP, VERSION, "VirtualMachineSnapshot",
                                       "virtualmachinesnapshots", True)
VIRTUALMACHINEGROUPS = ResourceType(GROUP, VERSION, "VirtualMachineGroup",
                                    "virtualmachinegroups", True)
VIRTUALMACHINEWEBCONSOLEREQUESTS = ResourceType(GROUP, VERSION, webconsole.KIND,
                                                webconsole.PLURAL, True)


class VirtualMachineStrategy(Strategy):
    """vm-operator's webhook rules for VirtualMachines that a schema cannot state."""

    def validate_create(self, svc, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        causes = []
        if spec.get("powerState") == "Suspended":
            causes.append(errors.invalid_value("spec.powerState", "Suspended",
                                               "a VirtualMachine cannot be created Suspended"))
        if spec.get("nextRestartTime") not in (None, ""):
            causes.append(errors.invalid_value("spec.nextRestartTime", spec["nextRestartTime"],
                                               "can only be set on update, to \"now\""))
        causes += self.validate(rt, obj)
        if causes:
            raise errors.invalid(rt.kind, obj["metadata"].get("name", ""), causes, rt.group)

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        """Affinity terms are for VirtualMachineGroup members (upstream's rule)."""
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        if spec.get("affinity") and not spec.get("groupName"):
            return [errors.invalid_value("spec.affinity", "(the terms)",
                                         "only a VirtualMachineGroup member (spec.groupName) "
                                         "may have affinity rules")]
        return []

    def validate_update(self, svc, rt, old, new):  # type: ignore[no-untyped-def]
        changed = (new.get("spec") or {}).get("affinity") != (old.get("spec") or {}).get(
            "affinity") or (new.get("spec") or {}).get("groupName") != (
            old.get("spec") or {}).get("groupName")
        causes = (self.validate(rt, new) if changed else []) + \
            self.validate_transition(rt, old, new)
        if causes:
            raise errors.invalid(rt.kind, new["metadata"].get("name", ""), causes, rt.group)

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        """``nextRestartTime: now`` (any case, as upstream) becomes the time of this request,
        to the microsecond so that two restarts within a second stay two (the agent restarts
        the VM once per value); any other new value is refused."""
        spec = new.get("spec")
        if subresource or not isinstance(spec, dict):
            return
        before = (old.get("spec") or {}).get("nextRestartTime") or ""
        wanted = spec.get("nextRestartTime") or ""
        if isinstance(wanted, str) and wanted.lower() == "now":
            spec["nextRestartTime"] = rfc3339(digits=6)
        elif wanted not in ("", before):
            raise errors.invalid(rt.kind, new["metadata"].get("name", ""), [errors.invalid_value(
                "spec.nextRestartTime", wanted, 'must be "now" (or left unchanged)')], rt.group)


VIRTUALMACHINE = Kind(None, VirtualMachineStrategy(), key=VIRTUALMACHINES.kind_key)


class VirtualMachineReplicaSetStrategy(Strategy):
    """A set's selector must be a real, non-empty selector that its template's labels match
    (else the set would create VMs it never counts, without end), as for a ReplicaSet."""

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        sel = spec.get("selector")
        if not isinstance(sel, dict) or not (sel.get("matchLabels") or
                                             sel.get("matchExpressions")):
            return [errors.required("spec.selector")]
        try:
            selector = label_selector_from_dict(sel)
        except errors.ApiError as e:
            return [errors.invalid_value("spec.selector", sel, e.message)]
        template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not isinstance(labels, dict) or not selector.matches(labels):
            return [errors.invalid_value("spec.template.metadata.labels", labels,
                                         "`selector` does not match template `labels`")]
        return []


VIRTUALMACHINEREPLICASET = Kind(None, VirtualMachineReplicaSetStrategy(),
                                key=VIRTUALMACHINEREPLICASETS.kind_key)


class WebConsoleRequestStrategy(Strategy):
    """Who asked is recorded by the server on create and never changes (the ticket acts as
    that user); the request's spec never changes either; the key must be an RSA key the
    ticket can be encrypted to (RSA-OAEP with SHA-512 needs 2048 bits for a ticket)."""

    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        meta = obj.setdefault("metadata", {})
        annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) \
            else {}
        annotations.pop(webconsole.REQUESTED_BY, None)
        user = opts.user_info
        if user is not None:
            annotations[webconsole.REQUESTED_BY] = json.dumps(
                {"name": user.name, "uid": user.uid, "groups": list(user.groups)},
                separators=(",", ":"))
        meta["annotations"] = annotations or None
        if meta["annotations"] is None:
            del meta["annotations"]
        obj.pop("status", None)

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        new["spec"] = old.get("spec")
        was = ((old.get("metadata") or {}).get("annotations") or {}).get(webconsole.REQUESTED_BY)
        meta = new.setdefault("metadata", {})
        annotations = dict(meta.get("annotations") or {})
        annotations.pop(webconsole.REQUESTED_BY, None)
        if was is not None:
            annotations[webconsole.REQUESTED_BY] = was
        meta["annotations"] = annotations or None
        if meta["annotations"] is None:
            del meta["annotations"]

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        causes = [errors.invalid_value("spec.name", spec.get("name"), m)
                  for m in validation.is_dns1123_subdomain(str(spec.get("name") or ""))]
        key = spec.get("publicKey")
        try:
            loaded = serialization.load_pem_public_key(str(key or "").encode())
        except (ValueError, TypeError, UnsupportedAlgorithm):
            causes.append(errors.invalid_value("spec.publicKey", "(the key)",
                                               "must be a PEM-encoded RSA public key"))
        else:
            if not isinstance(loaded, rsa.RSAPublicKey):
                causes.append(errors.invalid_value("spec.publicKey", "(the key)",
                                                   "must be an RSA key (RSA-OAEP)"))
            elif loaded.key_size < 2048:
                causes.append(errors.invalid_value(
                    "spec.publicKey", f"{loaded.key_size} bits", "must be 2048 bits or more"))
        return causes


WEBCONSOLEREQUEST = Kind(None, WebConsoleRequestStrategy(),
                         key=VIRTUALMACHINEWEBCONSOLEREQUESTS.kind_key)


def _force_sync_now(spec: dict, before: str) -> errors.Cause | None:
    """``nextForcePowerStateSyncTime: now`` becomes this request's time, as upstream's
    mutating webhook does; another new value is refused."""
    wanted = spec.get("nextForcePowerStateSyncTime") or ""
    if isinstance(wanted, str) and wanted.lower() == "now":
        spec["nextForcePowerStateSyncTime"] = rfc3339(digits=6)
    elif wanted not in ("", before):
        return errors.invalid_value("spec.nextForcePowerStateSyncTime", wanted,
                                    'must be "now" (or left unchanged)')
    return None


class VirtualMachineGroupStrategy(Strategy):
    """vm-operator's webhook rules for groups: delays are durations, a member is named once
    and is not the group itself, a power state once set is never emptied again, and
    ``nextForcePowerStateSyncTime`` takes only "now"."""

    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if isinstance(spec, dict) and (cause := _force_sync_now(spec, "")) is not None:
            raise errors.invalid(rt.kind, obj["metadata"].get("name", ""), [cause], rt.group)

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        spec = new.get("spec")
        if subresource or not isinstance(spec, dict):
            return
        before = (old.get("spec") or {}).get("nextForcePowerStateSyncTime") or ""
        if (cause := _force_sync_now(spec, before)) is not None:
            raise errors.invalid(rt.kind, new["metadata"].get("name", ""), [cause], rt.group)

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        name = obj["metadata"].get("name", "")
        causes = []
        seen: set[tuple[str, str]] = set()
        for i, entry in enumerate(spec.get("bootOrder") or []):
            entry = entry if isinstance(entry, dict) else {}
            delay = entry.get("powerOnDelay")
            if delay not in (None, ""):
                try:
                    if parse_go_duration(str(delay)) < 0:
                        raise ValueError("negative")
                except ValueError:
                    causes.append(errors.invalid_value(f"spec.bootOrder[{i}].powerOnDelay",
                                                       delay, "must be a duration such as 10s"))
            for j, member in enumerate(entry.get("members") or []):
                member = member if isinstance(member, dict) else {}
                key = (str(member.get("kind") or "VirtualMachine"), str(member.get("name")))
                where = f"spec.bootOrder[{i}].members[{j}]"
                if key == ("VirtualMachineGroup", name) or key[1] == spec.get("groupName") and \
                        key[0] == "VirtualMachineGroup":
                    causes.append(errors.invalid_value(where, key[1],
                                                       "a group cannot contain itself or its "
                                                       "own group"))
                elif key in seen:
                    causes.append(errors.duplicate(where, key[1]))
                seen.add(key)
        return causes

    def validate_transition(self, rt, old, new):  # type: ignore[no-untyped-def]
        if (old.get("spec") or {}).get("powerState") and \
                not (new.get("spec") or {}).get("powerState"):
            return [errors.required("spec.powerState")]  # once set, never empty again
        return []


VIRTUALMACHINEGROUP = Kind(None, VirtualMachineGroupStrategy(),
                           key=VIRTUALMACHINEGROUPS.kind_key)


def snapshot_request(svc, namespace: str, snap: dict) -> list[dict]:  # type: ignore[no-untyped-def]
    """What a VM snapshot may come to take (``status.storage.requested``, what quota
    charges): the boot disk's capacity (it can diverge that far from the snapshot), plus the
    class's memory when the snapshot holds memory (a running or suspended VM's), in the VM's
    storage class."""
    spec = snap.get("spec") if isinstance(snap.get("spec"), dict) else {}
    name = spec.get("vmName") or ((spec.get("vmRef") or {}).get("name")
                                  if isinstance(spec.get("vmRef"), dict) else "")
    cached = svc.read(VIRTUALMACHINES, namespace, str(name)) if name else None
    if cached is None:
        return []
    vm = cached.obj
    vspec, vstatus = vm.get("spec") or {}, vm.get("status") or {}
    total = _image_capacity(svc, namespace, vm)
    wanted = (vspec.get("advanced") or {}).get("bootDiskCapacity")
    try:
        total = max(total, int(quantity.parse(wanted))) if wanted else total
    except (ValueError, TypeError, ArithmeticError):
        pass
    if spec.get("memory") and vstatus.get("powerState") in ("PoweredOn", "Suspended"):
        klass = svc.read(VIRTUALMACHINECLASSES, namespace, str(vspec.get("className") or ""))
        memory = (((klass.obj.get("spec") or {}).get("hardware") or {}).get("memory")
                  if klass else None)
        try:
            total += int(quantity.parse(memory or 0))
        except (ValueError, TypeError, ArithmeticError):
            pass
    return [{"storageClass": str(vspec.get("storageClass") or ""), "total": str(total)}]


def _image_capacity(svc, namespace: str, vm: dict) -> int:  # type: ignore[no-untyped-def]
    ref = (vm.get("status") or {}).get("image") or {}
    name = str(ref.get("name") or (vm.get("spec") or {}).get("imageName") or "")
    kinds = [ref["kind"]] if ref.get("kind") else ["VirtualMachineImage",
                                                   "ClusterVirtualMachineImage"]
    for kind in kinds:
        rt, ns = (VIRTUALMACHINEIMAGES, namespace) if kind == "VirtualMachineImage" else \
            (CLUSTERVIRTUALMACHINEIMAGES, "")
        cached = svc.read(rt, ns, name) if name else None
        if cached is not None:
            capacity = ((cached.obj.get("status") or {}).get("diskInfo") or {}).get("capacity")
            try:
                return int(quantity.parse(capacity or 0))
            except (ValueError, TypeError, ArithmeticError):
                return 0
    return 0


class VirtualMachineSnapshotStrategy(Strategy):
    """The storage a snapshot may take is the server's to say (quota charges it): set on
    create from the VM, whatever the client sent, and kept on every update."""

    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        storage = status.get("storage") if isinstance(status.get("storage"), dict) else {}
        storage["requested"] = snapshot_request(svc, obj["metadata"].get("namespace", ""),
                                                obj) or None
        if storage["requested"] is None:
            del storage["requested"]
        status["storage"] = storage or None
        if status["storage"] is None:
            del status["storage"]
        obj["status"] = status or None
        if obj["status"] is None:
            del obj["status"]

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        before = ((old.get("status") or {}).get("storage") or {}).get("requested")
        status = new.get("status") if isinstance(new.get("status"), dict) else {}
        storage = dict(status.get("storage") or {}) if isinstance(status.get("storage"),
                                                                  dict) else {}
        if before is None:
            storage.pop("requested", None)
        else:
            storage["requested"] = before
        if storage:
            new["status"] = dict(status, storage=storage)
        elif isinstance(new.get("status"), dict):
            new["status"].pop("storage", None)


VIRTUALMACHINESNAPSHOT = Kind(None, VirtualMachineSnapshotStrategy(),
                              key=VIRTUALMACHINESNAPSHOTS.kind_key)
