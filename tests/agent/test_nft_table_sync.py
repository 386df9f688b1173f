"""Table syncs against the real kernel: a partial sync leaves the same rules a full one
would, writes only what changed, and a new agent takes over a predecessor's table in
place (dynamic affinity entries kept, stale chains gone, an older layout replaced)."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Iterator

import pytest

from atoll.agent.host import nft
from atoll.agent.host.nfttable import Present, full_sync
from atoll.agent.host.tablesync import TableSync
from atoll.agent.proxy import rules

NODE = "n1"


def _settings(table: str) -> rules.ProxySettings:
    return rules.ProxySettings(table=table, node_name=NODE, cluster_cidr="10.244.0.0/16")


def _service(name: str, ip: str, affinity: bool = False) -> dict:
    spec = {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    if affinity:
        spec["sessionAffinity"] = "ClientIP"
    return {"metadata": {"namespace": "ns", "name": name}, "spec": spec}


def _slice(addresses: list[str]) -> dict:
    return {"addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "nodeName": NODE, "conditions": {"ready": True}}
                          for a in addresses]}


def _table(table: str, endpoints: dict[str, list[str]], affinity: str = "") -> rules.Table:
    services = [_service(name, f"198.51.100.{i + 1}", affinity=name == affinity)
                for i, name in enumerate(sorted(endpoints))]
    ports = rules.service_ports(services, lambda ns, name: [_slice(endpoints[name])])
    return rules.table(ports, _settings(table))


def _state(table: str) -> dict:
    """The table as the kernel holds it, without handles or order (creation order differs)."""
    items = json.loads(subprocess.run(["nft", "-j", "list", "table", "ip", table],
                                      capture_output=True, text=True, check=True).stdout)
    state: dict = {}
    for item in items["nftables"]:
        (kind, body), = item.items()
        if kind in ("chain", "set", "map"):
            state.setdefault((kind, body["name"]), []).append(
                sorted(json.dumps(e, sort_keys=True) for e in body.get("elem") or []))
            state[(kind, body["name"])].append(body.get("type"))
        elif kind == "rule":
            state.setdefault(("chain", body["chain"]), []).append(json.dumps(body["expr"]))
    return state


def _listing(table: str) -> str:
    out = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True, text=True,
                         check=True).stdout
    return out.replace(table, "T")


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    pair = (f"atoll_t_{uuid.uuid4().hex[:8]}", f"atoll_t_{uuid.uuid4().hex[:8]}")
    yield pair
    for name in pair:
        subprocess.run(["nft", "delete", "table", "ip", name], capture_output=True)


async def test_a_partial_sync_matches_a_full_one_and_writes_only_the_change(names) -> None:
    live, fresh = names
    before = {f"s{i}": [f"10.244.0.{i * 10 + j}" for j in range(1, 4)] for i in range(20)}
    after = {**before, "s3": ["10.244.0.31", "10.244.0.99"]}  # one endpoint swapped
    del after["s7"]
    after["s20"] = ["10.244.1.1"]
    sync = TableSync()
    await sync.apply(_table(live, before))
    assert (sync.full_syncs, sync.partial_syncs) == (1, 0)
    first_lines = sync.last_lines
    await sync.apply(_table(live, after))
    assert (sync.full_syncs, sync.partial_syncs) == (1, 1)
    assert sync.last_lines < first_lines / 5, (sync.last_lines, first_lines)
    await nft.run(full_sync(_table(fresh, after), Present()))
    assert _state(live) == _state(fresh)
    await sync.apply(_table(live, after))  # nothing changed: nothing sent
    assert sync.partial_syncs == 1


async def test_a_new_agent_takes_the_table_over_in_place(names) -> None:
    live, fresh = names
    wanted = {"web": ["10.244.0.2", "10.244.0.3"], "old": ["10.244.0.4"]}
    await TableSync().apply(_table(live, wanted, affinity="web"))
    affinity = next(line.split()[1] for line in _listing(live).splitlines()
                    if line.strip().startswith("set affinity-"))
    await nft.run(f"add element ip {live} {affinity} {{ 192.0.2.77 }}")  # a client stuck to one
    del wanted["old"]
    restarted = TableSync()
    await restarted.apply(_table(live, wanted, affinity="web"))
    assert restarted.full_syncs == 1
    listing = _listing(live)
    assert "192.0.2.77" in listing  # the client keeps its endpoint
    assert "ns/old" not in listing  # the stale Service's chains went
    await nft.run(full_sync(_table(fresh, wanted, affinity="web"), Present()))
    taken, clean = _state(live), _state(fresh)
    taken[("set", affinity)] = clean[("set", affinity)]  # only the client's entry differs
    assert taken == clean


async def test_a_table_of_an_older_layout_is_replaced_whole(names) -> None:
    live, _ = names
    # a base chain hooked at another priority cannot be redefined by ``add chain``
    await nft.run(f"table ip {live} {{ chain nat-output {{ type nat hook output priority 0; }}\n"
                  f"chain leftover {{ accept; }}\n}}\n")
    sync = TableSync()
    await sync.apply(_table(live, {"web": ["10.244.0.2"]}))
    listing = _listing(live)
    assert "leftover" not in listing and "hook output priority -100" in listing
    assert "ns/web" in listing


async def test_a_failed_sync_makes_the_next_one_full(names) -> None:
    live, _ = names
    sync = TableSync()
    await sync.apply(_table(live, {"web": ["10.244.0.2"]}))
    await nft.run(f"delete table ip {live}")  # someone removed it behind our back
    with pytest.raises(nft.NftError):  # a partial sync on a table that is gone
        await sync.apply(_table(live, {"web": ["10.244.0.3"]}))
    await sync.apply(_table(live, {"web": ["10.244.0.3"]}))
    assert sync.full_syncs == 2 and "10.244.0.3" in _listing(live)
