"""From the metrics' proposal to the replica count an HPA sets: upstream's normalisation, pure.

Per HPA the controller remembers recent proposals (for stabilisation windows) and recent
scale changes (for rate policies); this module holds that memory (``History``) and the two
ways upstream normalises: without ``spec.behavior`` (a scale-down stabilisation window and
the old "at most double, at least 4" scale-up cap), and with it (windows in both directions,
Pods/Percent policies per period chosen by ``selectPolicy``).  Each returns the replicas and
the AbleToScale / ScalingLimited conditions (status, reason, message) to record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: upstream's --horizontal-pod-autoscaler-downscale-stabilization
DOWNSCALE_STABILIZATION = 300.0
SCALE_UP_LIMIT_FACTOR, SCALE_UP_LIMIT_MINIMUM = 2.0, 4.0

Condition = tuple[str, str, str, str]  # type, status, reason, message


@dataclass
class History:
    """What one HPA's normalisation remembers between reconciles."""

    recommendations: list[tuple[int, float]] = field(default_factory=list)  # (replicas, at)
    scale_ups: list[tuple[int, float]] = field(default_factory=list)        # (change, at)
    scale_downs: list[tuple[int, float]] = field(default_factory=list)

    def record_initial(self, current: int, now: float) -> None:
        if not self.recommendations:
            self.recommendations.append((current, now))

    def _remember(self, replicas: int, now: float, older_than: float) -> None:
        """Replace one sample older than every window, else append (upstream's reuse)."""
        for i, (_, at) in enumerate(self.recommendations):
            if at < older_than:
                self.recommendations[i] = (replicas, now)
                return
        self.recommendations.append((replicas, now))

    def record_scale(self, behavior: dict[str, Any] | None, before: int, after: int,
                     now: float) -> None:
        """Remember a change (only HPAs with a behaviour use them: their policies' periods)."""
        if behavior is None or before == after:
            return
        up = after > before
        rules = (behavior.get("scaleUp") if up else behavior.get("scaleDown")) or {}
        longest = max((int(p.get("periodSeconds") or 0) for p in rules.get("policies") or []),
                      default=0)
        events = self.scale_ups if up else self.scale_downs
        events[:] = [(c, at) for c, at in events if at >= now - longest]
        events.append((abs(after - before), now))


# -- without spec.behavior -----------------------------------------------------------------------
def normalize(history: History, current: int, proposed: int, low: int, high: int, now: float,
              *, downscale_window: float = DOWNSCALE_STABILIZATION
              ) -> tuple[int, list[Condition]]:
    conditions: list[Condition] = []
    cutoff = now - downscale_window
    stabilized = proposed
    for replicas, at in history.recommendations:
        if at >= cutoff and replicas > stabilized:
            stabilized = replicas
    history._remember(proposed, now, cutoff)
    if stabilized != proposed:
        conditions.append(("AbleToScale", "True", "ScaleDownStabilized",
                           "recent recommendations were higher than current one, applying the "
                           "highest recent recommendation"))
    else:
        conditions.append(("AbleToScale", "True", "ReadyForNewScale",
                           "recommended size matches current size"))
    desired, reason, message = _clamp(current, stabilized, low, high)
    conditions.append(("ScalingLimited", "False" if desired == stabilized else "True",
                       reason, message))
    return desired, conditions


def _clamp(current: int, desired: int, low: int, high: int) -> tuple[int, str, str]:
    scale_up_limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    if high > scale_up_limit:
        most, reason = scale_up_limit, "ScaleUpLimit"
        message = "the desired replica count is increasing faster than the maximum scale rate"
    else:
        most, reason = high, "TooManyReplicas"
        message = "the desired replica count is more than the maximum replica count"
    if desired < low:
        return low, "TooFewReplicas", "the desired replica count is less than the minimum " \
                                      "replica count"
    if desired > most:
        return most, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


# -- with spec.behavior ------------------------------------------------------------------------
def normalize_with_behavior(history: History, behavior: dict[str, Any], current: int,
                            proposed: int, low: int, high: int, now: float, *,
                            downscale_window: float = DOWNSCALE_STABILIZATION
                            ) -> tuple[int, list[Condition]]:
    up = behavior.get("scaleUp") or {}
    down = behavior.get("scaleDown") or {}
    up_window = float(up.get("stabilizationWindowSeconds") or 0)
    down_window = down.get("stabilizationWindowSeconds")
    down_window = downscale_window if down_window is None else float(down_window)
    conditions: list[Condition] = []

    up_cut, down_cut = now - up_window, now - down_window
    up_rec = down_rec = proposed
    for replicas, at in history.recommendations:
        if at > up_cut:
            up_rec = min(up_rec, replicas)
        if at > down_cut:
            down_rec = max(down_rec, replicas)
    stabilized = min(max(current, up_rec), down_rec)
    history._remember(proposed, now, min(up_cut, down_cut))
    if stabilized != proposed:
        if proposed >= current:
            conditions.append(("AbleToScale", "True", "ScaleUpStabilized",
                               "recent recommendations were lower than current one, applying "
                               "the lowest recent recommendation"))
        else:
            conditions.append(("AbleToScale", "True", "ScaleDownStabilized",
                               "recent recommendations were higher than current one, applying "
                               "the highest recent recommendation"))
    else:
        conditions.append(("AbleToScale", "True", "ReadyForNewScale",
                           "recommended size matches current size"))

    desired, reason, message = stabilized, "DesiredWithinRange", \
        "the desired count is within the acceptable range"
    if stabilized > current:
        limit = max(scale_up_limit(current, history, up, now), current)
        if high > limit:
            most, r, m = limit, "ScaleUpLimit", \
                "the desired replica count is increasing faster than the maximum scale rate"
        else:
            most, r, m = high, "TooManyReplicas", \
                "the desired replica count is more than the maximum replica count"
        if stabilized > most:
            desired, reason, message = most, r, m
    elif stabilized < current:
        limit = min(scale_down_limit(current, history, down, now), current)
        if low < limit:
            least, r, m = limit, "ScaleDownLimit", \
                "the desired replica count is decreasing faster than the maximum scale rate"
        else:
            least, r, m = low, "TooFewReplicas", \
                "the desired replica count is less than the minimum replica count"
        if stabilized < least:
            desired, reason, message = least, r, m
    conditions.append(("ScalingLimited", "False" if desired == stabilized else "True",
                       reason, message))
    return desired, conditions


def _changed_within(period: float, events: list[tuple[int, float]], now: float) -> int:
    return sum(change for change, at in events if at > now - period)


def _period_start(current: int, history: History, period: float, now: float) -> int:
    return current - _changed_within(period, history.scale_ups, now) + \
        _changed_within(period, history.scale_downs, now)


def scale_up_limit(current: int, history: History, rules: dict[str, Any], now: float) -> int:
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    proposals = []
    for p in rules.get("policies") or []:
        start = _period_start(current, history, float(p.get("periodSeconds") or 0), now)
        value = int(p.get("value") or 0)
        if p.get("type") == "Pods":
            proposals.append(start + value)
        elif p.get("type") == "Percent":
            proposals.append(math.ceil(start * (1 + value / 100)))
    if not proposals:
        return current
    return min(proposals) if select == "Min" else max(proposals)


def scale_down_limit(current: int, history: History, rules: dict[str, Any], now: float) -> int:
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    proposals = []
    for p in rules.get("policies") or []:
        start = _period_start(current, history, float(p.get("periodSeconds") or 0), now)
        value = int(p.get("value") or 0)
        if p.get("type") == "Pods":
            proposals.append(start - value)
        elif p.get("type") == "Percent":
            proposals.append(int(start * (1 - value / 100)))
    if not proposals:
        return current
    # the smallest change ("Min") leaves the most replicas
    return max(proposals) if select == "Min" else min(proposals)
