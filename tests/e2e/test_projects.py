"""``tenancy.atoll.dev/v1`` projects: the namespaces a user works in, from RBAC's own data,
through kubectl and `atoll namespace list` (users with certificates, ServiceAccounts,
groups), never more than their RoleBindings give."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import Platform
from tests.e2e.test_tenancy import User


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def spaces(platform: Platform):
    names = [unique("proj") for _ in range(3)]
    for ns in names:
        platform.kubectl("create", "namespace", ns)
    yield names
    platform.kubectl("delete", "namespace", *names, "--wait=false", check=False)


def projects(user: User) -> list[str]:
    out = user.kubectl("get", "projects.tenancy.atoll.dev", "-o", "json")
    assert out.returncode == 0, out.stderr
    return sorted(p["metadata"]["name"] for p in json.loads(out.stdout)["items"])


def test_a_user_sees_the_namespaces_they_hold_a_role_in(platform: Platform, spaces: list[str],
                                                        tmp_path: Path) -> None:
    a, b, c = spaces
    alice = User(platform, unique("alice"), tmp_path, "proj-readers")
    platform.kubectl("-n", a, "create", "rolebinding", "alice", "--clusterrole=view",
                     f"--user={alice.name}")
    assert projects(alice) == [a]
    assert not alice.can("list", "namespaces")
    # kubectl's table, one project by name, and no probing of others' namespaces
    table = alice.kubectl("get", "projects")
    assert table.stdout.split()[:3] == ["NAME", "STATUS", "AGE"] and a in table.stdout
    assert b not in table.stdout
    assert json.loads(alice.kubectl("get", "project", a, "-o", "json").stdout)["kind"] == "Project"
    for name in (b, "no-such-namespace"):
        refused = alice.kubectl("get", "project", name)
        assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr
    # a group binding counts, and so does a ServiceAccount subject
    platform.kubectl("-n", b, "create", "rolebinding", "readers", "--clusterrole=view",
                     "--group=proj-readers")
    assert projects(alice) == sorted([a, b])
    platform.kubectl("-n", c, "create", "serviceaccount", "robot")
    platform.kubectl("-n", a, "create", "rolebinding", "robot", "--clusterrole=edit",
                     f"--serviceaccount={c}:robot")
    token = platform.kubectl("-n", c, "create", "token", "robot").stdout.strip()
    as_robot = platform.kubectl("--token", token, "get", "projects", "-o", "name")
    assert as_robot.stdout.split() == [f"project.tenancy.atoll.dev/{a}"]
    # a binding removed takes the namespace away
    platform.kubectl("-n", a, "delete", "rolebinding", "alice")
    assert projects(alice) == [b]
    listed = subprocess.run([sys.executable, "-m", "atoll.cli.main", "namespace", "list",
                             "--kubeconfig", str(alice.kubeconfig)],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["NAME", "STATUS", b, "Active"]


def test_whoever_may_list_namespaces_sees_them_all(platform: Platform,
                                                   spaces: list[str]) -> None:
    names = platform.kubectl("get", "projects", "-o", "name").stdout.split()
    for ns in [*spaces, "default", "kube-system"]:
        assert f"project.tenancy.atoll.dev/{ns}" in names
    labelled = platform.kubectl("get", "projects", "-l",
                                f"kubernetes.io/metadata.name={spaces[0]}", "-o", "name")
    assert labelled.stdout.split() == [f"project.tenancy.atoll.dev/{spaces[0]}"]
    listed = subprocess.run([sys.executable, "-m", "atoll.cli.main", "namespace", "list", "-o",
                             "name", "--kubeconfig", str(platform.kubeconfig)],
                            capture_output=True, text=True, timeout=60)
    assert set(spaces) <= set(listed.stdout.split())
    # read-only
    refused = platform.kubectl("delete", "project", spaces[0], check=False)
    assert refused.returncode != 0
    assert platform.kubectl("get", "namespace", spaces[0], check=False).returncode == 0
    api = json.loads(platform.kubectl("get", "--raw", "/apis/tenancy.atoll.dev/v1").stdout)
    assert [(r["name"], r["verbs"]) for r in api["resources"]] == [("projects", ["get", "list"])]
