"""The exception tree shared by the API server, controllers and the client.

Every failure a client can see is an ``ApiError`` carrying what a Kubernetes
``Status`` needs (code, reason, message, details).  Only ``apiserver.errors``
renders them; the client parses a ``Status`` back into the same classes, so
callers catch ``Conflict`` rather than comparing status codes::

    ApiError(code, reason, message, details)
     ├── BadRequest            400
     ├── Unauthorized          401
     ├── Forbidden             403
     ├── NotFound              404
     ├── MethodNotAllowed      405
     ├── NotAcceptable         406
     ├── AlreadyExists         409
     ├── Conflict              409
     ├── Expired               410
     ├── RequestEntityTooLarge 413
     ├── UnsupportedMediaType  415
     ├── Invalid               422  (details.causes carry field paths)
     ├── TooManyRequests       429
     ├── InternalError         500
     ├── ServiceUnavailable    503
     └── Timeout               504
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cause:
    """One field-level reason for an Invalid (or other) error."""

    reason: str
    message: str
    field: str = ""

    def to_dict(self) -> dict[str, str]:
        d = {"reason": self.reason, "message": self.message}
        if self.field:
            d["field"] = self.field
        return d


class ApiError(Exception):
    code = 500
    reason = "InternalError"
    #: upstream's constructor for this error always fills ``details`` (even when empty):
    #: clients such as kubectl dereference it
    always_details = False

    def __init__(
        self,
        message: str,
        *,
        name: str = "",
        group: str = "",
        kind: str = "",
        causes: list[Cause] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.group = group
        self.kind = kind
        self.causes = list(causes or [])
        self.retry_after = retry_after

    def to_status(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [c.to_dict() for c in self.causes]
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if details or self.always_details:
            status["details"] = details
        status["code"] = self.code  # upstream's field order: details before code
        return status


class BadRequest(ApiError):
    code, reason = 400, "BadRequest"


class Unauthorized(ApiError):
    code, reason = 401, "Unauthorized"


class Forbidden(ApiError):
    code, reason = 403, "Forbidden"
    always_details = True


class NotFound(ApiError):
    code, reason = 404, "NotFound"
    always_details = True


class MethodNotAllowed(ApiError):
    code, reason = 405, "MethodNotAllowed"
    always_details = True


class NotAcceptable(ApiError):
    code, reason = 406, "NotAcceptable"


class AlreadyExists(ApiError):
    code, reason = 409, "AlreadyExists"
    always_details = True


class Conflict(ApiError):
    code, reason = 409, "Conflict"
    always_details = True


class Expired(ApiError):
    code, reason = 410, "Expired"


class RequestEntityTooLarge(ApiError):
    code, reason = 413, "RequestEntityTooLarge"


class UnsupportedMediaType(ApiError):
    code, reason = 415, "UnsupportedMediaType"


class Invalid(ApiError):
    code, reason = 422, "Invalid"
    always_details = True


class TooManyRequests(ApiError):
    code, reason = 429, "TooManyRequests"


class InternalError(ApiError):
    code, reason = 500, "InternalError"


class ServiceUnavailable(ApiError):
    code, reason = 503, "ServiceUnavailable"


class Timeout(ApiError):
    code, reason = 504, "Timeout"


_BY_REASON: dict[str, type[ApiError]] = {
    cls.reason: cls
    for cls in (
        BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, NotAcceptable,
        AlreadyExists, Conflict, Expired, RequestEntityTooLarge, UnsupportedMediaType,
        Invalid, TooManyRequests, InternalError, ServiceUnavailable, Timeout,
    )
}
_BY_CODE: dict[int, type[ApiError]] = {}
for _cls in _BY_REASON.values():
    _BY_CODE.setdefault(_cls.code, _cls)


def from_status(status: dict[str, Any], http_code: int | None = None) -> ApiError:
    """Turn a ``Status`` body received from a server back into an ``ApiError``."""
    reason = status.get("reason") or ""
    code = int(status.get("code") or http_code or 500)
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code) or ApiError
    details = status.get("details") or {}
    causes = [
        Cause(c.get("reason", ""), c.get("message", ""), c.get("field", ""))
        for c in details.get("causes") or []
    ]
    err = cls(
        status.get("message") or reason or f"HTTP {code}",
        name=details.get("name", ""),
        group=details.get("group", ""),
        kind=details.get("kind", ""),
        causes=causes,
        retry_after=details.get("retryAfterSeconds"),
    )
    if cls is ApiError:
        err.code = code
    return err


def invalid(kind: str, name: str, causes: list[Cause], group: str = "") -> Invalid:
    """Build an Invalid error with kube's message shape: ``Kind "name" is invalid: f: msg, ...``."""
    qualified = f"{kind}.{group}" if group else kind
    parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    if len(parts) == 1:
        summary = parts[0]
    else:
        summary = "[" + ", ".join(parts) + "]"
    return Invalid(f'{qualified} "{name}" is invalid: {summary}', name=name, group=group,
                   kind=kind, causes=causes)


def required(field: str) -> Cause:
    return Cause("FieldValueRequired", "Required value", field)


def invalid_value(field: str, value: Any, detail: str) -> Cause:
    return Cause("FieldValueInvalid", f"Invalid value: {_quote(value)}: {detail}", field)


def duplicate(field: str, value: Any) -> Cause:
    return Cause("FieldValueDuplicate", f"Duplicate value: {_quote(value)}", field)


def not_supported(field: str, value: Any, allowed: list[str]) -> Cause:
    choices = ", ".join(f'"{a}"' for a in allowed)
    return Cause("FieldValueNotSupported",
                 f"Unsupported value: {_quote(value)}: supported values: {choices}", field)


def forbidden_field(field: str, detail: str) -> Cause:
    return Cause("FieldValueForbidden", f"Forbidden: {detail}", field)


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
