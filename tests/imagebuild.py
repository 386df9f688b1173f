"""Building small real images as files (OCI layouts and `docker save` archives) for tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path


def layer_tar(files: dict[str, bytes | None], *, symlinks: dict[str, str] | None = None,
              dirs: tuple[str, ...] = ()) -> bytes:
    """A layer: files (None = a whiteout of that path), symlinks, directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in files.items():
            if data is None:
                parent, _, base = name.rpartition("/")
                name = f"{parent}/.wh.{base}" if parent else f".wh.{base}"
                data = b""
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def busybox_layer() -> bytes:
    return layer_tar({"bin/busybox": Path("/bin/busybox").read_bytes()},
                     symlinks={"bin/sh": "busybox", "bin/cat": "busybox", "bin/ls": "busybox",
                               "bin/test": "busybox"}, dirs=("bin", "etc", "tmp"))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_layout(dest: Path, layers: list[bytes], *, ref: str, config: dict,
               gzip_layers: bool = True) -> Path:
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        d = _digest(data)
        (blobs / d.split(":")[1]).write_bytes(data)
        return d
    descs = []
    for layer in layers:
        data = gzip.compress(layer) if gzip_layers else layer
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" +
                      ("+gzip" if gzip_layers else ""), "digest": put(data), "size": len(data)})
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                      "rootfs": {"type": "layers",
                                 "diff_ids": [_digest(layer) for layer in layers]}}).encode()
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": put(cfg), "size": len(cfg)},
                           "layers": descs}).encode()
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": ref}}]}))
    return dest


def docker_save(dest: Path, layers: list[bytes], *, tag: str, config: dict) -> Path:
    """A `docker save` archive (the classic layout: <id>/layer.tar + manifest.json)."""
    work = dest.with_suffix(".d")
    work.mkdir(parents=True)
    names = []
    for i, layer in enumerate(layers):
        (work / f"l{i}").mkdir()
        (work / f"l{i}" / "layer.tar").write_bytes(layer)
        names.append(f"l{i}/layer.tar")
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config}).encode()
    (work / "config.json").write_bytes(cfg)
    (work / "manifest.json").write_text(json.dumps([{"Config": "config.json",
                                                     "RepoTags": [tag], "Layers": names}]))
    with tarfile.open(dest, "w") as tar:
        for item in sorted(work.iterdir()):
            tar.add(item, arcname=item.name)
    shutil.rmtree(work)
    return dest
