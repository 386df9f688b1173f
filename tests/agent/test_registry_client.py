"""The registry client and the puller against a real registry (Debian's docker-registry,
images pushed with skopeo) and against a hostile one written here."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from atoll.agent.images import credentials, reference
from atoll.agent.images.imagegc import GCSettings, ImageGC
from atoll.agent.images.puller import ImagePuller, PullError, PullSettings
from atoll.agent.images.platforms import Platform, amd64_level, choose_platform
from atoll.agent.images.registry import RegistryClient, RegistrySettings
from atoll.agent.images.store import BUSYBOX_REF, ImageStore
from tests import ociregistry
from tests.conftest import free_port
from tests.imagebuild import busybox_layer, layer_tar

pytestmark = pytest.mark.skipif(not ociregistry.available(),
                                reason="docker-registry, skopeo and htpasswd are needed")
PASSWORD = "pa55-Word-never-shown"
AMD64 = Platform("linux", "amd64", "v1")


def dockerconfig_secret(host: str, user: str, password: str) -> dict[str, Any]:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    body = json.dumps({"auths": {host: {"auth": auth}}}).encode()
    return {"type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(body).decode()}}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One open registry and one with htpasswd auth over TLS from a test CA, holding: a
    busybox image, one sharing its base layer, and a multi-platform index."""
    base = tmp_path_factory.mktemp("registry")
    open_reg = ociregistry.start(base / "open", free_port())
    secure = ociregistry.start(base / "secure", free_port(), user="alice", password=PASSWORD,
                               tls=True)
    lay = ociregistry.Layout(base / "oci")
    bb = lay.image([busybox_layer()], {"Cmd": ["sh"], "Env": ["PATH=/bin", "WHO=plain"]})
    lay.name(bb, "bb")
    extra = lay.image([busybox_layer(), layer_tar({"etc/extra": b"more\n"})],
                      {"Cmd": ["sh"], "Env": ["WHO=extra"]})
    lay.name(extra, "extra")
    arm = lay.image([layer_tar({"etc/arch": b"arm64\n"})], {"Env": ["WHO=arm64"]},
                    arch="arm64")
    arm["platform"]["variant"] = "v8"
    multi = lay.index([bb | {"platform": {"architecture": "amd64", "os": "linux"}}, arm])
    lay.name(multi, "multi")
    only_arm = lay.index([arm])
    lay.name(only_arm, "onlyarm")
    for reg in (open_reg, secure):
        reg.push(lay.root, "bb", "lib/bb:1")
        reg.push(lay.root, "extra", "lib/extra:1")
        reg.push(lay.root, "multi", "lib/multi:1", all_platforms=True)
        reg.push(lay.root, "onlyarm", "lib/onlyarm:1", all_platforms=True)
    yield {"open": open_reg, "secure": secure, "bb": bb, "extra": extra, "multi": multi,
           "arm": arm}
    open_reg.stop()
    secure.stop()


def puller(tmp_path: Path, **registry: Any) -> ImagePuller:
    return ImagePuller(ImageStore(tmp_path / "images"), PullSettings(
        registry=RegistrySettings(**registry), platform=AMD64))


def staged(p: ImagePuller) -> list[Path]:
    return list((p.store.root / "staging" / "pulls").iterdir())


# -- pure logic -----------------------------------------------------------------------------------
def test_references_parse_as_containerd_does() -> None:
    assert reference.normalize("busybox") == "docker.io/library/busybox:latest"
    assert reference.normalize("docker.io/busybox:1") == "docker.io/library/busybox:1"
    assert reference.normalize("index.docker.io/a/b") == "docker.io/a/b:latest"
    r = reference.parse("127.0.0.1:5000/a/b@sha256:" + "a" * 64)
    assert (r.domain, r.path, r.tag, r.endpoint_host) == ("127.0.0.1:5000", "a/b", "",
                                                         "127.0.0.1:5000")
    assert reference.parse("nginx").endpoint_host == "registry-1.docker.io"
    assert reference.parse("localhost/x").domain == "localhost"
    assert reference.parse("x:1@sha256:" + "b" * 64).tag == "1"
    assert reference.parse("nginx").floating and reference.parse("nginx:latest").floating
    assert not reference.parse("nginx:1").floating
    for bad in ("", " busybox", "a/B", "a//b", "a:b:c", "http://x/y", "x@sha256:12",
                "x:" + "t" * 200, "-a", "a/" + "b" * 260):
        with pytest.raises(ValueError):
            reference.parse(bad)
    assert reference.is_loopback_host("127.0.0.1:5000") and reference.is_loopback_host("[::1]")
    assert not reference.is_loopback_host("10.0.0.1:5000")


def test_platform_choice() -> None:
    index = {"manifests": [
        {"digest": "a", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "b", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "c", "platform": {"os": "linux", "architecture": "amd64", "variant": "v3"}},
        {"digest": "d", "platform": {"os": "unknown", "architecture": "unknown"}}]}
    assert choose_platform(index, Platform("linux", "amd64", "v1"))["digest"] == "b"
    assert choose_platform(index, Platform("linux", "amd64", "v3"))["digest"] == "c"
    assert choose_platform(index, Platform("linux", "arm64", ""))["digest"] == "a"
    with pytest.raises(Exception, match="no matching manifest for linux/s390x"):
        choose_platform(index, Platform("linux", "s390x"))
    assert amd64_level("flags : sse2") == 1
    assert amd64_level("flags : cx16 lahf_lm popcnt sse4_1 sse4_2 ssse3") == 2


def test_plain_http_only_for_loopback_and_insecure() -> None:
    c = RegistryClient(RegistrySettings(insecure=("reg.lan:5000",), mirrors=(
        ("docker.io", "http://mirror.example"), ("docker.io", "https://m2.example:444"),
        ("docker.io", "http://127.0.0.1:5001"))))
    eps = c.endpoints(reference.parse("busybox"))
    assert [(e.scheme, e.host, e.mirror) for e in eps] == [
        ("https", "m2.example:444", True), ("http", "127.0.0.1:5001", True),
        ("https", "registry-1.docker.io", False)]
    assert c._http_allowed("reg.lan:5000") and c._http_allowed("localhost:1")
    assert not c._http_allowed("reg.example.com")


def test_credentials_match_as_kubelet_keyring() -> None:
    entries = credentials.parse_auths({
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:1").decode()},
        "*.corp.example": {"username": "glob", "password": "2"},
        "reg.corp.example/team": {"username": "team", "password": "3"},
        "reg.corp.example:5000": {"username": "port", "password": "4"},
        "broken": {"auth": "!!!"}})
    users = lambda ref: [c.username for c in credentials.matching(reference.parse(ref), entries)]
    assert users("busybox") == ["hub"]
    assert users("reg.corp.example/team/app") == ["team", "glob"]
    assert users("reg.corp.example/other") == ["glob"]
    assert users("reg.corp.example:5000/x") == ["port"]
    assert users("elsewhere.io/x") == []
    assert "1" not in repr(entries[0].credentials)


# -- against the real registry --------------------------------------------------------------------
async def test_pull_by_tag_then_by_digest(images: dict[str, Any], tmp_path: Path) -> None:
    reg = images["open"]
    p = puller(tmp_path)
    try:
        result = await p.pull(f"{reg.host}/lib/bb:1")
        image = result.image
        assert image.config["Env"] == ["PATH=/bin", "WHO=plain"]
        assert (image.layers[0] / "bin" / "busybox").is_file()
        digest = images["bb"]["digest"]
        assert image.repo_digests == [f"{reg.host}/lib/bb@{digest}"]
        assert p.store.get(f"{reg.host}/lib/bb@{digest}").id == image.id
        assert result.size > 500_000 and result.pull_seconds <= result.total_seconds
        # by digest: here already, so no pull even under Always
        assert p.present(f"{reg.host}/lib/bb@{digest}", "Always") is not None
        fresh = puller(tmp_path / "second")
        by_digest = await fresh.pull(f"{reg.host}/lib/bb@{digest}")
        assert by_digest.image.id == image.id
        await fresh.close()
        assert staged(p) == []
    finally:
        await p.close()


async def test_multi_platform_index_resolves_for_this_host(images: dict[str, Any],
                                                         tmp_path: Path) -> None:
    reg = images["open"]
    p = puller(tmp_path)
    try:
        image = (await p.pull(f"{reg.host}/lib/multi:1")).image
        assert "WHO=plain" in image.config["Env"]
        assert image.repo_digests == [f"{reg.host}/lib/multi@{images['multi']['digest']}"]
        with pytest.raises(PullError, match="no matching manifest for linux/amd64"):
            await p.pull(f"{reg.host}/lib/onlyarm:1")
        arm = ImagePuller(ImageStore(tmp_path / "arm"), PullSettings(
            platform=Platform("linux", "arm64", "v8")))
        assert "WHO=arm64" in (await arm.pull(f"{reg.host}/lib/multi:1")).image.config["Env"]
        await arm.close()
    finally:
        await p.close()


async def test_basic_auth_over_tls_from_a_test_ca(images: dict[str, Any], tmp_path: Path) -> None:
    reg = images["secure"]
    p = puller(tmp_path, ca_file=reg.ca_file)
    try:
        ref = f"{reg.host}/lib/bb:1"
        with pytest.raises(PullError, match="unauthorized: authentication required") as anon:
            await p.pull(ref)
        with pytest.raises(PullError, match="unauthorized") as wrong:
            await p.pull(ref, [dockerconfig_secret(reg.host, "alice", PASSWORD + "x")])
        for e in (anon.value, wrong.value):
            assert PASSWORD not in str(e) and PASSWORD not in repr(e.args)
        image = (await p.pull(ref, [dockerconfig_secret(reg.host, "alice", PASSWORD)])).image
        assert (image.layers[0] / "bin" / "busybox").is_file()
        # without the CA: the certificate is refused, and no fallback to http helps
        untrusted = puller(tmp_path / "untrusted")
        with pytest.raises(PullError, match="TLS|certificate"):
            await untrusted.pull(ref, [dockerconfig_secret(reg.host, "alice", PASSWORD)])
        await untrusted.close()
    finally:
        await p.close()


async def test_node_credentials_file(images: dict[str, Any], tmp_path: Path) -> None:
    reg = images["secure"]
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {reg.host: {"username": "alice",
                                                       "password": PASSWORD}}}))
    p = ImagePuller(ImageStore(tmp_path / "images"), PullSettings(
        registry=RegistrySettings(ca_file=reg.ca_file), credentials_file=config,
        platform=AMD64))
    try:
        assert (await p.pull(f"{reg.host}/lib/extra:1")).image.config["Env"] == ["WHO=extra"]
    finally:
        await p.close()


async def test_corrupted_blob_is_refused(images: dict[str, Any], tmp_path: Path) -> None:
    reg = images["open"]
    lay = ociregistry.Layout(tmp_path / "oci")
    desc = lay.image([layer_tar({"bin/x": b"original content " * 100})], {"Cmd": ["x"]})
    lay.name(desc, "c")
    reg.push(lay.root, "c", "lib/corrupt:1")
    manifest = json.loads((lay.root / "blobs" / "sha256" /
                           desc["digest"].split(":")[1]).read_bytes())
    layer = manifest["layers"][0]["digest"]
    blob = reg.blob_path(layer)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))  # same size, other bytes
    p = puller(tmp_path)
    try:
        with pytest.raises(PullError, match="digest mismatch"):
            await p.pull(f"{reg.host}/lib/corrupt:1")
        assert not p.store.has_layer(layer)
        assert p.store.get(f"{reg.host}/lib/corrupt:1") is None
        assert staged(p) == []
    finally:
        await p.close()


async def test_one_pull_for_many_and_shared_layers(images: dict[str, Any],
                                                   tmp_path: Path) -> None:
    reg = images["open"]
    p = puller(tmp_path)
    try:
        lay = ociregistry.Layout(tmp_path / "oci")
        desc = lay.image([layer_tar({"etc/five": b"5" * 4096})], {"Cmd": ["sh"]})
        lay.name(desc, "five")
        reg.push(lay.root, "five", "lib/five:1")
        layer = json.loads((lay.root / "blobs" / "sha256" /
                            desc["digest"].split(":")[1]).read_bytes())["layers"][0]["digest"]
        results = await asyncio.gather(*(p.pull(f"{reg.host}/lib/five:1") for _ in range(5)))
        assert len({r.image.id for r in results}) == 1
        assert p.pulls_started == 1
        assert reg.blob_gets(layer) == 1
        # the extra image shares busybox's layer with lib/bb: that one is not fetched again
        await p.pull(f"{reg.host}/lib/bb:1")
        base = images["bb"]
        base_layer = (await p.client.resolve(reference.parse(f"{reg.host}/lib/bb:1"), None,
                                             p.client.endpoints(reference.parse(
                                                 f"{reg.host}/lib/bb:1"))[0],
                                             AMD64)).layers[0]["digest"]
        before = reg.blob_gets(base_layer)
        extra = (await p.pull(f"{reg.host}/lib/extra:1")).image
        assert reg.blob_gets(base_layer) == before
        assert extra.layers[0] == p.store.layer_path(base_layer)
        assert base["digest"]
    finally:
        await p.close()


async def test_pull_policies(images: dict[str, Any], tmp_path: Path) -> None:
    reg = images["open"]
    p = puller(tmp_path)
    try:
        p.store.ensure_busybox()
        ref = f"{reg.host}/lib/bb:1"
        with pytest.raises(PullError) as never:
            p.present(ref, "Never")
        assert never.value.reason == "ErrImageNeverPull"
        assert p.present(ref, "IfNotPresent") is None
        await p.pull(ref)
        assert p.present(ref, "IfNotPresent") is not None
        assert p.present(ref, "Never") is not None
        assert p.present(ref, "Always") is None  # ask the registry again
        assert p.present(f"{reg.host}/lib/bb", None) is None  # untagged: Always
        # the built-in busybox has no registry behind it: used under every policy
        assert p.present("busybox", "Always").ref == BUSYBOX_REF
        with pytest.raises(PullError) as bad:
            p.present("Bad//Name", None)
        assert bad.value.reason == "InvalidImageName"
        # Always with nothing new: the layers are not fetched again
        count = p.pulls_started
        await p.pull(ref)
        assert p.pulls_started == count + 1
    finally:
        await p.close()


async def test_mirror_first_then_the_registry(images: dict[str, Any], tmp_path: Path) -> None:
    reg = images["open"]
    dead = f"http://127.0.0.1:{free_port()}"
    # docker.io served by the loopback registry as a mirror
    p = puller(tmp_path, mirrors=(("docker.io", f"http://{reg.host}"),))
    try:
        image = (await p.pull("docker.io/lib/bb:1")).image
        assert image.ref == "docker.io/lib/bb:1"
        assert image.repo_digests == [f"docker.io/lib/bb@{images['bb']['digest']}"]
    finally:
        await p.close()
    # a dead mirror falls back to the registry itself
    p = puller(tmp_path / "fallback", mirrors=((reg.host, dead),))
    try:
        assert (await p.pull(f"{reg.host}/lib/bb:1")).image.config["Cmd"] == ["sh"]
    finally:
        await p.close()


async def test_restart_cleans_staging_and_pulls_again(images: dict[str, Any],
                                                      tmp_path: Path) -> None:
    reg = images["open"]
    store = ImageStore(tmp_path / "images")
    junk = store.root / "staging" / "pulls" / ("ab" * 32 + ".d")
    (junk / "bin").mkdir(parents=True)
    (store.root / "staging" / "pulls" / ("ab" * 32 + ".blob")).write_bytes(b"half")
    p = ImagePuller(store, PullSettings(platform=AMD64))
    try:
        await p.pull(f"{reg.host}/lib/bb:1")
        assert staged(p) == []
    finally:
        await p.close()


def test_image_gc_removes_unused_least_recently_used_first(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    store.ensure_busybox()
    for name in ("old", "new", "used"):
        staged_dir = store.staging_dir(name)
        (staged_dir / name).write_text(name)
        store.commit_layer(f"sha256:{name:0>64}", staged_dir)
        store.tag(f"example.com/{name}:1", f"sha256:{name:1>64}", [f"sha256:{name:0>64}"], {},
                  repo_digests=[f"example.com/{name}@sha256:{'c' * 64}"], content_size=1)
    usage = iter([90.0, 90.0, 75.0, 75.0])
    gc = ImageGC(store, GCSettings(high_percent=85, low_percent=80, min_age=0),
                 lambda: {"example.com/used:1"},
                 last_used={f"sha256:{'old':1>64}": 1.0, f"sha256:{'new':1>64}": time.time()},
                 usage=lambda: next(usage))
    assert gc.collect() == [f"sha256:{'old':1>64}"]
    assert store.get("example.com/old:1") is None and not store.has_layer(f"sha256:{'old':0>64}")
    assert store.get("example.com/new:1") is not None
    gc.collect(force=True)
    assert store.get("example.com/new:1") is None
    assert store.get("example.com/used:1") is not None
    assert store.get(BUSYBOX_REF) is not None
    # under the threshold nothing happens
    quiet = ImageGC(store, GCSettings(), lambda: set(), usage=lambda: 10.0)
    assert quiet.collect() == []


# -- a hostile registry ----------------------------------------------------------------------------
def _gz_bomb(size: int) -> tuple[bytes, bytes]:
    """A small tar trailed by ``size`` zero bytes: each member honest, the stream not."""
    raw = layer_tar({"small": b"1"}) + bytes(size)
    return raw, gzip.compress(raw, compresslevel=1)


def _sparse_tar(size: int) -> bytes:
    """GNU tar's sparse format: a file of ``size`` bytes stored as a few blocks."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        with open(f"{d}/hole", "wb") as f:
            f.truncate(size)
        subprocess.run(["tar", "--sparse", "-cf", f"{d}/x.tar", "-C", d, "hole"], check=True)
        return Path(f"{d}/x.tar").read_bytes()


@pytest.fixture(scope="module")
def hostile() -> Any:
    """An aiohttp registry that lies: garbage, huge manifests, redirect loops, wrong sizes,
    a decompression bomb, a stall. Runs in its own thread's loop."""
    import hashlib
    import threading

    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> dict[str, Any]:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return {"digest": d, "size": len(data)}

    def image(layers: list[tuple[bytes, bytes]], sizes: list[int] | None = None) -> bytes:
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                          "rootfs": {"type": "layers", "diff_ids": [
                              "sha256:" + hashlib.sha256(raw).hexdigest()
                              for raw, _ in layers]}}).encode()
        descs = []
        for i, (_, gz) in enumerate(layers):
            d = put(gz) | {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
            if sizes:
                d["size"] = sizes[i]
            descs.append(d)
        return json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": put(cfg) | {"mediaType": "application/vnd.oci.image."
                                                               "config.v1+json"},
                           "layers": descs}).encode()

    small = layer_tar({"hello": b"hi\n"})
    small_gz = gzip.compress(small)
    bomb = _gz_bomb(64 << 20)
    sparse = _sparse_tar(1 << 30)
    stall_layer = layer_tar({"big": bytes(range(256)) * 8192})
    stall_gz = gzip.compress(stall_layer, compresslevel=1)
    manifests = {
        "garbage": b"\x00not json at all{{{",
        "huge": b"{" + b" " * (5 << 20) + b"}",
        "bomb": image([bomb]),
        "sparse": image([(sparse, gzip.compress(sparse))]),
        "short": image([(small, small_gz)], sizes=[len(small_gz) + 100]),
        "long": image([(small, small_gz)], sizes=[len(small_gz) - 10]),
        "stall": image([(stall_layer, stall_gz)]),
        "ok": image([(small, small_gz)]),
    }
    stall_digest = json.loads(manifests["stall"])["layers"][0]["digest"]
    long_digest = json.loads(manifests["long"])["layers"][0]["digest"]

    async def ping(_: web.Request) -> web.Response:
        return web.json_response({})

    async def manifest(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "loop":
            raise web.HTTPFound(str(request.url))
        if name == "echo":  # a registry that repeats the credentials it was sent
            auth = request.headers.get("Authorization", "")
            if not auth:
                return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401,
                                         headers={"WWW-Authenticate": 'Basic realm="echo"'})
            plain = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
            return web.json_response({"errors": [{"code": "DENIED", "message":
                                                  f"no access for {auth} ({plain})"}]},
                                     status=403)
        if name == "chunkyhuge":
            resp = web.StreamResponse()
            await resp.prepare(request)
            for _ in range(64):
                await resp.write(b" " * (128 << 10))
            return resp
        if name not in manifests:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN",
                                                  "message": "manifest unknown"}]}, status=404)
        return web.Response(body=manifests[name], content_type="application/vnd.oci.image."
                                                               "manifest.v1+json")

    async def blob(request: web.Request) -> web.StreamResponse:
        d = request.match_info["digest"]
        data = blobs.get(d)
        if data is None:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        if d == stall_digest:
            resp = web.StreamResponse()
            resp.content_length = len(data)
            await resp.prepare(request)
            await resp.write(data[:1000])
            await asyncio.sleep(30)
            return resp
        if d == long_digest:  # more than declared, no length announced
            resp = web.StreamResponse()
            await resp.prepare(request)
            await resp.write(data)
            return resp
        return web.Response(body=data)

    app = web.Application()
    app.router.add_get("/v2/", ping)
    app.router.add_get("/v2/{name}/manifests/{ref}", manifest)
    app.router.add_get("/v2/{name}/blobs/{digest}", blob)
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_forever()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    import socket
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.mark.parametrize("name, message", [
    ("garbage", "not a JSON object"),
    ("huge", "over the 4194304"),
    ("chunkyhuge", "over the 4194304"),
    ("loop", "redirected more than 5 times"),
    ("short", "size mismatch"),
    ("long", "sent more than"),
    ("missing", "manifest_unknown: manifest unknown"),
])
async def test_hostile_registry_fails_clearly(hostile: str, tmp_path: Path, name: str,
                                              message: str) -> None:
    p = puller(tmp_path)
    try:
        with pytest.raises(PullError, match=message):
            await p.pull(f"{hostile}/{name}:1")
        assert list(p.store.layers_dir.iterdir()) == []
        assert staged(p) == []
    finally:
        await p.close()


async def test_decompression_bomb_and_stall_keep_the_loop_responsive(hostile: str,
                                                                     tmp_path: Path) -> None:
    p = ImagePuller(ImageStore(tmp_path / "images"), PullSettings(
        registry=RegistrySettings(read_timeout=1.0), max_layer_bytes=8 << 20, platform=AMD64))
    lag = 0.0

    async def ticker() -> None:
        nonlocal lag
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lag = max(lag, time.monotonic() - t - 0.01)
    tick = asyncio.create_task(ticker())
    try:
        with pytest.raises(PullError, match="decompression bomb"):
            await p.pull(f"{hostile}/bomb:1")
        with pytest.raises(PullError, match="unpacks to more than 8388608 bytes"):
            await p.pull(f"{hostile}/sparse:1")
        started = time.monotonic()
        with pytest.raises(PullError, match="stalled|did not answer|Timeout"):
            await p.pull(f"{hostile}/stall:1")
        assert time.monotonic() - started < 10
        assert list(p.store.layers_dir.iterdir()) == []
        assert staged(p) == []
        assert lag < 0.5, f"the event loop was blocked for {lag:.2f}s"
        # and the same registry's honest image still pulls
        assert (await p.pull(f"{hostile}/ok:1")).image.layers
    finally:
        tick.cancel()
        await p.close()


async def test_credentials_echoed_by_a_registry_are_scrubbed(hostile: str,
                                                             tmp_path: Path) -> None:
    p = puller(tmp_path)
    try:
        with pytest.raises(PullError, match="denied: no access for") as e:
            await p.pull(f"{hostile}/echo:1", [dockerconfig_secret(hostile, "bob", PASSWORD)])
        assert "(bob:***)" in str(e.value)  # it was sent, and is not shown
        assert PASSWORD not in str(e.value)
        assert base64.b64encode(f"bob:{PASSWORD}".encode()).decode() not in str(e.value)
    finally:
        await p.close()


def test_go_durations_as_kubelet_prints_them() -> None:
    from atoll.agent.pods.imagepull import go_duration
    assert go_duration(0.0123) == "12ms"
    assert go_duration(1.2345) == "1.234s"
    assert go_duration(2.0) == "2s"
    assert go_duration(62.5) == "1m2.5s"
    assert go_duration(3725.0) == "1h2m5s"
