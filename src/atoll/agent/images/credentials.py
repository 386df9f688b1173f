"""Registry credentials as kubelet finds them: a pod's ``imagePullSecrets`` and the node's
docker ``config.json``, matched to an image the way kubelet's credential keyring does.

A key names a registry host (``registry.example:5000``, a ``*.example.com`` glob, the
legacy ``https://index.docker.io/v1/``), optionally with a path prefix of repositories.
More specific keys come first; the pod's secrets come before the node's.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atoll.agent.images.reference import DOCKER_DOMAIN, Reference
from atoll.agent.images.registry import Credentials

log = logging.getLogger(__name__)
DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"
DOCKERCFG = "kubernetes.io/dockercfg"
_DOCKER_HUB_KEYS = ("index.docker.io", "docker.io", "registry-1.docker.io",
                    "registry.hub.docker.com")


@dataclass(frozen=True)
class Entry:
    host: str  # host[:port], may hold globs
    path: str  # repository path prefix, "" for any
    credentials: Credentials


def parse_auths(auths: Any) -> list[Entry]:
    """``{"auths": {...}}`` content (or the legacy bare map) into entries; bad ones skipped."""
    out = []
    if not isinstance(auths, dict):
        return out
    for key, value in auths.items():
        if not isinstance(key, str) or not isinstance(value, dict):
            continue
        user, password = value.get("username"), value.get("password")
        auth = value.get("auth")
        if isinstance(auth, str) and auth:
            try:
                user, _, password = base64.b64decode(auth).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
        elif isinstance(value.get("identitytoken"), str) and value["identitytoken"]:
            user, password = "<token>", value["identitytoken"]
        if not isinstance(user, str) or not isinstance(password, str) or not user:
            continue
        host, path = _split_key(key)
        if host:
            out.append(Entry(host, path, Credentials(user, password)))
    return out


def from_secret(secret: dict[str, Any]) -> list[Entry]:
    """A Secret of type dockerconfigjson or dockercfg; anything else gives nothing."""
    data = secret.get("data") or {}
    kind = secret.get("type")
    field = {DOCKERCONFIGJSON: ".dockerconfigjson", DOCKERCFG: ".dockercfg"}.get(str(kind))
    if field is None or not isinstance(data, dict) or not isinstance(data.get(field), str):
        return []
    try:
        content = json.loads(base64.b64decode(data[field]))
    except (ValueError, UnicodeDecodeError):
        return []
    if kind == DOCKERCONFIGJSON:
        content = content.get("auths") if isinstance(content, dict) else None
    return parse_auths(content)


def from_file(path: Path | None) -> list[Entry]:
    """The node's docker config.json (``auths`` only; credential helpers are not run)."""
    if path is None:
        return []
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        log.warning("registry credentials file %s unreadable: %s", path, type(e).__name__)
        return []
    return parse_auths(content.get("auths") if isinstance(content, dict) else None)


def _split_key(key: str) -> tuple[str, str]:
    """``https://host:5000/ns/`` → ("host:5000", "ns")."""
    key = key.strip()
    parsed = urllib.parse.urlsplit(key if "://" in key else f"//{key}")
    host = parsed.netloc.lower()
    path = parsed.path.strip("/")
    if host in _DOCKER_HUB_KEYS:
        host = DOCKER_DOMAIN
        if path in ("v1", "v2"):
            path = ""
    return host, path


def matching(ref: Reference, *entry_lists: list[Entry]) -> list[Credentials]:
    """Credentials for ``ref``, most specific first within each list, lists in order."""
    out: list[Credentials] = []
    for entries in entry_lists:
        found = [e for e in entries if _matches(e, ref)]
        found.sort(key=lambda e: (-len(e.path), "*" in e.host))
        for e in found:
            if e.credentials not in out:
                out.append(e.credentials)
    return out


def _matches(e: Entry, ref: Reference) -> bool:
    domain = ref.domain.lower()
    host_glob, _, port_glob = e.host.rpartition(":") if _has_port(e.host) else (e.host, "", "")
    host, _, port = domain.rpartition(":") if _has_port(domain) else (domain, "", "")
    if port_glob != port:
        return False
    hp, gp = host.split("."), host_glob.split(".")
    if len(hp) != len(gp) or not all(fnmatch.fnmatchcase(h, g) for h, g in zip(hp, gp)):
        return False
    return not e.path or ref.path == e.path or ref.path.startswith(e.path + "/")


def _has_port(host: str) -> bool:
    return ":" in host and not host.endswith("]")
