"""What the pod worker does for ephemeral containers, as pure functions: taking them from the
stored spec, which ones are still to start, which namespaces they join."""

from __future__ import annotations

from types import SimpleNamespace

from atoll.agent.pods import ephemeral


def attempt(pid: int, exited: bool = False) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, exit={"exitCode": 0} if exited else None)


def test_added_ones_are_carried_into_the_admitted_spec() -> None:
    spec = {"containers": [{"name": "app"}]}
    ephemeral.carry(spec, {"containers": [{"name": "changed"}],
                           "ephemeralContainers": [{"name": "d1"}, {"name": "d2"}]})
    assert spec == {"containers": [{"name": "app"}],
                    "ephemeralContainers": [{"name": "d1"}, {"name": "d2"}]}
    ephemeral.carry(spec, {"ephemeralContainers": [{"name": "d1", "image": "x"}]})
    assert spec["ephemeralContainers"] == [{"name": "d1"}, {"name": "d2"}]


def test_each_starts_once_and_joins_its_target() -> None:
    spec = {"containers": [{"name": "app"}, {"name": "side"}],
            "ephemeralContainers": [{"name": "d1", "targetContainerName": "side"},
                                    {"name": "d2"}]}
    attempts = {"app": [attempt(10)], "side": [attempt(20)], "d1": [attempt(30, True)]}
    assert [c["name"] for c in ephemeral.pending(spec, attempts)] == ["d2"]  # d1 ran: final
    d1, d2 = spec["ephemeralContainers"]
    assert ephemeral.namespaces(spec, d1, attempts) == {"pid": "/proc/20/ns/pid",
                                                        "ipc": "/proc/20/ns/ipc"}
    assert ephemeral.namespaces(spec, d2, attempts) == {"ipc": "/proc/10/ns/ipc"}
    assert ephemeral.namespaces(spec, {"name": "app"}, attempts) == {}  # not ephemeral
    attempts["side"] = [attempt(20, True)]
    assert ephemeral.namespaces(spec, d1, attempts) == {}  # the target is not running
