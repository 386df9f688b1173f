"""Name and ObjectMeta validation with apimachinery's rules and messages.

Clients (and kubectl's users) read these messages, so they follow upstream's
wording exactly, including its quirks (the double space in ``'MyName',  or``).
Every check returns a list of messages or ``Cause`` objects instead of raising,
so callers can collect all problems of an object into one ``Invalid`` error.
Inputs come straight from request bodies: wrong types become causes, never
exceptions.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from atoll.api import errors
from atoll.api.errors import Cause

# -- formats and messages (k8s.io/apimachinery/pkg/util/validation) ----------------------------
_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
              "with an alphanumeric character")
_LABEL_VALUE_FMT = f"({_QNAME_FMT})?"
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, "
                    "'-', '_' or '.', and must start and end with an alphanumeric character")
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                      "characters or '-', and must start and end with an alphanumeric character")
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + r"(\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                          "characters, '-' or '.', and must start and end with an alphanumeric "
                          "character")
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                      "start with an alphabetic character, and end with an alphanumeric character")

_QNAME_RE = re.compile(_QNAME_FMT)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)
_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL_RE = re.compile(_DNS1035_LABEL_FMT)

QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
DNS1035_LABEL_MAX = 63
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024

#: finalizers kube itself uses; every other finalizer name needs a ``domain/`` prefix
STANDARD_FINALIZERS = frozenset({"kubernetes", "orphan", "foregroundDeletion"})
FIELD_IMMUTABLE = "field is immutable"


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """apimachinery's RegexError, byte for byte (its examples end in ``', `` before `` or ``)."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    out = msg + " (e.g. "
    for i, example in enumerate(examples):
        if i > 0:
            out += " or "
        out += f"'{example}', "
    return out + f"regex used for validation is '{fmt}')"


def max_len_error(n: int) -> str:
    return f"must be no more than {n} characters"


def empty_error() -> str:
    return "must be non-empty"


def _blen(s: str) -> int:
    """Length in bytes, as Go's ``len`` counts it."""
    return len(s.encode("utf-8", "surrogatepass"))


def _full(regex: re.Pattern[str], s: str) -> bool:
    return regex.fullmatch(s) is not None


# -- name checks: each returns a list of messages, empty when valid ------------------------------
def is_dns1123_label(value: str) -> list[str]:
    errs: list[str] = []
    if _blen(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _full(_DNS1123_LABEL_RE, value):
        if _full(_DNS1123_SUBDOMAIN_RE, value):
            errs.append("must not contain dots")
        else:
            errs.append(regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs: list[str] = []
    if _blen(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _full(_DNS1123_SUBDOMAIN_RE, value):
        errs.append(regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs: list[str] = []
    if _blen(value) > DNS1035_LABEL_MAX:
        errs.append(max_len_error(DNS1035_LABEL_MAX))
    if not _full(_DNS1035_LABEL_RE, value):
        errs.append(regex_error(_DNS1035_LABEL_MSG, _DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    """Label keys, annotation keys, finalizers: ``[prefix/]name``."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part " + empty_error())
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name " + regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part " + empty_error())
    elif _blen(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX))
    if not _full(_QNAME_RE, name):
        errs.append("name part " + regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc"))
    return errs


def is_valid_label_value(value: str) -> list[str]:
    errs: list[str] = []
    if _blen(value) > LABEL_VALUE_MAX:
        errs.append(max_len_error(LABEL_VALUE_MAX))
    if not _full(_LABEL_VALUE_RE, value):
        errs.append(regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def is_valid_path_segment_name(value: str, prefix: bool = False) -> list[str]:
    """Names that only have to survive being a URL path segment (RBAC kinds and the like)."""
    if not prefix and value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


# -- name functions keyed by ResourceType.name_rule -------------------------------------------------
def _mask_trailing_dash(name: str) -> str:
    """Upstream's generateName trick: a trailing '-' is fine because a suffix follows.

    It replaces the last *two* characters with ``a`` (an upstream quirk we keep).
    """
    if len(name) > 1 and name.endswith("-"):
        return name[:-2] + "a"
    return name


def _subdomain(name: str, prefix: bool) -> list[str]:
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def _label(name: str, prefix: bool) -> list[str]:
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def _dns1035(name: str, prefix: bool) -> list[str]:
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


NAME_RULES: dict[str, Callable[[str, bool], list[str]]] = {
    "subdomain": _subdomain,
    "label": _label,
    "dns1035": _dns1035,
    "path-segment": is_valid_path_segment_name,
}


# -- ObjectMeta ---------------------------------------------------------------------------------
def _type_cause(path: str, what: str) -> Cause:
    return Cause("FieldValueTypeInvalid", f"Invalid value: must be {what}", path)


def _str_or_empty(meta: dict[str, Any], key: str, path: str, causes: list[Cause]) -> str:
    """Read an optional string field; a non-string becomes a cause and reads as empty."""
    value = meta.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        causes.append(_type_cause(f"{path}.{key}", "a string"))
        return ""
    return value


def validate_object_meta(meta: Any, *, namespaced: bool, name_rule: str = "subdomain",
                         path: str = "metadata", kube_finalizers: bool = True) -> list[Cause]:
    """apimachinery's ValidateObjectMeta (plus core's finalizer-name rule when ``kube_finalizers``).

    Runs on create and on update (after the server copied immutable fields over).
    """
    if not isinstance(meta, dict):
        return [_type_cause(path, "an object")]
    causes: list[Cause] = []
    name_fn = NAME_RULES.get(name_rule, _subdomain)

    generate_name = _str_or_empty(meta, "generateName", path, causes)
    if generate_name:
        for msg in name_fn(generate_name, True):
            causes.append(errors.invalid_value(f"{path}.generateName", generate_name, msg))
    name = _str_or_empty(meta, "name", path, causes)
    if not name:
        if not generate_name and meta.get("name") in (None, ""):
            causes.append(Cause("FieldValueRequired",
                                "Required value: name or generateName is required", f"{path}.name"))
    else:
        for msg in name_fn(name, False):
            causes.append(errors.invalid_value(f"{path}.name", name, msg))

    causes.extend(_validate_namespace(meta, namespaced, path))
    causes.extend(_validate_generation(meta.get("generation"), f"{path}.generation"))
    causes.extend(validate_labels(meta.get("labels"), f"{path}.labels"))
    causes.extend(validate_annotations(meta.get("annotations"), f"{path}.annotations"))
    causes.extend(validate_owner_references(meta.get("ownerReferences"), f"{path}.ownerReferences"))
    causes.extend(validate_finalizers(meta.get("finalizers"), f"{path}.finalizers",
                                      kube_names=kube_finalizers))
    return causes


def _validate_namespace(meta: dict[str, Any], namespaced: bool, path: str) -> list[Cause]:
    field = f"{path}.namespace"
    ns = meta.get("namespace")
    if ns is not None and not isinstance(ns, str):
        return [_type_cause(field, "a string")]
    if namespaced:
        if not ns:
            return [errors.required(field)]
        return [errors.invalid_value(field, ns, m) for m in is_dns1123_label(ns)]
    if ns:
        return [errors.forbidden_field(field, "not allowed on this type")]
    return []


def _validate_generation(generation: Any, field: str) -> list[Cause]:
    if generation is None:
        return []
    if isinstance(generation, bool) or not isinstance(generation, int):
        return [_type_cause(field, "an integer")]
    if generation < 0:
        return [errors.invalid_value(field, generation, "must be greater than or equal to 0")]
    return []


def _string_map(value: Any, field: str) -> tuple[dict[str, str], list[Cause]]:
    """Accept ``None`` or a str->str map; anything else is reported, never raised."""
    if value is None:
        return {}, []
    if not isinstance(value, dict):
        return {}, [_type_cause(field, "a map of strings")]
    good: dict[str, str] = {}
    causes: list[Cause] = []
    for k, v in value.items():
        if not isinstance(k, str):
            causes.append(_type_cause(field, "a map of strings"))
        elif not isinstance(v, str):
            causes.append(_type_cause(f"{field}[{k}]", "a string"))
        else:
            good[k] = v
    return good, causes


def validate_labels(labels: Any, field: str = "metadata.labels") -> list[Cause]:
    """metav1 ValidateLabels: keys are qualified names, values valid label values."""
    good, causes = _string_map(labels, field)
    for k in sorted(good):
        causes.extend(errors.invalid_value(field, k, m) for m in is_qualified_name(k))
        causes.extend(errors.invalid_value(field, good[k], m) for m in is_valid_label_value(good[k]))
    return causes


def validate_annotations(annotations: Any, field: str = "metadata.annotations") -> list[Cause]:
    """Keys are qualified names (case-insensitively); total size at most 256 KiB."""
    good, causes = _string_map(annotations, field)
    total = 0
    for k in sorted(good):
        causes.extend(errors.invalid_value(field, k, m) for m in is_qualified_name(k.lower()))
        total += _blen(k) + _blen(good[k])
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        causes.append(Cause("FieldValueTooLong",
                            f"Too long: may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes",
                            field))
    return causes


def _split_api_version(api_version: str) -> tuple[str, str] | None:
    """(group, version) like schema.ParseGroupVersion; None when unparseable."""
    if api_version in ("", "/"):
        return "", ""
    count = api_version.count("/")
    if count == 0:
        return "", api_version
    if count == 1:
        group, version = api_version.split("/")
        return group, version
    return None


def validate_owner_references(refs: Any, field: str = "metadata.ownerReferences") -> list[Cause]:
    """Each reference needs apiVersion, kind, name and uid; only one may be the controller.

    Upstream reports these without a list index (``metadata.ownerReferences.uid``).
    """
    if refs is None:
        return []
    if not isinstance(refs, list):
        return [_type_cause(field, "a list")]
    causes: list[Cause] = []
    first_controller = ""
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict):
            causes.append(_type_cause(f"{field}[{i}]", "an object"))
            continue
        causes.extend(_validate_owner_reference(ref, field))
        if ref.get("controller") is True:
            current = f"{ref.get('kind', '')}/{ref.get('name', '')}"
            if first_controller:
                causes.append(Cause(
                    "FieldValueInvalid",
                    "Invalid value: \"ownerReferences\": Only one reference can have Controller "
                    f"set to true. Found \"true\" in references for {first_controller} and {current}",
                    field))
            else:
                first_controller = current
    return causes


def _validate_owner_reference(ref: dict[str, Any], field: str) -> list[Cause]:
    causes: list[Cause] = []
    values: dict[str, str] = {}
    for key in ("apiVersion", "kind", "name", "uid"):
        v = ref.get(key)
        if v is not None and not isinstance(v, str):
            causes.append(_type_cause(f"{field}.{key}", "a string"))
            v = ""
        values[key] = v or ""
    gv = _split_api_version(values["apiVersion"])
    if gv is None or not gv[1]:
        causes.append(errors.invalid_value(f"{field}.apiVersion", values["apiVersion"],
                                           "version must not be empty"))
    if not values["kind"]:
        causes.append(errors.invalid_value(f"{field}.kind", values["kind"], "kind must not be empty"))
    if not values["name"]:
        causes.append(errors.invalid_value(f"{field}.name", values["name"], "name must not be empty"))
    if not values["uid"]:
        causes.append(errors.invalid_value(f"{field}.uid", values["uid"], "uid must not be empty"))
    if gv == ("", "v1") and values["kind"] == "Event":
        causes.append(Cause("FieldValueInvalid",
                            "Invalid value: \"Event\": /v1, Kind=Event is disallowed from being an "
                            "owner", field))
    return causes


def validate_finalizers(finalizers: Any, field: str = "metadata.finalizers", *,
                        kube_names: bool = True) -> list[Cause]:
    """Qualified names; with ``kube_names`` unprefixed ones must be kube's standard finalizers."""
    if finalizers is None:
        return []
    if not isinstance(finalizers, list):
        return [_type_cause(field, "a list")]
    causes: list[Cause] = []
    for i, fin in enumerate(finalizers):
        if not isinstance(fin, str):
            causes.append(_type_cause(f"{field}[{i}]", "a string"))
            continue
        msgs = is_qualified_name(fin)
        causes.extend(errors.invalid_value(field, fin, m) for m in msgs)
        if not msgs and kube_names and "/" not in fin and fin not in STANDARD_FINALIZERS:
            causes.append(errors.invalid_value(
                f"{field}[{i}]", fin, "name is neither a standard finalizer name nor is it fully "
                "qualified"))
    if "orphan" in finalizers and "foregroundDeletion" in finalizers:
        causes.append(Cause("FieldValueInvalid",
                            "Invalid value: \"finalizers\": finalizer orphan and foregroundDeletion "
                            "cannot be both set", field))
    return causes


# -- updates ---------------------------------------------------------------------------------------
def validate_update_meta(old_meta: Any, new_meta: Any, path: str = "metadata") -> list[Cause]:
    """Identity fields can't change on update.

    An empty or missing value in the new object means "not sent" (the server then
    keeps the stored one, as upstream's BeforeUpdate does), so only a different
    non-empty value is an error.
    """
    if not isinstance(new_meta, dict):
        return [_type_cause(path, "an object")]
    if not isinstance(old_meta, dict):
        return []
    causes: list[Cause] = []
    # creationTimestamp is not compared: upstream copies it from the stored object, and
    # clients re-render it (the Python client sends "+00:00" for "Z").
    for key in ("name", "namespace", "uid"):
        new = new_meta.get(key)
        if new in (None, ""):
            continue
        if new != old_meta.get(key, ""):
            causes.append(errors.invalid_value(f"{path}.{key}", new, FIELD_IMMUTABLE))
    return causes


def container_name_causes(name: Any, field: str, taken: set[str]) -> list[Cause]:
    """A container's name as ValidateContainers checks it: required, an RFC 1123 label, and
    unique among ``taken`` (which a valid, new name joins)."""
    if not name:
        return [errors.required(field)]
    if not isinstance(name, str) or is_dns1123_label(name):
        return [errors.invalid_value(field, name, "a lowercase RFC 1123 label must consist of "
                                                  "lower case alphanumeric characters or '-'")]
    if name in taken:
        return [Cause("FieldValueDuplicate", f'Duplicate value: "{name}"', field)]
    taken.add(name)
    return []
