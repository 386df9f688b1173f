"""The guest kernel: Debian's cloud kernel, fetched as a package and unpacked once.

``linux-image-cloud-amd64`` is a meta package; the kernel it currently depends on
is downloaded with ``apt-get download`` (no root needed, nothing installed) and
unpacked with ``dpkg-deb -x`` into a cache directory.  The package ships no
``modules.dep`` (depmod makes it on install), so module dependencies come from
each module's own ``.modinfo`` section.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

META_PACKAGE = "linux-image-cloud-amd64"


class KernelError(Exception):
    pass


@dataclass(frozen=True)
class Kernel:
    version: str          # e.g. 6.1.0-56-cloud-amd64
    vmlinuz: Path
    modules: Path         # .../lib/modules/<version>

    def module_path(self, name: str) -> Path:
        found = list(self.modules.glob(f"kernel/**/{name}.ko*"))
        if not found:
            alt = name.replace("_", "-") if "_" in name else name.replace("-", "_")
            found = list(self.modules.glob(f"kernel/**/{alt}.ko*"))
        if not found:
            raise KernelError(f"kernel {self.version} has no module {name}")
        return found[0]

    def builtin(self, name: str) -> bool:
        try:
            text = (self.modules / "modules.builtin").read_text()
        except OSError:
            return False
        return re.search(rf"/{re.escape(name)}\.ko\b", text) is not None

    def with_dependencies(self, names: list[str]) -> list[Path]:
        """The modules for ``names`` and what they depend on, in loading order."""
        order: list[Path] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen or self.builtin(name):
                return
            seen.add(name)
            path = self.module_path(name)
            for dep in _depends(path):
                visit(dep)
            order.append(path)

        for n in names:
            visit(n)
        return order


def _depends(module: Path) -> list[str]:
    data = module.read_bytes()
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    if not m or not m.group(1):
        return []
    return [d for d in m.group(1).decode().split(",") if d]


def current_package() -> str:
    """The kernel package the meta package points at now."""
    out = _run(["apt-cache", "depends", META_PACKAGE])
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    raise KernelError(f"{META_PACKAGE} names no kernel package (apt-cache depends)")


def fetch(cache_dir: Path) -> Kernel:
    """The cloud kernel, downloaded and unpacked under ``cache_dir`` unless already there."""
    package = current_package()
    version = package.removeprefix("linux-image-")
    root = cache_dir / version
    vmlinuz = root / "boot" / f"vmlinuz-{version}"
    if not vmlinuz.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            _run(["apt-get", "download", package], cwd=tmp)
            debs = list(Path(tmp).glob("*.deb"))
            if not debs:
                raise KernelError(f"apt-get download {package} produced no package")
            unpacked = Path(tmp) / "root"
            _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)])
            if root.exists():
                shutil.rmtree(root)
            unpacked.rename(root)
    if not vmlinuz.exists():
        raise KernelError(f"{package} has no boot/vmlinuz-{version}")
    return Kernel(version=version, vmlinuz=vmlinuz, modules=root / "lib" / "modules" / version)


def _run(argv: list[str], cwd: str | None = None) -> str:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise KernelError(f"{argv[0]} is not installed (building guest images needs Debian's "
                          "apt tools)") from None
    if proc.returncode != 0:
        raise KernelError(f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc.stdout
