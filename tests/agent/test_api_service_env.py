"""Pods are told where the API server is, as kubelet tells them about the kubernetes Service."""

from __future__ import annotations

import asyncio

from atoll.agent.agent import api_endpoint_for_pods
from atoll.agent.pods import env as podenv


def test_loopback_servers_are_reached_on_the_hosts_address() -> None:
    assert api_endpoint_for_pods("https://127.0.0.1:6443", "192.0.2.2") == ("192.0.2.2", 6443)
    assert api_endpoint_for_pods("https://localhost:6443", "192.0.2.2") == ("192.0.2.2", 6443)
    assert api_endpoint_for_pods("https://10.0.0.5:7443,https://10.0.0.6:7443", "192.0.2.2") == (
        "10.0.0.5", 7443)
    assert api_endpoint_for_pods("https://api.example", "192.0.2.2") == ("api.example", 443)
    assert api_endpoint_for_pods("https://[fd00::1]:6443", "192.0.2.2") == ("fd00::1", 6443)
    assert api_endpoint_for_pods("https://h:notaport", "192.0.2.2") == ("", 0)


def test_the_pods_own_variables_win() -> None:
    service = podenv.api_service_env("fd00::1", 6443)
    assert service["KUBERNETES_PORT"] == "tcp://[fd00::1]:6443"
    assert service["KUBERNETES_PORT_6443_TCP_ADDR"] == "fd00::1"
    pod = {"metadata": {"name": "p", "namespace": "ns"}}
    container = {"env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "mine"},
                         {"name": "URL", "value": "https://$(KUBERNETES_SERVICE_PORT)"}]}

    async def fetch(kind: str, name: str) -> None:
        return None

    env = asyncio.run(podenv.environment(pod, container, ["KUBERNETES_SERVICE_PORT=1"], fetch,
                                         service))
    assert env["KUBERNETES_SERVICE_HOST"] == "mine"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"  # over the image's
    assert env["URL"] == "https://6443"
    assert podenv.api_service_env("", 0) == {}
