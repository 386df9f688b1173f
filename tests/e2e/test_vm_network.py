"""VirtualMachines on the pod network, as pods are: NetworkPolicies select them by label and
their host enforces them; their network settings (a static address, the gateway, the
network they name) are honoured or refused with a reason, never ignored.

One tiny-image VM boots per test (TCG); the refused ones never start."""

from __future__ import annotations

import json
import urllib.request

from tests.conftest import TEST_POD_PREFIX, Platform, wait_until
from tests.e2e import test_vms
from tests.e2e.test_vms import condition, vm_yaml, wait_vm

tiny_image = test_vms.tiny_image  # the session's tiny image fixture

CLIENT = """apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {ns}, labels: {{app: client}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: busybox, command: [sleep, "3600"]}}]
"""

SERVE = ["mkdir -p /www", "echo hello > /www/index.html", "httpd -p 8080 -h /www"]


def _policy(platform: Platform, ns: str, name: str, spec: dict) -> None:
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec}))


def _reaches(platform: Platform, ns: str, url: str) -> bool:
    out = platform.kubectl("-n", ns, "exec", "client", "--", "timeout", "2", "wget", "-qO-",
                           url, check=False)
    return "hello" in out.stdout


def _ip(vm: dict) -> str:
    return str(((vm.get("status") or {}).get("network") or {}).get("primaryIP4") or "")


def test_a_policy_isolates_a_vm_and_its_rule_lets_pods_in(platform: Platform, namespace: str,
                                                          tiny_image: str) -> None:
    ns = namespace
    platform.kubectl("apply", "-f", "-", input=CLIENT.format(ns=ns))
    platform.kubectl("apply", "-f", "-", input=vm_yaml(ns, "web", tiny_image, runcmd=SERVE))
    vm = wait_vm(platform, ns, "web", _ip, what="an IP")
    url = f"http://{_ip(vm)}:8080/"
    wait_until("the guest answering the client pod", lambda: _reaches(platform, ns, url), 120,
               interval=0.5)
    # the VM's labels are what podSelector matches (vm_yaml labels it app=<name>)
    _policy(platform, ns, "deny-web", {"podSelector": {"matchLabels": {"app": "web"}},
                                       "policyTypes": ["Ingress"]})
    wait_until("the VM isolated", lambda: not _reaches(platform, ns, url), 30)
    _policy(platform, ns, "allow-client", {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                     "ports": [{"port": 8080}]}]})
    wait_until("the client let in", lambda: _reaches(platform, ns, url), 30)
    platform.kubectl("-n", ns, "delete", "networkpolicy", "allow-client")
    wait_until("isolated again", lambda: not _reaches(platform, ns, url), 30)


def test_a_static_address_is_given_and_what_cannot_be_is_a_condition(
        platform: Platform, namespace: str, tiny_image: str) -> None:
    ns = namespace
    address, gateway = TEST_POD_PREFIX + "200.7", TEST_POD_PREFIX + "0.1"
    nic = ("  network:\n    interfaces:\n    - name: eth0\n"
           f"      addresses: [{address}/16]\n      gateway4: {gateway}\n")
    platform.kubectl("apply", "-f", "-", input=vm_yaml(ns, "fixed", tiny_image, runcmd=SERVE,
                                                       extra=nic))
    vm = wait_vm(platform, ns, "fixed", _ip, what="an IP")
    assert _ip(vm) == address
    assert condition(vm, "VirtualMachineNetworkReady").get("status") == "True"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://{address}:8080/", timeout=3) as resp:
                return resp.read().decode().strip() == "hello"
        except OSError:
            return False
    wait_until("the guest answering on its static address", answers, 120, interval=0.5)

    # the same address again: taken; a network that does not exist; a foreign gateway
    platform.kubectl("apply", "-f", "-", input=vm_yaml(ns, "twin", tiny_image, extra=nic))
    platform.kubectl("apply", "-f", "-", input=vm_yaml(
        ns, "blue", tiny_image,
        extra="  network:\n    interfaces:\n    - name: eth0\n      network: {name: blue}\n"))
    platform.kubectl("apply", "-f", "-", input=vm_yaml(
        ns, "gw", tiny_image, extra="  network:\n    interfaces:\n    - name: eth0\n"
                                    f"      gateway4: {TEST_POD_PREFIX}0.254\n"))
    for name, reason, words in (("twin", "AddressUnavailable", "in use"),
                                ("blue", "NetworkNotFound", "'blue' does not exist"),
                                ("gw", "GatewayUnavailable", gateway)):
        vm = wait_vm(platform, ns, name, lambda v: condition(
            v, "VirtualMachineNetworkReady").get("reason") == reason, 60, what=reason)
        cond = condition(vm, "VirtualMachineNetworkReady")
        assert cond["status"] == "False" and words in cond["message"], cond
        assert (vm.get("status") or {}).get("powerState") != "PoweredOn"
