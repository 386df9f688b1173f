"""What a request asks to do, in the terms authorization decides on.

The same attributes kube-apiserver's RequestInfo resolver produces: for a
resource request the verb (from the method, the presence of a name and the
``watch`` parameter), API group, resource, subresource, namespace and name; for
anything else (``/version``, ``/healthz``, discovery, ``/openapi``) the
lowercase HTTP method and the path.
"""

from __future__ import annotations

from dataclasses import dataclass

from atoll.apiserver import routing
from atoll.apiserver.authn import UserInfo

METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete",
                "GET": "get", "HEAD": "get"}
#: subresources whose websocket GET is authorized as ``create`` as well, as newer kube does:
#: reading a stream from them runs something in the pod
STREAM_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})


@dataclass(frozen=True, slots=True)
class Attributes:
    user: UserInfo
    verb: str
    resource_request: bool
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    def describe(self) -> str:
        """The phrase kube-apiserver puts in a 403 message."""
        if not self.resource_request:
            return f'User "{self.user.name}" cannot {self.verb} path "{self.path}"'
        what = self.resource + (f"/{self.subresource}" if self.subresource else "")
        text = (f'User "{self.user.name}" cannot {self.verb} resource "{what}" in API group '
                f'"{self.api_group}"')
        if self.namespace:
            text += f' in the namespace "{self.namespace}"'
        elif self.resource != "namespaces" or not self.name:
            text += " at the cluster scope"
        return text


def from_request(user: UserInfo, method: str, path: str, query: dict[str, str]) -> Attributes:
    parsed = routing.parse(path)
    if parsed is None or isinstance(parsed, tuple):
        return Attributes(user, method.lower(), False, path=path)
    verb = METHOD_VERBS.get(method, method.lower())
    if not parsed.name:
        if method in ("GET", "HEAD"):
            verb = "watch" if query.get("watch") in ("1", "true", "True") else "list"
        elif method == "DELETE":
            verb = "deletecollection"
    elif method in ("GET", "HEAD") and query.get("watch") in ("1", "true", "True"):
        verb = "watch"
    namespace = parsed.namespace
    name = parsed.name
    resource = parsed.plural
    if not parsed.group and resource == "namespaces" and name:
        namespace = name  # a namespace is authorized inside itself, as upstream
    return Attributes(user, verb, True, parsed.group, parsed.version, resource,
                      parsed.subresource, namespace, name, path)


def field_selector_name(query: dict[str, str]) -> str:
    """``metadata.name=X`` from a list/watch field selector: lets a name-restricted rule
    allow it, as RBAC does upstream."""
    for term in (query.get("fieldSelector") or "").split(","):
        key, sep, value = term.partition("=")
        if sep and key.strip() == "metadata.name":
            return value.lstrip("=").strip()
    return ""
