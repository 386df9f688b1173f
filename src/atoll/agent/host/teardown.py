"""Remove everything an agent left on its host: containers, VMs, mounts, pod networks.

Containers and VMs outlive their agent on purpose (an agent restart must not
touch workloads), so taking a host out of service (``atoll dev cluster``
stopping, a test finishing) needs this explicit sweep.  Run it after the agent
has stopped; every step tolerates what is already gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from atoll.agent.runtime import mounts


def _kill(pid_text: str) -> None:
    try:
        os.kill(int(pid_text), signal.SIGKILL)
    except (OSError, ValueError):
        pass


def teardown_host(data_dir: Path, run_dir: Path, bridge: str, runc: str = "runc") -> None:
    # VMs, and pod-VMs with their virtiofsd (then their container roots in the share)
    for pidfile in [*(run_dir / "vms").glob("*/qemu.pid"),
                    *(run_dir / "podvm" / "vms").glob("*/*.pid")]:
        try:
            _kill(pidfile.read_text())
        except OSError:
            pass
    mounts.unmount_all_under(str(run_dir / "podvm"))
    links = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True,
                           text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith("vm"):
            subprocess.run(["ip", "link", "delete", name], capture_output=True)
    containers = run_dir / "containers"
    try:
        _kill((containers / "zygote.pid").read_text())
    except OSError:
        pass
    for state in containers.glob("*/state"):
        for name in ("started.json", "shim.json"):
            try:
                _kill(str(json.loads((state / name).read_text())["pid"]))
            except (OSError, ValueError, KeyError):
                pass
    for rootfs in containers.glob("*/bundle/rootfs"):
        subprocess.run(["umount", "-l", str(rootfs)], capture_output=True)
    for d in containers.glob("*"):
        subprocess.run([runc, "--root", str(run_dir / "runc"), "delete", "--force", d.name],
                       capture_output=True)
    for net in (data_dir / "pods").glob("*/network.json"):
        try:
            netns = json.loads(net.read_text())["netns"]
        except (OSError, ValueError, KeyError):
            continue
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
    for subpaths in (data_dir / "pods").glob("*/volume-subpaths"):
        mounts.unmount_all_under(str(subpaths))  # subPath binds, before what they show
    for vol in (data_dir / "pods").glob("*/volumes/*"):
        if os.path.ismount(vol):
            subprocess.run(["umount", "-l", str(vol)], capture_output=True)
    # the local volumes' loop mounts (their loop devices go with them)
    mounts.unmount_all_under(str(data_dir / "volumes"))
    subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
    for family, table in (("ip", f"atoll_{bridge}"), ("ip", f"atoll_svc_{bridge}"),
                          ("inet", f"atoll_pol_{bridge}")):  # masquerade, Services, policies
        subprocess.run(["nft", "delete", "table", family, table.replace("-", "_")],
                       capture_output=True)
