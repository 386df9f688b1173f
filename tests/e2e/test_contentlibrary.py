"""The content library end to end: blobs over HTTPS, the client's transfers, the agent's
blob cache, and `atoll image import` publishing ClusterVirtualMachineImages."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest

from atoll.agent.vms.images import BlobCache
from atoll.api import errors
from atoll.client import content, kubeconfig
from atoll.client.rest import ApiClient
from tests.conftest import Platform, free_port, pids_of

BLOBS = "/content/v1/blobs/"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def anonymous_context(platform: Platform) -> ssl.SSLContext:
    """Trusts the cluster CA but presents no client certificate."""
    return ssl.create_default_context(cafile=str(platform.data_dir / "pki" / "ca.crt"))


def api_client(platform: Platform) -> ApiClient:
    return ApiClient(kubeconfig.load(platform.kubeconfig), user_agent="test-content")


def atoll(*args: str, timeout: float = 120,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atoll.cli.main", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def assert_one_line_error(out: subprocess.CompletedProcess[str], *words: str) -> None:
    assert out.returncode != 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    errors_ = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors_) == 1, out.stderr
    for word in words:
        assert word in errors_[0], errors_[0]


async def status_of(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    body = json.loads(await resp.read())
    assert body["kind"] == "Status" and body["code"] == resp.status, body
    return body


async def test_put_head_get_and_range(platform: Platform) -> None:
    data = os.urandom(3 << 20) + b"tail"
    digest = sha(data)
    async with aiohttp.ClientSession(platform.url, connector=aiohttp.TCPConnector(
            ssl=platform.ssl_context())) as s:
        async with s.head(BLOBS + digest) as r:
            assert r.status == 404
        async with s.get(BLOBS + digest) as r:
            assert r.status == 404
            assert "not found" in (await status_of(r))["message"]
        async with s.put(BLOBS + digest, data=data) as r:
            assert r.status == 201, await r.text()
            assert (await r.json())["size"] == len(data)
        async with s.put(BLOBS + digest, data=data) as r:
            assert r.status == 200  # already there
        async with s.head(BLOBS + digest) as r:
            assert r.status == 200 and int(r.headers["Content-Length"]) == len(data)
        async with s.get(BLOBS + digest) as r:
            assert r.status == 200 and await r.read() == data
        async with s.get(BLOBS + digest, headers={"Range": "bytes=1000-1999"}) as r:
            assert r.status == 206 and await r.read() == data[1000:2000]
        async with s.get(BLOBS + digest, headers={"Range": "bytes=-4"}) as r:
            assert r.status == 206 and await r.read() == b"tail"
        for bad in ("sha256:xyz", "md5:" + "0" * 32, digest.upper(), digest + "0"):
            for method in ("PUT", "GET"):
                async with s.request(method, BLOBS + bad, data=b"x" if method == "PUT"
                                     else None) as r:
                    assert r.status == 400, (bad, method)
                    assert "sha256:<64 hex>" in (await status_of(r))["message"]
    assert (platform.data_dir / "content" / "blobs" / "sha256" / digest[7:]).read_bytes() == data


async def test_wrong_digest_is_refused_and_nothing_stored(platform: Platform) -> None:
    data = os.urandom(2 << 20)
    claimed = sha(b"something else " + data)
    blobs = platform.data_dir / "content" / "blobs"
    async with aiohttp.ClientSession(platform.url, connector=aiohttp.TCPConnector(
            ssl=platform.ssl_context())) as s:
        async with s.put(BLOBS + claimed, data=data) as r:
            assert r.status == 400
            assert sha(data) in (await status_of(r))["message"]
        async with s.head(BLOBS + claimed) as r:
            assert r.status == 404
    assert not (blobs / "sha256" / claimed[7:]).exists()
    assert not (blobs / "sha256" / sha(data)[7:]).exists()
    assert not list(blobs.glob(".upload-*"))


async def test_requests_without_credentials_get_401(platform: Platform) -> None:
    data = b"secret image"
    async with aiohttp.ClientSession(platform.url, connector=aiohttp.TCPConnector(
            ssl=anonymous_context(platform))) as s:
        for method in ("PUT", "HEAD", "GET"):
            async with s.request(method, BLOBS + sha(data),
                                 data=data if method == "PUT" else None) as r:
                assert r.status == 401, method
                if method != "HEAD":
                    assert (await status_of(r))["reason"] == "Unauthorized"
        async with s.get(BLOBS + sha(data), headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
    assert not (platform.data_dir / "content" / "blobs" / "sha256" / sha(data)[7:]).exists()


class RssSampler:
    """The highest resident set size of a process while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_big_file(path: Path, size: int) -> str:
    """A file of ``size`` bytes: mostly holes, with a random MiB every 16 (cheap to make,
    not all zeros); its digest."""
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(size >> 20):
            chunk = block if i % 16 == 0 else bytes(1 << 20)
            f.write(chunk)
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@pytest.fixture
def server_pid(platform: Platform) -> int:
    pids = pids_of(f"server --data-dir {platform.data_dir.resolve()} ")
    assert len(pids) == 1, pids
    return pids[0]


async def test_a_large_file_streams_through_without_growing_the_server(
        platform: Platform, server_pid: int, tmp_path: Path) -> None:
    size = 200 << 20
    src = tmp_path / "big.img"
    digest = write_big_file(src, size)
    client = api_client(platform)
    moved: list[int] = []
    try:
        with RssSampler(server_pid) as up:
            before = up.rss()
            assert await content.upload(client, src, moved.append) == digest
        assert sum(moved) == size
        dest = tmp_path / "back.img"
        with RssSampler(server_pid) as down:
            await content.download(client, digest, dest)
        assert content.digest_of(dest) == digest
        moved.clear()
        assert await content.upload(client, src, moved.append) == digest  # HEAD: skipped
        assert sum(moved) == size
    finally:
        await client.close()
    grown = max(up.peak, down.peak) - before
    assert grown < 64 << 20, f"the server grew by {grown >> 20} MiB moving {size >> 20} MiB"


async def test_download_resumes_and_survives_a_bad_partial_file(platform: Platform,
                                                                tmp_path: Path) -> None:
    data = os.urandom(5 << 20)
    digest = sha(data)
    client = api_client(platform)
    try:
        await content.upload(client, _write(tmp_path / "src", data))
        dest = tmp_path / "resumed"
        part = tmp_path / ".resumed.part"
        part.write_bytes(data[:(3 << 20) + 17])  # an interrupted download
        moved: list[int] = []
        await content.download(client, digest, dest, moved.append)
        assert dest.read_bytes() == data and not part.exists()
        assert sum(moved) == len(data)
        dest2 = tmp_path / "garbled"
        (tmp_path / ".garbled.part").write_bytes(b"not the blob's start")
        await content.download(client, digest, dest2)  # starts again from zero
        assert dest2.read_bytes() == data
        (tmp_path / ".long.part").write_bytes(data + b"extra")
        await content.download(client, digest, tmp_path / "long")  # 416, then from zero
        assert (tmp_path / "long").read_bytes() == data
        with pytest.raises(errors.NotFound):
            await content.download(client, sha(b"never uploaded"), tmp_path / "missing")
        assert not (tmp_path / "missing").exists()
    finally:
        await client.close()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


class CountingCache(BlobCache):
    """The real cache, counting the downloads it starts."""

    fetches = 0

    async def _fetch(self, digest: str, path: Path) -> Path:
        self.fetches += 1
        return await super()._fetch(digest, path)


async def test_blob_cache_fetches_once_for_concurrent_callers(platform: Platform,
                                                             tmp_path: Path) -> None:
    data = os.urandom(24 << 20)
    digest = sha(data)
    client = api_client(platform)
    try:
        await content.upload(client, _write(tmp_path / "src", data))
        cache = CountingCache(client, tmp_path / "vmimages")
        paths = await asyncio.gather(*(cache.ensure(digest, len(data)) for _ in range(6)))
        expected = tmp_path / "vmimages" / "blobs" / "sha256" / digest[7:]
        assert set(paths) == {expected} and cache.fetches == 1
        assert content.digest_of(expected) == digest
        assert await cache.ensure(digest) == expected and cache.fetches == 1
        missing = sha(b"no such blob")
        results = await asyncio.gather(*(cache.ensure(missing) for _ in range(3)),
                                       return_exceptions=True)
        assert all(isinstance(r, errors.NotFound) for r in results) and cache.fetches == 2
        with pytest.raises(ValueError):
            await cache.ensure("sha256:nope")
        # a waiter that gives up does not cancel the download the others wait for
        other = os.urandom(8 << 20)
        await content.upload(client, _write(tmp_path / "other", other))
        impatient = asyncio.ensure_future(cache.ensure(sha(other)))
        patient = asyncio.ensure_future(cache.ensure(sha(other)))
        await asyncio.sleep(0)
        impatient.cancel()
        assert (await patient).read_bytes() == other and cache.fetches == 3
    finally:
        await client.close()


def test_limit_refuses_large_blobs_with_413(tmp_path: Path) -> None:
    """A server of its own with a 1 MiB limit (`--content-max-blob-size`)."""
    data_dir = tmp_path / "srv"
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli.main", "server", "--data-dir",
                             str(data_dir), "--port", str(port), "--bind-address", "127.0.0.1",
                             "--content-max-blob-size", "1Mi"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ctx = _wait_server(data_dir, port, proc)

        async def check() -> None:
            async with aiohttp.ClientSession(f"https://127.0.0.1:{port}",
                                             connector=aiohttp.TCPConnector(ssl=ctx)) as s:
                small = os.urandom(1 << 20)
                async with s.put(BLOBS + sha(small), data=small) as r:
                    assert r.status == 201
                big = os.urandom((1 << 20) + 1)
                async with s.put(BLOBS + sha(big), data=big) as r:  # Content-Length says so
                    assert r.status == 413
                    assert "limit" in (await status_of(r))["message"]

                async def chunked() -> Any:  # no Content-Length: counted as it arrives
                    step = 64 << 10
                    for i in range(0, len(big), step):
                        yield big[i:i + step]
                try:
                    async with s.put(BLOBS + sha(big), data=chunked()) as r:
                        assert r.status == 413
                except aiohttp.ClientOSError:
                    pass  # the server may close before the client finished sending
                async with s.head(BLOBS + sha(big)) as r:
                    assert r.status == 404
            assert not list((data_dir / "content" / "blobs").glob(".upload-*"))
        asyncio.run(check())
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _wait_server(data_dir: Path, port: int, proc: subprocess.Popen) -> ssl.SSLContext:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        if (data_dir / "admin.kubeconfig").exists():
            ctx = ssl.create_default_context(cafile=str(data_dir / "pki" / "ca.crt"))
            ctx.load_cert_chain(data_dir / "pki" / "admin.crt", data_dir / "pki" / "admin.key")
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx,
                                            timeout=2):
                    return ctx
            except OSError:
                pass
        time.sleep(0.2)
    raise AssertionError("the server never became ready")


# -- atoll image import ------------------------------------------------------------------------

def cvmi(platform: Platform, name: str, namespace: str = "") -> dict[str, Any]:
    kind = "vmi" if namespace else "cvmi"
    args = ["-n", namespace] if namespace else []
    return json.loads(platform.kubectl("get", kind, name, *args, "-o", "json").stdout)


@pytest.fixture
def qcow2(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    yield path


def test_import_qcow2_publishes_a_cluster_image_with_status(platform: Platform, qcow2: Path,
                                                            tmp_path: Path) -> None:
    from atoll.cli.vmimage_cmd import object_name

    display = f"disk-{uuid.uuid4().hex[:6]}"
    out = atoll("image", "import", str(qcow2), "--name", display,
                "--kubeconfig", str(platform.kubeconfig))
    assert out.returncode == 0, out.stdout + out.stderr
    name = object_name(display)
    assert name in out.stdout  # (no progress bars: stderr is not a terminal)
    image = cvmi(platform, name)
    digest = content.digest_of(qcow2)
    assert image["spec"]["content"]["disk"] == {"digest": digest, "size": qcow2.stat().st_size,
                                                "format": "qcow2", "virtualSize": 64 << 20}
    assert image["spec"]["providerRef"] == {"apiVersion": "content.atoll.dev/v1",
                                            "kind": "ContentLibraryItem", "name": display}
    labels = image["metadata"]["labels"]
    assert labels["capability.image.vmoperator.vmware.com/cloud-init"] == "true"
    assert labels["os.image.vmoperator.vmware.com/type"] == "linux"
    st = image["status"]
    assert (st["name"], st["type"], st["firmware"]) == (display, "OVF", "BIOS")
    assert st["diskInfo"] == {"capacity": "64Mi", "size": "1Mi"}
    assert st["osInfo"]["type"] == "linux" and st["capabilities"] == ["cloud-init"]
    assert [(c["type"], c["status"]) for c in st["conditions"]] == [("Ready", "True")]
    assert (platform.data_dir / "content" / "blobs" / "sha256" / digest[7:]).exists()

    # importing again under the same display name updates the same object
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "8M"], check=True)
    out = atoll("image", "import", str(raw), "--name", display,
                "--kubeconfig", str(platform.kubeconfig))
    assert out.returncode == 0, out.stdout + out.stderr
    image = cvmi(platform, name)
    assert image["spec"]["content"]["disk"]["format"] == "raw"
    assert image["spec"]["content"]["disk"]["digest"] == content.digest_of(raw)
    assert image["status"]["diskInfo"]["capacity"] == "8Mi"

    listed = atoll("image", "list", "--kubeconfig", str(platform.kubeconfig),
                   "--data-dir", str(tmp_path / "agent"))
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(name))
    assert display in row and "OVF" in row and row.endswith("True")


def test_import_into_a_namespace(platform: Platform, namespace: str, qcow2: Path) -> None:
    from atoll.cli.vmimage_cmd import object_name

    out = atoll("image", "import", str(qcow2), "--name", "nsdisk", "-n", namespace,
                "--kubeconfig", str(platform.kubeconfig))
    assert out.returncode == 0, out.stdout + out.stderr
    image = cvmi(platform, object_name("nsdisk"), namespace)
    assert image["kind"] == "VirtualMachineImage" and image["status"]["name"] == "nsdisk"


def test_bad_imports_are_one_line_errors(platform: Platform, qcow2: Path,
                                         tmp_path: Path) -> None:
    kc = ["--kubeconfig", str(platform.kubeconfig)]
    assert_one_line_error(atoll("image", "import", str(tmp_path / "nope.qcow2"), "--name", "x",
                                *kc), "does not exist")
    text = _write(tmp_path / "notes.txt", b"just some text\n")
    assert_one_line_error(atoll("image", "import", str(text), "--name", "x", *kc),
                          "not a disk image")
    corrupt = tmp_path / "corrupt.qcow2"
    corrupt.write_bytes(qcow2.read_bytes()[:200] + b"\xff" * 300)
    assert_one_line_error(atoll("image", "import", str(corrupt), "--name", "x", *kc), "corrupt")
    assert_one_line_error(atoll("image", "import", str(qcow2), *kc), "--name")
    assert_one_line_error(atoll("image", "import", str(qcow2), "--name", "x", "--kubeconfig",
                                str(tmp_path / "missing.kubeconfig")), "kubeconfig")
    assert_one_line_error(atoll("image", "build", "tiny", "--kubeconfig",
                                str(tmp_path / "missing.kubeconfig"), timeout=20), "kubeconfig")

    # a server that does not answer, and one that refuses who we are
    config = json.loads(json.dumps(_yaml(platform.kubeconfig)))
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    unreachable = _write(tmp_path / "unreachable.kubeconfig", json.dumps(config).encode())
    assert_one_line_error(atoll("image", "import", str(qcow2), "--name", "x", "--kubeconfig",
                                str(unreachable)), "cannot reach")
    config = json.loads(json.dumps(_yaml(platform.kubeconfig)))
    config["users"][0]["user"] = {"token": "not-a-valid-token"}
    refused = _write(tmp_path / "refused.kubeconfig", json.dumps(config).encode())
    assert_one_line_error(atoll("image", "import", str(qcow2), "--name", "x", "--kubeconfig",
                                str(refused)), "refused", "Unauthorized")


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc
