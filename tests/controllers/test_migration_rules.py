"""Migration policy selection and evacuation names (pure rules)."""

from __future__ import annotations

from atoll.controllers.vmoperator import migrationpolicy as mp
from atoll.controllers.vmoperator.evacuation import migration_name


def policy(name: str, ns: dict[str, str] | None = None, vm: dict[str, str] | None = None,
           **spec: object) -> dict:
    sel = {}
    if ns:
        sel["namespaceSelector"] = ns
    if vm:
        sel["virtualMachineSelector"] = vm
    return {"metadata": {"name": name}, "spec": {"selectors": sel, **spec}}


VM = {"metadata": {"labels": {"tier": "db", "speed": "slow"}}}
NS = {"metadata": {"labels": {"team": "a"}}}


def test_the_policy_naming_most_labels_wins_ties_by_name() -> None:
    ps = [policy("b-ns", ns={"team": "a"}), policy("a-vm", vm={"tier": "db"}),
          policy("c-both", ns={"team": "a"}, vm={"tier": "db"}),
          policy("d-miss", vm={"tier": "web"}), policy("e-empty")]
    assert mp.select(ps, VM, NS)["metadata"]["name"] == "c-both"
    assert mp.select(ps[:2], VM, NS)["metadata"]["name"] == "a-vm"
    assert mp.select(ps[3:], VM, NS) is None  # an empty selector selects nothing


def test_settings_default_and_from_a_policy() -> None:
    assert mp.settings(None) == {"completionTimeoutPerGiB": 150, "allowAutoConverge": True,
                                 "allowPostCopy": False}
    got = mp.settings(policy("p", bandwidthPerMigration="64Mi", completionTimeoutPerGiB=30,
                             allowAutoConverge=False, downtimeLimitMilliseconds=50,
                             allowPostCopy=True))
    assert got == {"name": "p", "bandwidthBytesPerSecond": 64 << 20,
                   "completionTimeoutPerGiB": 30, "allowAutoConverge": False,
                   "allowPostCopy": True, "downtimeLimitMilliseconds": 50}


def test_evacuation_names_are_stable_per_host_and_attempt() -> None:
    a = migration_name("vm", "host-1", 0)
    assert a == migration_name("vm", "host-1", 0)
    assert a != migration_name("vm", "host-1", 1) != migration_name("vm", "host-2", 0)
    assert len(migration_name("v" * 253, "h", 0)) <= 63
