"""The Pod Security Standards against upstream's own fixture list.

Each row is one of k8s.io/pod-security-admission's test fixtures (test/fixtures_*.go,
as generated into test/testdata/<level>/v1.37/{pass,fail}/): a minimal valid pod for
the level, changed the way the fixture changes it.  Baseline rows run at both levels
(on each level's minimal pod), restricted rows at restricted, and also at baseline
where the fixture must stay allowed there.  A failing row must be refused with the
check's upstream wording.  Then: exact messages, policy versions, namespace labels.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from atoll.apiserver.admission import pss
from atoll.apiserver.admission.podsecurity import LevelVersion, policy_for
from atoll.api.resources.core_v1_pods import default_pod_spec

Tweak = Callable[[dict[str, Any]], None]
AA = "container.apparmor.security.beta.kubernetes.io/"
C0, I0 = ("spec", "containers", 0), ("spec", "initContainers", 0)
SC0, ISC0, PSC = C0 + ("securityContext",), I0 + ("securityContext",), ("spec",
                                                                         "securityContext")


def minimal(level: str) -> dict[str, Any]:
    """Upstream's minimal valid pod for a level (test/fixtures.go)."""
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "base"},
        "spec": {"containers": [{"name": "container1", "image": "registry.k8s.io/pause"}],
                 "initContainers": [{"name": "initcontainer1",
                                     "image": "registry.k8s.io/pause"}]}}
    if level == pss.RESTRICTED:
        for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
            c["securityContext"] = {"allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}}
        pod["spec"]["securityContext"] = {"runAsNonRoot": True,
                                          "seccompProfile": {"type": "RuntimeDefault"}}
    return pod


def put(path: tuple[Any, ...], value: Any) -> Tweak:
    def tweak(pod: dict[str, Any]) -> None:
        node: Any = pod
        for key in path[:-1]:
            if isinstance(key, int):
                node = node[key]
            else:
                node = node.setdefault(key, {})
        node[path[-1]] = value
    return tweak


def drop(path: tuple[Any, ...]) -> Tweak:
    def tweak(pod: dict[str, Any]) -> None:
        node: Any = pod
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    return tweak


def vols(*volumes: dict[str, Any]) -> Tweak:
    return put(("spec", "volumes"), list(volumes))


BASELINE_CAPS = ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                 "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]
MANY_DROPS = ["SYS_TIME", "SYS_MODULE", "SYS_RAWIO", "SYS_PACCT", "SYS_ADMIN", "SYS_NICE",
              "SYS_RESOURCE", "SYS_TTY_CONFIG", "MKNOD", "AUDIT_WRITE", "AUDIT_CONTROL",
              "MAC_OVERRIDE", "MAC_ADMIN", "NET_ADMIN", "SYSLOG", "CHOWN", "NET_RAW",
              "DAC_OVERRIDE", "FOWNER", "DAC_READ_SEARCH", "FSETID", "KILL", "SETGID", "SETUID",
              "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "IPC_LOCK", "IPC_OWNER",
              "SYS_CHROOT", "SYS_PTRACE", "SYS_BOOT", "LEASE", "SETFCAP", "WAKE_ALARM",
              "BLOCK_SUSPEND"]


def caps(path: tuple[Any, ...], key: str, values: list[str]) -> Tweak:
    def tweak(pod: dict[str, Any]) -> None:
        put(path + ("capabilities",), {**_get(pod, path).get("capabilities", {}),
                                       key: values})(pod)
    return tweak


def _get(pod: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    node: Any = pod
    for key in path:
        node = node[key] if isinstance(key, int) else node.setdefault(key, {})
    return node


def probe(path: tuple[Any, ...], kind: str, handler: str, **fields: Any) -> Tweak:
    return put(path + (kind,), {handler: {"port": 8080, **fields}})


# (fixture, passes, tweaks, expected substring when refused)
BASELINE_CASES: list[tuple[str, bool, list[Tweak], str]] = [
    ("apparmorprofile0", False, [put(("metadata", "annotations", AA + "container1"),
                                     "unconfined")], "forbidden AppArmor profile"),
    ("apparmorprofile1", False, [put(("metadata", "annotations", AA + "initcontainer1"),
                                     "unconfined")], "forbidden AppArmor profile"),
    ("apparmorprofile0", True, [put(("metadata", "annotations", AA + "container1"),
                                    "localhost/foo")], ""),
    # beyond upstream's fixtures: the appArmorProfile field (pod and container)
    ("apparmorprofile-field-pod", False, [put(PSC + ("appArmorProfile",),
                                              {"type": "Unconfined"})],
     'pod must not set AppArmor profile type to "Unconfined"'),
    ("apparmorprofile-field-container", False, [put(SC0 + ("appArmorProfile",),
                                                    {"type": "Unconfined"})],
     'container "container1" must not set AppArmor profile type to "Unconfined"'),
    ("apparmorprofile-field-ok", True, [put(PSC + ("appArmorProfile",), {"type": "RuntimeDefault"}),
                                        put(SC0 + ("appArmorProfile",),
                                            {"type": "Localhost", "localhostProfile": "p"})], ""),
    ("capabilities_baseline0", False, [caps(SC0, "add", ["NET_RAW"])], "capabilities"),
    ("capabilities_baseline1", False, [caps(ISC0, "add", ["NET_RAW"])], "capabilities"),
    ("capabilities_baseline2", False, [caps(SC0, "add", ["chown"])], "capabilities"),
    ("capabilities_baseline3", False, [caps(SC0, "add", ["CAP_CHOWN"])], "capabilities"),
    ("hostnamespaces0", False, [put(("spec", "hostIPC"), True)], "host namespaces"),
    ("hostnamespaces1", False, [put(("spec", "hostNetwork"), True)], "host namespaces"),
    ("hostnamespaces2", False, [put(("spec", "hostPID"), True)], "host namespaces"),
    ("hostpathvolumes0", False, [vols({"name": "volume-emptydir", "emptyDir": {}},
                                      {"name": "volume-hostpath", "hostPath": {"path": "/a"}})],
     "hostPath"),
    ("hostpathvolumes1", False, [vols({"name": "volume-hostpath-a", "hostPath": {"path": "/a"}},
                                      {"name": "volume-hostpath-b", "hostPath": {"path": "/b"}})],
     "hostPath"),
    ("hostports0", False, [put(C0 + ("ports",), [{"containerPort": 12345, "hostPort": 12345}])],
     "hostPort"),
    ("hostports1", False, [put(I0 + ("ports",), [{"containerPort": 12346, "hostPort": 12346}])],
     "hostPort"),
    ("hostports2", False, [put(C0 + ("ports",), [{"containerPort": 12345, "hostPort": 12345},
                                                 {"containerPort": 12347}]),
                           put(I0 + ("ports",), [{"containerPort": 12346, "hostPort": 12346},
                                                 {"containerPort": 12348}])], "hostPort"),
    ("hostports0", True, [put(C0 + ("ports",), [{"containerPort": 12345}]),
                          put(I0 + ("ports",), [{"containerPort": 12346}])], ""),
    ("hostprobesandhostlifecycle0", False, [probe(C0, "livenessProbe", "httpGet",
                                                  host="bad.host")], "probe or lifecycle host"),
    ("hostprobesandhostlifecycle1", False, [probe(I0, "readinessProbe", "tcpSocket",
                                                  host="8.8.8.8"),
                                            put(I0 + ("restartPolicy",), "Always")],
     "probe or lifecycle host"),
    ("hostprobesandhostlifecycle2", False, [put(C0 + ("lifecycle",), {"postStart": {"httpGet": {
        "port": 8080, "host": "bad.host"}}})], "probe or lifecycle host"),
    ("hostprobesandhostlifecycle3", False, [probe(C0, "livenessProbe", "httpGet",
                                                  host="127.0.0.1")], "probe or lifecycle host"),
    ("hostprobesandhostlifecycle4", False, [probe(C0, "readinessProbe", "tcpSocket", host="::1")],
     "probe or lifecycle host"),
    ("hostprobesandhostlifecycle0", True, [], ""),
    ("hostprobesandhostlifecycle1", True, [probe(C0, "livenessProbe", "httpGet")], ""),
    ("hostprobesandhostlifecycle2", True, [probe(C0, "readinessProbe", "tcpSocket")], ""),
    ("privileged0", False, [put(SC0 + ("privileged",), True)], "privileged"),
    ("privileged1", False, [put(ISC0 + ("privileged",), True)], "privileged"),
    ("privileged0", True, [put(SC0 + ("privileged",), False), put(ISC0 + ("privileged",), False)],
     ""),
    ("procmount0", False, [put(SC0 + ("procMount",), "Unmasked"), put(("spec", "hostUsers"), True)],
     "procMount"),
    ("procmount1", False, [put(ISC0 + ("procMount",), "Unmasked"),
                           put(("spec", "hostUsers"), True)], "procMount"),
    ("procmount0", True, [put(SC0 + ("procMount",), "Default"),
                          put(ISC0 + ("procMount",), "Default"),
                          put(("spec", "hostUsers"), False)], ""),
    ("seccompprofile_baseline0", False, [put(PSC + ("seccompProfile",), {"type": "Unconfined"})],
     "seccompProfile"),
    ("seccompprofile_baseline1", False, [put(SC0 + ("seccompProfile",), {"type": "Unconfined"})],
     "seccompProfile"),
    ("seccompprofile_baseline2", False, [put(ISC0 + ("seccompProfile",), {"type": "Unconfined"})],
     "seccompProfile"),
    ("selinuxoptions0", False, [put(PSC + ("seLinuxOptions",), {"type": "somevalue"})],
     "seLinuxOptions"),
    ("selinuxoptions1", False, [put(SC0 + ("seLinuxOptions",), {"type": "somevalue"})],
     "seLinuxOptions"),
    ("selinuxoptions2", False, [put(ISC0 + ("seLinuxOptions",), {"type": "somevalue"})],
     "seLinuxOptions"),
    ("selinuxoptions3", False, [put(PSC + ("seLinuxOptions",), {"user": "somevalue"})],
     "seLinuxOptions"),
    ("selinuxoptions4", False, [put(PSC + ("seLinuxOptions",), {"role": "somevalue"})],
     "seLinuxOptions"),
    ("selinuxoptions-spc_t", False, [put(PSC + ("seLinuxOptions",), {"type": "spc_t"})],
     'pod set forbidden securityContext.seLinuxOptions: type "spc_t"'),
    ("selinuxoptions0", True, [], ""),
    ("selinuxoptions1", True, [put(PSC + ("seLinuxOptions",), {"type": "container_t"}),
                               put(SC0 + ("seLinuxOptions",), {"type": "container_init_t",
                                                               "level": "somevalue"}),
                               put(ISC0 + ("seLinuxOptions",), {"type": "container_kvm_t"})], ""),
    ("selinuxoptions-engine", True, [put(PSC + ("seLinuxOptions",),
                                         {"type": "container_engine_t"})], ""),
    ("sysctls0", False, [put(PSC + ("sysctls",), [{"name": "othersysctl", "value": "other"}])],
     "forbidden sysctl"),
    ("sysctls0", True, [], ""),
    ("sysctls1", True, [put(PSC + ("sysctls",), [
        {"name": "net.ipv4.tcp_slow_start_after_idle", "value": "0"},
        {"name": "net.ipv4.tcp_notsent_lowat", "value": "16384"}])], ""),
    ("windowshostprocess0", False, [put(("spec", "hostNetwork"), True),
                                    put(PSC + ("windowsOptions",), {"hostProcess": True})],
     "hostProcess"),
    ("windowshostprocess1", False, [put(("spec", "hostNetwork"), True),
                                    put(SC0 + ("windowsOptions",), {"hostProcess": True}),
                                    put(ISC0 + ("windowsOptions",), {"hostProcess": True})],
     "hostProcess"),
    ("ephemeral-privileged", False, [put(("spec", "ephemeralContainers"), [
        {"name": "debug", "image": "busybox", "securityContext": {"privileged": True}}])],
     'privileged (container "debug" must not set securityContext.privileged=true)'),
]

# (fixture, passes at restricted, passes at baseline, tweaks, expected substring)
RESTRICTED_CASES: list[tuple[str, bool, bool, list[Tweak], str]] = [
    ("allowprivilegeescalation0", False, True, [put(SC0 + ("allowPrivilegeEscalation",), True)],
     "allowPrivilegeEscalation"),
    ("allowprivilegeescalation1", False, True, [put(ISC0 + ("allowPrivilegeEscalation",), True)],
     "allowPrivilegeEscalation"),
    ("allowprivilegeescalation2", False, True, [drop(SC0 + ("allowPrivilegeEscalation",))],
     "allowPrivilegeEscalation"),
    ("allowprivilegeescalation3", False, True, [drop(SC0 + ("allowPrivilegeEscalation",)),
                                                drop(SC0 + ("capabilities",))],
     "allowPrivilegeEscalation"),
    ("capabilities_restricted0", False, True, [drop(SC0 + ("capabilities",))],
     "unrestricted capabilities"),
    ("capabilities_restricted1", False, True, [drop(ISC0 + ("capabilities",))],
     "unrestricted capabilities"),
    ("capabilities_restricted2", False, True, [caps(SC0, "drop", MANY_DROPS),
                                               caps(ISC0, "drop", MANY_DROPS)],
     "unrestricted capabilities"),
    ("capabilities_restricted3", False, True, [caps(SC0, "add", BASELINE_CAPS),
                                               caps(ISC0, "add", BASELINE_CAPS)],
     "unrestricted capabilities"),
    ("capabilities_restricted0", True, True, [caps(SC0, "add", ["NET_BIND_SERVICE"]),
                                              caps(ISC0, "add", ["NET_BIND_SERVICE"])], ""),
    ("procmount_restricted0", False, True, [put(SC0 + ("procMount",), "Unmasked"),
                                            put(("spec", "hostUsers"), False)], "procMount"),
    ("procmount_restricted1", False, True, [put(ISC0 + ("procMount",), "Unmasked"),
                                            put(("spec", "hostUsers"), False)], "procMount"),
    ("procmount_restricted0", True, True, [put(SC0 + ("procMount",), "Default"),
                                           put(ISC0 + ("procMount",), "Default"),
                                           put(("spec", "hostUsers"), False)], ""),
    *[(f"restrictedvolumes{i}", False, source != "hostPath",
       [vols({"name": "volume1", source: body})], "restricted volume types")
      for i, (source, body) in enumerate([
          ("gcePersistentDisk", {"pdName": "test"}), ("awsElasticBlockStore", {"volumeID": "test"}),
          ("gitRepo", {"repository": "github.com/kubernetes/kubernetes"}),
          ("nfs", {"server": "test", "path": "/test"}),
          ("iscsi", {"targetPortal": "test", "iqn": "iqn.2001-04.com.example:storage.kube.sys1.xyz",
                     "lun": 0}),
          ("glusterfs", {"endpoints": "test", "path": "test"}),
          ("rbd", {"monitors": ["test"], "image": "test"}), ("flexVolume", {"driver": "test"}),
          ("cinder", {"volumeID": "test"}), ("cephfs", {"monitors": ["test"]}),
          ("flocker", {"datasetName": "test"}), ("fc", {"wwids": ["test"]}),
          ("azureFile", {"secretName": "test", "shareName": "test"}),
          ("vsphereVolume", {"volumePath": "test"}),
          ("quobyte", {"registry": "localhost:1234", "volume": "test"}),
          ("azureDisk", {"diskName": "test",
                         "diskURI": "https://test.blob.core.windows.net/test/test.vhd"}),
          ("portworxVolume", {"volumeID": "test", "fsType": "ext4"}),
          ("scaleIO", {"gateway": "localhost", "system": "test", "volumeName": "test"}),
          ("storageos", {"volumeName": "test"}), ("hostPath", {"path": "/dev/null"})])],
    ("restrictedvolumes0", True, True, [vols(
        {"name": "volume0"}, {"name": "volume1", "emptyDir": {}},
        {"name": "volume2", "secret": {"secretName": "test"}},
        {"name": "volume3", "persistentVolumeClaim": {"claimName": "test"}},
        {"name": "volume4", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {
            "fieldPath": "metadata.labels"}}]}},
        {"name": "volume5", "configMap": {"name": "test"}},
        {"name": "volume6", "projected": {"sources": []}})], ""),
    ("runasnonroot0", False, True, [drop(PSC + ("runAsNonRoot",))], "runAsNonRoot"),
    ("runasnonroot1", False, True, [put(PSC + ("runAsNonRoot",), False)], "runAsNonRoot"),
    ("runasnonroot2", False, True, [put(SC0 + ("runAsNonRoot",), False)], "runAsNonRoot"),
    ("runasnonroot3", False, True, [put(ISC0 + ("runAsNonRoot",), False)], "runAsNonRoot"),
    ("runasnonroot0", True, True, [], ""),
    ("runasnonroot1", True, True, [drop(PSC + ("runAsNonRoot",)),
                                   put(SC0 + ("runAsNonRoot",), True),
                                   put(ISC0 + ("runAsNonRoot",), True)], ""),
    ("runasuser0", False, True, [put(PSC + ("runAsUser",), 0)], "runAsUser"),
    ("runasuser1", False, True, [put(SC0 + ("runAsUser",), 0)], "runAsUser"),
    ("runasuser2", False, True, [put(ISC0 + ("runAsUser",), 0)], "runAsUser"),
    ("runasuser0", True, True, [put(PSC + ("runAsUser",), 1000), put(SC0 + ("runAsUser",), 1000),
                                put(ISC0 + ("runAsUser",), 1000)], ""),
    ("seccompprofile_restricted0", False, True, [drop(PSC + ("seccompProfile",))],
     "seccompProfile"),
    ("seccompprofile_restricted1", False, False, [put(PSC + ("seccompProfile",),
                                                      {"type": "Unconfined"})], "seccompProfile"),
    ("seccompprofile_restricted2", False, True, [drop(PSC + ("seccompProfile",)),
                                                 put(SC0 + ("seccompProfile",),
                                                     {"type": "RuntimeDefault"})],
     "seccompProfile"),
    ("seccompprofile_restricted3", False, True, [drop(PSC + ("seccompProfile",)),
                                                 put(ISC0 + ("seccompProfile",),
                                                     {"type": "RuntimeDefault"})],
     "seccompProfile"),
    ("seccompprofile_restricted4", False, False, [drop(PSC + ("seccompProfile",)),
                                                  put(SC0 + ("seccompProfile",),
                                                      {"type": "RuntimeDefault"}),
                                                  put(ISC0 + ("seccompProfile",),
                                                      {"type": "Unconfined"})],
     "seccompProfile"),
    ("seccompprofile_restricted0", True, True, [], ""),
    ("seccompprofile_restricted1", True, True, [put(PSC + ("seccompProfile",), {
        "type": "Localhost", "localhostProfile": "testing"})], ""),
    ("seccompprofile_restricted2", True, True, [drop(PSC + ("seccompProfile",)),
                                                put(SC0 + ("seccompProfile",),
                                                    {"type": "RuntimeDefault"}),
                                                put(ISC0 + ("seccompProfile",), {
                                                    "type": "Localhost",
                                                    "localhostProfile": "testing"})], ""),
    ("base_linux", True, True, [put(("spec", "os"), {"name": "linux"})], ""),
    ("base_windows", True, True, [put(("spec", "os"), {"name": "windows"}),
                                  drop(SC0 + ("allowPrivilegeEscalation",)),
                                  drop(SC0 + ("capabilities",)),
                                  drop(ISC0 + ("allowPrivilegeEscalation",)),
                                  drop(ISC0 + ("capabilities",)),
                                  drop(PSC + ("seccompProfile",))], ""),
]


def verdict(level: str, pod: dict[str, Any], minor: int | None = None) -> str:
    pod = copy.deepcopy(pod)
    default_pod_spec(pod["spec"])  # fixtures are judged as the API stores them
    return pss.describe(pss.evaluate(level, minor, pod["metadata"], pod["spec"]))


def build(level: str, tweaks: list[Tweak]) -> dict[str, Any]:
    pod = minimal(level)
    for t in tweaks:
        t(pod)
    return pod


@pytest.mark.parametrize("level", [pss.BASELINE, pss.RESTRICTED])
@pytest.mark.parametrize("fixture,passes,tweaks,expect", BASELINE_CASES,
                         ids=[f"{c[0]}-{'pass' if c[1] else 'fail'}" for c in BASELINE_CASES])
def test_baseline_fixtures(level: str, fixture: str, passes: bool, tweaks: list[Tweak],
                           expect: str) -> None:
    problems = verdict(level, build(level, tweaks))
    if passes:
        assert problems == "", problems
    else:
        assert expect in problems, problems


@pytest.mark.parametrize("fixture,passes,baseline_passes,tweaks,expect", RESTRICTED_CASES,
                         ids=[f"{c[0]}-{'pass' if c[1] else 'fail'}" for c in RESTRICTED_CASES])
def test_restricted_fixtures(fixture: str, passes: bool, baseline_passes: bool,
                             tweaks: list[Tweak], expect: str) -> None:
    pod = build(pss.RESTRICTED, tweaks)
    problems = verdict(pss.RESTRICTED, pod)
    if passes:
        assert problems == "", problems
    else:
        assert expect in problems, problems
    assert (verdict(pss.BASELINE, pod) == "") is baseline_passes, verdict(pss.BASELINE, pod)


def test_privileged_allows_everything() -> None:
    pod = build(pss.BASELINE, [put(("spec", "hostPID"), True), put(SC0 + ("privileged",), True)])
    assert verdict(pss.PRIVILEGED, pod) == ""


# -- exact wording --------------------------------------------------------------------------
def test_messages_are_upstreams() -> None:
    pod = build(pss.BASELINE, [
        put(("spec", "hostNetwork"), True), put(("spec", "hostPID"), True),
        put(SC0 + ("privileged",), True), put(ISC0 + ("privileged",), True),
        caps(SC0, "add", ["SYS_ADMIN", "NET_RAW"]),
        vols({"name": "root", "hostPath": {"path": "/"}}),
        put(C0 + ("ports",), [{"containerPort": 80, "hostPort": 80}]),
        put(PSC + ("seLinuxOptions",), {"type": "spc_t", "user": "u"}),
        put(("metadata", "annotations", AA + "container1"), "unconfined"),
        put(PSC + ("appArmorProfile",), {"type": "Unconfined"}),
        put(SC0 + ("procMount",), "Unmasked"),
        put(PSC + ("sysctls",), [{"name": "kernel.msgmax", "value": "1"}])])
    assert verdict(pss.BASELINE, pod) == (
        'forbidden AppArmor profiles (pod and annotation must not set AppArmor profile type to '
        '"Unconfined", "container.apparmor.security.beta.kubernetes.io/container1="unconfined""), '
        'non-default capabilities (container "container1" must not include "NET_RAW", '
        '"SYS_ADMIN" in securityContext.capabilities.add), '
        "host namespaces (hostNetwork=true, hostPID=true), "
        'hostPath volumes (volume "root"), '
        'hostPort (container "container1" uses hostPort 80), '
        'privileged (containers "initcontainer1", "container1" must not set '
        "securityContext.privileged=true), "
        'procMount (container "container1" must not set securityContext.procMount to '
        '"Unmasked"), '
        'seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type "spc_t"; '
        "user may not be set), "
        "forbidden sysctls (kernel.msgmax)")


def test_restricted_message_order_and_wording() -> None:
    pod = build(pss.BASELINE, [vols({"name": "data", "nfs": {"server": "s", "path": "/"}})])
    assert verdict(pss.RESTRICTED, pod) == (
        'allowPrivilegeEscalation != false (containers "initcontainer1", "container1" must set '
        "securityContext.allowPrivilegeEscalation=false), "
        'unrestricted capabilities (containers "initcontainer1", "container1" must set '
        'securityContext.capabilities.drop=["ALL"]), '
        'restricted volume types (volume "data" uses restricted volume type "nfs"), '
        'runAsNonRoot != true (pod or containers "initcontainer1", "container1" must set '
        "securityContext.runAsNonRoot=true), "
        'seccompProfile (pod or containers "initcontainer1", "container1" must set '
        'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')


# -- versions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("minor,tweaks,allowed", [
    (30, [put(PSC + ("seLinuxOptions",), {"type": "container_engine_t"})], False),
    (31, [put(PSC + ("seLinuxOptions",), {"type": "container_engine_t"})], True),
    (31, [put(PSC + ("sysctls",), [{"name": "net.ipv4.tcp_rmem", "value": "1 2 3"}])], False),
    (32, [put(PSC + ("sysctls",), [{"name": "net.ipv4.tcp_rmem", "value": "1 2 3"}])], True),
    (36, [put(PSC + ("sysctls",), [{"name": "net.ipv4.tcp_notsent_lowat", "value": "1"}])],
     False),
    (33, [probe(C0, "livenessProbe", "httpGet", host="10.0.0.1")], True),
    (34, [probe(C0, "livenessProbe", "httpGet", host="10.0.0.1")], False),
    (34, [put(SC0 + ("procMount",), "Unmasked"), put(("spec", "hostUsers"), False)], False),
    (35, [put(SC0 + ("procMount",), "Unmasked"), put(("spec", "hostUsers"), False)], True),
    (18, [put(("metadata", "annotations", pss.SECCOMP_POD_ANNOTATION), "unconfined")], False),
    (19, [put(("metadata", "annotations", pss.SECCOMP_POD_ANNOTATION), "unconfined")], True),
    (18, [put(PSC + ("seccompProfile",), {"type": "Unconfined"})], True),
])
def test_baseline_by_version(minor: int, tweaks: list[Tweak], allowed: bool) -> None:
    assert (verdict(pss.BASELINE, build(pss.BASELINE, tweaks), minor) == "") is allowed


@pytest.mark.parametrize("minor,tweaks,allowed", [
    (7, [drop(SC0 + ("allowPrivilegeEscalation",))], True),
    (8, [drop(SC0 + ("allowPrivilegeEscalation",))], False),
    (21, [drop(SC0 + ("capabilities",))], True),
    (22, [drop(SC0 + ("capabilities",))], False),
    (22, [put(("spec", "os"), {"name": "windows"}), drop(SC0 + ("capabilities",))], False),
    (25, [put(("spec", "os"), {"name": "windows"}), drop(SC0 + ("capabilities",))], True),
    (22, [put(PSC + ("runAsUser",), 0)], True),
    (23, [put(PSC + ("runAsUser",), 0)], False),
    (34, [put(PSC + ("runAsUser",), 0), put(("spec", "hostUsers"), False)], False),
    (35, [put(PSC + ("runAsUser",), 0), put(("spec", "hostUsers"), False)], True),
    (34, [put(SC0 + ("procMount",), "Unmasked"), put(("spec", "hostUsers"), False)], False),
    (35, [put(SC0 + ("procMount",), "Unmasked"), put(("spec", "hostUsers"), False)], False),
    (18, [drop(PSC + ("seccompProfile",))], True),
    (19, [drop(PSC + ("seccompProfile",))], False),
])
def test_restricted_by_version(minor: int, tweaks: list[Tweak], allowed: bool) -> None:
    assert (verdict(pss.RESTRICTED, build(pss.RESTRICTED, tweaks), minor) == "") is allowed


def test_future_versions_evaluate_as_latest() -> None:
    pod = build(pss.BASELINE, [probe(C0, "livenessProbe", "httpGet", host="10.0.0.1")])
    assert verdict(pss.BASELINE, pod, 99) == verdict(pss.BASELINE, pod) != ""


def test_hostile_shapes_are_not_set_values() -> None:
    """Wrong JSON types never make the evaluation itself fail."""
    weird: dict[str, Any] = {"metadata": {"annotations": ["x"]},
                             "spec": {"containers": ["c", {"securityContext": "x", "ports": 5,
                                                           "name": 7}],
                                      "volumes": {"a": 1}, "securityContext": [],
                                      "initContainers": {"x": 1}}}
    for level in pss.LEVELS:
        for minor in (None, 0, 18, 25):
            pss.evaluate(level, minor, weird["metadata"], weird["spec"])
    assert pss.evaluate(pss.RESTRICTED, None, None, "spec") == []


# -- namespace labels -------------------------------------------------------------------------
P = "pod-security.kubernetes.io/"


@pytest.mark.parametrize("labels,enforce,warn", [
    ({}, "baseline:latest", "baseline:latest"),
    ({P + "enforce": "privileged"}, "privileged:latest", "privileged:latest"),
    ({P + "enforce": "restricted", P + "enforce-version": "v1.30"}, "restricted:v1.30",
     "restricted:v1.30"),
    ({P + "enforce": "baseline", P + "enforce-version": "latest"}, "baseline:latest",
     "baseline:latest"),
    ({P + "enforce": "baseline", P + "enforce-version": "1.30"}, "baseline:latest",
     "baseline:latest"),
    ({P + "enforce": "bogus"}, "restricted:latest", "restricted:latest"),
    ({P + "enforce": "privileged", P + "warn": "restricted"}, "privileged:latest",
     "restricted:latest"),
    ({P + "warn": "restricted", P + "warn-version": "v1.24"}, "baseline:latest",
     "restricted:v1.24"),
    ({P + "warn": "bogus"}, "baseline:latest", "privileged:latest"),
])
def test_policy_from_labels(labels: dict[str, str], enforce: str, warn: str) -> None:
    policy = policy_for(labels, "baseline")
    assert (str(policy.enforce), str(policy.warn)) == (enforce, warn)


def test_pinned_version_is_evaluated() -> None:
    pod = build(pss.BASELINE, [put(PSC + ("seLinuxOptions",), {"type": "container_engine_t"})])
    assert LevelVersion("baseline", "v1.30").evaluate(pod["metadata"], pod["spec"])
    assert not LevelVersion("baseline", "latest").evaluate(pod["metadata"], pod["spec"])
