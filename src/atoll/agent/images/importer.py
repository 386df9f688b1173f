"""Importing images from files: OCI image layouts (directory or tar) and ``docker save`` archives.

Hosts here have no registry access, so images arrive as files.  Each layer is
unpacked once into the image store (a layer already present is skipped),
turning the tar's whiteouts into overlayfs's (``.wh.NAME`` → a 0/0 character
device, ``.wh..wh..opq`` → the ``trusted.overlay.opaque`` attribute).  A layer
may not write outside its own directory: ``..`` in a name or a hard link is
refused, a leading ``/`` means the layer's root, and every entry is written
relative to a descriptor of its parent, resolved inside the layer: a relative
symlink an earlier entry made is followed within the layer, one that would leave
it (``etc -> /tmp``, ``x -> ../..``) is refused, and the entry itself is always
created, never opened through a symlink.  ``tarfile``'s ``data`` filter is not used: it
strips the setuid bits and device nodes images need, and before Python 3.11.13 its
checks can be bypassed (CVE-2025-4517).
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

from atoll.agent.images.store import Image, ImageStore
from atoll.agent.runtime import safepath

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
                try:
                    out.append(store.tag(ref, plan.config_digest, digests, config))
                except ValueError as e:
                    raise ImageImportError(f"cannot name the image {ref!r}: {e}") from None
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


def unpack_layer(blob: IO[bytes], dest: Path, progress: Progress | None = None,
                 max_bytes: int | None = None) -> None:
    """Unpack one layer into ``dest``; ``max_bytes`` caps the file bytes it may write
    (sparse members count at their full size: a small tar cannot fill the disk)."""
    counted = io.BufferedReader(_Counting(blob, progress), 1 << 20)
    head = counted.peek(4)[:4]
    if head[:2] == b"\x1f\x8b":
        stream: IO[bytes] = gzip.GzipFile(fileobj=counted)  # type: ignore[assignment]
    elif head == b"\x28\xb5\x2f\xfd":
        raise ImageImportError("zstd-compressed layers are not supported; re-export with gzip")
    else:
        stream = counted
    root = safepath.open_root(dest)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            written = 0
            for member in tar:
                if max_bytes is not None and member.isreg():
                    written += member.size
                    if written > max_bytes:
                        raise ImageImportError(f"the layer unpacks to more than {max_bytes} "
                                               f"bytes; refused")
                _unpack_member(tar, member, root)
    except safepath.PathEscape as e:
        raise ImageImportError(f"unsafe path in layer: {e.strerror}") from None
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
        raise ImageImportError(f"a layer cannot be unpacked: {e}") from None
    finally:
        os.close(root)


def _unpack_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: int) -> None:
    """One layer entry, written relative to descriptors: its parent is resolved inside the
    layer (a symlink an earlier entry made is followed as the container would, never to the
    host) and the entry itself is created, never opened through an existing symlink."""
    name = _layer_path(member.name)
    if str(name) == ".":
        return
    base = name.name
    parent = safepath.open_dir_in_root(root, str(name.parent), refuse_escaping=True)
    try:
        if base.startswith(".wh."):
            _whiteout(parent, base, member.name)
        elif member.islnk():
            safepath.remove_at(parent, base)
            link = _layer_path(member.linkname)
            if str(link) == ".":
                raise ImageImportError(f"unsafe hard link in layer: {member.name}")
            source = safepath.open_dir_in_root(root, str(link.parent), create_mode=None,
                                               refuse_escaping=True)
            try:  # the link itself, not what it may point to: nothing outside is reached
                os.link(link.name, base, src_dir_fd=source, dst_dir_fd=parent,
                        follow_symlinks=False)
            finally:
                os.close(source)
        elif member.issym():
            safepath.remove_at(parent, base)
            os.symlink(member.linkname, base, dir_fd=parent)
            try:
                os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
            except OSError:
                pass
        elif member.isdir():
            _unpack_dir(parent, base, member)
        elif member.isreg():
            safepath.remove_at(parent, base)
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=parent)
            with os.fdopen(fd, "wb") as out:
                src = tar.extractfile(member)
                if src is not None:
                    shutil.copyfileobj(src, out, 1 << 20)
                _set_attrs(out.fileno(), member)
        elif member.ischr() or member.isblk() or member.isfifo():
            safepath.remove_at(parent, base)
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() \
                else stat.S_IFIFO
            os.mknod(base, kind | 0o600, os.makedev(member.devmajor, member.devminor)
                     if not member.isfifo() else 0, dir_fd=parent)
            fd = os.open(base, safepath.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                _set_attrs(fd, member, by_path=True)
            finally:
                os.close(fd)
    finally:
        os.close(parent)


def _whiteout(parent: int, base: str, raw: str) -> None:
    """``.wh..wh..opq``: the directory is opaque; ``.wh.NAME``: NAME is deleted (overlayfs's
    0/0 character device).  NAME is one entry of this directory, nothing else."""
    if base == ".wh..wh..opq":
        os.setxattr(safepath.fd_path(parent), "trusted.overlay.opaque", b"y")
        return
    hidden = base[4:]
    if hidden.startswith(".wh."):
        return  # aufs bookkeeping (.wh..wh.plnk, ...): nothing to show
    if hidden in ("", ".", ".."):
        raise ImageImportError(f"unsafe whiteout in layer: {raw}")
    safepath.remove_at(parent, hidden)
    os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)


def _unpack_dir(parent: int, base: str, member: tarfile.TarInfo) -> None:
    try:
        st = os.stat(base, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        safepath.remove_at(parent, base)
        st = None
    if st is None:
        os.mkdir(base, 0o700, dir_fd=parent)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        _set_attrs(fd, member)
    finally:
        os.close(fd)


def _set_attrs(fd: int, member: tarfile.TarInfo, by_path: bool = False) -> None:
    """Owner, then mode (a chown clears setuid bits), then mtime, of what ``fd`` holds."""
    target: int | str = safepath.fd_path(fd) if by_path else fd
    try:
        os.chown(target, member.uid, member.gid)
    except OSError:
        pass
    os.chmod(target, member.mode & 0o7777)
    try:
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
