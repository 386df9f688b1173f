"""Which accelerator this host's VMs get: KVM only when a real guest boots under it.

``/dev/kvm`` existing (and even KVM_CREATE_VM succeeding) proves little: inside a
VM without working nested virtualization, guests hang at kernel start.  So the
probe boots the guest kernel we will use, without an initramfs or root disk,
and waits for the kernel's own panic about the missing root file system: that
line is printed only after the kernel has run all its initialization.
``panic=-1`` with ``-no-reboot`` makes QEMU exit right after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from atoll.agent.runtime.qemu import QEMU_BINARY

log = logging.getLogger(__name__)

#: what a kernel prints once it has booted far enough to look for a root file system
BOOTED_MARKERS = (b"Kernel panic", b"VFS: Unable to mount root", b"No working init found",
                  b"Run /init as init process")


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


async def probe(kernel: Path, timeout: float = 10.0, binary: str = QEMU_BINARY) -> str:
    """"kvm" if ``kernel`` boots under KVM within ``timeout`` seconds, else "tcg"."""
    if not kvm_usable():
        return "tcg"
    argv = [binary, "-machine", "microvm,accel=kvm", "-cpu", "host", "-m", "128M", "-smp", "1",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio",
            "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1 quiet loglevel=3"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    seen = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await proc.stdout.read(4096):
                seen = (seen + chunk)[-8192:]
                if any(m in seen for m in BOOTED_MARKERS):
                    log.info("KVM probe: the guest kernel booted under KVM")
                    return "kvm"
    except TimeoutError:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    last = seen.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    log.warning("KVM probe: the guest kernel did not boot under KVM within %.0f s (%s); VMs on "
                "this host use TCG (emulation, much slower)", timeout, last[0][:200])
    return "tcg"


def tcg_kernel_args() -> str:
    """Kernel arguments that make Linux boot reliably under TCG on a busy host.

    Emulated, the guest's TSC runs at the host's rate, but calibrating it against
    the emulated PIT fails when the host is loaded, and the kernel then stalls
    with a clock that never advances (seen with several guests booting on two
    cores).  Telling it the rate skips the calibration."""
    return f"tsc_early_khz={host_tsc_khz()} tsc=reliable"


def host_tsc_khz() -> int:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":", 1)[1]) * 1000)
    except (OSError, ValueError):
        pass
    return 2_000_000
