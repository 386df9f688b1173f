"""Importing images from files: OCI image layouts (directory or tar) and ``docker save`` archives.

Hosts here have no registry access, so images arrive as files.  Each layer is
unpacked once into the image store (a layer already present is skipped),
turning the tar's whiteouts into overlayfs's (``.wh.NAME`` → a 0/0 character
device, ``.wh..wh..opq`` → the ``trusted.overlay.opaque`` attribute).  A layer
may not write outside its own directory: absolute and ``..`` paths, and paths
through symlinks that leave the layer, are refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable

from atoll.agent.images import Image, ImageStore

Progress = Callable[[int], None]  # bytes of layer data consumed
REF_ANNOTATION = "org.opencontainers.image.ref.name"


class ImageImportError(Exception):
    """The file is not an image we can read; the message says why."""


@dataclass
class Source:
    """A readable image archive: blobs by digest or path."""

    root: Path

    def open(self, name: str) -> IO[bytes]:
        path = (self.root / name).resolve()
        if not str(path).startswith(str(self.root.resolve()) + os.sep):
            raise ImageImportError(f"the archive refers outside itself: {name}")
        try:
            return open(path, "rb")
        except OSError as e:
            raise ImageImportError(f"missing from the archive: {name} ({e.strerror})") from None

    def json(self, name: str) -> Any:
        with self.open(name) as f:
            try:
                return json.load(f)
            except ValueError as e:
                raise ImageImportError(f"{name} is not valid JSON: {e}") from None

    def blob(self, digest: str) -> str:
        algo, _, hexd = digest.partition(":")
        if not algo or not hexd or "/" in hexd:
            raise ImageImportError(f"invalid digest {digest!r}")
        return f"blobs/{algo}/{hexd}"

    def size(self, name: str) -> int:
        try:
            return (self.root / name).stat().st_size
        except OSError:
            return 0


@dataclass
class PlannedImage:
    refs: list[str]
    config: dict[str, Any]
    config_digest: str
    layers: list[tuple[str, str]]  # (digest to store under, path in the archive)


def import_file(store: ImageStore, path: Path, *, name: str = "",
                progress_total: Callable[[int], None] | None = None,
                progress: Progress | None = None) -> list[Image]:
    """Import every image in ``path``; ``name`` tags the first one (needed when it has none)."""
    with tempfile.TemporaryDirectory(prefix="atoll-import-", dir=store.root) as tmp:
        if path.is_dir():
            source = Source(path)
        elif tarfile.is_tarfile(path):
            _extract_archive(path, Path(tmp))
            source = Source(Path(tmp))
        else:
            raise ImageImportError(f"{path} is neither a directory nor a tar archive")
        plans = _plan(source)
        if not plans:
            raise ImageImportError(f"{path} holds no image (no index.json or manifest.json)")
        if progress_total is not None:
            progress_total(sum(source.size(p) for plan in plans for _, p in plan.layers))
        out = []
        for i, plan in enumerate(plans):
            refs = plan.refs or ([name] if name and i == 0 else [])
            if name and i == 0 and name not in refs:
                refs = [name] + refs
            if not refs:
                raise ImageImportError("the image has no name in the archive: give one with --name")
            digests = []
            for digest, blob_path in plan.layers:
                if not store.has_layer(digest):
                    staged = store.staging_dir(digest.replace(":", "_"))
                    with source.open(blob_path) as f:
                        unpack_layer(f, staged, progress)
                    store.commit_layer(digest, staged)
                elif progress is not None:
                    progress(source.size(blob_path))
                digests.append(digest)
            cfg = plan.config.get("config") or {}
            config = {k: cfg[k] for k in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User")
                      if cfg.get(k) is not None}
            for ref in refs:
                out.append(store.tag(ref, plan.config_digest, digests, config))
        return out


def _extract_archive(path: Path, dest: Path) -> None:
    """The archive's files (blobs, manifests) into a scratch directory, nothing outside it."""
    with tarfile.open(path) as tar:
        for member in tar:
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts:
                raise ImageImportError(f"unsafe path in archive: {member.name}")
            if member.isdir():
                (dest / name).mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with src, open(dest / name, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            elif member.issym() or member.islnk():
                # docker save links identical layers; resolve inside the archive only
                target = PurePosixPath(member.linkname)
                base = name.parent if member.issym() else PurePosixPath()
                resolved = PurePosixPath(os.path.normpath(base / target))
                if resolved.is_absolute() or ".." in resolved.parts:
                    raise ImageImportError(f"unsafe link in archive: {member.name}")
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                if (dest / resolved).exists():
                    shutil.copyfile(dest / resolved, dest / name)


def _plan(source: Source) -> list[PlannedImage]:
    if (source.root / "index.json").is_file():
        return _plan_oci(source)
    if (source.root / "manifest.json").is_file():
        return _plan_docker(source)
    return []


def _plan_oci(source: Source) -> list[PlannedImage]:
    plans = []
    for desc, refs in _manifests(source, source.json("index.json"), []):
        manifest = source.json(source.blob(desc["digest"]))
        config_desc = manifest.get("config") or {}
        config = source.json(source.blob(config_desc.get("digest", "")))
        layers = [(d["digest"], source.blob(d["digest"])) for d in manifest.get("layers") or []]
        plans.append(PlannedImage(refs, config, config_desc.get("digest", ""), layers))
    return plans


def _manifests(source: Source, index: dict[str, Any],
               refs: list[str]) -> list[tuple[dict[str, Any], list[str]]]:
    """Image manifests of an index, nested indexes followed, linux/amd64 preferred."""
    out: list[tuple[dict[str, Any], list[str]]] = []
    candidates = index.get("manifests") or []
    for desc in candidates:
        ref = (desc.get("annotations") or {}).get(REF_ANNOTATION)
        names = refs + ([ref] if ref else [])
        media = desc.get("mediaType", "")
        platform = desc.get("platform") or {}
        if platform and (platform.get("os"), platform.get("architecture")) != ("linux", "amd64"):
            continue
        if "index" in media or "manifest.list" in media:
            out.extend(_manifests(source, source.json(source.blob(desc["digest"])), names))
        else:
            out.append((desc, [r for r in (_full_ref(n) for n in names) if r]))
    return out


def _full_ref(name: str) -> str:
    """OCI layouts may name an image only by tag (``latest``); such images need --name."""
    return name if ("/" in name or ":" in name) and not name.startswith(":") else ""


def _plan_docker(source: Source) -> list[PlannedImage]:
    plans = []
    for entry in source.json("manifest.json") or []:
        config_name = entry.get("Config", "")
        config = source.json(config_name)
        layers = []
        for layer in entry.get("Layers") or []:
            digest = _file_digest(source, layer)
            layers.append((digest, layer))
        config_digest = "sha256:" + hashlib.sha256(source.open(config_name).read()).hexdigest()
        plans.append(PlannedImage([r for r in entry.get("RepoTags") or []], config,
                                  config_digest, layers))
    return plans


def _file_digest(source: Source, name: str) -> str:
    h = hashlib.sha256()
    with source.open(name) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class _Counting(io.RawIOBase):
    """Counts the compressed bytes read, for the progress bar."""

    def __init__(self, raw: IO[bytes], progress: Progress | None) -> None:
        self.raw = raw
        self.progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.raw.read(len(b))
        n = len(data)
        b[:n] = data
        if self.progress is not None and n:
            self.progress(n)
        return n


def unpack_layer(blob: IO[bytes], dest: Path, progress: Progress | None = None) -> None:
    counted = io.BufferedReader(_Counting(blob, progress), 1 << 20)
    head = counted.peek(4)[:4]
    if head[:2] == b"\x1f\x8b":
        stream: IO[bytes] = gzip.GzipFile(fileobj=counted)  # type: ignore[assignment]
    elif head == b"\x28\xb5\x2f\xfd":
        raise ImageImportError("zstd-compressed layers are not supported; re-export with gzip")
    else:
        stream = counted
    root = os.path.realpath(dest)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                _unpack_member(tar, member, dest, root)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
        raise ImageImportError(f"a layer cannot be unpacked: {e}") from None


def _unpack_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, root: str) -> None:
    name = _layer_path(member.name)
    if str(name) == ".":
        return
    parent = dest / name.parent
    real_parent = os.path.realpath(parent)
    if real_parent != root and not real_parent.startswith(root + os.sep):
        raise ImageImportError(f"layer path goes through a link out of the layer: {member.name}")
    parent.mkdir(parents=True, exist_ok=True)
    base = name.name
    if base == ".wh..wh..opq":
        os.setxattr(parent, "trusted.overlay.opaque", b"y")
        return
    if base.startswith(".wh."):
        target = parent / base[4:]
        _remove(target)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        return
    target = dest / name
    if member.isdir():
        if target.exists() and not target.is_dir():
            _remove(target)
        target.mkdir(exist_ok=True)
    else:
        _remove(target)
        if member.islnk():
            link = _layer_path(member.linkname)
            os.link(dest / link, target)
            return
        tar.extract(member, dest, set_attrs=False, numeric_owner=True,
                    filter=lambda m, _p: m.replace(name=str(name), mode=m.mode & 0o7777))
    try:
        if not member.issym():
            os.chmod(target, member.mode & 0o7777)
        os.lchown(target, member.uid, member.gid)
        if not member.issym():
            os.utime(target, (member.mtime, member.mtime))
    except OSError:
        pass


def _layer_path(raw: str) -> PurePosixPath:
    """A path inside the layer: leading ``/`` and ``./`` dropped, ``..`` refused."""
    path = PurePosixPath(raw)
    if ".." in path.parts:
        raise ImageImportError(f"unsafe path in layer: {raw}")
    parts = [p for p in path.parts if p not in ("/", ".")]
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _remove(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
