"""The host's local image store: unpacked layers shared by every container.

Layout under ``<data-dir>/images``::

    layers/<digest>/         one unpacked layer (an overlayfs lower directory)
    refs/<escaped ref>.json  {"ref", "id", "layers": [bottom..top], "config": {...}}

Containers get an overlay mount of their image's layers plus their own upper
directory, so a layer is unpacked once however many containers use it.  A
``busybox`` image is built from the host's static busybox so the platform
works offline from the first start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atoll.agent.images import reference

DEFAULT_REGISTRY = "docker.io"
BUSYBOX_REF = "docker.io/library/busybox:latest"
BUSYBOX_BINARIES = ("/bin/busybox", "/usr/bin/busybox")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Image:
    ref: str
    id: str
    layers: list[Path]
    config: dict[str, Any] = field(default_factory=dict)
    #: ``repo@sha256:<manifest digest>`` of an image pulled from a registry (none: imported)
    repo_digests: list[str] = field(default_factory=list)
    #: bytes of the image's blobs as the registry served them (what kubelet reports)
    content_size: int = 0

    @property
    def pulled(self) -> bool:
        return bool(self.repo_digests)

    @property
    def env(self) -> list[str]:
        return list(self.config.get("Env") or [f"PATH={DEFAULT_PATH}"])


def normalize(ref: str) -> str:
    """``busybox`` → ``docker.io/library/busybox:latest``, as container runtimes read refs
    (ValueError when the reference is not valid)."""
    return reference.normalize(ref.strip())


def _escape(ref: str) -> str:
    return ref.replace("/", "%2F").replace(":", "%3A").replace("@", "%40")


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.layers_dir = root / "layers"
        self.refs_dir = root / "refs"
        self.layers_dir.mkdir(parents=True, exist_ok=True)
        self.refs_dir.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[Path, int] = {}

    # -- lookups ------------------------------------------------------------------------------
    def get(self, ref: str) -> Image | None:
        try:
            norm = normalize(ref)
        except ValueError:
            return None
        path = self.refs_dir / f"{_escape(norm)}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        layers = [self.layers_dir / d.replace(":", "_") for d in data.get("layers") or []]
        if not all(p.is_dir() for p in layers):
            return None
        return Image(data["ref"], data["id"], layers, data.get("config") or {},
                     list(data.get("repoDigests") or []), int(data.get("contentSize") or 0))

    def list(self) -> list[Image]:
        out = []
        for path in sorted(self.refs_dir.glob("*.json")):
            try:
                ref = json.loads(path.read_text())["ref"]
            except (OSError, ValueError, KeyError):
                continue
            image = self.get(ref)
            if image is not None:
                out.append(image)
        return out

    def tag(self, ref: str, image_id: str, layer_digests: list[str],
            config: dict[str, Any], *, repo_digests: list[str] | None = None,
            content_size: int = 0) -> Image:
        norm = normalize(ref)
        record: dict[str, Any] = {"ref": norm, "id": image_id, "layers": layer_digests,
                                  "config": config}
        if repo_digests:
            record["repoDigests"] = list(repo_digests)
            record["contentSize"] = content_size
        tmp = self.refs_dir / f".{_escape(norm)}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.refs_dir / f"{_escape(norm)}.json")
        image = self.get(norm)
        assert image is not None
        return image

    def records(self) -> list[dict[str, Any]]:
        """Every ref record as stored (layers as digests), broken ones left out."""
        out = []
        for path in sorted(self.refs_dir.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and isinstance(data.get("ref"), str):
                out.append(data)
        return out

    def untag(self, ref: str) -> None:
        """Forget one ref (its layers stay until ``remove_unreferenced_layers``)."""
        try:
            (self.refs_dir / f"{_escape(normalize(ref))}.json").unlink()
        except (OSError, ValueError):
            pass

    def remove_unreferenced_layers(self, min_age: float = 0.0) -> int:
        """Delete layers no ref names any more and older than ``min_age`` seconds (a pull
        that just committed a layer tags it a moment later); bytes freed (file sizes)."""
        used = {str(d).replace(":", "_") for r in self.records() for d in r.get("layers") or []}
        freed = 0
        now = time.time()
        for layer in list(self.layers_dir.iterdir()):
            if layer.name in used or not layer.is_dir():
                continue
            try:
                if now - layer.lstat().st_mtime < min_age:
                    continue
            except OSError:
                continue
            freed += self._dir_size(layer)
            self._sizes.pop(layer, None)
            shutil.rmtree(layer, ignore_errors=True)
        return freed

    @staticmethod
    def _dir_size(path: Path) -> int:
        size = 0
        for dirpath, _, files in os.walk(path):
            for name in files:
                try:
                    size += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    continue
        return size

    def size(self, image: Image) -> int:
        """Bytes of the image's unpacked layers (each layer measured once)."""
        total = 0
        for layer in image.layers:
            size = self._sizes.get(layer)
            if size is None:
                size = 0
                for dirpath, _, files in os.walk(layer):
                    for name in files:
                        try:
                            size += os.lstat(os.path.join(dirpath, name)).st_size
                        except OSError:
                            continue
                self._sizes[layer] = size
            total += size
        return total

    def layer_path(self, digest: str) -> Path:
        return self.layers_dir / digest.replace(":", "_")

    def has_layer(self, digest: str) -> bool:
        return self.layer_path(digest).is_dir()

    def commit_layer(self, digest: str, staged: Path) -> Path:
        """Move a fully unpacked layer into place (atomic: half layers never show)."""
        final = self.layer_path(digest)
        if final.is_dir():
            shutil.rmtree(staged, ignore_errors=True)
            return final
        os.replace(staged, final)
        return final

    def staging_dir(self, name: str) -> Path:
        path = self.root / "staging" / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    # -- the built-in busybox -------------------------------------------------------------------
    def ensure_busybox(self) -> Image | None:
        """Build ``busybox:latest`` from the host's busybox-static, once."""
        existing = self.get(BUSYBOX_REF)
        if existing is not None:
            return existing
        binary = next((b for b in BUSYBOX_BINARIES if os.path.isfile(b)), None)
        if binary is None:
            return None
        data = Path(binary).read_bytes()
        digest = "sha256:" + hashlib.sha256(b"atoll-busybox-layer-v1\0" + data).hexdigest()
        if not self.has_layer(digest):
            staged = self.staging_dir("busybox")
            _busybox_rootfs(staged, binary)
            self.commit_layer(digest, staged)
        config = {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["sh"], "WorkingDir": "/"}
        image_id = "sha256:" + hashlib.sha256(
            json.dumps({"layers": [digest], "config": config}, sort_keys=True).encode()
        ).hexdigest()
        return self.tag(BUSYBOX_REF, image_id, [digest], config)


def _busybox_rootfs(root: Path, binary: str) -> None:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home", "var", "dev", "proc",
              "sys", "run", "var/log", "var/run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(binary, root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    applets = subprocess.run([binary, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        target = root / applet
        if target.name == "busybox" or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        depth = len(Path(applet).parts) - 1
        os.symlink("../" * depth + "bin/busybox", target)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "nobody:x:65534:65534:nobody:/home:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")
    (root / "etc" / "hostname").write_text("")
    (root / "etc" / "hosts").write_text("")
    (root / "etc" / "resolv.conf").write_text("")
