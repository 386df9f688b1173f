"""Storage end to end on a real platform: a claim with no class is provisioned by the
default class on the pod's host, and its data outlives the pods (and the StatefulSet's
replicas) that wrote it; the volume is as large as the claim asked and no larger."""

from __future__ import annotations

import json

from tests.conftest import TEST_NODE, Platform, wait_until

CLAIM_AND_WRITER = """apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: {ns}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 32Mi}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: writer, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: writer}}}}
  template:
    metadata: {{labels: {{app: writer}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sh, -c, "hostname >> /data/log && exec sleep 3600"]
        volumeMounts: [{{name: data, mountPath: /data}}]
      volumes: [{{name: data, persistentVolumeClaim: {{claimName: data}}}}]
"""

STATEFUL = """apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {ns}}}
spec:
  replicas: 2
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sh, -c, "echo $(hostname) >> /var/db/boots && exec sleep 3600"]
        volumeMounts: [{{name: db, mountPath: /var/db}}]
  volumeClaimTemplates:
  - metadata: {{name: db}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 16Mi}}}}
"""


def _json(platform: Platform, *args: str) -> dict:
    return json.loads(platform.kubectl(*args, "-o", "json").stdout)


def _running(platform: Platform, ns: str, label: str) -> list[str]:
    pods = _json(platform, "-n", ns, "get", "pods", "-l", label)["items"]
    return sorted(p["metadata"]["name"] for p in pods
                  if (p.get("status") or {}).get("phase") == "Running"
                  and not p["metadata"].get("deletionTimestamp"))


def _exec(platform: Platform, ns: str, pod: str, *cmd: str) -> str:
    return platform.kubectl("-n", ns, "exec", pod, "--", *cmd).stdout


def test_a_claim_without_a_class_keeps_its_data_across_pods(platform: Platform,
                                                            namespace: str) -> None:
    ns = namespace
    platform.kubectl("apply", "-f", "-", input=CLAIM_AND_WRITER.format(ns=ns))
    first = wait_until("the writer running", lambda: _running(platform, ns, "app=writer"),
                       120)[0]
    claim = _json(platform, "-n", ns, "get", "pvc", "data")
    assert claim["spec"]["storageClassName"] == "atoll-local"  # the default class
    assert claim["status"]["phase"] == "Bound"
    assert claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == TEST_NODE
    pv = _json(platform, "get", "pv", claim["spec"]["volumeName"])
    assert pv["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0][
        "matchExpressions"][0]["values"] == [TEST_NODE]
    # the volume holds what was asked: 32 MiB, not the host's disk
    size_kib = int(_exec(platform, ns, first, "df", "-k", "/data").splitlines()[-1].split()[1])
    assert 16 * 1024 < size_kib <= 32 * 1024, size_kib

    platform.kubectl("-n", ns, "delete", "pod", first, "--wait=false")
    second = wait_until("a replacement writer", lambda: [
        p for p in _running(platform, ns, "app=writer") if p != first], 120)[0]
    log = wait_until("both writers in the log", lambda: (
        out if first in (out := _exec(platform, ns, second, "cat", "/data/log"))
        and second in out else ""), 60)
    assert log.split() == [first, second]

    # reclaim Delete: the claim released by its last pod takes its volume and data along
    volume = platform.data_dir / "agent" / "volumes" / pv["metadata"]["name"]
    assert volume.exists()
    platform.kubectl("-n", ns, "delete", "deployment", "writer")
    platform.kubectl("-n", ns, "delete", "pvc", "data", "--wait=false")
    wait_until("the volume gone", lambda: platform.kubectl(
        "get", "pv", pv["metadata"]["name"], check=False).returncode != 0, 120)
    wait_until("its data gone", lambda: not volume.exists(), 60)


def test_each_stateful_replica_keeps_its_own_claim(platform: Platform, namespace: str) -> None:
    ns = namespace
    platform.kubectl("apply", "-f", "-", input=STATEFUL.format(ns=ns))
    wait_until("both replicas running",
               lambda: _running(platform, ns, "app=db") == ["db-0", "db-1"], 180)
    claims = _json(platform, "-n", ns, "get", "pvc")["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == ["db-db-0", "db-db-1"]
    assert {c["status"]["phase"] for c in claims} == {"Bound"}
    platform.kubectl("-n", ns, "delete", "pod", "db-0", "--wait=false")

    def restarted() -> str:
        if "db-0" not in _running(platform, ns, "app=db"):
            return ""
        out = _exec(platform, ns, "db-0", "cat", "/var/db/boots")
        return out if len(out.split()) == 2 else ""
    assert restarted_boots(wait_until("db-0 back with its data", restarted, 120)) == ["db-0"]
    assert _exec(platform, ns, "db-1", "cat", "/var/db/boots").split() == ["db-1"]


def restarted_boots(out: str) -> list[str]:
    """The distinct names in a boots file (a restarted replica wrote its name twice)."""
    return sorted(set(out.split()))
