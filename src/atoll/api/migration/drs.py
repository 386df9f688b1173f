"""Names DRS's parts agree on: the agents' load reports, the balancing knobs, the overrides.

The agent writes its measured load on its Node (``LOAD_ANNOTATION``, JSON, see
``agent/host/loadreport.py``); the DRS controller reads it there with the Node informer it
needs anyway, and writes ``BalancingPolicy`` status and ``MigrationRecommendation`` objects.
"""

from __future__ import annotations

from atoll.api.migration.names import POLICY_GROUP, VERSION

GROUP = POLICY_GROUP
API_VERSION = f"{GROUP}/{VERSION}"
POLICY_KIND, POLICIES = "BalancingPolicy", "balancingpolicies"
RECOMMENDATION_KIND, RECOMMENDATIONS = "MigrationRecommendation", "migrationrecommendations"
#: the one BalancingPolicy DRS reads (the server creates it at start)
DEFAULT = "default"

#: on a Node: the host's measured load, JSON (written by its agent)
LOAD_ANNOTATION = "drs.atoll.dev/load"
#: on a VM: its own automation level (vSphere's per-VM override), or Disabled: never moved
AUTOMATION_ANNOTATION = "drs.atoll.dev/automation-level"
#: on VMs: those naming the same group (in one namespace) are kept on different hosts
ANTI_AFFINITY_ANNOTATION = "drs.atoll.dev/anti-affinity"

MANUAL, PARTIAL, FULL, DISABLED = "Manual", "PartiallyAutomated", "FullyAutomated", "Disabled"
LEVELS = (MANUAL, PARTIAL, FULL)
#: the value of ``migration.atoll.dev/reason`` on the migrations DRS makes
REASON = "drs"
#: on a recommendation: the VM it moves (a label, to list a VM's recommendations)
RECOMMENDATION_VM_LABEL = "drs.atoll.dev/vm"


def policy_path(name: str = DEFAULT) -> str:
    return f"/apis/{GROUP}/{VERSION}/{POLICIES}/{name}"


def recommendation_path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{RECOMMENDATIONS}"
    return f"{base}/{name}" if name else base
