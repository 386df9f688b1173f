"""An upgrade from Atoll's v1alpha3-only store: objects stored as v1alpha3 read correctly in
every version, and the next start rewrites them in v1alpha6 and trims storedVersions."""

from __future__ import annotations

from pathlib import Path

import orjson

from atoll.apiserver.app import ApiServer
from atoll.apiserver.objects import WriteOptions
from atoll.api.resources.vmoperator import VIRTUALMACHINES
from atoll.settings import ServerSettings
from tests.conftest import free_port

OLD = {"apiVersion": "vmoperator.vmware.com/v1alpha3", "kind": "VirtualMachine",
       "metadata": {"name": "old", "namespace": "default", "uid": "u-1", "generation": 1,
                    "creationTimestamp": "2026-01-01T00:00:00Z"},
       "spec": {"className": "small", "imageName": "img", "powerState": "PoweredOn",
                "cdrom": [{"name": "cd"}]},
       "status": {"host": "h1", "nodeName": "h1", "powerState": "PoweredOn"}}


def server(data_dir: Path) -> ApiServer:
    return ApiServer(ServerSettings(data_dir=data_dir, port=free_port(),
                                    bind_address="127.0.0.1"))


async def test_old_objects_read_and_migrate(tmp_path: Path) -> None:
    first = server(tmp_path)
    await first.start()
    try:
        key = VIRTUALMACHINES.key("default", "old")
        await first.store.create(key, orjson.dumps(OLD))
        crd_type = first.registry.lookup("apiextensions.k8s.io", "v1",
                                         "customresourcedefinitions")
        assert crd_type is not None

        def pretend_old(crd):  # type: ignore[no-untyped-def]
            crd["status"]["storedVersions"] = ["v1alpha3", "v1alpha6"]
            return crd
        await first.svc.guaranteed_update(crd_type, "", "virtualmachines.vmoperator.vmware.com",
                                          pretend_old, WriteOptions(field_manager="test"),
                                          subresource="status")
        await first.cacher.wait_for(await first.store.current_revision())
        # reads of the old object convert it
        rt6 = first.registry.lookup("vmoperator.vmware.com", "v1alpha6", "virtualmachines")
        assert rt6 is not None and rt6.custom is not None and rt6.custom.converter is not None
        stored = first.cacher.get(key).obj
        assert stored["apiVersion"] == "vmoperator.vmware.com/v1alpha3"
        hub = rt6.custom.converter.convert(stored, rt6.group_version)
        assert hub["spec"]["hardware"] == {"cdrom": [{"name": "cd"}]}
        assert hub["status"]["nodeName"] == "h1" and "host" not in hub["status"]
    finally:
        await first.stop()
    second = server(tmp_path)
    await second.start()
    try:
        now = second.cacher.get(key).obj
        assert now["apiVersion"] == "vmoperator.vmware.com/v1alpha6"
        assert now["spec"]["hardware"] == {"cdrom": [{"name": "cd"}]}
        assert "annotations" not in now["metadata"]
        crd = second.cacher.get("/registry/apiextensions.k8s.io/customresourcedefinitions/"
                                "virtualmachines.vmoperator.vmware.com")
        assert crd is not None and crd.obj["status"]["storedVersions"] == ["v1alpha6"]
    finally:
        await second.stop()
