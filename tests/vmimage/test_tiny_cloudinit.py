"""The tiny guest's cloud-config subset, run by the same busybox awk the guest has."""

from __future__ import annotations

import subprocess
from importlib import resources
from pathlib import Path

from atoll.agent.vms import bootstrap as vmbootstrap

AWK = resources.files("atoll.vmimage").joinpath("tiny_cloudinit.awk")


def render(doc: dict) -> str:
    """The script the guest would run for ``doc``, rendered the way the agent renders it."""
    vm = {"metadata": {"name": "t", "uid": "u"},
          "spec": {"bootstrap": {"cloudInit": {"cloudConfig": doc}}}}
    user_data = vmbootstrap.user_data(vm)
    return subprocess.run(["busybox", "awk", "-f", str(AWK)], input=user_data, text=True,
                          capture_output=True, check=True).stdout


def test_runcmd_write_files_and_keys_run_as_written(tmp_path: Path) -> None:
    script = render({
        "hostname": "h1",
        "write_files": [{"path": str(tmp_path / "a" / "b.txt"), "content": "one\ntwo\n",
                         "permissions": "0600"},
                        {"path": str(tmp_path / "c.txt"), "content": "it's plain"}],
        "runcmd": [f"echo first > {tmp_path}/out", ["sh", "-c", f"echo 'two words' >> {tmp_path}/out"]],
        "ssh_authorized_keys": ["ssh-ed25519 AAAA me@x"],
    })
    assert script.splitlines()[0] == "hostname 'h1'"
    runnable = script.split("\n", 1)[1].replace("/root/.ssh", str(tmp_path / "ssh"))
    subprocess.run(["sh", "-e", "-c", runnable], check=True)
    assert (tmp_path / "a" / "b.txt").read_text() == "one\ntwo\n"
    assert (tmp_path / "a" / "b.txt").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "c.txt").read_text() == "it's plain\n"
    assert (tmp_path / "out").read_text() == "first\ntwo words\n"
    assert (tmp_path / "ssh" / "authorized_keys").read_text() == "ssh-ed25519 AAAA me@x\n"
