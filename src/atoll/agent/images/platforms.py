"""Platforms: which entry of a manifest list (an OCI index) this host runs.

As containerd's platform matcher: os and architecture must be equal; among the variants the
host can run, the best is taken (amd64 micro-architecture levels up to this CPU's, read from
its flags; arm64's empty variant meaning v8).
"""

from __future__ import annotations

import platform as host_platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class NoMatchingPlatform(ValueError):
    """The index has no entry this host can run; the message lists what it has."""


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


def host_platform_() -> Platform:
    """This host's platform as OCI names it (amd64 variants by the CPU's level)."""
    machine = host_platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine)
    variant = f"v{amd64_level()}" if arch == "amd64" else ("v8" if arch == "arm64" else "")
    return Platform("linux", arch, variant)


def amd64_level(cpuinfo: str | None = None) -> int:
    """The x86-64 micro-architecture level (1-4) of this CPU, from its flags."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return 1
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    levels = [("v2", {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}),
              ("v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe"}),
              ("v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})]
    level = 1
    for _, needed in levels:
        if not needed <= flags:
            break
        level += 1
    return level


def choose_platform(index: dict[str, Any], want: Platform) -> dict[str, Any]:
    """The index entry for ``want``: os and architecture equal, the best variant the host
    runs (amd64 levels up to the host's, arm64's "" meaning v8); RegistryError if none."""
    best: tuple[int, dict[str, Any]] | None = None
    seen = []
    for desc in index.get("manifests") or []:
        if not isinstance(desc, dict):
            continue
        plat = desc.get("platform") if isinstance(desc.get("platform"), dict) else {}
        os_, arch = str(plat.get("os") or ""), str(plat.get("architecture") or "")
        variant = str(plat.get("variant") or "")
        if os_ and arch and os_ != "unknown":
            seen.append(f"{os_}/{arch}" + (f"/{variant}" if variant else ""))
        if os_ != want.os or arch != want.architecture:
            continue
        rank = _variant_rank(arch, variant, want.variant)
        if rank is not None and (best is None or rank > best[0]):
            best = (rank, desc)
    if best is None:
        raise NoMatchingPlatform(f"no matching manifest for {want} in the manifest list "
                                 f"entries ({', '.join(seen) or 'none'})")
    return best[1]


def _variant_rank(arch: str, variant: str, host_variant: str) -> int | None:
    """Higher is better; None: the host cannot run it."""
    if arch == "amd64":
        level = int(variant[1:]) if re.fullmatch(r"v[1-4]", variant) else (1 if not variant
                                                                            else 99)
        host = int(host_variant[1:]) if re.fullmatch(r"v[1-4]", host_variant) else 1
        return level if level <= host else None
    if arch == "arm64":
        v = variant or "v8"
        hv = host_variant or "v8"
        return 1 if v == hv or v == "v8" else None
    return 1 if not variant or not host_variant or variant == host_variant else None
