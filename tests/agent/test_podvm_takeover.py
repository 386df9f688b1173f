"""A pod-VM outlives its runtime: a new ``PodVMRuntime`` over the same directory takes the VM
over (same QEMU, same containers, output kept meanwhile), or reports a crashed sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path

from atoll.agent.podvm.runtime import PodVMRuntime
from atoll.agent.podvm.vm import STATE
from tests.agent import test_podvm_runtime as base
from tests.agent.test_podvm_runtime import Image, container, log_text, qemu_running, spec

pytestmark = base.pytestmark
busybox_image = base.busybox_image  # the fixture


async def until(what: str, check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def qemu_pid(root: Path, uid: str) -> int:
    return int(json.loads((root / "vms" / uid / STATE).read_text())["pids"]["qemu"][0])


async def test_a_new_runtime_takes_the_vm_over_with_its_containers(
        tmp_path: Path, busybox_image: Image) -> None:
    pods, uid, root = tmp_path / "pods", str(uuid.uuid4()), tmp_path / "podvm"
    (pods / uid).mkdir(parents=True)
    first = PodVMRuntime(root, accel="tcg")
    second: PodVMRuntime | None = None
    try:
        ticker = container(pods, uid, "ticker")
        await first.run(ticker, busybox_image, spec(
            "sh", "-c", "echo $(date +%s)-$RANDOM > /tmp/started; i=0; "
                        "while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"))
        short = container(pods, uid, "short")
        await first.run(short, busybox_image, spec("sh", "-c", "sleep 3; exit 7"))
        await until("ticks", lambda: "tick 3" in log_text(ticker))
        code, started = await first.exec(ticker.id, ["cat", "/tmp/started"], timeout=30)
        assert code == 0
        pid = qemu_pid(root, uid)
        await first.detach()  # the agent goes; "short" exits while nobody listens
        before = log_text(ticker).count("tick")
        await asyncio.sleep(4)
        assert os.path.exists(f"/proc/{pid}") and first.exit_info(short.id) is None

        second = PodVMRuntime(root, accel="tcg")
        running, exited = second.wait(ticker.id), second.wait(short.id)
        assert (await asyncio.wait_for(exited, 60))["exitCode"] == 7  # its real exit
        assert not running.done()
        assert qemu_pid(root, uid) == pid and second.vms[uid].alive
        assert await second.exec(ticker.id, ["cat", "/tmp/started"], timeout=30) == (0, started)
        # the ticks of the 4 s without a host were kept in the guest, and go on after
        await until("ticks after", lambda: log_text(ticker).count("tick") > before + 25)
        ticks = [int(line.split()[1]) for line in log_text(ticker).splitlines()
                 if line.startswith("tick ")]
        assert ticks == list(range(len(ticks)))  # none lost, none twice
        exit_ = await second.stop(ticker.id, grace=5)
        assert exit_["signal"] in (9, 15) or exit_["exitCode"] in (0, 143)
        for meta in (ticker, short):
            await second.remove(meta.id)
        assert not qemu_running(uid)
    finally:
        await first.close()
        if second is not None:
            await second.close()
    assert not qemu_running(uid)


async def test_a_vm_that_died_without_its_runtime_is_a_crashed_sandbox(
        tmp_path: Path, busybox_image: Image) -> None:
    pods, uid, root = tmp_path / "pods", str(uuid.uuid4()), tmp_path / "podvm"
    (pods / uid).mkdir(parents=True)
    first = PodVMRuntime(root, accel="tcg")
    second: PodVMRuntime | None = None
    try:
        meta = container(pods, uid, "c")
        await first.run(meta, busybox_image, spec("sleep", "600"))
        vm = first.vms[uid]
        virtiofsd = vm.pids["virtiofsd"][0]
        await first.detach()
        os.kill(qemu_pid(root, uid), signal.SIGKILL)
        await until("QEMU gone", lambda: not qemu_running(uid), 30)

        second = PodVMRuntime(root, accel="tcg")
        exit_ = await asyncio.wait_for(second.wait(meta.id), 60)
        assert exit_["exitCode"] == 255 and "stopped while no agent watched" in exit_["message"]
        assert second.exit_info(meta.id)["exitCode"] == 255
        await until("virtiofsd gone", lambda: not os.path.exists(f"/proc/{virtiofsd}"), 30)
        again = container(pods, uid, "c", attempt=1)
        await second.run(again, busybox_image, spec("echo", "again"))
        assert (await asyncio.wait_for(second.wait(again.id), 60))["exitCode"] == 0
        assert "again" in log_text(again)
        await second.remove(meta.id)
        await second.remove(again.id)
    finally:
        await first.close()
        if second is not None:
            await second.close()
    assert not qemu_running(uid)
    assert os.listdir(root / "vms") == []
