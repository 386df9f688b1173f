"""apiregistration.k8s.io/v1 APIService: a group-version served here (local, ``spec.service``
nil) or by an extension API server behind a Service, which the aggregator proxies to
(``apiserver.aggregator``) once the availability check has passed."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from atoll.api import errors, validation
from atoll.api.printing import Cells, _age, _age_col, _dict, _list, _name, _name_col, column, printer
from atoll.api.resources.base import Kind
from atoll.api.resourcetype import STATUS, builtin
from atoll.api.strategy import Strategy

GROUP = "apiregistration.k8s.io"
APISERVICES = builtin(GROUP, "v1", "APIService", "apiservices", False,
                      categories=("api-extensions",), subresources=(STATUS,),
                      name_rule="path-segment", generation=False)


def ca_bundle(spec: dict[str, Any]) -> bytes:
    """The decoded ``caBundle`` ([]byte travels as base64); b"" when absent or malformed."""
    value = spec.get("caBundle")
    if not isinstance(value, str) or not value:
        return b""
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        return b""


class APIServiceStrategy(Strategy):
    """upstream's ValidateAPIService, field paths and words included."""

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [errors.required("spec")]
        group = spec.get("group") or ""
        version = spec.get("version") or ""
        causes: list[errors.Cause] = []
        wanted = f"{version}.{group}"
        name = obj["metadata"].get("name")
        if isinstance(name, str) and name and name != wanted:
            causes.append(errors.invalid_value("metadata.name", name,
                                               f'must be `spec.version+"."+spec.group`: '
                                               f'"{wanted}"'))
        if not group and version != "v1":
            causes.append(errors.Cause("FieldValueRequired", "Required value: only v1 may have "
                                       "an empty group and it better be legacy kube",
                                       "spec.group"))
        if group:
            for msg in validation.is_dns1123_subdomain(str(group)):
                causes.append(errors.invalid_value("spec.group", group, msg))
        for msg in validation.is_dns1035_label(str(version)):
            causes.append(errors.invalid_value("spec.version", version, msg))
        gpm, vp = spec.get("groupPriorityMinimum"), spec.get("versionPriority")
        if not isinstance(gpm, int) or isinstance(gpm, bool) or not 0 < gpm <= 20000:
            causes.append(errors.invalid_value("spec.groupPriorityMinimum", gpm or 0,
                                               "must be positive and less than 20000"))
        if not isinstance(vp, int) or isinstance(vp, bool) or not 0 < vp <= 1000:
            causes.append(errors.invalid_value("spec.versionPriority", vp or 0,
                                               "must be positive and less than 1000"))
        service = spec.get("service")
        bundle = ca_bundle(spec)
        insecure = spec.get("insecureSkipTLSVerify") is True
        if service is None:
            if bundle:
                causes.append(errors.invalid_value("spec.caBundle", f"{len(bundle)} bytes",
                                                   "local APIServices may not have a caBundle"))
            if insecure:
                causes.append(errors.invalid_value("spec.insecureSkipTLSVerify", True,
                                                   "local APIServices may not have "
                                                   "insecureSkipTLSVerify"))
            return causes
        if not isinstance(service, dict):
            return causes + [errors.invalid_value("spec.service", service, "must be an object")]
        for f in ("namespace", "name"):
            if not service.get(f):
                causes.append(errors.required(f"spec.service.{f}"))
        port = service.get("port", 443)
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            causes.append(errors.invalid_value("spec.service.port", port,
                                               "must be between 1 and 65535, inclusive"))
        if insecure and bundle:
            causes.append(errors.invalid_value("spec.insecureSkipTLSVerify", True,
                                               "may not be true if caBundle is present"))
        return causes

    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        _default_port(obj)
        obj.pop("status", None)

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        _default_port(new)


def _default_port(obj: dict[str, Any]) -> None:
    service = _dict(obj.get("spec")).get("service")
    if isinstance(service, dict) and service.get("port") is None:
        service["port"] = 443


def available_cell(obj: dict[str, Any]) -> str:
    """``True``, or ``False (Reason)`` as kubectl shows APIServices."""
    for c in _list(_dict(obj.get("status")).get("conditions")):
        if isinstance(c, dict) and c.get("type") == "Available":
            status = str(c.get("status") or "Unknown")
            if status == "True":
                return status
            return f"{status} ({c.get('reason')})" if c.get("reason") else status
    return "Unknown"


@printer(columns=[
    _name_col(),
    column("Service", description="The reference to the service that hosts this API "
                                  "endpoint."),
    column("Available", description="Whether this service is available."),
    _age_col(),
])
def _apiservice_row(obj: dict[str, Any], now: float) -> Cells:
    service = _dict(obj.get("spec")).get("service")
    where = f"{service.get('namespace')}/{service.get('name')}" \
        if isinstance(service, dict) else "Local"
    return [_name(obj), where, available_cell(obj), _age(obj, now)]


APISERVICE = Kind(APISERVICES, APIServiceStrategy(), printer=_apiservice_row)
