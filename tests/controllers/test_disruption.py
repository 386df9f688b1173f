"""The disruption controller's arithmetic (the e2e test drives it end to end)."""

from __future__ import annotations

from atoll.api.timestamps import rfc3339
from atoll.controllers.disruption import (DISRUPTED_POD_TIMEOUT, DisruptionController,
                                          desired_healthy, scaled)


def pod(name: str, deleting: bool = False) -> dict:
    meta = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = rfc3339()
    return {"metadata": meta}


def test_int_or_percent_against_the_expected_count() -> None:
    assert scaled(2, 10, True) == 2
    assert scaled("25%", 10, True) == 3 and scaled("25%", 10, False) == 2
    assert scaled("x%", 10, True) is None and scaled(None, 10, True) is None


def test_desired_healthy_from_min_available_or_max_unavailable() -> None:
    assert desired_healthy({"minAvailable": 2}, 5) == 2
    assert desired_healthy({"minAvailable": "50%"}, 5) == 3  # rounded up, as upstream
    assert desired_healthy({"maxUnavailable": 1}, 5) == 4
    assert desired_healthy({"maxUnavailable": "30%"}, 5) == 3  # 1.5 unavailable → 2
    assert desired_healthy({"maxUnavailable": 9}, 5) == 0
    assert desired_healthy({}, 5) == 1


def test_disrupted_pods_expire_and_go_with_their_pods() -> None:
    now = 1_000_000.0
    current = {"fresh": rfc3339(now - 10), "old": rfc3339(now - DISRUPTED_POD_TIMEOUT - 1),
               "gone": rfc3339(now - 10), "deleting": rfc3339(now - 10), "garbage": 7}
    kept, recheck = DisruptionController._disrupted(
        current, [pod("fresh"), pod("old"), pod("deleting", True), pod("garbage")], now)
    assert list(kept) == ["fresh"]
    assert recheck is not None and abs(recheck - (DISRUPTED_POD_TIMEOUT - 10)) < 1.5
