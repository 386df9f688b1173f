"""admissionregistration.k8s.io/v1: validating and mutating admission webhook configurations.

Defaults and validation follow upstream's (``SetDefaults_*`` and
``ValidateValidatingWebhookConfiguration`` / ``ValidateMutatingWebhookConfiguration``), with
the same field paths, so a client's mistakes read as on kube-apiserver.  The server calls
the webhooks these declare (``apiserver.admission.webhooks``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from atoll.api import errors, validation
from atoll.api.labelselector import validate_label_selector
from atoll.api.printing import Cells, _age, _age_col, _list, _name, _name_col, column, printer
from atoll.api.resources.base import Kind
from atoll.api.resourcetype import builtin
from atoll.api.strategy import Strategy

GROUP = "admissionregistration.k8s.io"
VALIDATINGWEBHOOKCONFIGURATIONS = builtin(GROUP, "v1", "ValidatingWebhookConfiguration",
                                          "validatingwebhookconfigurations", False,
                                          categories=("api-extensions",), generation=False)
MUTATINGWEBHOOKCONFIGURATIONS = builtin(GROUP, "v1", "MutatingWebhookConfiguration",
                                        "mutatingwebhookconfigurations", False,
                                        categories=("api-extensions",), generation=False)

OPERATIONS = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"]
SCOPES = ["*", "Cluster", "Namespaced"]
FAILURE_POLICIES = ["Fail", "Ignore"]
MATCH_POLICIES = ["Equivalent", "Exact"]
SIDE_EFFECTS = ["None", "NoneOnDryRun"]
REINVOCATION_POLICIES = ["IfNeeded", "Never"]
REVIEW_VERSIONS = ["v1", "v1beta1"]


def set_defaults(obj: dict[str, Any], mutating: bool) -> None:
    """upstream's v1 defaults: Fail, Equivalent, 10 s, empty selectors, scope ``*``, port 443."""
    for hook in _list(obj.get("webhooks")):
        if not isinstance(hook, dict):
            continue
        hook.setdefault("failurePolicy", "Fail")
        hook.setdefault("matchPolicy", "Equivalent")
        hook.setdefault("timeoutSeconds", 10)
        if hook.get("namespaceSelector") is None:
            hook["namespaceSelector"] = {}
        if hook.get("objectSelector") is None:
            hook["objectSelector"] = {}
        if mutating:
            hook.setdefault("reinvocationPolicy", "Never")
        for rule in _list(hook.get("rules")):
            if isinstance(rule, dict) and rule.get("scope") is None:
                rule["scope"] = "*"
        service = (hook.get("clientConfig") or {}).get("service")
        if isinstance(service, dict) and service.get("port") is None:
            service["port"] = 443


def _validate_url(url: str, path: str) -> list[errors.Cause]:
    """ValidateWebhookURL (forceHttps): https, a host, no user info, fragment or query."""
    try:
        u = urlsplit(url)
    except ValueError as e:
        return [errors.invalid_value(path, url, f"url must be a valid URL: {e}")]
    causes: list[errors.Cause] = []
    if u.scheme != "https":
        causes.append(errors.not_supported(path, u.scheme, ["https"]))
    if not u.hostname:
        causes.append(errors.invalid_value(path, url, "host must be specified"))
    if u.username is not None or u.password is not None:
        causes.append(errors.invalid_value(path, url, "user information is not permitted in "
                                                      "the URL"))
    if u.fragment:
        causes.append(errors.invalid_value(path, url, "fragments are not permitted in the URL"))
    if u.query:
        causes.append(errors.invalid_value(path, url, "query parameters are not permitted in "
                                                      "the URL"))
    return causes


def _validate_service(service: Any, path: str) -> list[errors.Cause]:
    if not isinstance(service, dict):
        return [errors.invalid_value(path, service, "must be an object")]
    causes: list[errors.Cause] = []
    for f in ("namespace", "name"):
        value = service.get(f)
        if not value:
            causes.append(errors.required(f"{path}.{f}"))
        elif not isinstance(value, str) or validation.is_dns1123_label(value):
            causes.append(errors.invalid_value(f"{path}.{f}", value,
                                               "must be a valid DNS label"))
    svc_path = service.get("path")
    if svc_path is not None and svc_path != "":
        if not isinstance(svc_path, str) or not svc_path.startswith("/"):
            causes.append(errors.invalid_value(f"{path}.path", svc_path,
                                               "must start with a '/'"))
        elif "//" in svc_path:
            causes.append(errors.invalid_value(f"{path}.path", svc_path,
                                               "segment[1] may not be empty"))
    port = service.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                             or not 1 <= port <= 65535):
        causes.append(errors.invalid_value(f"{path}.port", port,
                                           "port is not valid: must be between 1 and 65535, "
                                           "inclusive"))
    return causes


def _validate_client_config(cc: Any, path: str) -> list[errors.Cause]:
    if not isinstance(cc, dict):
        return [errors.required(path)]
    url, service = cc.get("url"), cc.get("service")
    if (url is None) == (service is None):
        return [errors.Cause("FieldValueRequired",
                             "Required value: exactly one of url or service is required", path)]
    if url is not None:
        if not isinstance(url, str):
            return [errors.invalid_value(f"{path}.url", url, "must be a string")]
        return _validate_url(url, f"{path}.url")
    return _validate_service(service, f"{path}.service")


def _validate_strings(values: Any, path: str, what: str,
                      allow_empty: bool = False) -> list[errors.Cause]:
    if not isinstance(values, list) or not values:
        return [errors.required(path)]
    causes: list[errors.Cause] = []
    for i, v in enumerate(values):
        if not isinstance(v, str) or (not v and not allow_empty):
            causes.append(errors.required(f"{path}[{i}]"))
    if "*" in values and len(values) > 1:
        causes.append(errors.invalid_value(path, values, f"if '*' is present, must not specify "
                                                         f"other {what}"))
    return causes


def _validate_resources(values: Any, path: str) -> list[errors.Cause]:
    """validateResources: '*', 'x/*', '*/y' and plain names, no duplicates, no overlaps."""
    if not isinstance(values, list) or not values:
        return [errors.required(path)]
    causes: list[errors.Cause] = []
    seen: set[str] = set()
    plain_subs: dict[str, set[str]] = {}
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v:
            causes.append(errors.required(f"{path}[{i}]"))
            continue
        if v in seen:
            causes.append(errors.Cause("FieldValueDuplicate", f'Duplicate value: "{v}"',
                                       f"{path}[{i}]"))
        seen.add(v)
        res, _, sub = v.partition("/")
        if not res:
            causes.append(errors.invalid_value(f"{path}[{i}]", v, "must not be empty"))
        if "/" in v and not sub:
            causes.append(errors.invalid_value(f"{path}[{i}]", v, "must not be empty"))
        plain_subs.setdefault(res, set()).add(sub)
    if "*" in seen and any(v for v in seen if "/" not in v and v != "*"):
        causes.append(errors.invalid_value(path, values, "if '*' is present, must not specify "
                                                         "other resources without subresources"))
    if "*/*" in seen and len([v for v in seen if "/" in v]) > 1:
        causes.append(errors.invalid_value(path, values, "if '*/*' is present, must not specify "
                                                         "other resources"))
    return causes


def _validate_rule(rule: Any, path: str) -> list[errors.Cause]:
    if not isinstance(rule, dict):
        return [errors.invalid_value(path, rule, "must be an object")]
    causes = _validate_strings(rule.get("operations"), f"{path}.operations", "operations")
    for i, op in enumerate(_list(rule.get("operations"))):
        if isinstance(op, str) and op and op not in OPERATIONS:
            causes.append(errors.not_supported(f"{path}.operations[{i}]", op, OPERATIONS))
    causes += _validate_strings(rule.get("apiGroups"), f"{path}.apiGroups", "groups",
                                allow_empty=True)
    causes += _validate_strings(rule.get("apiVersions"), f"{path}.apiVersions", "versions")
    causes += _validate_resources(rule.get("resources"), f"{path}.resources")
    scope = rule.get("scope")
    if scope is not None and scope not in SCOPES:
        causes.append(errors.not_supported(f"{path}.scope", scope, SCOPES))
    return causes


def _validate_webhook(hook: Any, path: str, mutating: bool) -> list[errors.Cause]:
    if not isinstance(hook, dict):
        return [errors.invalid_value(path, hook, "must be an object")]
    causes: list[errors.Cause] = []
    name = hook.get("name")
    if not name:
        causes.append(errors.required(f"{path}.name"))
    elif not isinstance(name, str) or validation.is_dns1123_subdomain(name):
        causes.append(errors.invalid_value(f"{path}.name", name, "a lowercase RFC 1123 "
                                           "subdomain must consist of lower case alphanumeric "
                                           "characters, '-' or '.'"))
    elif name.count(".") < 2:
        causes.append(errors.invalid_value(f"{path}.name", name, "should be a domain with at "
                                                                 "least three segments "
                                                                 "separated by dots"))
    for i, rule in enumerate(_list(hook.get("rules"))):
        causes += _validate_rule(rule, f"{path}.rules[{i}]")
    policy = hook.get("failurePolicy")
    if policy is not None and policy not in FAILURE_POLICIES:
        causes.append(errors.not_supported(f"{path}.failurePolicy", policy, FAILURE_POLICIES))
    match = hook.get("matchPolicy")
    if match is not None and match not in MATCH_POLICIES:
        causes.append(errors.not_supported(f"{path}.matchPolicy", match, MATCH_POLICIES))
    side = hook.get("sideEffects")
    if side is None:
        causes.append(errors.Cause("FieldValueRequired", "Required value: must specify one of "
                                   + ", ".join(SIDE_EFFECTS), f"{path}.sideEffects"))
    elif side not in SIDE_EFFECTS:
        causes.append(errors.not_supported(f"{path}.sideEffects", side, SIDE_EFFECTS))
    versions = hook.get("admissionReviewVersions")
    vpath = f"{path}.admissionReviewVersions"
    if not isinstance(versions, list) or not versions:
        causes.append(errors.Cause("FieldValueRequired", "Required value: must specify one of "
                                   + ", ".join(REVIEW_VERSIONS), vpath))
    else:
        seen: set[str] = set()
        for i, v in enumerate(versions):
            if not isinstance(v, str) or validation.is_dns1035_label(v):
                causes.append(errors.invalid_value(f"{vpath}[{i}]", v,
                                                   "must be a valid DNS-1035 label"))
            elif v in seen:
                causes.append(errors.invalid_value(f"{vpath}[{i}]", v, "duplicate version"))
            seen.add(str(v))
        if not seen & set(REVIEW_VERSIONS):
            causes.append(errors.invalid_value(vpath, versions, "must include at least one of "
                                               + ", ".join(REVIEW_VERSIONS)))
    timeout = hook.get("timeoutSeconds")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)
                                or not 1 <= timeout <= 30):
        causes.append(errors.invalid_value(f"{path}.timeoutSeconds", timeout, "the timeout "
                                           "value must be between 1 and 30 seconds"))
    causes += validate_label_selector(hook.get("namespaceSelector"), f"{path}.namespaceSelector")
    causes += validate_label_selector(hook.get("objectSelector"), f"{path}.objectSelector")
    causes += _validate_client_config(hook.get("clientConfig"), f"{path}.clientConfig")
    if mutating:
        reinvoke = hook.get("reinvocationPolicy")
        if reinvoke is not None and reinvoke not in REINVOCATION_POLICIES:
            causes.append(errors.not_supported(f"{path}.reinvocationPolicy", reinvoke,
                                               REINVOCATION_POLICIES))
    return causes


class WebhookConfigurationStrategy(Strategy):
    """Both configuration kinds: defaults on every write, then upstream's validation."""

    def __init__(self, mutating: bool) -> None:
        self.mutating = mutating

    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        set_defaults(obj, self.mutating)

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        set_defaults(new, self.mutating)

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        hooks = obj.get("webhooks")
        if hooks is None:
            return []
        if not isinstance(hooks, list):
            return [errors.invalid_value("webhooks", hooks, "must be a list")]
        causes: list[errors.Cause] = []
        names: set[str] = set()
        for i, hook in enumerate(hooks):
            name = hook.get("name") if isinstance(hook, dict) else None
            if isinstance(name, str) and name:
                if name in names:
                    causes.append(errors.Cause("FieldValueDuplicate", f'Duplicate value: "{name}"',
                                               f"webhooks[{i}].name"))
                names.add(name)
            causes += _validate_webhook(hook, f"webhooks[{i}]", self.mutating)
        return causes


@printer(columns=[
    _name_col(),
    column("Webhooks", "integer", "Webhooks indicates the number of webhooks in the "
                                  "configuration."),
    _age_col(),
])
def _webhook_configuration_row(obj: dict[str, Any], now: float) -> Cells:
    return [_name(obj), len(_list(obj.get("webhooks"))), _age(obj, now)]


VALIDATINGWEBHOOKCONFIGURATION = Kind(VALIDATINGWEBHOOKCONFIGURATIONS,
                                      WebhookConfigurationStrategy(False),
                                      printer=_webhook_configuration_row)
MUTATINGWEBHOOKCONFIGURATION = Kind(MUTATINGWEBHOOKCONFIGURATIONS,
                                    WebhookConfigurationStrategy(True),
                                    printer=_webhook_configuration_row)
