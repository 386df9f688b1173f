"""Events, core/v1 and events.k8s.io/v1: one printer for both (upstream converts the new
API's events to core field names to print them), and each API's selectable fields.
"""

from __future__ import annotations

from typing import Any

from atoll.api.printing import (NAME_DESC, Cells, _dict, _get, _int, _name, _str, _wide, column,
                                printer, since)
from atoll.api.resources.base import Kind, field_str
from atoll.api.resourcetype import builtin
from atoll.api.timestamps import parse_rfc3339

CORE_EVENTS = builtin("", "v1", "Event", "events", True, short_names=("ev",), generation=False)
EVENTS = builtin("events.k8s.io", "v1", "Event", "events", True, short_names=("ev",),
                 generation=False)


@printer(columns=[
    column("Last Seen", description="The time at which the most recent occurrence of this event "
                                    "was recorded."),
    column("Type", description="Type of this event (Normal, Warning), new types could be added in "
                               "the future"),
    column("Reason", description="This should be a short, machine understandable string that gives "
                                 "the reason for the transition into the object's current status."),
    column("Object", description="The object that this event is about."),
    _wide("Subobject", "If referring to a piece of an object instead of an entire object, this "
                       "string should contain a valid JSON/Go field access statement."),
    _wide("Source", "The component reporting this event. Should be a short machine understandable "
                    "string."),
    column("Message", description="A human-readable description of the status of this operation."),
    _wide("First Seen", "The time at which the event was first recorded. (Time of server receipt "
                        "is in TypeMeta.)"),
    _wide("Count", "The number of times this event has occurred."),
    column("Name", description=NAME_DESC, fmt="name", priority=1),
])
def _event(obj: dict[str, Any], now: float) -> Cells:
    ev = _as_core_event(obj)
    first = since(ev.get("firstTimestamp"), now) if parse_rfc3339(ev.get("firstTimestamp")) \
        else since(ev.get("eventTime"), now)
    last = since(ev.get("lastTimestamp"), now) if parse_rfc3339(ev.get("lastTimestamp")) else first
    count = _int(ev.get("count"))
    series = ev.get("series")
    if isinstance(series, dict):
        last = since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events of the new API carry no count
    involved = _dict(ev.get("involvedObject"))
    kind = _str(involved.get("kind")).lower()
    target = f"{kind}/{involved['name']}" if _str(involved.get("name")) else kind
    source = _dict(ev.get("source"))
    component = _str(source.get("component")) or _str(ev.get("reportingController"))
    host = _str(source.get("host")) or _str(ev.get("reportingInstance"))
    return [last, _str(ev.get("type")), _str(ev.get("reason")), target,
            _str(involved.get("fieldPath")), f"{component}, {host}" if host else component,
            _str(ev.get("message")).strip(), first, count, _name(obj)]


def _as_core_event(obj: dict[str, Any]) -> dict[str, Any]:
    """Map an events.k8s.io/v1 Event onto core/v1 field names (upstream converts the same way)."""
    if "regarding" not in obj and "note" not in obj and "deprecatedCount" not in obj:
        return obj
    return {
        "involvedObject": obj.get("regarding"), "message": obj.get("note"),
        "firstTimestamp": obj.get("deprecatedFirstTimestamp"),
        "lastTimestamp": obj.get("deprecatedLastTimestamp"),
        "count": obj.get("deprecatedCount"), "source": obj.get("deprecatedSource"),
        "eventTime": obj.get("eventTime"), "series": obj.get("series"),
        "reportingController": obj.get("reportingController"),
        "reportingInstance": obj.get("reportingInstance"),
        "type": obj.get("type"), "reason": obj.get("reason"),
    }


# -- selectable fields ---------------------------------------------------------------------------
_OBJECT_REF_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion",
                      "fieldPath")


def _core_event_fields(obj: dict[str, Any]) -> dict[str, str]:
    out = {f"involvedObject.{f}": field_str(_get(obj, "involvedObject", f)) for f in _OBJECT_REF_FIELDS}
    reporting = field_str(obj.get("reportingComponent")) or field_str(obj.get("reportingController"))
    out.update({
        "reason": field_str(obj.get("reason")),
        "reportingComponent": reporting,
        "source": field_str(_get(obj, "source", "component")) or reporting,
        "type": field_str(obj.get("type")),
    })
    return out


def _events_v1_fields(obj: dict[str, Any]) -> dict[str, str]:
    out = {f"regarding.{f}": field_str(_get(obj, "regarding", f)) for f in _OBJECT_REF_FIELDS}
    out.update({
        "reason": field_str(obj.get("reason")),
        "type": field_str(obj.get("type")),
        "reportingController": field_str(obj.get("reportingController")),
    })
    return out


CORE_EVENT = Kind(CORE_EVENTS, printer=_event, fields=_core_event_fields)
EVENT = Kind(EVENTS, printer=_event, fields=_events_v1_fields)
