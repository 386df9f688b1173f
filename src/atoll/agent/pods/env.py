"""A container's environment and command line, resolved as kubelet resolves them.

Sources, in order: the image's ``Env``, ``envFrom`` (ConfigMaps and Secrets,
with prefixes), then ``env`` (literal values with ``$(VAR)`` expansion,
``fieldRef``, ``resourceFieldRef``, ``configMapKeyRef``, ``secretKeyRef``).
A missing required reference is a ``CreateContainerConfigError`` with
upstream's message.
"""

from __future__ import annotations

import base64
import re
from decimal import Decimal
from typing import Any, Awaitable, Callable

from atoll.api import quantity

Fetch = Callable[[str, str], Awaitable[dict[str, Any] | None]]  # (kind, name) → object or None
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class ConfigError(Exception):
    """Reason ``CreateContainerConfigError``: the container cannot be configured yet."""


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: unknown references stay, ``$$`` escapes."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, text)


def command_line(container: dict[str, Any], image_config: dict[str, Any],
                 env: dict[str, str]) -> list[str]:
    """``command``/``args`` over the image's ``Entrypoint``/``Cmd``, as the API documents."""
    command = container.get("command")
    args = container.get("args")
    if command:
        argv = list(command) + list(args or [])
    elif args is not None:
        argv = list(image_config.get("Entrypoint") or []) + list(args)
    else:
        argv = list(image_config.get("Entrypoint") or []) + list(image_config.get("Cmd") or [])
    return [expand(str(a), env) for a in argv]


def api_service_env(host: str, port: int) -> dict[str, str]:
    """What kubelet tells every container about the ``kubernetes`` Service (the API server),
    so in-cluster clients (client-go's InClusterConfig, ...) find it."""
    if not host or not port:
        return {}
    addr = f"[{host}]" if ":" in host else host
    url, p = f"tcp://{addr}:{port}", f"KUBERNETES_PORT_{port}_TCP"
    return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port), "KUBERNETES_PORT": url, p: url,
            f"{p}_PROTO": "tcp", f"{p}_PORT": str(port), f"{p}_ADDR": host}


async def environment(pod: dict[str, Any], container: dict[str, Any],
                      image_env: list[str], fetch: Fetch,
                      service_env: dict[str, str] | None = None) -> dict[str, str]:
    """The container's variables; ``service_env`` goes over the image's and under the pod's."""
    env: dict[str, str] = {}
    for item in image_env:
        key, _, value = item.partition("=")
        env[key] = value
    env.update(service_env or {})
    env["HOSTNAME"] = pod["metadata"]["name"]
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for kind, ref_key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(ref_key)
            if not isinstance(ref, dict):
                continue
            data = await _data(fetch, kind, ref.get("name", ""), bool(ref.get("optional")))
            for k, v in data.items():
                env[prefix + k] = v
    for item in container.get("env") or []:
        name = item.get("name")
        if not isinstance(name, str):
            continue
        if "valueFrom" in item and isinstance(item["valueFrom"], dict):
            value = await _value_from(pod, container, item["valueFrom"], fetch)
            if value is None:
                continue
            env[name] = value
        else:
            env[name] = expand(str(item.get("value") or ""), env)
    return env


async def _data(fetch: Fetch, kind: str, name: str, optional: bool) -> dict[str, str]:
    obj = await fetch(kind, name)
    if obj is None:
        if optional:
            return {}
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    out = {k: str(v) for k, v in (obj.get("data") or {}).items()}
    if kind == "Secret":
        out = {k: _b64(v) for k, v in out.items()}
    else:
        out.update({k: _b64(str(v)) for k, v in (obj.get("binaryData") or {}).items()})
    return out


def _b64(value: str) -> str:
    try:
        return base64.b64decode(value).decode("utf-8", errors="replace")
    except (ValueError, TypeError):
        return ""


async def _value_from(pod: dict[str, Any], container: dict[str, Any], source: dict[str, Any],
                      fetch: Fetch) -> str | None:
    if isinstance(source.get("fieldRef"), dict):
        return field_value(pod, str(source["fieldRef"].get("fieldPath") or ""))
    if isinstance(source.get("resourceFieldRef"), dict):
        return resource_value(pod, container, source["resourceFieldRef"])
    for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
        ref = source.get(key)
        if not isinstance(ref, dict):
            continue
        optional = bool(ref.get("optional"))
        data = await _data(fetch, kind, str(ref.get("name") or ""), optional)
        wanted = str(ref.get("key") or "")
        if wanted not in data:
            if optional:
                return None
            raise ConfigError(f"couldn't find key {wanted} in {kind} "
                              f"{pod['metadata']['namespace']}/{ref.get('name')}")
        return data[wanted]
    return None


def field_value(pod: dict[str, Any], path: str) -> str:
    """The downward API's fields of a pod."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"), "status.podIP": status.get("podIP"),
        "status.hostIPs": ",".join(i.get("ip", "") for i in status.get("hostIPs") or []),
        "status.podIPs": ",".join(i.get("ip", "") for i in status.get("podIPs") or []),
    }
    if path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    if path not in simple:
        raise ConfigError(f"unsupported fieldPath: {path}")
    return str(simple[path] or "")


def resource_value(pod: dict[str, Any], container: dict[str, Any], ref: dict[str, Any]) -> str:
    name = ref.get("containerName")
    if name:
        container = next((c for c in (pod.get("spec") or {}).get("containers") or []
                          if c.get("name") == name), container)
    resource = str(ref.get("resource") or "")
    section, _, what = resource.partition(".")
    values = (container.get("resources") or {}).get(section) or {}
    try:
        divisor = quantity.parse(ref.get("divisor") or "1")
        raw = values.get(what)
        if raw is None and section == "limits":
            return "0"  # upstream falls back to node allocatable; unknown here
        amount = quantity.parse(raw if raw is not None else "0")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if divisor == 0:
        raise ConfigError("divisor must be positive")
    result = (amount / divisor).to_integral_value(rounding="ROUND_CEILING")
    return str(int(result if result > 0 or amount == 0 else Decimal(1)))
