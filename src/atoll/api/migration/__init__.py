"""Atoll's live-migration API (``migration.atoll.dev/v1alpha1``): VirtualMachineMigration and
MigrationPolicy.

vm-operator hides vMotion behind vCenter; KubeVirt exposes it as an object, and so does Atoll,
with KubeVirt's phase names, so ``kubectl get vmim`` reads the same to users of either.  The
CRD is plain YAML next to this file; ``names`` holds what the controller and agents agree on.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

CRD_FILES = ("virtualmachinemigrations.yaml", "migrationpolicies.yaml",
             "balancingpolicies.yaml", "migrationrecommendations.yaml")


@functools.cache
def _load() -> tuple[dict[str, Any], ...]:
    root = resources.files(__name__)
    return tuple(yaml.safe_load(root.joinpath(f).read_text(encoding="utf-8")) for f in CRD_FILES)


def definitions() -> list[dict[str, Any]]:
    return copy.deepcopy(list(_load()))
