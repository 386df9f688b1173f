"""When certificate requests fall due for deletion."""

from atoll.api.timestamps import parse_rfc3339 as _time
from atoll.controllers.csrcleaner import DECIDED_TTL, PENDING_TTL, due


def csr(status: dict) -> dict:
    return {"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": status}


def test_due_times() -> None:
    created = _time("2026-01-01T00:00:00Z")
    assert due(csr({})) == created + PENDING_TTL
    approved = {"conditions": [{"type": "Approved", "lastUpdateTime": "2026-01-01T00:10:00Z"}]}
    assert due(csr(approved)) == created + PENDING_TTL  # approved, not issued yet
    issued = dict(approved, certificate="Y2VydA==")
    assert due(csr(issued)) == created + 600 + DECIDED_TTL
    denied = {"conditions": [{"type": "Denied", "lastUpdateTime": "2026-01-01T00:05:00Z"}]}
    assert due(csr(denied)) == created + 300 + DECIDED_TTL
