"""The event recorder's correlation, as client-go's: spam filter, aggregation, de-duplication."""

from __future__ import annotations

import asyncio

from atoll.client import events
from atoll.client.events import EventRecorder
from tests.client.fakes import FakeClient

POD = {"kind": "Pod", "apiVersion": "v1",
       "metadata": {"name": "p", "namespace": "ns", "uid": "u1"}}
OTHER = {"kind": "Pod", "apiVersion": "v1",
         "metadata": {"name": "q", "namespace": "ns", "uid": "u2"}}


def drain(recorder: EventRecorder) -> None:
    async def run() -> None:
        while not recorder.queue.empty():
            await recorder._write(recorder.queue.get_nowait())
    asyncio.run(run())


def created(client: FakeClient) -> list[dict]:
    return [o for path, o in client.objects.items() if "/events/" in path]


def test_repeats_bump_one_event() -> None:
    client = FakeClient()
    rec = EventRecorder(client, "test")
    for _ in range(3):
        rec.record(POD, events.WARNING, "BackOff", "Back-off restarting failed container")
    drain(rec)
    assert len(created(client)) == 1
    assert [v for v, _ in client.calls] == ["POST", "PATCH", "PATCH"]


def test_a_burst_beyond_the_budget_is_dropped_per_object() -> None:
    client = FakeClient()
    rec = EventRecorder(client, "test")
    for i in range(events.SPAM_BURST + 5):
        rec.record(POD, events.NORMAL, "Tick", "same")
    rec.record(OTHER, events.NORMAL, "Tick", "same")  # another object has its own budget
    assert rec.queue.qsize() == events.SPAM_BURST + 1 and rec.filtered == 5


def test_many_different_messages_are_combined() -> None:
    client = FakeClient()
    rec = EventRecorder(client, "test")
    for i in range(events.AGGREGATE_MAX + 5):
        rec.record(POD, events.WARNING, "FailedMount", f"volume v{i} not found")
    drain(rec)
    messages = [e["message"] for e in created(client)]
    assert len(messages) == events.AGGREGATE_MAX + 1  # the first ten, then one combined Event
    assert messages[-1].startswith(events.COMBINED_PREFIX)
    patches = [p for v, p in client.calls if v == "PATCH"]
    assert len(patches) == 4  # the later combined ones bump it
