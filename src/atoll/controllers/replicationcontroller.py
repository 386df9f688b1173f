"""ReplicationControllers: the ReplicaSet controller's logic over core/v1's older kind.

Everything (claiming and adopting pods, batched creates, upstream's deletion order,
status counts, SuccessfulCreate/SuccessfulDelete events) is ``ReplicaSetController``'s;
only the resource and the selector differ: an RC selects with a plain label map.
"""

from __future__ import annotations

from typing import Any

from atoll.api import selectors
from atoll.controllers.replicaset import ReplicaSetController


class ReplicationControllerController(ReplicaSetController):
    name = "replicationcontroller"
    events_component = "replication-controller"
    owner_kind = "ReplicationController"
    resource = ("", "v1", "replicationcontrollers")

    @staticmethod
    def selector_of(rs: dict[str, Any]) -> selectors.LabelSelector:
        labels = (rs.get("spec") or {}).get("selector")
        if not isinstance(labels, dict) or not labels:
            return selectors.label_selector_from_dict(None)  # matches nothing
        return selectors.label_selector_from_dict({"matchLabels": labels})
