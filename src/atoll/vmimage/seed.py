"""The cloud-init NoCloud seed: an ISO 9660 image labelled ``cidata``.

cloud-init (and Atoll's tiny guest) look for a file system with that label
holding ``meta-data``, ``user-data`` and ``network-config``.  Rock Ridge and
Joliet keep the lower-case, hyphenated names that plain ISO 9660 would mangle.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pycdlib
import yaml


def make_seed(path: Path, instance_id: str, hostname: str, user_data: str,
              network_config: dict[str, Any] | None = None) -> None:
    files = {
        "meta-data": yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname},
                                    sort_keys=False),
        "user-data": user_data,
    }
    if network_config is not None:
        files["network-config"] = yaml.safe_dump(network_config, sort_keys=False)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for i, (name, text) in enumerate(files.items()):
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), f"/FILE{i};1", rr_name=name,
                   joliet_path=f"/{name}")
    tmp = path.with_suffix(".tmp")
    iso.write(str(tmp))
    iso.close()
    tmp.rename(path)
