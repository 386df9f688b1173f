"""Clients given several API server addresses move on from one that cannot be reached."""

from __future__ import annotations

import asyncio

from atoll.client import kubeconfig
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient
from tests.conftest import Platform, free_port


def test_requests_and_informers_fail_over(platform: Platform, namespace: str) -> None:
    async def run() -> None:
        config = kubeconfig.load(platform.kubeconfig)
        dead = f"https://127.0.0.1:{free_port()}"
        config.server = f"{dead},{platform.url}"
        client = ApiClient(config)
        try:
            assert client.server == dead
            ns = await client.get(f"/api/v1/namespaces/{namespace}")
            assert ns["metadata"]["name"] == namespace and client.server == platform.url
            created = await client.create(f"/api/v1/namespaces/{namespace}/configmaps",
                                          {"metadata": {"name": "via-failover"}})
            assert created["metadata"]["name"] == "via-failover"
            informer = Informer(client, "", "v1", "configmaps", namespace=namespace)
            task = asyncio.create_task(informer.run())
            await asyncio.wait_for(informer.synced.wait(), 10)
            assert informer.get(f"{namespace}/via-failover") is not None
            task.cancel()
        finally:
            await client.close()

    asyncio.run(run())
