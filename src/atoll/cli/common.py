"""Flags and defaults shared by the subcommands."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """Where `atoll up` keeps its state unless told otherwise: ~/.atoll (or $ATOLL_DATA_DIR)."""
    env = os.environ.get("ATOLL_DATA_DIR")
    if env:
        return Path(env)
    return Path.home() / ".atoll"


def admin_kubeconfig_path(data_dir: Path) -> Path:
    return data_dir / "admin.kubeconfig"


def resolve_kubeconfig(explicit: str | None) -> Path:
    """Like kubectl: --kubeconfig, then $KUBECONFIG, then ~/.kube/config, then our admin one."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("KUBECONFIG")
    if env:
        first = env.split(os.pathsep)[0]
        if first:
            return Path(first)
    home = Path.home() / ".kube" / "config"
    if home.exists():
        return home
    local = admin_kubeconfig_path(default_data_dir())
    if local.exists():
        return local
    raise FileNotFoundError(
        "no kubeconfig found: pass --kubeconfig FILE, set KUBECONFIG, or start the platform "
        "with `atoll up` (it writes ~/.atoll/admin.kubeconfig)")
