"""DRS's arithmetic (controllers/vmoperator/drsscoring.py) and the agent's report rules."""

from __future__ import annotations

import json
import os

from atoll.agent.host import loadreport, stats
from atoll.api.migration.drs import LOAD_ANNOTATION
from atoll.controllers.vmoperator import drsscoring as s


def host(name: str, cpus: float = 2, **vms: int) -> s.HostLoad:
    loads = {f"ns/{k}": s.VMLoad(v, 100 << 20) for k, v in vms.items()}
    return s.HostLoad(name, cpus, 8 << 30, sum(v.cpu for v in loads.values()),
                      sum(v.memory for v in loads.values()), loads)


def fits_all(vm: str, target: str) -> str:
    return ""


def test_imbalance_is_the_standard_deviation_of_cpu_utilisation() -> None:
    assert s.imbalance([host("a", a=1000), host("b", b=1000)]) == 0.0
    assert abs(s.imbalance([host("a", a=2000), host("b")]) - 0.5) < 1e-9
    assert s.imbalance([host("a", a=2000)]) == 0.0


def test_the_busiest_vm_that_evens_things_out_moves_to_the_idle_host() -> None:
    hosts = {"a": host("a", x=700, y=700, z=600), "b": host("b")}
    move = s.balancing_move(hosts, {"ns/x", "ns/y", "ns/z"}, fits_all)
    assert move is not None and (move.source, move.target) == ("a", "b")
    assert move.vm in ("ns/x", "ns/y") and move.priority == 2
    assert move.after < move.before and move.improvement.startswith("0.50 -> ")


def test_no_move_when_it_would_not_help_no_ping_pong() -> None:
    # one burner each side after a move: moving either back only mirrors the imbalance
    hosts = {"a": host("a", x=700, y=700), "b": host("b", z=700)}
    assert s.balancing_move(hosts, {"ns/x", "ns/y", "ns/z"}, fits_all) is None


def test_thresholds_gate_moves_by_priority() -> None:
    slight = {"a": host("a", x=300, y=150), "b": host("b", z=250)}
    assert s.recommendations(slight, {"ns/x", "ns/y", "ns/z"}, fits_all, {}, 3) == []
    five = s.recommendations(slight, {"ns/x", "ns/y", "ns/z"}, fits_all, {}, 5)
    assert [m.vm for m in five] == ["ns/y"] and five[0].priority >= 4
    big = {"a": host("a", x=1000, y=1000), "b": host("b")}
    assert s.recommendations(big, {"ns/x", "ns/y"}, fits_all, {}, 1) == []  # only mandatory
    assert len(s.recommendations(big, {"ns/x", "ns/y"}, fits_all, {}, 3)) == 1


def test_pinned_vms_and_hosts_without_room_are_left_alone() -> None:
    hosts = {"a": host("a", x=1000, y=900), "b": host("b")}
    assert s.balancing_move(hosts, set(), fits_all) is None
    move = s.balancing_move(hosts, {"ns/y"}, fits_all)
    assert move is not None and move.vm == "ns/y"
    assert s.balancing_move(hosts, {"ns/x", "ns/y"}, lambda vm, t: "no room") is None
    full = dict(hosts, b=s.HostLoad("b", 2, 8 << 30, 0, 8 << 30))
    assert s.balancing_move(full, {"ns/x", "ns/y"}, fits_all) is None  # measured memory


def test_anti_affinity_is_a_mandatory_move_and_never_broken_by_balancing() -> None:
    hosts = {"a": host("a", x=10, y=10), "b": host("b"), "c": host("c", w=10)}
    groups = {"ns/x": "ns/db", "ns/y": "ns/db", "ns/w": "ns/db"}
    moves = s.recommendations(hosts, {"ns/x", "ns/y"}, fits_all, groups, 1)
    assert [(m.vm, m.target, m.priority) for m in moves] == [("ns/x", "b", 1)]
    busy = {"a": host("a", x=1500), "b": host("b", w=0)}
    assert s.balancing_move(busy, {"ns/x"}, fits_all, {"ns/x": "g", "ns/w": "g"}) is None


def test_pressure_on_the_source_raises_the_priority() -> None:
    base = {"a": host("a", x=400, y=300), "b": host("b", z=200)}
    calm = s.balancing_move(base, {"ns/x", "ns/y"}, fits_all)
    stalled = dict(base, a=s.HostLoad(**{**base["a"].__dict__, "pressure": 40.0}))
    hot = s.balancing_move(stalled, {"ns/x", "ns/y"}, fits_all)
    assert calm is not None and hot is not None and hot.priority == calm.priority - 1


def test_a_nodes_report_parses_and_bad_ones_are_ignored() -> None:
    report = {"time": "2026-12-04T05:00:00Z", "cpu": {"host": 1900, "workloads": 1500},
              "memory": {"used": 1, "total": 8 << 30, "workloads": 300 << 20},
              "pressure": {"cpuSome": 12.5}, "vms": {"ns/x": {"cpu": 1500, "memory": 300 << 20}}}
    node = {"metadata": {"name": "h1", "annotations": {LOAD_ANNOTATION: json.dumps(report)}},
            "status": {"capacity": {"cpu": "2", "memory": "8Gi"}}}
    load = s.host_load(node)
    assert load is not None and load.cpu == 1500 and load.utilisation == 0.75
    assert load.vms == {"ns/x": s.VMLoad(1500, 300 << 20)} and load.pressure == 12.5
    assert load.time > 0
    for bad in ("{", '{"vms": 3}', '"x"', '{"cpu": {"workloads": "lots"}}'):
        node["metadata"]["annotations"][LOAD_ANNOTATION] = bad
        assert s.host_load(node) is None
    assert s.host_load({"metadata": {"name": "h2"}}) is None


def test_the_agent_writes_only_when_the_load_moved() -> None:
    old = {"vms": {"ns/x": {}}, "cpu": {"workloads": 1000},
           "memory": {"workloads": 100, "total": 1000}, "pressure": {"cpuSome": 5.0}}
    same = json.loads(json.dumps(old))
    assert loadreport.moved(None, same, 2)
    same["cpu"]["workloads"] = 1090  # under 5% of 2 CPUs
    assert not loadreport.moved(old, same, 2)
    assert loadreport.moved(old, dict(same, cpu={"workloads": 1200}), 2)
    assert loadreport.moved(old, dict(same, vms={}), 2)
    assert loadreport.moved(old, dict(same, memory={"workloads": 200, "total": 1000}), 2)
    assert loadreport.moved(old, dict(same, pressure={"cpuSome": 30.0}), 2)


def test_after_a_vm_came_or_went_the_next_two_samples_are_written_too() -> None:
    report = loadreport.LoadReport(None, "h", lambda: None, refresh=120.0)  # type: ignore[arg-type]
    before = {"vms": {"ns/x": {}}, "cpu": {"workloads": 1000},
              "memory": {"workloads": 100, "total": 1000}}
    after = dict(before, vms={})
    report.published, report.published_at = before, 0.0
    assert report.due(after, 1.0)  # the VM left
    report.published, report.published_at = after, 1.0
    # settled numbers follow, though they hardly move: DRS waits for them after a move
    assert report.due(after, 11.0) and report.due(after, 21.0)
    assert not report.due(after, 31.0) and report.due(after, 121.0)  # then only the refresh


def test_a_process_sample_counts_its_cpu_and_memory() -> None:
    sample = stats.process_sample(os.getpid())
    assert sample is not None and sample.cpu_ns > 0 and sample.working_set > 0
    assert stats.process_sample(2 ** 22 + 1) is None
    for key, value in stats.pressure().items():
        assert key in ("cpuSome", "cpuFull", "memorySome", "memoryFull") and value >= 0


def test_the_collector_reports_vms_apart_from_pods() -> None:
    collector = stats.StatsCollector(lambda: [], vms=lambda: [("ns/me", os.getpid())])
    collector.sample()
    assert collector.load() is None  # one sample: no rate yet
    sum(range(200_000))
    collector.sample()
    load = collector.load()
    assert load is not None and set(load["vms"]) == {"ns/me"}
    assert load["cpu"]["workloads"] == load["vms"]["ns/me"]["cpu"]
    assert load["memory"]["workloads"] == load["vms"]["ns/me"]["memory"] > 0
    assert collector.summary("h")["pods"] == []  # kubectl top sees no VM as a pod
