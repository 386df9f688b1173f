"""The hostile tenant every security test plays: a user who holds only ``edit`` in one
namespace, made the way an administrator makes one (``atoll user add``, ``atoll namespace
create --edit``)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

from tests.conftest import Platform, kubectl_binary


def atoll(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "atoll.cli.main", *args], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"atoll {' '.join(args)}: {result.stdout}{result.stderr}"


def edit_only_user(platform: Platform, tmp: Path, ns_prefix: str,
                   user_prefix: str = "mallory") -> tuple[str, str, Path]:
    """(namespace, user name, the user's kubeconfig) for a new namespace where the user may edit."""
    ns, user = f"{ns_prefix}-{uuid.uuid4().hex[:6]}", f"{user_prefix}-{uuid.uuid4().hex[:6]}"
    kubeconfig = tmp / f"{user}.kubeconfig"
    atoll("user", "add", user, "--kubeconfig", str(platform.kubeconfig), "-o", str(kubeconfig))
    atoll("namespace", "create", ns, "--edit", user, "--kubeconfig", str(platform.kubeconfig))
    return ns, user, kubeconfig


def kubectl_as(kubeconfig: Path, user: str, ns: str, *args: str,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Real kubectl with the user's kubeconfig (and a discovery cache of its own)."""
    env = dict(os.environ, KUBECONFIG=str(kubeconfig),
               KUBECACHEDIR=str(kubeconfig.parent / f"{user}-cache"))
    return subprocess.run([kubectl_binary(), "-n", ns, *args], input=input, text=True,
                          capture_output=True, env=env, timeout=60)


def cert_files(kubeconfig: Path) -> tuple[str, str]:
    """The user's client certificate and key as files, for raw HTTPS clients."""
    user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
    cert, key = kubeconfig.with_suffix(".crt"), kubeconfig.with_suffix(".key")
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    os.chmod(key, 0o600)
    return str(cert), str(key)
