"""Guest images: building and describing what a VM boots (see docs/vm-operator.md).

Builders return a BuiltImage; the CLI uploads its files to the content library and publishes it as
a ClusterVirtualMachineImage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class BuiltImage:
    """The files and facts of one built or imported guest image."""

    display_name: str                      # status.name, e.g. "tiny"
    kernel: Path | None = None             # direct kernel boot
    initrd: Path | None = None
    disk: Path | None = None               # boot disk (qcow2 or raw)
    disk_format: str = "qcow2"
    kernel_args: str = ""                  # appended to the agent's own kernel arguments
    os_id: str = "other"                   # status.osInfo
    os_type: str = "linux"
    os_version: str = ""
    capabilities: list[str] = field(default_factory=lambda: ["cloud-init"])
