"""Names the migration controller, the agents and the CLI agree on."""

from __future__ import annotations

GROUP = "migration.atoll.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VirtualMachineMigration"
PLURAL = "virtualmachinemigrations"
POLICIES = "migrationpolicies"
POLICY_GROUP = f"policy.{GROUP}"

#: on a migration once it has hosts: the agents list+watch their migrations by these
SOURCE_LABEL = "migration.atoll.dev/source"
TARGET_LABEL = "migration.atoll.dev/target"
#: the VM a migration moves (a label too, so a VM's migrations are listed by selector)
VM_LABEL = "migration.atoll.dev/vm"

# KubeVirt's phases, in order
PENDING, SCHEDULING, SCHEDULED = "Pending", "Scheduling", "Scheduled"
PREPARING, TARGET_READY, RUNNING = "PreparingTarget", "TargetReady", "Running"
SUCCEEDED, FAILED = "Succeeded", "Failed"
TERMINAL = (SUCCEEDED, FAILED)
ACTIVE = (PENDING, SCHEDULING, SCHEDULED, PREPARING, TARGET_READY, RUNNING)

#: condition set while a migration waits for a free slot (KubeVirt's name)
CONCURRENCY_LIMIT = "VirtualMachineInstanceMigrationConcurrencyLimitReached"


def path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return f"{base}/{name}" if name else base


def phase(mig: dict) -> str:
    return str((mig.get("status") or {}).get("phase") or PENDING)
