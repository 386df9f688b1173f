"""What objects count against quotas (shared by admission and the quota controller)."""

from __future__ import annotations

from decimal import Decimal

from atoll.api import quotausage as q
from atoll.apiserver.admission import podsecurity


def pod(*containers: dict, init: list | None = None, phase: str = "Pending") -> dict:
    return {"metadata": {"name": "p", "namespace": "n"},
            "spec": {"containers": list(containers), "initContainers": init or []},
            "status": {"phase": phase}}


def c(requests: dict | None = None, limits: dict | None = None) -> dict:
    return {"name": "c", "resources": {"requests": requests or {}, "limits": limits or {}}}


def test_pod_compute_sums_containers_and_peaks_init() -> None:
    p = pod(c({"cpu": "100m"}, {"cpu": "1"}), c({"cpu": "200m", "memory": "1Gi"}),
            init=[c({"cpu": "500m"})])
    used = q.usage("", "pods", p)
    assert used["requests.cpu"] == Decimal("0.5") and used["cpu"] == Decimal("0.5")
    assert used["requests.memory"] == Decimal(1 << 30)
    assert used["limits.cpu"] == Decimal(1)
    assert used["pods"] == 1 and used["count/pods"] == 1
    # a request defaults to the limit
    assert q.usage("", "pods", pod(c(None, {"memory": "64Mi"})))["requests.memory"] == 64 << 20


def test_finished_pods_stop_counting() -> None:
    assert q.usage("", "pods", pod(c({"cpu": "1"}), phase="Succeeded")) == {}


def test_services_claims_and_counts() -> None:
    svc = {"metadata": {}, "spec": {"type": "LoadBalancer", "ports": [{}, {}]}}
    used = q.usage("", "services", svc)
    assert used["services.loadbalancers"] == 1 and used["services.nodeports"] == 2
    pvc = {"metadata": {}, "spec": {"storageClassName": "fast",
                                    "resources": {"requests": {"storage": "10Gi"}}}}
    used = q.usage("", "persistentvolumeclaims", pvc)
    assert used["fast.storageclass.storage.k8s.io/requests.storage"] == 10 << 30
    assert q.usage("apps", "deployments", {"metadata": {}}) == {"count/deployments.apps": 1}


def test_vms_count_their_class() -> None:
    klass = {"spec": {"hardware": {"cpus": 2, "memory": "4Gi"},
                      "policies": {"resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}}}
    vm = {"metadata": {"namespace": "n"}, "spec": {"className": "guaranteed-small"}}
    used = q.usage("vmoperator.vmware.com", "virtualmachines", vm, lambda ns, n: klass)
    assert used["limits.cpu"] == 2 and used["requests.memory"] == 4 << 30
    assert used["guaranteed-small.virtualmachineclass.vmoperator.vmware.com/virtualmachines"] == 1
    assert used["count/virtualmachines.vmoperator.vmware.com"] == 1


def test_missing_compute_names_containers() -> None:
    spec = pod(c({"cpu": "1"}), {"name": "bare"})["spec"]
    assert q.missing_compute(spec, ["requests.cpu"]) == {"requests.cpu": ["bare"]}
    assert q.missing_compute(spec, ["pods"]) == {}


def test_quantities_are_printed_canonically() -> None:
    assert q.format_quantity(Decimal("0.9")) == "900m"
    assert q.format_quantity(Decimal(768 << 20), "limits.memory") == "768Mi"
    assert q.format_quantity(Decimal(1024), "requests.cpu") == "1024"


def test_pod_security_levels() -> None:
    spec = {"hostNetwork": True, "volumes": [{"name": "r", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "securityContext": {"privileged": True,
                                                             "capabilities": {"add": ["NET_ADMIN",
                                                                                      "CHOWN"]}},
                            "ports": [{"hostPort": 80}]}]}
    problems = " ".join(podsecurity.baseline(spec))
    for word in ("hostNetwork=true", "privileged", "NET_ADMIN", "hostPath", "80"):
        assert word in problems
    assert "CHOWN" not in problems
    assert podsecurity.baseline({"containers": [{"name": "c"}]}) == []
    strict = podsecurity.restricted({"containers": [{"name": "c"}]})
    assert len(strict) == 4
    ok = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
          "containers": [{"name": "c", "securityContext": {
              "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}
    assert podsecurity.restricted(ok) == []


def test_vm_snapshots_count_what_they_may_take() -> None:
    from atoll.api.quotausage import VM_GROUP, kinds_for, usage

    snap = {"metadata": {"name": "s"}, "status": {"storage": {"requested": [
        {"storageClass": "fast", "total": "2Gi"}, {"storageClass": "", "total": "64Mi"}]}}}
    counted = usage(VM_GROUP, "virtualmachinesnapshots", snap)
    assert counted["requests.storage"] == (2 << 30) + (64 << 20)
    assert counted["fast.storageclass.storage.k8s.io/requests.storage"] == 2 << 30
    assert counted["count/virtualmachinesnapshots.vmoperator.vmware.com"] == 1
    assert (VM_GROUP, "virtualmachinesnapshots") in kinds_for("requests.storage")
    assert usage(VM_GROUP, "virtualmachinesnapshots", {"metadata": {}, "status": {
        "storage": {"requested": "nonsense"}}})["count/virtualmachinesnapshots.vmoperator"
                                                 ".vmware.com"] == 1
