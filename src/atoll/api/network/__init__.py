"""Atoll's network API (``network.atoll.dev/v1alpha1``): LoadBalancerPool.

Address pools for LoadBalancer Services on the hosts' own network, announced by one host at a
time over ARP (MetalLB's layer-2 mode), as plain CRD YAML next to this file.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

GROUP = "network.atoll.dev"
VERSION = "v1alpha1"
POOLS = "loadbalancerpools"
#: on a Service: the pool to take its address from (else any pool that assigns automatically)
POOL_ANNOTATION = "network.atoll.dev/pool"
#: on a Service with a pool address: the host answering ARP for it
ANNOUNCER_ANNOTATION = "network.atoll.dev/announced-by"


@functools.cache
def _load() -> tuple[dict[str, Any], ...]:
    text = resources.files(__name__).joinpath("loadbalancerpools.yaml").read_text("utf-8")
    return (yaml.safe_load(text),)


def definitions() -> list[dict[str, Any]]:
    return copy.deepcopy(list(_load()))
