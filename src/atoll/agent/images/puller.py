"""Images for containers: the local store first, a registry when the pull policy says so.

kubelet's rules: ``imagePullPolicy`` Never uses only what is here, IfNotPresent pulls a
missing image, Always asks the registry each time (the default for ``:latest`` and untagged
references); a digest reference names immutable content and is never pulled again once
here.  Images imported with ``atoll image import`` and the built-in busybox have no
registry behind them and are used as they are under every policy (air-gapped hosts).

A pull resolves the manifest (through an index to this host's platform), downloads the
missing layers (at most ``max_concurrent_downloads`` at once, each verified by digest and
size into ``staging/pulls``), unpacks each in a thread (the event loop stays free)
through a size-capped, hashing decompressor (a decompression bomb stops at
``max_layer_bytes``; the uncompressed tar must hash to the config's ``diff_id``), and
only then moves it into the store.  The store is tagged by the reference and by
``repo@sha256:<manifest digest>``.  Concurrent pulls of one image with the same
credentials are one pull; a layer two images share is downloaded once.  Whatever a
crashed agent left in ``staging/pulls`` is deleted when the next one starts.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from atoll.agent.images import credentials as creds_mod
from atoll.agent.images import reference
from atoll.agent.images.importer import ImageImportError, unpack_layer
from atoll.agent.images.reference import Reference
from atoll.agent.images.platforms import Platform, host_platform_
from atoll.agent.images.registry import Credentials, RegistryClient, RegistrySettings, Resolved
from atoll.agent.images.registry_errors import RegistryError
from atoll.agent.images.store import Image, ImageStore

log = logging.getLogger(__name__)
CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User")
POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True)
class PullSettings:
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    #: the node's own registry credentials: a docker config.json (``auths``)
    credentials_file: Path | None = None
    #: decompressed bytes one layer may unpack to (a decompression bomb stops here)
    max_layer_bytes: int = 16 << 30
    #: layers downloaded at once per pull (containerd's default: 3)
    max_concurrent_downloads: int = 3
    platform: Platform | None = None


class PullError(Exception):
    """A container's image cannot be had; ``reason`` is kubelet's waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class PullResult:
    image: Image
    #: seconds the pull itself took, and since this caller asked (waiting included)
    pull_seconds: float
    total_seconds: float
    #: bytes of the image as the registry serves it
    size: int


def effective_policy(ref: Reference, policy: str | None) -> str:
    """The policy as the API server defaults it, for specs that come without one."""
    if policy in POLICIES:
        return str(policy)
    return "Always" if ref.floating else "IfNotPresent"


class ImagePuller:
    def __init__(self, store: ImageStore, settings: PullSettings | None = None) -> None:
        self.store = store
        self.settings = settings or PullSettings()
        self.client = RegistryClient(self.settings.registry)
        self.platform = self.settings.platform or host_platform_()
        self._staging: Path | None = None
        self._inflight: dict[tuple[str, tuple[str, ...]], asyncio.Task[tuple[Image, float,
                                                                              int]]] = {}
        self._layer_locks: dict[str, asyncio.Lock] = {}
        self._downloads = asyncio.Semaphore(self.settings.max_concurrent_downloads)
        #: image id → when a container last started from it (for garbage collection)
        self.last_used: dict[str, float] = {}
        #: pulls that reached a registry (tests and benchmarks count them)
        self.pulls_started = 0

    async def close(self) -> None:
        await self.client.close()

    @property
    def staging(self) -> Path:
        """``staging/pulls``, emptied before this puller's first pull: whatever a crashed
        agent left half-downloaded or half-unpacked is never used."""
        if self._staging is None:
            staging = self.store.root / "staging" / "pulls"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True, exist_ok=True)
            self._staging = staging
        return self._staging

    # -- what is here -----------------------------------------------------------------------------
    @staticmethod
    def parse(ref: str) -> Reference:
        try:
            return reference.parse(ref)
        except ValueError as e:
            raise PullError("InvalidImageName",
                            f'Failed to apply default image tag "{ref}": couldn\'t parse image '
                            f'name "{ref}": {e}') from None

    def present(self, ref: str, policy: str | None) -> Image | None:
        """The image when the policy lets the local copy be used without asking a registry;
        None when a pull is needed; PullError for Never without the image."""
        parsed = self.parse(ref)
        policy = effective_policy(parsed, policy)
        existing = self.store.get(str(parsed))
        if existing is None and parsed.digest:
            existing = self.store.get(parsed.with_digest(parsed.digest))
        if policy == "Never":
            if existing is None:
                raise PullError("ErrImageNeverPull", f'Container image "{ref}" is not present '
                                                     f'with pull policy of Never')
            return existing
        if existing is not None and (policy == "IfNotPresent" or parsed.digest
                                     or not existing.pulled):
            return existing
        return None

    def mark_used(self, image: Image) -> None:
        self.last_used[image.id] = time.time()

    # -- pulling -----------------------------------------------------------------------------------
    async def pull(self, ref: str, secrets: list[dict[str, Any]] | None = None) -> PullResult:
        """Pull ``ref`` with the pod's pull secrets (Secret objects) and the node's
        credentials; one pull however many callers ask at once."""
        asked = time.monotonic()
        parsed = self.parse(ref)
        entries = [e for s in secrets or [] for e in creds_mod.from_secret(s)]
        creds = creds_mod.matching(parsed, entries,
                                   creds_mod.from_file(self.settings.credentials_file))
        key = (str(parsed), tuple(c.basic() for c in creds))
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._pull(parsed, creds),
                                                          name=f"pull {parsed}")
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._inflight.pop(key, None)
                                   if self._inflight.get(key) is t else None)
        image, seconds, size = await asyncio.shield(task)
        return PullResult(image, seconds, time.monotonic() - asked, size)

    async def _pull(self, ref: Reference, creds: list[Credentials]
                    ) -> tuple[Image, float, int]:
        started = time.monotonic()
        self.pulls_started += 1
        self.staging  # noqa: B018 (cleaned before the first download)
        log.info("pulling %s", ref)
        last: RegistryError | None = None
        for ep in self.client.endpoints(ref):
            for cred in creds or [None]:  # type: ignore[list-item]
                try:
                    resolved = await self.client.resolve(ref, cred, ep, self.platform)
                    await self._layers(resolved, cred)
                except RegistryError as e:
                    last = e
                    if e.unauthorized:
                        continue  # the next credentials may do
                    break
                image = self._tag(ref, resolved)
                log.info("pulled %s (%s) from %s in %.3fs", ref, resolved.digest, ep.host,
                         time.monotonic() - started)
                return image, time.monotonic() - started, resolved.content_size
            if ep.mirror and last is not None:
                log.warning("mirror %s failed for %s (%s); trying the next", ep.host, ref, last)
                continue
        assert last is not None
        raise PullError("ErrImagePull", str(last))

    async def _layers(self, resolved: Resolved, cred: Credentials | None) -> None:
        diff_ids = (resolved.config.get("rootfs") or {}).get("diff_ids") \
            if isinstance(resolved.config.get("rootfs"), dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(resolved.layers):
            diff_ids = [""] * len(resolved.layers)
        jobs = [self._layer(resolved, desc, str(diff_id or ""), cred)
                for desc, diff_id in zip(resolved.layers, diff_ids)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _layer(self, resolved: Resolved, desc: dict[str, Any], diff_id: str,
                     cred: Credentials | None) -> None:
        digest, size = desc["digest"], int(desc["size"])
        if self.store.has_layer(digest):
            return
        lock = self._layer_locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if self.store.has_layer(digest):
                return
            hexd = digest.split(":", 1)[1]
            blob = self.staging / f"{hexd}.blob"
            async with self._downloads:
                await self.client.fetch_blob(resolved.endpoint, resolved.repo, digest, size,
                                             cred, blob)
            staged = self.staging / f"{hexd}.d"
            try:
                await asyncio.to_thread(self._unpack, blob, staged, digest, diff_id)
                self.store.commit_layer(digest, staged)
            finally:
                blob.unlink(missing_ok=True)
                shutil.rmtree(staged, ignore_errors=True)
        if not lock.locked():
            self._layer_locks.pop(digest, None)

    def _unpack(self, blob: Path, staged: Path, digest: str, diff_id: str) -> None:
        """Unpack a verified blob: decompressed here, capped and hashed, then written by the
        importer's safe unpacker."""
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        with open(blob, "rb") as f:
            head = f.read(4)
            f.seek(0)
            if head == b"\x28\xb5\x2f\xfd":
                raise RegistryError(f"layer {digest} is zstd-compressed; not supported")
            stream: IO[bytes] = f
            if head[:2] == b"\x1f\x8b":
                stream = gzip.GzipFile(fileobj=f)  # type: ignore[assignment]
            capped = _Capped(stream, self.settings.max_layer_bytes, digest)
            try:
                unpack_layer(capped, staged, max_bytes=self.settings.max_layer_bytes)
                capped.drain()
            except ImageImportError as e:
                raise RegistryError(f"layer {digest}: {e}") from None
            except (OSError, EOFError, zlib.error) as e:
                raise RegistryError(f"layer {digest} cannot be decompressed: {e}") from None
        if diff_id and capped.digest() != diff_id:
            raise RegistryError(f"layer {digest} unpacks to {capped.digest()}, not the "
                                f"config's diff_id {diff_id}")

    def _tag(self, ref: Reference, resolved: Resolved) -> Image:
        cfg = resolved.config.get("config") if isinstance(resolved.config.get("config"),
                                                          dict) else {}
        config = {k: cfg[k] for k in CONFIG_KEYS if cfg.get(k) is not None}
        layers = [d["digest"] for d in resolved.layers]
        by_digest = ref.with_digest(resolved.digest)
        kw: dict[str, Any] = {"repo_digests": [by_digest],
                              "content_size": resolved.content_size}
        image = self.store.tag(str(ref), resolved.config_digest, layers, config, **kw)
        if str(ref) != by_digest:
            self.store.tag(by_digest, resolved.config_digest, layers, config, **kw)
        return image


class _Capped:
    """A decompressed stream that refuses to give more than ``cap`` bytes and hashes what
    it gives (the layer's diff_id)."""

    def __init__(self, raw: IO[bytes], cap: int, digest: str) -> None:
        self.raw = raw
        self.cap = cap
        self.what = digest
        self.count = 0
        self._hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        n = (1 << 20) if n is None or n < 0 else n
        data = self.raw.read(min(n, self.cap - self.count + 1))
        self.count += len(data)
        if self.count > self.cap:
            raise RegistryError(f"layer {self.what} decompresses to more than {self.cap} "
                                f"bytes (a decompression bomb?); refused")
        self._hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


_shared: dict[int, ImagePuller] = {}


def shared_puller(store: ImageStore) -> ImagePuller:
    """One default puller per store, for code that was given none (tests, tools): a second
    puller would clean the first's staging directory."""
    key = id(store)
    puller = _shared.get(key)
    if puller is None or puller.store is not store:
        puller = _shared[key] = ImagePuller(store)
    return puller
