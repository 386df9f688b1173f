"""The VM Operator API (``vmoperator.vmware.com/v1alpha3``): its CRDs, kept as YAML data.

The definitions are plain CustomResourceDefinition manifests next to this file, so
they read (and review) as what the server stores, and `kubectl apply -f` installs
them on any cluster.  ``names`` holds the names the operator's parts agree on.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

#: one manifest per kind, in the order the server installs them
CRD_FILES = ("virtualmachines.yaml", "virtualmachineclasses.yaml", "virtualmachineimages.yaml",
             "clustervirtualmachineimages.yaml", "virtualmachineservices.yaml",
             "virtualmachinesnapshots.yaml", "virtualmachinereplicasets.yaml",
             "virtualmachinewebconsolerequests.yaml", "virtualmachinegroups.yaml")


@functools.cache
def _load() -> tuple[dict[str, Any], ...]:
    root = resources.files(__name__)
    return tuple(yaml.safe_load(root.joinpath(f).read_text(encoding="utf-8")) for f in CRD_FILES)


def definitions() -> list[dict[str, Any]]:
    """Every CRD of the VM Operator, as fresh copies (callers may change them)."""
    return copy.deepcopy(list(_load()))
