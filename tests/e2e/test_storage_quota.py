"""Storage quota as upstream's ResourceQuota counts it (per class and in total, claims and
bytes, charged when a claim is made and when it grows, exact under concurrent creates), and
the StorageClasses ``atoll namespace create --storage-class`` assigns to a namespace."""

from __future__ import annotations

import concurrent.futures as cf
import json
import urllib.error
import urllib.request
import uuid

from tests.conftest import Platform, wait_until
from tests.e2e.test_tenancy import atoll, wait_for_used

CLASS_KEY = "{}.storageclass.storage.k8s.io/{}"


def claim(ns: str, name: str, size: str, klass: str | None = None) -> str:
    spec: dict = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if klass is not None:
        spec["storageClassName"] = klass
    return json.dumps({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": name, "namespace": ns}, "spec": spec})


def immediate_class(platform: Platform) -> str:
    """A class of the local provisioner that binds at once (no pod needed to grow claims)."""
    name = f"now-{uuid.uuid4().hex[:6]}"
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
        "provisioner": "storage.atoll.dev/local", "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": True}))
    return name


def bound(platform: Platform, ns: str, name: str) -> bool:
    out = json.loads(platform.kubectl("-n", ns, "get", "pvc", name, "-o", "json").stdout)
    return (out.get("status") or {}).get("phase") == "Bound"


def test_storage_quota_per_class_and_in_total_counts_creates_and_growth(
        platform: Platform, namespace: str) -> None:
    ns = namespace
    klass = immediate_class(platform)
    try:
        platform.kubectl("-n", ns, "create", "quota", "disk", "--hard=" + ",".join([
            f"{CLASS_KEY.format(klass, 'requests.storage')}=100Mi",
            f"{CLASS_KEY.format(klass, 'persistentvolumeclaims')}=2",
            "requests.storage=150Mi", "persistentvolumeclaims=3"]))
        platform.kubectl("apply", "-f", "-", input=claim(ns, "a", "60Mi", klass))
        out = platform.kubectl("apply", "-f", "-", input=claim(ns, "b", "60Mi", klass),
                               check=False)
        assert out.returncode != 0 and "exceeded quota: disk" in out.stderr, out.stderr
        assert CLASS_KEY.format(klass, "requests.storage") in out.stderr
        # another class is limited only by the totals
        platform.kubectl("apply", "-f", "-", input=claim(ns, "c", "60Mi", ""))
        out = platform.kubectl("apply", "-f", "-", input=claim(ns, "d", "40Mi", ""),
                               check=False)
        assert "exceeded quota: disk" in out.stderr and "requests.storage=40Mi" in out.stderr
        platform.kubectl("apply", "-f", "-", input=claim(ns, "e", "20Mi", klass))
        out = platform.kubectl("apply", "-f", "-", input=claim(ns, "f", "1Mi", ""),
                               check=False)
        assert "exceeded quota: disk" in out.stderr and "persistentvolumeclaims" in out.stderr
        # growth is charged: what fits is taken, what does not is refused and changes nothing
        wait_until("claim a bound", lambda: bound(platform, ns, "a"), 30)
        platform.kubectl("-n", ns, "patch", "pvc", "a", "--type=merge", "-p",
                         '{"spec":{"resources":{"requests":{"storage":"70Mi"}}}}')
        out = platform.kubectl("-n", ns, "patch", "pvc", "a", "--type=merge", "-p",
                               '{"spec":{"resources":{"requests":{"storage":"90Mi"}}}}',
                               check=False)
        assert out.returncode != 0 and "exceeded quota: disk" in out.stderr, out.stderr
        assert "requested: " in out.stderr and "=20Mi" in out.stderr  # the growth, not the size
        used = json.loads(platform.kubectl("-n", ns, "get", "quota", "disk", "-o",
                                           "json").stdout)["status"]["used"]
        assert used[CLASS_KEY.format(klass, "requests.storage")] == "90Mi", used
        assert used["requests.storage"] == "150Mi" and used["persistentvolumeclaims"] == "3"
        # the quota controller's recount agrees with what admission charged
        platform.kubectl("-n", ns, "delete", "pvc", "e", "--wait=false")
        wait_for_used(platform, ns, "disk", CLASS_KEY.format(klass, "requests.storage"), "70Mi")
    finally:
        platform.kubectl("-n", ns, "delete", "pvc", "--all", "--wait=false", check=False)
        platform.kubectl("delete", "storageclass", klass, check=False)


def test_claim_quota_is_exact_under_concurrent_creates(platform: Platform,
                                                       namespace: str) -> None:
    ns = namespace
    key = CLASS_KEY.format("atoll-local", "requests.storage")
    platform.kubectl("-n", ns, "create", "quota", "q", f"--hard={key}=80Mi")
    ctx = platform.ssl_context()

    def create(i: int) -> int:
        req = urllib.request.Request(
            f"{platform.url}/api/v1/namespaces/{ns}/persistentvolumeclaims",
            data=claim(ns, f"c{i}", "16Mi").encode(), method="POST",
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as err:
            return err.code

    with cf.ThreadPoolExecutor(30) as pool:
        codes = list(pool.map(create, range(30)))
    assert codes.count(201) == 5 and codes.count(403) == 25, codes
    items = json.loads(platform.kubectl("-n", ns, "get", "pvc", "-o", "json").stdout)["items"]
    assert len(items) == 5
    assert wait_for_used(platform, ns, "q", key, "80Mi") == "80Mi"


def test_namespace_create_assigns_storage_classes(platform: Platform) -> None:
    ns = f"stor-{uuid.uuid4().hex[:6]}"
    atoll("namespace", "create", ns, "--storage-class", "gold=1Gi", "--storage-class", "silver",
          "--kubeconfig", str(platform.kubeconfig))
    try:
        hard = json.loads(platform.kubectl("-n", ns, "get", "quota", "atoll-budget", "-o",
                                           "json").stdout)["spec"]["hard"]
        assert hard == {CLASS_KEY.format("gold", "requests.storage"): "1Gi"}
        for name, klass in (("g", "gold"), ("s", "silver"), ("none", "")):
            platform.kubectl("apply", "--dry-run=server", "-f", "-",
                             input=claim(ns, name, "1Mi", klass))
        # the default class (filled in when a claim names none) and any other are refused
        for name, klass in (("default", None), ("other", "bronze")):
            out = platform.kubectl("apply", "--dry-run=server", "-f", "-", check=False,
                                   input=claim(ns, name, "1Mi", klass))
            assert out.returncode != 0 and "is not assigned to namespace" in out.stderr, \
                out.stderr
            assert "(assigned: gold, silver)" in out.stderr
        out = atoll("namespace", "describe", ns, "--kubeconfig", str(platform.kubeconfig))
        assert "Storage:       gold, silver" in out.stdout
        bad = atoll("namespace", "create", ns, "--storage-class", "gold=", "--kubeconfig",
                    str(platform.kubeconfig), check=False)
        assert bad.returncode != 0 and "--storage-class" in bad.stderr
    finally:
        platform.kubectl("delete", "namespace", ns, "--wait=false", check=False)
