"""Which resources the server serves, from legacy discovery (preferred versions)."""

from __future__ import annotations

from dataclasses import dataclass

from atoll.client.rest import ApiClient


@dataclass(frozen=True)
class ApiResource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


async def server_resources(client: ApiClient, *, all_versions: bool = False) -> list[ApiResource]:
    out: list[ApiResource] = []
    gvs = [("", "v1")]
    groups = await client.get("/apis")
    for g in groups.get("groups") or []:
        versions = g.get("versions") or []
        chosen = versions if all_versions else [g.get("preferredVersion") or versions[0]]
        gvs.extend((g["name"], v["version"]) for v in chosen)
    for group, version in gvs:
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            body = await client.get(path)
        except Exception:
            continue  # a group vanishing between the two reads
        for r in body.get("resources") or []:
            if "/" in r["name"]:
                continue
            out.append(ApiResource(group, version, r["name"], r["kind"], r["namespaced"],
                                   frozenset(r.get("verbs") or [])))
    return out
