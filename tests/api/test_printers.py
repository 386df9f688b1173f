"""Server-side Table printing: columns and cells as kube-apiserver renders them."""

from __future__ import annotations

import json

import pytest

from atoll.api import jsonpath, printers, resources, timestamps

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def ts(seconds_ago: float) -> str:
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - seconds_ago))


def names(kind_key: str) -> list[str]:
    return [c["name"] for c in printers.column_definitions(kind_key)]


def wide(kind_key: str) -> list[str]:
    return [c["name"] for c in printers.column_definitions(kind_key) if c["priority"] == 1]


# -- human_duration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds, text", [
    (-5, "<invalid>"), (-2, "<invalid>"), (-1.5, "0s"), (-1, "0s"), (-0.2, "0s"), (0, "0s"),
    (45, "45s"), (119, "119s"),
    (120, "2m"), (192, "3m12s"), (599, "9m59s"),
    (600, "10m"), (601, "10m"), (3 * 3600 - 1, "179m"),
    (3 * 3600, "3h"), (3 * 3600 + 60 * 5, "3h5m"), (8 * 3600 - 1, "7h59m"),
    (8 * 3600, "8h"), (47 * 3600 + 3599, "47h"),
    (48 * 3600, "2d"), (50 * 3600, "2d2h"), (8 * 86400 - 1, "7d23h"),
    (8 * 86400, "8d"), (729 * 86400, "729d"),
    (730 * 86400, "2y"), (731 * 86400, "2y1d"), (8 * 365 * 86400 - 1, "7y364d"),
    (8 * 365 * 86400, "8y"), (20 * 365 * 86400, "20y"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert printers.human_duration(seconds) == text


def test_timestamps() -> None:
    assert timestamps.parse_rfc3339("2023-11-14T22:13:20Z") == NOW
    assert timestamps.parse_rfc3339("2023-11-14T23:13:20.5+01:00") == NOW + 0.5
    assert timestamps.parse_rfc3339("garbage") is None
    assert printers.since(None, NOW) == "<unknown>"
    assert printers.created_at_cell("2023-11-14T23:13:20.123+01:00") == "2023-11-14T22:13:20Z"
    assert printers.created_at_cell(None) == "0001-01-01T00:00:00Z"


# -- pods -------------------------------------------------------------------------------------------
def pod(status: dict, spec: dict | None = None, **meta: object) -> dict:
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "p", "namespace": "default", "creationTimestamp": ts(300), **meta},
            "spec": spec or {"containers": [{"name": "app", "image": "nginx"}]},
            "status": status}


def cells(obj: dict, kind_key: str = "/Pod") -> list:
    return printers.row_cells(kind_key, obj, NOW)


def test_pod_columns() -> None:
    assert names("/Pod") == ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node",
                             "Nominated Node", "Readiness Gates"]
    assert wide("/Pod") == ["IP", "Node", "Nominated Node", "Readiness Gates"]
    name_col = printers.column_definitions("/Pod")[0]
    assert name_col["type"] == "string" and name_col["format"] == "name"


def test_pod_running() -> None:
    obj = pod({"phase": "Running", "podIP": "10.1.0.4",
               "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0,
                                      "state": {"running": {"startedAt": ts(200)}}}]},
              spec={"nodeName": "node-1", "containers": [{"name": "app"}]})
    assert cells(obj) == ["p", "1/1", "Running", "0", "5m", "10.1.0.4", "node-1", "<none>",
                          "<none>"]


def test_pod_crashloop_with_restart_age() -> None:
    obj = pod({"phase": "Running", "containerStatuses": [{
        "name": "app", "ready": False, "restartCount": 5,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "finishedAt": ts(90)}}}]})
    assert cells(obj)[1:4] == ["0/1", "CrashLoopBackOff", "5 (90s ago)"]


def test_pod_completed() -> None:
    obj = pod({"phase": "Succeeded", "containerStatuses": [{
        "name": "app", "ready": False, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]})
    assert cells(obj)[1:4] == ["0/1", "Completed", "0"]
    assert printers.row_conditions("/Pod", obj)[0]["reason"] == "PodCompleted"


def test_pod_exit_code_and_signal_without_reason() -> None:
    obj = pod({"phase": "Failed", "containerStatuses": [{
        "name": "app", "state": {"terminated": {"exitCode": 3}}}]})
    assert cells(obj)[2] == "ExitCode:3"
    obj["status"]["containerStatuses"][0]["state"]["terminated"]["signal"] = 9
    assert cells(obj)[2] == "Signal:9"


def test_pod_terminating() -> None:
    obj = pod({"phase": "Running", "containerStatuses": [{
        "name": "app", "ready": True, "state": {"running": {}}}]}, deletionTimestamp=ts(1))
    assert cells(obj)[2] == "Terminating"
    obj["status"]["reason"] = "NodeLost"
    assert cells(obj)[2] == "Unknown"
    done = pod({"phase": "Succeeded"}, deletionTimestamp=ts(1))
    assert cells(done)[2] == "Succeeded"  # terminal pods keep their phase


def test_pod_init_progress() -> None:
    spec = {"initContainers": [{"name": "init"}], "containers": [{"name": "app"}]}
    obj = pod({"phase": "Pending", "initContainerStatuses": [{
        "name": "init", "ready": False, "state": {"running": {}}}],
        "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}]},
        spec=spec)
    assert cells(obj)[1:3] == ["0/1", "Init:0/1"]
    obj["status"]["initContainerStatuses"][0]["state"] = {"waiting": {"reason": "ImagePullBackOff"}}
    assert cells(obj)[2] == "Init:ImagePullBackOff"
    obj["status"]["initContainerStatuses"][0]["state"] = {"terminated": {"exitCode": 2}}
    assert cells(obj)[2] == "Init:ExitCode:2"


def test_pod_sidecar_counts_towards_ready() -> None:
    spec = {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "app"}]}
    obj = pod({"phase": "Running",
               "conditions": [{"type": "Initialized", "status": "True"}],
               "initContainerStatuses": [{"name": "proxy", "started": True, "ready": True,
                                          "restartCount": 1, "state": {"running": {}}}],
               "containerStatuses": [{"name": "app", "ready": True, "state": {"running": {}}}]},
              spec=spec)
    assert cells(obj)[1:4] == ["2/2", "Running", "1"]


def test_pod_readiness_gates_and_pending_ip() -> None:
    spec = {"containers": [{"name": "a"}], "readinessGates": [{"conditionType": "x/ready"},
                                                               {"conditionType": "y/ready"}]}
    obj = pod({"phase": "Pending", "conditions": [{"type": "x/ready", "status": "True"}]},
              spec=spec)
    assert cells(obj)[5:] == ["<none>", "<none>", "<none>", "1/2"]


def test_pod_hostile_shapes_do_not_raise() -> None:
    for status in ({"containerStatuses": "x"}, {"containerStatuses": [None, 3]},
                   {"initContainerStatuses": [{"state": "bad"}]}, None):
        row = cells({"metadata": "x", "spec": 5, "status": status})
        json.dumps(row)


# -- workloads -------------------------------------------------------------------------------------
def test_deployment() -> None:
    dep = {"kind": "Deployment", "metadata": {"name": "web", "creationTimestamp": ts(7200)},
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"spec": {"containers": [{"name": "a", "image": "nginx:1"},
                                                          {"name": "b", "image": "busybox"}]}}},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert names("apps/Deployment") == ["Name", "Ready", "Up-to-date", "Available", "Age",
                                        "Containers", "Images", "Selector"]
    assert cells(dep, "apps/Deployment") == ["web", "2/3", 3, 2, "120m", "a,b", "nginx:1,busybox",
                                             "app=web"]
    fresh = {"metadata": {"name": "new"}, "spec": {"replicas": 1}}
    assert cells(fresh, "apps/Deployment")[1:4] == ["0/1", 0, 0]


def test_replicaset_statefulset_daemonset() -> None:
    rs = {"metadata": {"name": "rs"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}}},
          "status": {"replicas": 2, "readyReplicas": 1}}
    assert cells(rs, "apps/ReplicaSet")[:4] == ["rs", 2, 2, 1]
    assert cells(rs, "apps/ReplicaSet")[-1] == "a=b"
    sts = {"metadata": {"name": "db"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3}}
    assert cells(sts, "apps/StatefulSet")[:2] == ["db", "3/3"]
    ds = {"metadata": {"name": "ds"}, "spec": {"template": {"spec": {"nodeSelector": {"os": "linux"}}}},
          "status": {"desiredNumberScheduled": 2, "numberReady": 2}}
    assert cells(ds, "apps/DaemonSet")[:7] == ["ds", 2, 0, 2, 0, 0, "os=linux"]
    assert names("apps/DaemonSet")[6] == "Node Selector"


def test_job() -> None:
    job = {"metadata": {"name": "j"}, "spec": {"completions": 3},
           "status": {"succeeded": 3, "startTime": ts(400), "completionTime": ts(100),
                      "conditions": [{"type": "Complete", "status": "True"}]}}
    assert cells(job, "batch/Job")[:4] == ["j", "Complete", "3/3", "5m"]
    running = {"metadata": {"name": "r"}, "spec": {"parallelism": 2},
               "status": {"startTime": ts(30)}}
    assert cells(running, "batch/Job")[:4] == ["r", "Running", "0/1 of 2", "30s"]


# -- services and friends ---------------------------------------------------------------------------
def test_service_ports_formatting() -> None:
    assert printers.service_ports([{"port": 80, "protocol": "TCP"},
                                   {"port": 443, "nodePort": 30000, "protocol": "TCP"},
                                   {"port": 53, "protocol": "UDP"}]) == "80/TCP,443:30000/TCP,53/UDP"


def test_service_rows() -> None:
    svc = {"metadata": {"name": "web", "creationTimestamp": ts(60)},
           "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                    "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web"}}}
    assert names("/Service") == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age",
                                 "Selector"]
    assert cells(svc, "/Service") == ["web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP", "60s",
                                      "app=web"]
    lb = {"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.0.0.1"],
                                               "ports": [{"port": 443, "nodePort": 31000,
                                                          "protocol": "TCP"}]}}
    assert cells(lb, "/Service")[3:5] == ["<pending>", "443:31000/TCP"]
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb.example"}]}}
    assert cells(lb, "/Service")[3] == "1.2.3.4,lb.example"
    ext = {"metadata": {"name": "e"}, "spec": {"type": "ExternalName", "externalName": "x.example"}}
    assert cells(ext, "/Service")[2:5] == ["<none>", "x.example", "<none>"]


def test_endpoints() -> None:
    ep = {"metadata": {"name": "web"}, "subsets": [
        {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::1"}, {"ip": "10.0.0.4"}],
         "ports": [{"port": 8080}]}]}
    assert cells(ep, "/Endpoints")[1] == "10.0.0.1:8080,10.0.0.2:8080,[fd00::1]:8080 + 1 more..."
    assert cells({"metadata": {"name": "x"}}, "/Endpoints")[1] == "<none>"


def test_simple_core_kinds() -> None:
    cm = {"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}
    assert cells(cm, "/ConfigMap")[:2] == ["c", 3]
    sec = {"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}}
    assert cells(sec, "/Secret")[:3] == ["s", "Opaque", 1]
    assert names("/ServiceAccount") == ["Name", "Secrets", "Age"]
    ns = {"metadata": {"name": "dev"}, "status": {"phase": "Active"}}
    assert cells(ns, "/Namespace")[:2] == ["dev", "Active"]
    quota = {"metadata": {"name": "q"}, "status": {
        "hard": {"pods": "10", "limits.cpu": "2", "requests.memory": "1Gi"},
        "used": {"pods": "3", "limits.cpu": "500m"}}}
    assert names("/ResourceQuota") == ["Name", "Request", "Limit", "Age"]
    assert cells(quota, "/ResourceQuota")[:3] == ["q", "pods: 3/10, requests.memory: 0/1Gi",
                                                 "limits.cpu: 500m/2"]
    lease = {"metadata": {"name": "l"}, "spec": {"holderIdentity": "node-1"}}
    assert cells(lease, "coordination.k8s.io/Lease")[:2] == ["l", "node-1"]


def test_node() -> None:
    node = {"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": "",
                                                  "kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.5"}],
                       "nodeInfo": {"kubeletVersion": "v1.37.0", "osImage": "Atoll"}}}
    assert cells(node, "/Node")[:3] == ["n1", "Ready,SchedulingDisabled", "control-plane,worker"]
    assert cells(node, "/Node")[4:] == ["v1.37.0", "192.168.1.5", "<none>", "Atoll", "<unknown>",
                                        "<unknown>"]
    assert cells({"metadata": {"name": "n2"}}, "/Node")[1:3] == ["Unknown", "<none>"]


def test_event() -> None:
    ev = {"metadata": {"name": "p.1"}, "type": "Warning", "reason": "BackOff",
          "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{app}"},
          "source": {"component": "kubelet", "host": "n1"}, "message": " Back-off \n",
          "firstTimestamp": ts(600), "lastTimestamp": ts(30), "count": 7}
    assert names("/Event") == ["Last Seen", "Type", "Reason", "Object", "Subobject", "Source",
                               "Message", "First Seen", "Count", "Name"]
    assert cells(ev, "/Event") == ["30s", "Warning", "BackOff", "pod/p", "spec.containers{app}",
                                   "kubelet, n1", "Back-off", "10m", 7, "p.1"]
    new_api = {"metadata": {"name": "e"}, "regarding": {"kind": "Node", "name": "n1"},
               "note": "hello", "eventTime": "2023-11-14T22:13:00.000000Z",
               "reportingController": "ctl", "type": "Normal", "reason": "R"}
    assert cells(new_api, "events.k8s.io/Event") == ["20s", "Normal", "R", "node/n1", "", "ctl",
                                                     "hello", "20s", 1, "e"]


def test_storage() -> None:
    pv = {"metadata": {"name": "pv1"}, "spec": {
        "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "d", "name": "c"},
        "storageClassName": "fast"}, "status": {"phase": "Bound"}}
    assert cells(pv, "/PersistentVolume")[:9] == ["pv1", "10Gi", "RWO,RWX", "Retain", "Bound", "d/c",
                                                  "fast", "<unset>", ""]
    pvc = {"metadata": {"name": "c"}, "spec": {"volumeName": "pv1", "storageClassName": "fast"},
           "status": {"phase": "Bound", "capacity": {"storage": "10Gi"},
                      "accessModes": ["ReadWriteOnce"]}}
    assert cells(pvc, "/PersistentVolumeClaim")[:7] == ["c", "Bound", "pv1", "10Gi", "RWO", "fast",
                                                       "<unset>"]
    sc = {"metadata": {"name": "std", "annotations": {
        "storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "atoll.io/local"}
    assert cells(sc, "storage.k8s.io/StorageClass")[:5] == ["std (default)", "atoll.io/local",
                                                           "Delete", "Immediate", False]


def test_rbac_and_created_at_kinds() -> None:
    rb = {"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
          "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                       {"kind": "ServiceAccount", "namespace": "d", "name": "sa"},
                       {"kind": "User", "name": "bob"}]}
    key = "rbac.authorization.k8s.io/RoleBinding"
    assert cells(rb, key)[:2] == ["rb", "ClusterRole/view"]
    assert cells(rb, key)[3:] == ["alice, bob", "devs", "d/sa"]
    role = {"metadata": {"name": "r", "creationTimestamp": "2024-02-03T04:05:06.789Z"}}
    for kind_key in ("rbac.authorization.k8s.io/Role", "rbac.authorization.k8s.io/ClusterRole",
                     "/LimitRange", "apiextensions.k8s.io/CustomResourceDefinition"):
        assert names(kind_key) == ["Name", "Created At"]
        assert printers.column_definitions(kind_key)[1]["type"] == "date"
        assert cells(role, kind_key) == ["r", "2024-02-03T04:05:06Z"]


def test_unknown_kind_defaults() -> None:
    assert names("example.com/Widget") == ["Name", "Age"]
    assert cells({"metadata": {"name": "w", "creationTimestamp": ts(5)}},
                 "example.com/Widget") == ["w", "5s"]


# -- custom resources -------------------------------------------------------------------------------
CR = {"apiVersion": "example.com/v1", "kind": "Widget",
      "metadata": {"name": "w1", "creationTimestamp": ts(3600),
                   "annotations": {"example.com/owner": "team-a"}},
      "spec": {"replicas": 3, "ratio": 0.5, "enabled": True, "ports": [{"port": 80}, {"port": 81}]},
      "status": {"conditions": [{"type": "Synced", "status": "False"},
                                {"type": "Ready", "status": "True",
                                 "lastTransitionTime": ts(120)}]}}
PRINTER_COLUMNS = [
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Since", "type": "date",
     "jsonPath": ".status.conditions[?(@.type=='Ready')].lastTransitionTime"},
    {"name": "Ports", "type": "string", "jsonPath": ".spec.ports[*].port", "priority": 1},
    {"name": "Owner", "type": "string", "jsonPath": ".metadata.annotations['example.com/owner']"},
    {"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio"},
    {"name": "On", "type": "boolean", "jsonPath": ".spec.enabled"},
    {"name": "Missing", "type": "string", "jsonPath": ".spec.nothing"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def test_crd_columns() -> None:
    cols = printers.crd_columns(PRINTER_COLUMNS)
    assert [c["name"] for c in cols] == ["Name", "Replicas", "Ready", "Since", "Ports", "Owner",
                                         "Ratio", "On", "Missing", "Age"]
    assert cols[0]["format"] == "name"
    assert cols[4]["priority"] == 1
    assert cols[1]["description"] == ("Custom resource definition column (in JSONPath format): "
                                      ".spec.replicas")


def test_crd_cells() -> None:
    assert printers.crd_cells(PRINTER_COLUMNS, CR, NOW) == [
        "w1", 3, "True", "2m", "80,81", "team-a", 0.5, True, None, "60m"]


def test_crd_defaults_to_age() -> None:
    assert [c["name"] for c in printers.crd_columns([])] == ["Name", "Age"]
    assert printers.crd_cells([], CR, NOW) == ["w1", "60m"]


def test_crd_cells_bad_values() -> None:
    cols = [{"name": "When", "type": "date", "jsonPath": ".spec.when"},
            {"name": "N", "type": "integer", "jsonPath": ".spec.n"},
            {"name": "Broken", "type": "string", "jsonPath": ".spec[?(@"}]
    obj = {"metadata": {"name": "x"}, "spec": {"when": "yesterday", "n": "three"}}
    assert printers.crd_cells(cols, obj, NOW) == ["x", "<invalid>", None, None]


def test_jsonpath() -> None:
    assert jsonpath.find(CR, "{.spec.ports[0].port}") == [80]
    assert jsonpath.find(CR, ".spec.ports[-1].port") == [81]
    assert jsonpath.find(CR, ".spec.ports[0:1].port") == [80]
    assert jsonpath.find(CR, "$.spec.replicas") == [3]
    assert jsonpath.find(CR, "..port") == [80, 81]
    assert jsonpath.find(CR, ".status.conditions[?(@.status!='True')].type") == ["Synced"]
    assert jsonpath.find(CR, ".spec.ports[?(@.port>80)].port") == [81]
    assert jsonpath.find(CR, ".status.conditions[?(@.lastTransitionTime)].type") == ["Ready"]
    assert jsonpath.find(CR, ".spec.nothing.deeper") == []
    assert jsonpath.to_text({"b": 1, "a": [True]}) == '{"a":[true],"b":1}'
    with pytest.raises(jsonpath.JSONPathError):
        jsonpath.parse(".a[")


# -- the Table ------------------------------------------------------------------------------------
def test_table_shape_and_include_object() -> None:
    obj = pod({"phase": "Running"})
    t = printers.table("/Pod", [obj], NOW, resource_version="42", continue_token="c", remaining=5)
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert t["metadata"] == {"resourceVersion": "42", "continue": "c", "remainingItemCount": 5}
    assert set(t["columnDefinitions"][0]) == {"name", "type", "format", "description", "priority"}
    (row,) = t["rows"]
    assert row["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}
    assert printers.table("/Pod", [obj], NOW, include_object="Object")["rows"][0]["object"] is obj
    assert "object" not in printers.table("/Pod", [obj], NOW, include_object="None")["rows"][0]
    assert printers.table("/Pod", [], NOW)["metadata"] == {}
    json.dumps(t)


def test_table_with_custom_columns() -> None:
    t = printers.table("example.com/Widget", [CR], NOW,
                       columns=printers.crd_columns(PRINTER_COLUMNS),
                       cells_fn=lambda o, n: printers.crd_cells(PRINTER_COLUMNS, o, n))
    assert len(t["rows"][0]["cells"]) == len(t["columnDefinitions"]) == 10
    json.dumps(t)


def test_every_builtin_printer_matches_its_columns() -> None:
    """Each printer emits exactly one cell per column, even for an empty object."""
    for kind_key in resources.printed_kinds():
        row = printers.row_cells(kind_key, {"metadata": {"name": "x"}}, NOW)
        assert len(row) == len(printers.column_definitions(kind_key)), kind_key
        json.dumps(row)
