"""Which resources are served: the built-in kinds plus one entry per served CRD version.

Lookups happen on every request, so they are plain dict reads.  The registry
changes only when a CRD is created, updated or deleted (``apiserver.crds``
feeds it from the watch cache, so every API server over one store agrees).
"""

from __future__ import annotations

from collections import OrderedDict

from atoll.api.kinds import BUILTIN, GROUP_ORDER, METRICS, REVIEWS, TENANCY, ResourceType


class Registry:
    def __init__(self) -> None:
        self._by_path: dict[tuple[str, str, str], ResourceType] = {}
        self._by_gvk: dict[tuple[str, str, str], ResourceType] = {}
        #: group -> versions in preference order
        self._versions: dict[str, list[str]] = {}
        self._custom: dict[str, list[ResourceType]] = {}  # crd name -> its served versions
        self.generation = 0  # bumped on every change, for discovery/OpenAPI caching
        for rt in BUILTIN + REVIEWS + METRICS + TENANCY:
            self._add(rt)

    def _add(self, rt: ResourceType) -> None:
        self._by_path[(rt.group, rt.version, rt.plural)] = rt
        self._by_gvk.setdefault((rt.group, rt.version, rt.kind), rt)
        versions = self._versions.setdefault(rt.group, [])
        if rt.version not in versions:
            versions.append(rt.version)
        self.generation += 1

    def _rebuild_versions(self) -> None:
        self._versions = {}
        for rt in self._by_path.values():
            versions = self._versions.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        for group, versions in self._versions.items():
            versions.sort(key=version_priority, reverse=True)

    # -- custom resources ------------------------------------------------------------------
    def set_custom(self, crd_name: str, types: list[ResourceType]) -> None:
        """Replace the served versions of one CRD (empty list: stop serving it)."""
        for old in self._custom.pop(crd_name, []):
            self._by_path.pop((old.group, old.version, old.plural), None)
            if self._by_gvk.get((old.group, old.version, old.kind)) is old:
                del self._by_gvk[(old.group, old.version, old.kind)]
        if types:
            self._custom[crd_name] = types
            for rt in types:
                if (rt.group, rt.version, rt.plural) in self._by_path and rt.custom is None:
                    continue  # never shadow a built-in
                self._by_path[(rt.group, rt.version, rt.plural)] = rt
                self._by_gvk[(rt.group, rt.version, rt.kind)] = rt
        self._rebuild_versions()
        self.generation += 1

    def custom_types(self, crd_name: str) -> list[ResourceType]:
        return list(self._custom.get(crd_name, []))

    # -- lookups ---------------------------------------------------------------------------
    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def lookup_plural(self, group: str, plural: str) -> ResourceType | None:
        """The preferred served version of a resource, whatever the version."""
        for version in self._versions.get(group, []):
            rt = self._by_path.get((group, version, plural))
            if rt is not None:
                return rt
        return None

    def by_gvk(self, group: str, version: str, kind: str) -> ResourceType | None:
        return self._by_gvk.get((group, version, kind))

    def has_group_version(self, group: str, version: str) -> bool:
        return version in self._versions.get(group, [])

    def groups(self) -> "OrderedDict[str, list[str]]":
        """Groups in discovery order (upstream's order first, then custom ones by name)."""
        known = [g for g in GROUP_ORDER if g in self._versions]
        others = sorted(g for g in self._versions if g not in GROUP_ORDER)
        return OrderedDict((g, list(self._versions[g])) for g in known + others)

    def resources(self, group: str, version: str) -> list[ResourceType]:
        return sorted((rt for (g, v, _), rt in self._by_path.items() if g == group and v == version),
                      key=lambda rt: rt.plural)

    def all(self) -> list[ResourceType]:
        return list(self._by_path.values())

    def storage_type(self, rt: ResourceType) -> ResourceType:
        """The served type of ``rt``'s storage version (for multi-version custom resources)."""
        if rt.storage_version and rt.storage_version != rt.version:
            other = self.lookup(rt.group, rt.storage_version, rt.plural)
            if other is not None:
                return other
        return rt


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA > beta > alpha, higher numbers first."""
    import re

    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (-1, 0, 0)
    major = int(m.group(1))
    stage = {"alpha": 0, "beta": 1, None: 2}[m.group(2)]
    minor = int(m.group(3) or 0)
    return (stage, major, minor)
