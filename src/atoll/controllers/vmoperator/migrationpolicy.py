"""Which MigrationPolicy a migration runs with, and the settings that gives it.

As KubeVirt: a policy selects VMs by the VM's labels and its namespace's labels (every label
it names must match); of the policies that select a VM, the one naming the most labels wins,
ties going to the first by name.  No policy: Atoll's defaults (auto-converge on, no post-copy,
QEMU's own bandwidth and downtime limits, 150 s per GiB).  The result is written on the migration
(``status.policy``), so the source host applies what the controller decided.
"""

from __future__ import annotations

from typing import Any

from atoll.api import quantity

DEFAULT_TIMEOUT_PER_GIB = 150


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def select(policies: list[dict[str, Any]], vm: dict[str, Any],
           namespace: dict[str, Any] | None) -> dict[str, Any] | None:
    vm_labels = vm["metadata"].get("labels") or {}
    ns_labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    best: tuple[int, str] | None = None
    chosen = None
    for policy in policies:
        sel = (policy.get("spec") or {}).get("selectors") or {}
        by_ns, by_vm = sel.get("namespaceSelector") or {}, sel.get("virtualMachineSelector") or {}
        if not (by_ns or by_vm) or not _matches(by_ns, ns_labels) or \
                not _matches(by_vm, vm_labels):
            continue
        rank = (-(len(by_ns) + len(by_vm)), policy["metadata"]["name"])
        if best is None or rank < best:
            best, chosen = rank, policy
    return chosen


def settings(policy: dict[str, Any] | None) -> dict[str, Any]:
    spec = (policy or {}).get("spec") or {}
    out: dict[str, Any] = {
        "completionTimeoutPerGiB": int(spec.get("completionTimeoutPerGiB")
                                       or DEFAULT_TIMEOUT_PER_GIB),
        "allowAutoConverge": bool(spec.get("allowAutoConverge", True)),
        "allowPostCopy": bool(spec.get("allowPostCopy", False))}
    if policy is not None:
        out["name"] = policy["metadata"]["name"]
    if spec.get("bandwidthPerMigration") not in (None, "", 0):
        out["bandwidthBytesPerSecond"] = max(1, int(quantity.parse(
            str(spec["bandwidthPerMigration"]))))
    if spec.get("downtimeLimitMilliseconds"):
        out["downtimeLimitMilliseconds"] = int(spec["downtimeLimitMilliseconds"])
    return out
