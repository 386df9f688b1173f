"""Claims and volumes on a real platform, the control plane's half: the default class, the
PV controller's binding and reclaim, the local provisioner, in-use protection, and the
scheduler's volume binding.  Pods are only followed until they are bound to a host (their
volumes' data is the host agent's work, tested in test_storage.py)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.conftest import TEST_NODE, Platform, kill_and_await_restart, wait_until


def _json(platform: Platform, *args: str) -> Any:
    return json.loads(platform.kubectl(*args, "-o", "json").stdout)


def _get(platform: Platform, *args: str) -> Any:
    out = platform.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def _phase(platform: Platform, *args: str) -> str:
    obj = _get(platform, *args)
    return ((obj or {}).get("status") or {}).get("phase") or ""


def _events(platform: Platform, ns: str, name: str) -> list[dict[str, Any]]:
    return [e for e in _json(platform, "-n", ns, "get", "events")["items"]
            if e["involvedObject"].get("name") == name]


def _static_pv(name: str, size: str, klass: str, policy: str = "Retain",
               extra: str = "") -> str:
    return f"""apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}, labels: {{disk: {name}}}}}
spec:
  capacity: {{storage: {size}}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: {policy}
  storageClassName: "{klass}"
  hostPath: {{path: /tmp/{name}}}
{extra}"""


def _claim(ns: str, name: str, size: str, klass: str | None, extra: str = "") -> str:
    cls = f'  storageClassName: "{klass}"\n' if klass is not None else ""
    return f"""apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, namespace: {ns}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: {size}}}}}
{cls}{extra}"""


def _pod(ns: str, name: str, claim: str) -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: c, image: busybox, command: [sleep, "3600"],
     volumeMounts: [{{name: d, mountPath: /data}}]}}
  volumes: [{{name: d, persistentVolumeClaim: {{claimName: {claim}}}}}]
"""


def test_the_default_class_and_the_printers(platform: Platform) -> None:
    sc = _json(platform, "get", "storageclass", "atoll-local")
    assert sc["provisioner"] == "storage.atoll.dev/local"
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert sc["reclaimPolicy"] == "Delete" and sc["allowVolumeExpansion"] is True
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    head = platform.kubectl("get", "sc").stdout.splitlines()
    assert head[0].split() == ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE",
                               "ALLOWVOLUMEEXPANSION", "AGE"]
    assert any(line.split()[:6] == ["atoll-local", "(default)", "storage.atoll.dev/local",
                                    "Delete", "WaitForFirstConsumer", "true"]
               for line in head[1:])
    # the provisioner, reclaim policy and binding mode are fixed
    out = platform.kubectl("patch", "sc", "atoll-local", "--type=merge", "-p",
                           '{"reclaimPolicy":"Retain"}', check=False)
    assert out.returncode != 0 and "reclaimPolicy: Forbidden" in out.stderr


def test_bad_claims_are_refused_with_the_field(platform: Platform, namespace: str) -> None:
    out = platform.kubectl("apply", "-f", "-", check=False, input=f"""apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: nosize, namespace: {namespace}}}
spec: {{accessModes: [ReadWriteOnce]}}
""")
    assert out.returncode != 0 and "spec.resources[storage]: Required value" in out.stderr
    platform.kubectl("apply", "-f", "-", input=_claim(namespace, "grow", "2Mi", "none"))
    out = platform.kubectl("-n", namespace, "patch", "pvc", "grow", "--type=merge", "-p",
                           '{"spec":{"resources":{"requests":{"storage":"1Mi"}}}}', check=False)
    assert out.returncode != 0
    assert "spec.resources.requests.storage: Forbidden: field can not be less than previous " \
           "value" in out.stderr


def test_a_static_volume_binds_the_matching_claim_and_retain_releases_it(
        platform: Platform, namespace: str) -> None:
    klass = f"manual-{namespace}"
    small, big = f"small-{namespace}", f"big-{namespace}"
    platform.kubectl("apply", "-f", "-",
                     input=_static_pv(small, "10Mi", klass) + "---\n" +
                     _static_pv(big, "100Mi", klass))
    wait_until("both volumes Available", lambda: _phase(platform, "pv", small) == "Available"
               and _phase(platform, "pv", big) == "Available")
    platform.kubectl("apply", "-f", "-", input=_claim(namespace, "data", "50Mi", klass))
    wait_until("the claim Bound", lambda: _phase(platform, "-n", namespace, "pvc", "data")
               == "Bound")
    claim = _json(platform, "-n", namespace, "get", "pvc", "data")
    assert claim["spec"]["volumeName"] == big  # the 10Mi volume is too small
    assert claim["status"]["capacity"] == {"storage": "100Mi"}
    assert claim["status"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    assert "kubernetes.io/pvc-protection" in claim["metadata"]["finalizers"]
    pv = _json(platform, "get", "pv", big)
    assert pv["status"]["phase"] == "Bound"
    assert pv["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
    assert "kubernetes.io/pv-protection" in pv["metadata"]["finalizers"]
    assert _phase(platform, "pv", small) == "Available"
    row = platform.kubectl("get", "pv", big, "--no-headers").stdout.split()
    assert row[:6] == [big, "100Mi", "RWO", "Retain", "Bound", f"{namespace}/data"]
    row = platform.kubectl("-n", namespace, "get", "pvc", "data", "--no-headers").stdout.split()
    assert row[:6] == ["data", "Bound", big, "100Mi", "RWO", klass]

    platform.kubectl("-n", namespace, "delete", "pvc", "data", "--timeout=60s")
    wait_until("the volume Released", lambda: _phase(platform, "pv", big) == "Released")
    assert _get(platform, "pv", big)["spec"]["claimRef"]["name"] == "data"  # kept as it was
    platform.kubectl("delete", "pv", small, big, "--timeout=60s")


def test_a_pre_bound_claim_and_a_delete_policy(platform: Platform, namespace: str) -> None:
    klass = f"manual-{namespace}"
    name = f"named-{namespace}"
    platform.kubectl("apply", "-f", "-", input=_static_pv(name, "20Mi", klass, "Delete"))
    platform.kubectl("apply", "-f", "-", input=_claim(namespace, "mine", "5Mi", klass,
                                                      f"  volumeName: {name}\n"))
    wait_until("the named volume Bound", lambda: _phase(platform, "pv", name) == "Bound")
    wait_until("the claim Bound", lambda: _phase(platform, "-n", namespace, "pvc", "mine")
               == "Bound")
    platform.kubectl("-n", namespace, "delete", "pvc", "mine", "--timeout=60s")
    wait_until("the volume deleted (reclaim policy Delete)",
               lambda: _get(platform, "pv", name) is None, 60)


def test_a_pod_with_a_claim_of_the_default_class_gets_a_volume_on_its_node(
        platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=_claim(namespace, "data", "16Mi", None))
    claim = _json(platform, "-n", namespace, "get", "pvc", "data")
    assert claim["spec"]["storageClassName"] == "atoll-local"  # DefaultStorageClass admission
    wait_until("the WaitForFirstConsumer event", lambda: any(
        e["reason"] == "WaitForFirstConsumer" and e["message"] ==
        "waiting for first consumer to be created before binding"
        for e in _events(platform, namespace, "data")))
    assert _phase(platform, "-n", namespace, "pvc", "data") == "Pending"

    platform.kubectl("apply", "-f", "-", input=_pod(namespace, "user", "data"))
    wait_until("the claim Bound", lambda: _phase(platform, "-n", namespace, "pvc", "data")
               == "Bound", 60)
    claim = _json(platform, "-n", namespace, "get", "pvc", "data")
    ann = claim["metadata"]["annotations"]
    assert ann["volume.kubernetes.io/selected-node"] == TEST_NODE
    assert ann["volume.kubernetes.io/storage-provisioner"] == "storage.atoll.dev/local"
    assert ann["volume.beta.kubernetes.io/storage-provisioner"] == "storage.atoll.dev/local"
    name = f"pvc-{claim['metadata']['uid']}"
    assert claim["spec"]["volumeName"] == name
    pv = _json(platform, "get", "pv", name)
    assert pv["spec"]["capacity"] == {"storage": "16Mi"}
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["spec"]["csi"] == {"driver": "storage.atoll.dev/local", "volumeHandle": name,
                                 "fsType": "ext4"}
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0][
        "matchExpressions"][0] == {"key": "kubernetes.io/hostname", "operator": "In",
                                   "values": [TEST_NODE]}
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == \
        "storage.atoll.dev/local"
    wait_until("the pod bound to the node", lambda: (_get(
        platform, "-n", namespace, "pod", "user") or {}).get("spec", {}).get("nodeName")
        == TEST_NODE, 60)

    # pvc-protection: the claim stays (Terminating) while the pod uses it
    platform.kubectl("-n", namespace, "delete", "pvc", "data", "--wait=false")
    wait_until("the claim marked for deletion", lambda: (_get(
        platform, "-n", namespace, "pvc", "data") or {}).get("metadata", {}).get(
        "deletionTimestamp"))
    assert "Terminating" in platform.kubectl("-n", namespace, "get", "pvc", "data").stdout
    platform.kubectl("-n", namespace, "delete", "pod", "user", "--wait=false", "--force",
                     "--grace-period=0")
    wait_until("the claim gone with its pod", lambda: _get(
        platform, "-n", namespace, "pvc", "data") is None, 90)
    wait_until("its volume deleted", lambda: _get(platform, "pv", name) is None, 60)


def test_a_pod_whose_claim_is_missing_or_unbound_is_not_placed(platform: Platform,
                                                               namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=_pod(namespace, "lonely", "nothere"))

    def reason(pod: str) -> str:
        obj = _get(platform, "-n", namespace, "pod", pod) or {}
        cond = next((c for c in (obj.get("status") or {}).get("conditions") or []
                     if c["type"] == "PodScheduled"), {})
        return cond.get("message", "") if cond.get("status") == "False" else ""
    msg = wait_until("PodScheduled=False", lambda: reason("lonely"))
    assert 'persistentvolumeclaim "nothere" not found' in msg, msg
    # an Immediate class without a volume: the claim never binds, the pod waits
    klass = f"manual-{namespace}"
    platform.kubectl("apply", "-f", "-", input=f"""apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {klass}}}
provisioner: kubernetes.io/no-provisioner
""")
    try:
        platform.kubectl("apply", "-f", "-", input=_claim(namespace, "unbound", "1Mi", klass) +
                         "---\n" + _pod(namespace, "waiting", "unbound"))
        msg = wait_until("PodScheduled=False", lambda: reason("waiting"))
        assert "pod has unbound immediate PersistentVolumeClaims" in msg, msg
        # the claim appears: the first pod is tried again and now waits for binding instead
        platform.kubectl("apply", "-f", "-", input=_claim(namespace, "nothere", "1Mi", klass))
        wait_until("the first pod tried again", lambda: "unbound immediate" in reason("lonely"))
    finally:
        platform.kubectl("delete", "sc", klass, check=False)


def test_a_request_larger_than_the_published_capacity_fails(platform: Platform,
                                                            namespace: str) -> None:
    klass = f"local-now-{namespace}"
    cap = f"tiny-{uuid.uuid4().hex[:6]}"
    platform.kubectl("apply", "-f", "-", input=f"""apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {klass}}}
provisioner: storage.atoll.dev/local
volumeBindingMode: Immediate
---
apiVersion: storage.k8s.io/v1
kind: CSIStorageCapacity
metadata: {{name: {cap}, namespace: kube-system}}
storageClassName: {klass}
nodeTopology: {{matchLabels: {{kubernetes.io/hostname: {TEST_NODE}}}}}
capacity: 8Mi
""")
    try:
        platform.kubectl("apply", "-f", "-", input=_claim(namespace, "huge", "1Gi", klass))
        event = wait_until("ProvisioningFailed", lambda: next(
            (e for e in _events(platform, namespace, "huge")
             if e["reason"] == "ProvisioningFailed"), None))
        assert event["type"] == "Warning"
        assert "1Gi" in event["message"] and "8Mi" in event["message"], event["message"]
        assert _phase(platform, "-n", namespace, "pvc", "huge") == "Pending"
        # a request that fits is provisioned at once (Immediate) on the node
        platform.kubectl("apply", "-f", "-", input=_claim(namespace, "small", "4Mi", klass))
        wait_until("the small claim Bound", lambda: _phase(
            platform, "-n", namespace, "pvc", "small") == "Bound", 60)
        platform.kubectl("-n", namespace, "delete", "pvc", "small", "huge", "--timeout=60s")
    finally:
        platform.kubectl("-n", "kube-system", "delete", "csistoragecapacity", cap, check=False)
        platform.kubectl("delete", "sc", klass, check=False)


def test_a_controller_killed_while_provisioning_makes_one_volume(platform: Platform,
                                                                 namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=_claim(namespace, "data", "8Mi", None) + "---\n"
                     + _pod(namespace, "user", "data"))
    wait_until("the node selected", lambda: ((_get(platform, "-n", namespace, "pvc", "data")
                                              or {}).get("metadata", {}).get("annotations")
                                             or {}).get("volume.kubernetes.io/selected-node"))
    kill_and_await_restart(f"controller-manager --kubeconfig {platform.data_dir}")
    wait_until("the claim Bound", lambda: _phase(platform, "-n", namespace, "pvc", "data")
               == "Bound", 90)
    claim = _json(platform, "-n", namespace, "get", "pvc", "data")
    uid = claim["metadata"]["uid"]
    mine = [v["metadata"]["name"] for v in _json(platform, "get", "pv")["items"]
            if (v["spec"].get("claimRef") or {}).get("uid") == uid]
    assert mine == [f"pvc-{uid}"] == [claim["spec"]["volumeName"]]
    wait_until("the pod bound", lambda: (_get(platform, "-n", namespace, "pod", "user")
                                         or {}).get("spec", {}).get("nodeName") == TEST_NODE, 90)


def test_deleting_a_namespace_reclaims_its_volumes_by_their_policy(platform: Platform) -> None:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    klass = f"manual-{ns}"
    kept = f"kept-{ns}"
    platform.kubectl("create", "namespace", ns)
    platform.kubectl("apply", "-f", "-", input=_static_pv(kept, "10Mi", klass, "Retain") +
                     "---\n" + _claim(ns, "kept", "10Mi", klass) + "---\n" +
                     _claim(ns, "made", "8Mi", None) + "---\n" + _pod(ns, "user", "made"))
    wait_until("both claims Bound", lambda: _phase(platform, "-n", ns, "pvc", "kept") == "Bound"
               and _phase(platform, "-n", ns, "pvc", "made") == "Bound", 60)
    made = _json(platform, "-n", ns, "get", "pvc", "made")["spec"]["volumeName"]
    platform.kubectl("delete", "namespace", ns, "--timeout=120s")
    wait_until("the provisioned volume deleted", lambda: _get(platform, "pv", made) is None, 60)
    wait_until("the retained one Released", lambda: _phase(platform, "pv", kept) == "Released")
    platform.kubectl("delete", "pv", kept, "--timeout=60s")
