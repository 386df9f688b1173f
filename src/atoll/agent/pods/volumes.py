"""Pod volumes on the host: prepared before any container starts, removed with the pod.

Each volume is a directory ``<pod dir>/volumes/<name>`` bind-mounted into the
containers that mount it (``hostPath`` binds the host path itself).
Supported: emptyDir (``medium: Memory`` is a tmpfs), configMap, secret
(written as files with their modes), hostPath (with its ``type`` checks),
downwardAPI, projected (configMap, secret, downwardAPI and serviceAccountToken
sources: a token requested for the pod, rewritten in place before 80% of its
lifetime, as kubelet does), and persistentVolumeClaim: a Bound claim's PV, which for
``storage.atoll.dev/local`` is this host's loop-mounted volume (agent/storage), shared by every
pod here that uses it and released at teardown.  Anything else (raw block ``volumeDevices``
among them), an unbound claim, or a missing non-optional ConfigMap/Secret, is a ``VolumeError``
the pod status shows (``FailedMount``-style message) instead of a half-started pod.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson

from atoll.agent.pods.env import ConfigError, Fetch, field_value, resource_value
from atoll.agent.runtime import mounts, safepath
from atoll.agent.storage import claims, localvolumes
from atoll.api import quantity

DEFAULT_MODE = 0o644
TOKENS_FILE = "tokens.json"
#: the host's local volumes, beside ``pods/`` in the agent's data directory
VOLUMES_DIR = "volumes"
SUBPATHS_DIR = "volume-subpaths"
#: (audience or None, expirationSeconds) → (token, expiry as epoch seconds)
RequestToken = Callable[[str | None, int], Awaitable[tuple[str, float]]]


class VolumeError(Exception):
    pass


@dataclass
class HostVolume:
    path: str
    read_only: bool = False  # configMap, secret, downwardAPI and projected are read-only


async def setup(pod: dict[str, Any], pod_dir: Path, fetch: Fetch,
                request_token: RequestToken | None = None) -> dict[str, HostVolume]:
    out: dict[str, HostVolume] = {}
    tokens: dict[str, Any] = {}
    _refuse_block_devices(pod)
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = vol.get("name")
        if not isinstance(name, str) or not name:
            continue
        target = pod_dir / "volumes" / name
        try:
            out[name] = await _setup_one(pod, vol, target, fetch, request_token, tokens)
        except ConfigError as e:
            raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {e}') from None
        except (OSError, claims.ClaimError, localvolumes.LocalVolumeError) as e:
            raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {e}') from None
    if tokens:
        (pod_dir / TOKENS_FILE).write_bytes(orjson.dumps(tokens))
    return out


async def _setup_one(pod: dict[str, Any], vol: dict[str, Any], target: Path,
                     fetch: Fetch, request_token: RequestToken | None = None,
                     tokens: dict[str, Any] | None = None) -> HostVolume:
    if "emptyDir" in vol:
        spec = vol.get("emptyDir") or {}
        target.mkdir(parents=True, exist_ok=True)
        if spec.get("medium") == "Memory" and not os.path.ismount(target):
            size = spec.get("sizeLimit")
            opts = "mode=1777" + (f",size={quantity.integer(size)}" if size else "")
            try:
                mounts.mount("tmpfs", str(target), "tmpfs", opts)
            except mounts.MountError as e:
                raise VolumeError(str(e)) from None
        else:
            os.chmod(target, 0o777)
        return HostVolume(str(target))
    if "hostPath" in vol:
        return HostVolume(_host_path(vol.get("hostPath") or {}))
    if "configMap" in vol:
        files = await _object_files("ConfigMap", vol.get("configMap") or {}, fetch)
        _write_files(target, files, (vol.get("configMap") or {}).get("defaultMode"))
        return HostVolume(str(target), read_only=True)
    if "secret" in vol:
        spec = dict(vol.get("secret") or {})
        spec["name"] = spec.get("secretName", "")
        files = await _object_files("Secret", spec, fetch)
        _write_files(target, files, spec.get("defaultMode"))
        return HostVolume(str(target), read_only=True)
    if "downwardAPI" in vol:
        spec = vol.get("downwardAPI") or {}
        _write_files(target, _downward_files(pod, spec.get("items") or []),
                     spec.get("defaultMode"))
        return HostVolume(str(target), read_only=True)
    if "projected" in vol:
        spec = vol.get("projected") or {}
        files: dict[str, tuple[bytes, int | None]] = {}
        for source in spec.get("sources") or []:
            if "configMap" in source:
                files.update(await _object_files("ConfigMap", source["configMap"] or {}, fetch))
            elif "secret" in source:
                files.update(await _object_files("Secret", source["secret"] or {}, fetch))
            elif "downwardAPI" in source:
                files.update(_downward_files(pod, (source["downwardAPI"] or {}).get("items")
                                             or []))
            elif "serviceAccountToken" in source and request_token is not None:
                src = source["serviceAccountToken"] or {}
                rel = str(src.get("path") or "token")
                seconds = int(src.get("expirationSeconds") or 3600)
                token, expires = await _token(request_token, src.get("audience"), seconds)
                files[rel] = (token.encode(), None)
                if tokens is not None:
                    tokens[f"{target.name}/{rel}"] = {
                        "audience": src.get("audience"), "seconds": seconds,
                        "issued": time.time(), "expires": expires}
        _write_files(target, files, spec.get("defaultMode"))
        return HostVolume(str(target), read_only=True)
    if "persistentVolumeClaim" in vol:
        return await _claim(pod, vol.get("persistentVolumeClaim") or {}, target, fetch)
    kinds = [k for k in vol if k != "name"]
    raise VolumeError(f'volume "{vol.get("name")}": unsupported volume type '
                      f'{", ".join(kinds) or "(none)"} on this host')


async def _claim(pod: dict[str, Any], spec: dict[str, Any], target: Path,
                 fetch: Fetch) -> HostVolume:
    """The claim's bound PV: this host's local volume (mounted once, shared by the pods here
    that use it), or the PV's hostPath or local path."""
    name = str(spec.get("claimName") or "")
    node = str((pod.get("spec") or {}).get("nodeName") or "")
    volume = await claims.resolve(fetch, name, node)
    read_only = bool(spec.get("readOnly"))
    if volume.mode == localvolumes.BLOCK:
        raise ConfigError(f'persistentvolumeclaim "{name}" is a Block volume: pods mount it '
                          "with volumeDevices, which this host does not support")
    if volume.local is not None:
        pod_dir = target.parents[1]  # <agent data>/pods/<pod uid>/volumes/<name>
        store = localvolumes.shared(pod_dir.parents[1] / VOLUMES_DIR)
        path = await store.acquire(volume.local, f"pod-{pod_dir.name}", pod_dir)
        return HostVolume(str(path), read_only=read_only)
    if volume.host_path is not None:
        return HostVolume(_host_path(volume.host_path), read_only=read_only)
    if not os.path.isdir(volume.path):
        raise ConfigError(f"local volume path {volume.path} does not exist on this host")
    return HostVolume(volume.path, read_only=read_only)


def _refuse_block_devices(pod: dict[str, Any]) -> None:
    spec = pod.get("spec") or {}
    for field in ("initContainers", "containers"):
        for c in spec.get(field) or []:
            if isinstance(c, dict) and c.get("volumeDevices"):
                raise VolumeError(f'container "{c.get("name")}": volumeDevices (raw block '
                                  "volumes) are not supported for pods on this host")


def _host_path(spec: dict[str, Any]) -> str:
    path = spec.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise VolumeError(f"hostPath.path must be an absolute path, not {path!r}")
    kind = spec.get("type") or ""
    exists = os.path.exists(path)
    if kind == "DirectoryOrCreate" and not exists:
        os.makedirs(path, mode=0o755, exist_ok=True)
    elif kind == "FileOrCreate" and not exists:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch(mode=0o644)
    checks = {"Directory": stat.S_ISDIR, "File": stat.S_ISREG, "Socket": stat.S_ISSOCK,
              "CharDevice": stat.S_ISCHR, "BlockDevice": stat.S_ISBLK}
    if kind in checks:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            raise VolumeError(f"hostPath type check failed: {path} does not exist") from None
        if not checks[kind](mode):
            raise VolumeError(f"hostPath type check failed: {path} is not a {kind}")
    elif kind not in ("", "DirectoryOrCreate", "FileOrCreate"):
        raise VolumeError(f"hostPath.type {kind!r} is not supported")
    return path


async def _object_files(kind: str, spec: dict[str, Any],
                        fetch: Fetch) -> dict[str, tuple[bytes, int | None]]:
    name = str(spec.get("name") or "")
    obj = await fetch(kind, name)
    if obj is None:
        if spec.get("optional"):
            return {}
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    data: dict[str, bytes] = {}
    for k, v in (obj.get("data") or {}).items():
        data[k] = base64.b64decode(str(v)) if kind == "Secret" else str(v).encode()
    for k, v in (obj.get("binaryData") or {}).items():
        data[k] = base64.b64decode(str(v))
    items = spec.get("items")
    if not items:
        return {k: (v, None) for k, v in data.items()}
    out = {}
    for item in items:
        key = item.get("key")
        if key not in data:
            if spec.get("optional"):
                continue
            raise ConfigError(f"configmap references non-existent config key: {key}"
                              if kind == "ConfigMap" else
                              f"references non-existent secret key: {key}")
        out[str(item.get("path") or key)] = (data[key], item.get("mode"))
    return out


def _downward_files(pod: dict[str, Any],
                    items: list[dict[str, Any]]) -> dict[str, tuple[bytes, int | None]]:
    out = {}
    for item in items:
        path = str(item.get("path") or "")
        if isinstance(item.get("fieldRef"), dict):
            value = field_value(pod, str(item["fieldRef"].get("fieldPath") or ""))
        elif isinstance(item.get("resourceFieldRef"), dict):
            value = resource_value(pod, {}, item["resourceFieldRef"])
        else:
            continue
        out[path] = (value.encode(), item.get("mode"))
    return out


def _write_files(target: Path, files: dict[str, tuple[bytes, int | None]],
                 default_mode: Any) -> None:
    """Replace the volume's content in one step (a new directory, then a rename).

    Item paths come from users: each is checked (relative, no ``..``) and written
    relative to a descriptor of the new directory, never through a symlink."""
    mode_default = default_mode if isinstance(default_mode, int) else DEFAULT_MODE
    staged = target.with_name(f".{target.name}.new")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    root = safepath.open_root(staged)
    try:
        for rel, (content, mode) in files.items():
            try:
                parent, name = safepath.split_parent(rel)
            except safepath.PathEscape as e:
                raise VolumeError(f"invalid file path {rel!r} in volume: must be a relative "
                                  f"path without '..' ({e.strerror})") from None
            _write_at(root, parent, name, content,
                      (mode if isinstance(mode, int) else mode_default) & 0o777)
    finally:
        os.close(root)
    os.chmod(staged, 0o755)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staged, target)


def _write_at(root: int, parent: str, name: str, content: bytes, mode: int) -> None:
    """Write ``parent/name`` under the directory ``root`` without following any symlink."""
    try:
        dir_fd = safepath.open_beneath(root, parent, create_dirs=True, dir_mode=0o755)
    except safepath.PathEscape as e:
        raise VolumeError(f"cannot write {parent}/{name} in volume: {e.strerror}") from None
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            os.fchmod(f.fileno(), mode)
    finally:
        os.close(dir_fd)


async def _token(request_token: RequestToken, audience: Any, seconds: int) -> tuple[str, float]:
    try:
        return await request_token(audience if isinstance(audience, str) else None, seconds)
    except Exception as e:  # the API refused or is away: the volume is not ready yet
        raise ConfigError(f"cannot get a ServiceAccount token: {e}") from None


async def refresh_tokens(pod_dir: Path, request_token: RequestToken) -> float | None:
    """Rewrite the pod's tokens that are past 80% of their lifetime (in place: the volume
    directory is bind-mounted into the containers, so its files are replaced, never the
    directory).  Returns seconds until the next one is due, or None if there are none."""
    path = pod_dir / TOKENS_FILE
    try:
        tokens: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    now = time.time()
    changed = False
    for rel, t in tokens.items():
        due = t["issued"] + 0.8 * (t["expires"] - t["issued"])
        if now < due:
            continue
        token, expires = await _token(request_token, t.get("audience"), int(t["seconds"]))
        _replace_token(pod_dir / "volumes", rel, token.encode())
        t.update(issued=now, expires=expires)
        changed = True
    if changed:
        path.write_bytes(orjson.dumps(tokens))
    return max(1.0, min(t["issued"] + 0.8 * (t["expires"] - t["issued"]) for t in
                        tokens.values()) - time.time())


def _replace_token(volumes_dir: Path, rel: str, content: bytes) -> None:
    """Rewrite one token file in place (a staged file renamed over it), relative to a
    descriptor of its directory, so no symlink on the way is ever followed."""
    parent, name = safepath.split_parent(rel)
    root = safepath.open_root(volumes_dir)
    try:
        dir_fd = safepath.open_beneath(root, parent)
    finally:
        os.close(root)
    staged = f".{name}.new"
    try:
        safepath.remove_at(dir_fd, staged)
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     DEFAULT_MODE, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            os.fchmod(f.fileno(), DEFAULT_MODE)
        os.rename(staged, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


# -- subPath ------------------------------------------------------------------------------------
def subpath_error(mount_name: str, container: str, why: str) -> ConfigError:
    return ConfigError(f'failed to prepare subPath for volumeMount "{mount_name}" of container '
                       f'"{container}": {why}')


def prepare_subpath(pod_dir: Path, volume: str, volume_root: str, sub: str, container: str,
                    index: int) -> str:
    """The path to give the runtime for ``sub`` inside a volume (kubelet's safe subpath).

    ``sub`` is resolved inside the volume with no symlink followed and no ``..``
    (missing directories are made, as kubelet does), and the object found is
    bind-mounted through its descriptor onto
    ``<pod>/volume-subpaths/<volume>/<container>/<index>``: the runtime then mounts
    that agent-owned path, so nothing a container changes in the volume later (a
    symlink swapped in) can redirect it.  A path leaving its volume: ``ConfigError``.
    """
    target = pod_dir / SUBPATHS_DIR / volume / container / str(index)
    if mounts.unmount_all_under(str(target)):  # a previous start's
        raise ConfigError(f"subPath {sub!r}: the previous mount cannot be removed")
    root = safepath.open_root(volume_root)
    try:
        mode = stat.S_IMODE(os.fstat(root).st_mode)
        fd = safepath.open_beneath(root, sub, create_dirs=True, dir_mode=mode)
    except safepath.PathEscape as e:
        raise ConfigError(f"{e.strerror}: the path leaves its volume") from None
    except OSError as e:
        raise ConfigError(f"subPath {sub!r}: {e.strerror or e}") from None
    finally:
        os.close(root)
    try:
        wanted = os.fstat(fd)
        target.parent.mkdir(parents=True, exist_ok=True)
        _mount_target(target, stat.S_ISDIR(wanted.st_mode))
        try:
            mounts.bind(safepath.fd_path(fd), str(target))
        except mounts.MountError as e:
            raise ConfigError(f"subPath {sub!r}: {e.strerror}") from None
        got = os.stat(target, follow_symlinks=False)
        if (got.st_dev, got.st_ino) != (wanted.st_dev, wanted.st_ino):
            mounts.unmount_all_under(str(target))
            raise ConfigError(f"subPath {sub!r}: the mount does not show the resolved path")
    finally:
        os.close(fd)
    return str(target)


def _mount_target(target: Path, directory: bool) -> None:
    """An empty directory or file to mount onto (kept if it is already the right kind)."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    if st is not None and (stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)):
        return
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(target)  # an empty mount point; anything else is not ours to delete
        else:
            os.unlink(target)
    if directory:
        os.mkdir(target, 0o750)
    else:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o640))


class TeardownError(OSError):
    """A mount under the pod's directory would not go away: its files must not be deleted."""


async def teardown(pod_dir: Path) -> None:
    """Unmount subPath binds and tmpfs volumes, remove every volume directory of a pod, and
    release its claims' local volumes.

    Nothing is deleted while a mount is left under it: a subPath bind of a claim
    would otherwise have the claim's data deleted through it."""
    for sub in (SUBPATHS_DIR, "volumes"):
        d = pod_dir / sub
        left = mounts.unmount_all_under(str(d))
        if left:
            raise TeardownError(f"still mounted under {d}: {', '.join(left)}")
        await asyncio.to_thread(shutil.rmtree, d, True)
    # the pod's claims: its subPath binds of them are gone, so the last user unmounts
    store = pod_dir.parents[1] / VOLUMES_DIR
    if store.is_dir():
        await localvolumes.shared(store).release(f"pod-{pod_dir.name}")
