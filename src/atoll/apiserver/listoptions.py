"""List and watch query options checked as strictly as kube-apiserver checks them.

Python's ``int()`` takes ``" 7"``, ``"1_0"``, ``"+7"`` and Arabic-Indic digits;
Go's ``strconv.ParseUint(s, 10, 64)`` takes none of them, nor anything past
2^64-1, so neither do we.  resourceVersionMatch combinations follow
``ValidateListOptions`` (a 422 ``ListOptions.meta.k8s.io`` naming the field),
and a watch's ``timeoutSeconds`` is bounded.
"""

from __future__ import annotations

import random
from typing import Mapping

from atoll.api import errors

UINT64_MAX = (1 << 64) - 1
#: kube-apiserver's --min-request-timeout default: watches without a timeout get 1-2x this
MIN_REQUEST_TIMEOUT = 1800
#: the longest watch we keep open, whatever timeoutSeconds asks for (clients re-watch)
MAX_WATCH_TIMEOUT = 2 * MIN_REQUEST_TIMEOUT
INT64_MAX = (1 << 63) - 1


def _syntax(value: str, why: str) -> errors.BadRequest:
    return errors.BadRequest(f'invalid resource version: resourceVersion: Invalid value: '
                             f'"{value}": strconv.ParseUint: parsing "{value}": {why}')


def resource_version(value: str) -> int:
    """A resourceVersion as upstream's versioner parses it; "" is 0."""
    if value == "":
        return 0
    if not (value.isascii() and value.isdigit()):
        raise _syntax(value, "invalid syntax")
    if len(value) > 20 or int(value) > UINT64_MAX:
        raise _syntax(value, "value out of range")
    return int(value)


def _invalid(causes: list[errors.Cause]) -> errors.Invalid:
    return errors.invalid("ListOptions", "", causes, group="meta.k8s.io")


def check_list(query: Mapping[str, str]) -> None:
    """resourceVersion syntax and resourceVersionMatch combinations of a list."""
    rv = query.get("resourceVersion", "")
    resource_version(rv)
    if (_int64(query, "timeoutSeconds") or 0) < 0:
        raise errors.BadRequest("timeoutSeconds must be >= 0")
    match = query.get("resourceVersionMatch", "")
    causes: list[errors.Cause] = []
    if match:
        if not rv:
            causes.append(errors.forbidden_field(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided"))
        if query.get("continue"):
            causes.append(errors.forbidden_field(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided"))
        if match not in ("Exact", "NotOlderThan"):
            causes.append(errors.not_supported("resourceVersionMatch", match,
                                               ["Exact", "NotOlderThan", ""]))
        if match == "Exact" and rv == "0":
            causes.append(errors.forbidden_field(
                "resourceVersionMatch",
                'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'))
    if query.get("sendInitialEvents", "") != "":
        causes.append(errors.forbidden_field("sendInitialEvents",
                                             "sendInitialEvents is forbidden for list"))
    if causes:
        raise _invalid(causes)


def check_watch(query: Mapping[str, str]) -> None:
    """resourceVersion syntax and resourceVersionMatch combinations of a watch."""
    resource_version(query.get("resourceVersion", ""))
    match = query.get("resourceVersionMatch", "")
    has_initial = query.get("sendInitialEvents", "") != ""
    causes: list[errors.Cause] = []
    if has_initial and match != "NotOlderThan":
        causes.append(errors.forbidden_field(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
    if match:
        if not has_initial:
            causes.append(errors.forbidden_field(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is "
                "provided"))
        if match != "NotOlderThan":
            causes.append(errors.not_supported("resourceVersionMatch", match, ["NotOlderThan"]))
        if query.get("continue"):
            causes.append(errors.forbidden_field(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided"))
    if causes:
        raise _invalid(causes)


def _int64(query: Mapping[str, str], name: str) -> int | None:
    """An int64 query parameter as Go's ``strconv.ParseInt`` reads it."""
    text = query.get(name, "")
    if text == "":
        return None
    body = text[1:] if text[:1] in "+-" else text
    if not (body.isascii() and body.isdigit()) or len(body) > 19 or abs(int(text)) > INT64_MAX:
        raise errors.BadRequest(f'invalid integer value for {name}: "{text}"')
    return int(text)


def watch_timeout(query: Mapping[str, str]) -> int:
    """Seconds a watch stays open: timeoutSeconds (>= 0) capped, else 1-2x 30 min at random."""
    seconds = _int64(query, "timeoutSeconds") or 0
    if seconds < 0:
        raise errors.BadRequest("timeoutSeconds must be >= 0")
    if seconds == 0:
        return int(MIN_REQUEST_TIMEOUT * (1 + random.random()))
    return min(seconds, MAX_WATCH_TIMEOUT)
