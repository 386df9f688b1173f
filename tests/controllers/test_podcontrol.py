"""Pure helpers of the workload controllers."""

from __future__ import annotations

from atoll.controllers import podcontrol
from atoll.controllers.deployment import resolve, template_hash


def pod(name: str, *, node: str = "", phase: str = "Running", ready: bool = True,
        created: str = "2026-11-24T10:00:00Z", restarts: int = 0) -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"nodeName": node},
            "status": {"phase": phase,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"restartCount": restarts}]}}


def test_scale_down_order_matches_upstream() -> None:
    pods = [pod("old-ready", node="n"), pod("unscheduled", phase="Pending", ready=False),
            pod("not-ready", node="n", ready=False), pod("crashy", node="n", restarts=5),
            pod("new-ready", node="n", created="2026-11-24T11:00:00Z")]
    order = [p["metadata"]["name"] for p in sorted(pods, key=podcontrol.deletion_rank)]
    assert order == ["unscheduled", "not-ready", "crashy", "new-ready", "old-ready"]


def test_surge_and_unavailable_rounding() -> None:
    assert resolve("25%", 10, True) == 3 and resolve("25%", 10, False) == 2
    assert resolve(2, 10, True) == 2 and resolve("bogus", 10, True) == 0


def test_template_hash_is_stable_and_sensitive() -> None:
    t = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}
    assert template_hash(t) == template_hash({"spec": t["spec"], "metadata": t["metadata"]})
    assert template_hash(t) != template_hash({**t, "spec": {"containers": [{"name": "d"}]}})
    assert set(template_hash(t)) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_expectations() -> None:
    e = podcontrol.Expectations()
    assert e.satisfied("k")
    e.expect("k", adds=2, dels={"ns/p"})
    assert not e.satisfied("k")
    e.created("k")
    e.created("k")
    assert not e.satisfied("k")
    e.deleted("k", "ns/p")
    assert e.satisfied("k")
