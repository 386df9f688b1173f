"""LoadBalancer addresses from a pool on the hosts' network, in a 2-host dev cluster: one
host answers ARP for a Service's address, a client on the LAN (this machine) reaches the
Service there, and when that host drops off the network the address moves to the other."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from typing import Any

import pytest

from tests.conftest import TEST_SLOT
from tests.e2e.devcluster import DevCluster

NS = "lb"
LAN = f"172.30.{120 + TEST_SLOT}"
ANNOUNCER = "network.atoll.dev/announced-by"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cluster = DevCluster(tmp_path_factory.mktemp("lbpools"), 2, f"alb{TEST_SLOT}-")
    cluster.start()
    try:
        cluster.kubectl("create", "namespace", NS)
        yield cluster
    finally:
        cluster.stop()


def addresses_on(dev: DevCluster, i: int) -> str:
    return subprocess.run(["ip", "-n", dev.netns(i), "-4", "addr", "show", "dev", "eth0"],
                          capture_output=True, text=True).stdout


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.read().decode().strip()
    except OSError:
        return None


def service(dev: DevCluster, name: str) -> dict[str, Any]:
    return dev.get("service", "-n", NS, name)


def test_a_pool_address_is_announced_by_one_host_and_moves_when_it_fails(dev: DevCluster) -> None:
    dev.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "network.atoll.dev/v1alpha1", "kind": "LoadBalancerPool",
        "metadata": {"name": "lan"}, "spec": {"addresses": [f"{LAN}.200-{LAN}.203"]}}))
    for i in (1, 2):
        dev.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"web-{i}", "namespace": NS, "labels": {"app": "web"}},
            "spec": {"nodeName": dev.host(i), "containers": [{
                "name": "c", "image": "busybox", "command": [
                    "sh", "-c", f"mkdir -p /w && echo web-{i} > /w/index.html && "
                                "httpd -f -p 8080 -h /w"]}]}}))
    dev.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NS},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                 "ports": [{"port": 80, "targetPort": 8080}]}}))
    svc = dev.wait("an address from the pool", lambda: (s := service(dev, "web")) and (
        (s.get("status") or {}).get("loadBalancer") or {}).get("ingress") and s)
    ip = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    # (kube-system/atoll-ingress is a LoadBalancer Service too: it may hold one of them)
    assert ip in {f"{LAN}.{n}" for n in range(200, 203)}
    first = svc["metadata"]["annotations"][ANNOUNCER]
    i = 1 if first == dev.host(1) else 2
    other = 3 - i
    dev.wait("the address on the announcing host", lambda: f"{ip}/32" in addresses_on(dev, i))
    assert f"{ip}/32" not in addresses_on(dev, other)
    answer = dev.wait("an answer from the LAN", lambda: get(f"http://{ip}/"), 60)
    assert answer in ("web-1", "web-2")

    # a requested address is honoured, and a pool that does not exist leaves it pending
    dev.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "asked", "namespace": NS},
        "spec": {"type": "LoadBalancer", "loadBalancerIP": f"{LAN}.203", "selector": {
            "app": "web"}, "ports": [{"port": 81, "targetPort": 8080}]}}))
    dev.wait("the asked-for address", lambda: ((service(dev, "asked").get("status") or {})
                                              .get("loadBalancer") or {}).get("ingress") ==
             [{"ip": f"{LAN}.203", "ipMode": "VIP"}])
    dev.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "lost", "namespace": NS,
                     "annotations": {"network.atoll.dev/pool": "no-such-pool"}},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                 "ports": [{"port": 82, "targetPort": 8080}]}}))
    dev.wait("an event saying why", lambda: any(
        e["reason"] == "AllocationFailed" for e in dev.get(
            "events", "-n", NS, "--field-selector", "involvedObject.name=lost")["items"]))
    assert not ((service(dev, "lost").get("status") or {}).get("loadBalancer") or {}).get(
        "ingress")

    # the announcing host drops off the network: the other one takes the address over
    subprocess.run(["ip", "-n", dev.netns(i), "link", "set", "eth0", "down"], check=True)
    try:
        dev.wait("the address announced by the other host", lambda: service(dev, "web")[
            "metadata"]["annotations"].get(ANNOUNCER) == dev.host(other), 90)
        dev.wait("the address on the other host", lambda: f"{ip}/32" in
                 addresses_on(dev, other), 30)
        assert dev.wait("an answer again", lambda: get(f"http://{ip}/"), 60) == f"web-{other}"
    finally:
        subprocess.run(["ip", "-n", dev.netns(i), "link", "set", "eth0", "up"], check=True)
        subprocess.run(["ip", "-n", dev.netns(i), "route", "replace", "default", "via",
                        f"{LAN}.1"], check=False)
    # back on the network, the first host lets go of the address it no longer announces
    dev.wait("the first host releasing the address", lambda: f"{ip}/32" not in
             addresses_on(dev, i), 90)
