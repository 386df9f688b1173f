"""Image references as containerd reads them (the distribution/reference grammar).

``busybox`` is ``docker.io/library/busybox:latest``; ``127.0.0.1:5000/a/b@sha256:...``
keeps its registry and port; ``localhost/x`` names a registry called localhost.  A
reference is refused (``ValueError`` saying why) unless it follows the grammar exactly:
what a pod names travels into URLs and file names, so nothing loose gets through.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DOCKER_DOMAIN = "docker.io"
#: Docker Hub's registry API answers here, not at docker.io
DOCKER_ENDPOINT = "registry-1.docker.io"
_LEGACY_DOCKER = ("index.docker.io", "registry-1.docker.io")
NAME_MAX = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")


@dataclass(frozen=True)
class Reference:
    """A parsed reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """The repository: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def endpoint_host(self) -> str:
        """Where the registry API is: Docker Hub's is not at its name."""
        return DOCKER_ENDPOINT if self.domain == DOCKER_DOMAIN else self.domain

    @property
    def locator(self) -> str:
        """What the manifest is fetched by: the digest when given, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> str:
        """``repo@sha256:...``, what kubelet reports as a container's imageID."""
        return f"{self.name}@{digest}"

    @property
    def floating(self) -> bool:
        """No tag or ``:latest`` and no digest: kubelet's default policy is then Always."""
        return not self.digest and self.tag in ("", "latest")


def parse(ref: str) -> Reference:
    """Parse and normalise (short names get docker.io and library/, no tag gets latest
    when there is no digest either); ValueError names what is wrong."""
    if not isinstance(ref, str) or not ref:
        raise ValueError("an image reference is empty")
    if ref != ref.strip() or any(c.isspace() for c in ref):
        raise ValueError(f"invalid reference format: {ref!r} contains white space")
    if "://" in ref:
        raise ValueError(f"invalid reference format: {ref!r} (a reference has no scheme)")
    name, digest = ref, ""
    if "@" in ref:
        name, _, digest = ref.partition("@")
        if not _DIGEST_RE.fullmatch(digest):
            raise ValueError(f"invalid reference format: {ref!r}: bad digest {digest!r}")
    tag = ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG_RE.fullmatch(tag):
            raise ValueError(f"invalid reference format: {ref!r}: bad tag {tag!r}")
    domain, path = _split_domain(name)
    if not _DOMAIN_RE.fullmatch(domain):
        raise ValueError(f"invalid reference format: {ref!r}: bad registry {domain!r}")
    if domain.startswith("["):
        try:
            ipaddress.IPv6Address(domain[1:].split("]", 1)[0])
        except ValueError:
            raise ValueError(f"invalid reference format: {ref!r}: bad registry "
                             f"{domain!r}") from None
    if path != path.lower() and _PATH_RE.fullmatch(path.lower()):
        raise ValueError(f"invalid reference format: repository name ({path}) must be "
                         f"lowercase")
    if not _PATH_RE.fullmatch(path):
        raise ValueError(f"invalid reference format: {ref!r}: bad repository {path!r}")
    if len(f"{domain}/{path}") > NAME_MAX:
        raise ValueError(f"invalid reference format: repository name longer than {NAME_MAX}")
    if not tag and not digest:
        tag = "latest"
    return Reference(domain, path, tag, digest)


def _split_domain(name: str) -> tuple[str, str]:
    """docker's splitDockerDomain: the first component is a registry only when it looks
    like a host (a dot, a port, ``localhost``, or upper case)."""
    first, sep, rest = name.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"
                       or first != first.lower()):
        first, rest = DOCKER_DOMAIN, name
    if first in _LEGACY_DOCKER:
        first = DOCKER_DOMAIN
    if first == DOCKER_DOMAIN and "/" not in rest:
        rest = f"library/{rest}"
    return first, rest


def normalize(ref: str) -> str:
    """The reference in full: ``busybox`` → ``docker.io/library/busybox:latest``."""
    return str(parse(ref))


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1, with or without a port: plain http is allowed."""
    host = host.strip()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
