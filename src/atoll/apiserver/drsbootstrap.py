"""The BalancingPolicy every cluster starts with: ``default``, the one DRS reads.

Manual at threshold 3: DRS measures and recommends from the start, but moves nothing until
an administrator says FullyAutomated (vSphere enables DRS fully automated; here a cluster
that is also where others' tests run keeps its VMs where they were put).  Written only
when absent and once its CRD is served, as ``snapshotbootstrap``: edits are kept, a deleted
policy comes back at the next start."""

from __future__ import annotations

from typing import Any

from atoll.api.migration import drs
from atoll.api.migration.names import VERSION
from atoll.apiserver.servicebootstrap import create_if_absent


def default_policy() -> dict[str, Any]:
    return {"apiVersion": drs.API_VERSION, "kind": drs.POLICY_KIND,
            "metadata": {"name": drs.DEFAULT},
            "spec": {"automationLevel": drs.MANUAL, "migrationThreshold": 3,
                     "intervalSeconds": 60, "vmCooldownSeconds": 300}}


async def ensure(svc, registry) -> None:  # type: ignore[no-untyped-def]
    rt = registry.lookup(drs.GROUP, VERSION, drs.POLICIES)
    if rt is None:
        return  # not served (yet): the next start writes it
    await create_if_absent(svc, rt, "", default_policy())
