"""In-process converters for the server's own multi-version CRDs.

Upstream serves such CRDs with ``conversion.strategy: Webhook`` and a conversion webhook
(vm-operator's is a Service in its own namespace).  Atoll's built-in CRDs declare the same
strategy, with a ``clientConfig.service`` that names no real Service but this server's
converter (``IN_PROCESS_SERVICE``): the API server recognises it and converts in process,
so `kubectl get crd ... -o yaml` reads as upstream's while no request leaves the server.
Other CRDs keep strategy ``None`` only (Atoll calls no webhooks).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from atoll.api import errors
from atoll.api.errors import Cause

#: the clientConfig.service that means "this API server's in-process converter"
IN_PROCESS_SERVICE = {"namespace": "kube-system", "name": "atoll-conversion", "path": "/convert"}
#: modules that register converters when imported (kept lazy: the schemas load on first use)
PROVIDERS = ("atoll.api.vmoperator.conversion",)


class Converter(Protocol):
    def convert(self, obj: dict[str, Any], api_version: str) -> dict[str, Any]:
        """``obj`` (any served version) as ``api_version``; returns ``obj`` itself when it
        already is that version, else a new object."""


_CONVERTERS: dict[tuple[str, str], Converter] = {}
_loaded = False


def register(group: str, kind: str, converter: Converter) -> None:
    _CONVERTERS[(group, kind)] = converter


def converter_for(group: str, kind: str) -> Converter | None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in PROVIDERS:
            importlib.import_module(module)
    return _CONVERTERS.get((group, kind))


def in_process(spec: dict[str, Any]) -> Converter | None:
    """The converter a CRD's ``spec.conversion`` names, if it names this server's own."""
    conversion = spec.get("conversion")
    if not isinstance(conversion, dict) or conversion.get("strategy") != "Webhook":
        return None
    webhook = conversion.get("webhook") if isinstance(conversion.get("webhook"), dict) else {}
    client = webhook.get("clientConfig") if isinstance(webhook.get("clientConfig"), dict) else {}
    if client.get("service") != IN_PROCESS_SERVICE:
        return None
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    return converter_for(str(spec.get("group") or ""), str(names.get("kind") or ""))


def check_conversion(spec: dict[str, Any]) -> list[Cause]:
    """``None`` for any CRD; ``Webhook`` only as the in-process converter of a kind that has one."""
    conversion = spec.get("conversion") or {}
    strategy = conversion.get("strategy") if isinstance(conversion, dict) else None
    if strategy in (None, "None"):
        return []
    if strategy != "Webhook" or in_process(spec) is None:
        return [errors.not_supported("spec.conversion.strategy", strategy, ["None"])]
    review = (conversion.get("webhook") or {}).get("conversionReviewVersions")
    if not isinstance(review, list) or "v1" not in review:
        return [errors.required("spec.conversion.webhook.conversionReviewVersions")]
    return []
