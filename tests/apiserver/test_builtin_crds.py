"""Built-in CRDs at start-up, on a real store and watch cache: installed once, untouched by
restarts, put back when changed, and racing installers agree (409 → read and compare)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from atoll.api import vmoperator
from atoll.apiserver import builtin_crds, crds
from atoll.apiserver.app import ApiServer
from atoll.apiserver.objects import WriteOptions
from atoll.settings import ServerSettings
from tests.conftest import free_port

NAMES = [c["metadata"]["name"] for c in vmoperator.definitions()]


def server(data_dir: Path) -> ApiServer:
    return ApiServer(ServerSettings(data_dir=data_dir, port=free_port(),
                                    bind_address="127.0.0.1"))


def stored(s: ApiServer) -> dict[str, dict[str, Any]]:
    out = {}
    for name in NAMES:
        cached = s.cacher.get(crds.CRD_PREFIX + name)
        assert cached is not None, name
        out[name] = cached.obj
    return out


def versions(s: ApiServer) -> dict[str, tuple[str, int]]:
    return {n: (o["metadata"]["resourceVersion"], o["metadata"]["generation"])
            for n, o in stored(s).items()}


async def test_restarts_leave_the_crds_alone_and_changes_are_undone(tmp_path: Path) -> None:
    first = server(tmp_path)
    await first.start()
    try:
        before = versions(first)
        assert all(gen == 1 for _, gen in before.values())
        for name in NAMES:
            spec = first.registry.lookup("vmoperator.vmware.com", "v1alpha6",
                                         name.split(".")[0])
            assert spec is not None, f"{name} is not served"
        await builtin_crds.ensure(first.svc, first.registry)
        assert versions(first) == before

        # an administrator edits one: the next start puts Atoll's definition back
        crd_type = first.registry.lookup("apiextensions.k8s.io", "v1",
                                         "customresourcedefinitions")
        assert crd_type is not None

        def shrink(obj: dict[str, Any]) -> dict[str, Any]:
            obj["spec"]["names"]["shortNames"] = ["virt"]
            return obj

        await first.svc.guaranteed_update(crd_type, "", NAMES[0], shrink,
                                          WriteOptions(field_manager="admin"))
        assert stored(first)[NAMES[0]]["spec"]["names"]["shortNames"] == ["virt"]
    finally:
        await first.stop()

    second = server(tmp_path)
    await second.start()
    try:
        after = versions(second)
        assert stored(second)[NAMES[0]]["spec"]["names"]["shortNames"] == ["vm"]
        assert all(after[n] == before[n] for n in NAMES[1:])
    finally:
        await second.stop()

    third = server(tmp_path)
    await third.start()
    try:
        assert versions(third) == after
    finally:
        await third.stop()


async def test_racing_installers_agree(tmp_path: Path) -> None:
    """Three installers at once on an empty store: one create wins per CRD, the others get
    AlreadyExists, read it back, find it equal and write nothing."""
    s = server(tmp_path)
    await s.store.start()
    await s.cacher.start()
    crds.CRDWatcher(s.registry, s.cacher).start()
    try:
        await asyncio.gather(*(builtin_crds.ensure(s.svc, s.registry) for _ in range(3)))
        assert all(gen == 1 for _, gen in versions(s).values())
    finally:
        await s.stop()
