"""Binding rules as pure functions: which volume a claim takes, node affinity, published
capacity, the default class, the provisioned PV's shape, and the scheduler's volume step."""

from __future__ import annotations

from typing import Any

from atoll.api.resources.volumes import default_class
from atoll.controllers.scheduler import volumes as schedvolumes
from atoll.controllers.scheduler.cache import Cache
from atoll.controllers.scheduler.podinfo import parse_pod
from atoll.controllers.volume import binder
from atoll.controllers.volume.localprovisioner import volume_for


def pv(name: str, size: str, *, klass: str = "fast", modes: tuple[str, ...] = ("ReadWriteOnce",),
       phase: str = "Available", labels: dict[str, str] | None = None, mode: str | None = None,
       claim_ref: dict[str, Any] | None = None, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"capacity": {"storage": size}, "accessModes": list(modes),
                            "storageClassName": klass, "hostPath": {"path": f"/tmp/{name}"}}
    if mode:
        spec["volumeMode"] = mode
    if claim_ref is not None:
        spec["claimRef"] = claim_ref
    if node is not None:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec,
            "status": {"phase": phase}}


def pvc(size: str = "10Gi", *, klass: str | None = "fast",
        modes: tuple[str, ...] = ("ReadWriteOnce",), selector: dict[str, Any] | None = None,
        mode: str | None = None, name: str = "data", uid: str = "u1",
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": list(modes),
                            "resources": {"requests": {"storage": size}}}
    if klass is not None:
        spec["storageClassName"] = klass
    if selector is not None:
        spec["selector"] = selector
    if mode:
        spec["volumeMode"] = mode
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid,
                         "annotations": annotations or {}}, "spec": spec}


def names(found: dict[str, Any] | None) -> str | None:
    return found["metadata"]["name"] if found else None


def test_the_smallest_volume_that_fits_wins() -> None:
    vols = [pv("huge", "100Gi"), pv("small", "5Gi"), pv("fit", "20Gi"), pv("exact", "10Gi")]
    assert names(binder.find_match(pvc("10Gi"), vols)) == "exact"
    assert names(binder.find_match(pvc("11Gi"), vols)) == "fit"
    assert binder.find_match(pvc("200Gi"), vols) is None


def test_class_access_modes_mode_and_phase_must_match() -> None:
    assert binder.find_match(pvc(klass="slow"), [pv("a", "10Gi")]) is None
    # no class (or "") takes only volumes without one
    assert names(binder.find_match(pvc(klass=""), [pv("a", "10Gi"), pv("b", "10Gi", klass="")
                                                   ])) == "b"
    assert names(binder.find_match(pvc(klass=None), [pv("b", "10Gi", klass="")])) == "b"
    rwx = pvc(modes=("ReadWriteMany",))
    assert binder.find_match(rwx, [pv("a", "10Gi")]) is None
    assert names(binder.find_match(rwx, [pv("a", "10Gi", modes=("ReadWriteOnce",
                                                               "ReadWriteMany"))])) == "a"
    assert binder.find_match(pvc(mode="Block"), [pv("a", "10Gi")]) is None
    assert names(binder.find_match(pvc(mode="Block"), [pv("a", "10Gi", mode="Block")])) == "a"
    assert binder.find_match(pvc(), [pv("a", "10Gi", phase="Released")]) is None
    assert binder.find_match(pvc(), [pv("a", "10Gi", phase="Pending")]) is None


def test_a_selector_limits_the_volumes() -> None:
    vols = [pv("a", "10Gi", labels={"tier": "gold"}), pv("b", "10Gi", labels={"tier": "iron"})]
    claim = pvc(selector={"matchLabels": {"tier": "iron"}})
    assert names(binder.find_match(claim, vols)) == "b"
    claim = pvc(selector={"matchExpressions": [{"key": "tier", "operator": "NotIn",
                                                "values": ["iron", "gold"]}]})
    assert binder.find_match(claim, vols) is None


def test_pre_bound_volumes() -> None:
    mine = {"name": "data", "namespace": "ns"}
    theirs = {"name": "other", "namespace": "ns"}
    vols = [pv("free", "10Gi"), pv("mine", "50Gi", claim_ref=mine),
            pv("theirs", "10Gi", claim_ref=theirs)]
    # pre-bound to this claim (no uid yet): taken before a smaller free one
    assert names(binder.find_match(pvc(), vols)) == "mine"
    # pre-bound to another claim: never
    assert names(binder.find_match(pvc(name="third"), vols)) == "free"
    # a ref naming another uid is a former claim of the same name
    stale = [pv("stale", "10Gi", claim_ref=dict(mine, uid="old"), phase="Released")]
    assert binder.find_match(pvc(), stale) is None
    assert binder.is_bound_to(pv("x", "1Gi", claim_ref=dict(mine, uid="u1")), pvc())
    # a pre-bound volume is taken even with delayed binding and no node yet
    assert names(binder.find_match(pvc(), vols, delay_binding=True)) == "mine"
    assert binder.find_match(pvc(name="third"), vols, delay_binding=True) is None


def test_node_affinity_admits_the_selected_node_only() -> None:
    vols = [pv("on-a", "10Gi", node="a"), pv("on-b", "20Gi", node="b")]
    assert names(binder.find_match(pvc(), vols, node="b", node_labels={},
                                   delay_binding=True)) == "on-b"
    assert binder.find_match(pvc(), vols, node="c", node_labels={}, delay_binding=True) is None
    assert binder.node_admits(pv("any", "1Gi"), "z", None)
    assert not binder.node_admits(pv("on-a", "1Gi", node="a"), "a", None)  # node unknown
    assert binder.node_admits(pv("on-a", "1Gi", node="a"), "a", {})
    assert binder.affinity_node(pv("on-a", "1Gi", node="a")) == "a"


def test_mismatch_reasons() -> None:
    assert binder.mismatch(pv("a", "1Gi"), pvc("2Gi")) == "requested PV is too small"
    assert binder.mismatch(pv("a", "5Gi", klass="x"), pvc("2Gi")) == \
        "storageClassName does not match"
    assert binder.mismatch(pv("a", "5Gi", mode="Block"), pvc("2Gi")) == "incompatible volumeMode"
    assert binder.mismatch(pv("a", "5Gi"), pvc("2Gi")) == ""


def test_published_capacity_prefers_the_class_and_takes_the_smaller_limit() -> None:
    def cap(name: str, node: str, klass: str, capacity: str,
            maximum: str | None = None, ns: str = "kube-system") -> dict[str, Any]:
        obj = {"metadata": {"name": name, "namespace": ns}, "storageClassName": klass,
               "nodeTopology": {"matchLabels": {"kubernetes.io/hostname": node}},
               "capacity": capacity}
        if maximum:
            obj["maximumVolumeSize"] = maximum
        return obj
    caps = [cap("atoll-local-a", "a", "atoll-local", "10Gi", "4Gi"),
            cap("x", "a", "other", "1Gi")]
    assert binder.published_capacity(caps, "a", "atoll-local") == (4 << 30, "4Gi")
    assert binder.published_capacity(caps, "a", "other") == (1 << 30, "1Gi")
    # a class of its own with nothing published falls back on the host's default object
    assert binder.published_capacity(caps, "a", "third") == (4 << 30, "4Gi")
    assert binder.published_capacity(caps, "b", "atoll-local") is None


def test_the_newest_default_class_wins() -> None:
    def sc(name: str, created: str, default: bool) -> dict[str, Any]:
        ann = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
        return {"metadata": {"name": name, "creationTimestamp": created, "annotations": ann}}
    assert default_class([sc("a", "2026-01-01T00:00:00Z", True),
                          sc("b", "2026-02-01T00:00:00Z", True),
                          sc("c", "2026-03-01T00:00:00Z", False)]) == "b"
    assert default_class([sc("c", "2026-03-01T00:00:00Z", False)]) is None


def test_the_provisioned_volume() -> None:
    claim = pvc("3Gi", klass="atoll-local", mode="Block")
    sc = {"metadata": {"name": "atoll-local"}, "reclaimPolicy": "Retain"}
    vol = volume_for(claim, sc, "host1")
    assert vol["metadata"]["name"] == "pvc-u1"
    spec = vol["spec"]
    assert spec["csi"] == {"driver": "storage.atoll.dev/local", "volumeHandle": "pvc-u1"}
    assert spec["volumeMode"] == "Block" and spec["persistentVolumeReclaimPolicy"] == "Retain"
    assert spec["claimRef"] == {"kind": "PersistentVolumeClaim", "namespace": "ns",
                                "name": "data", "uid": "u1", "apiVersion": "v1"}
    assert binder.affinity_node(vol) == "host1"
    assert binder.mismatch(vol, claim) == "" and binder.is_bound_to(vol, claim)


# -- the scheduler's volume step --------------------------------------------------------------
def node(name: str) -> dict[str, Any]:
    res = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": res, "capacity": res,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod_using(*claims: str) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "pu"},
            "spec": {"containers": [{"name": "c"}],
                     "volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}}
                                 for c in claims]}}


def lookups(claims: list[dict[str, Any]], vols: list[dict[str, Any]],
            classes: list[dict[str, Any]], caps: list[dict[str, Any]] | None = None
            ) -> schedvolumes.Lookups:
    by_claim = {binder.claim_key(c): c for c in claims}
    by_vol = {v["metadata"]["name"]: v for v in vols}
    by_class = {c["metadata"]["name"]: c for c in classes}
    return schedvolumes.Lookups(by_claim.get, by_vol.get, by_class.get, lambda: vols,
                                lambda: caps or [])


WFFC = {"metadata": {"name": "fast"}, "provisioner": "storage.atoll.dev/local",
        "volumeBindingMode": "WaitForFirstConsumer"}
IMMEDIATE = {"metadata": {"name": "fast"}, "provisioner": "x.example/y",
             "volumeBindingMode": "Immediate"}


def feasible(state: schedvolumes.PodVolumes, *nodes: str) -> dict[str, Any]:
    cache = Cache()
    for n in nodes:
        cache.set_node(node(n))
    return {n: state.check(None, cache.nodes[n]) for n in nodes}


def test_missing_and_immediate_unbound_claims_fit_nowhere() -> None:
    info = parse_pod(pod_using("data"))
    assert info.claims == ("data",)
    state = schedvolumes.prefilter(info, lookups([], [], []))
    assert state is not None and state.error == 'persistentvolumeclaim "data" not found'
    state = schedvolumes.prefilter(info, lookups([pvc()], [], [IMMEDIATE]))
    assert state is not None and state.error == schedvolumes.UNBOUND_IMMEDIATE
    state = schedvolumes.prefilter(info, lookups([pvc()], [], []))
    assert state is not None and state.error == 'storageclass.storage.k8s.io "fast" not found'
    assert schedvolumes.prefilter(parse_pod(pod_using()), lookups([], [], [])) is None


def test_bound_volumes_pin_the_pod_and_capacity_filters_nodes() -> None:
    info = parse_pod(pod_using("data"))
    bound = pvc(annotations={binder.BIND_COMPLETED: "yes"})
    bound["spec"]["volumeName"] = "v"
    state = schedvolumes.prefilter(info, lookups([bound], [pv("v", "10Gi", node="b")], [WFFC]))
    assert state is not None and not state.error
    assert feasible(state, "a", "b") == {"a": (schedvolumes.NODE_CONFLICT,), "b": None}
    # unbound WaitForFirstConsumer: a node whose published capacity is too small is out
    caps = [{"metadata": {"name": "atoll-local-a", "namespace": "kube-system"},
             "storageClassName": "fast", "capacity": "1Gi",
             "nodeTopology": {"matchLabels": {"kubernetes.io/hostname": "a"}}}]
    state = schedvolumes.prefilter(info, lookups([pvc()], [], [WFFC], caps))
    assert state is not None and not state.error and state.unbound
    assert feasible(state, "a", "b") == {"a": (schedvolumes.NO_STORAGE,), "b": None}
    # a claim that already names a node takes only that node
    chosen = pvc(annotations={binder.SELECTED_NODE: "a"})
    state = schedvolumes.prefilter(info, lookups([chosen], [], [WFFC]))
    assert state is not None
    assert feasible(state, "a", "b") == {"a": None, "b": (schedvolumes.BIND_CONFLICT,)}
    # no provisioner: only a node with a matching local volume will do
    static = dict(WFFC, provisioner="kubernetes.io/no-provisioner")
    state = schedvolumes.prefilter(info, lookups([pvc()], [pv("l", "10Gi", node="b")], [static]))
    assert state is not None
    assert feasible(state, "a", "b") == {"a": (schedvolumes.BIND_CONFLICT,), "b": None}
