"""Pods run images pulled from a real registry (Debian's docker-registry on loopback, images
pushed with skopeo): by tag and digest, a multi-platform index, imagePullSecrets over TLS
with htpasswd auth, a wrong password, a corrupted blob, five pods sharing one pull, and the
three pull policies; kubelet's events and waiting reasons throughout."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from typing import Any, Callable

import pytest

from tests import ociregistry
from tests.conftest import (Platform, cleanup_agent, free_port, kill_and_await_restart, run_dir,
                            slot_bridge, slot_cidr, start_platform, stop_platform, wait_until)
from tests.imagebuild import busybox_layer, layer_tar

pytestmark = pytest.mark.skipif(not ociregistry.available(),
                                reason="docker-registry, skopeo and htpasswd are needed")
NODE = "atoll-registry-node"
PASSWORD = "Reg1stry-pw-not-for-logs"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two registries (open over http; htpasswd over TLS from a test CA) and one platform
    whose agent trusts that CA."""
    base = tmp_path_factory.mktemp("registry-e2e")
    open_reg = ociregistry.start(base / "open", free_port())
    secure = ociregistry.start(base / "secure", free_port(), user="alice", password=PASSWORD,
                               tls=True)
    lay = ociregistry.Layout(base / "oci")
    script = {"Cmd": ["/bin/sh", "-c", "echo from-registry $WHO; exec busybox sleep 3600"]}
    bb = lay.image([busybox_layer()], {**script, "Env": ["PATH=/bin", "WHO=plain"]})
    lay.name(bb, "bb")
    arm = lay.image([layer_tar({"etc/arch": b"arm64\n"})], {"Env": ["WHO=arm64"]}, arch="arm64")
    amd = lay.image([busybox_layer(), layer_tar({"etc/multi": b"1\n"})],
                    {**script, "Env": ["PATH=/bin", "WHO=amd64"]})
    lay.name(lay.index([amd, arm]), "multi")
    many = lay.image([busybox_layer(), layer_tar({"etc/many": b"5\n"})],
                     {**script, "Env": ["PATH=/bin", "WHO=many"]})
    lay.name(many, "many")
    bad = lay.image([busybox_layer(), layer_tar({"etc/corrupt": b"x" * 5000})], script)
    lay.name(bad, "bad")
    slow = lay.image([busybox_layer(), layer_tar({"etc/slow": os.urandom(3 << 20)})],
                     {**script, "Env": ["PATH=/bin", "WHO=slow"]})
    lay.name(slow, "slow")
    for tag, dest in (("bb", "lib/bb:1"), ("multi", "lib/multi:1"), ("many", "lib/many:1"),
                      ("bad", "lib/bad:1"), ("bb", "lib/always:latest"),
                      ("slow", "lib/slow:1")):
        open_reg.push(lay.root, tag, dest, all_platforms=tag == "multi")
    secure.push(lay.root, "bb", "private/bb:1")
    # corrupt the top layer of lib/bad in the registry's storage: same size, other bytes
    manifest = json.loads((lay.root / "blobs" / "sha256" / bad["digest"][7:]).read_bytes())
    blob = open_reg.blob_path(manifest["layers"][-1]["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    many_layer = json.loads((lay.root / "blobs" / "sha256" / many["digest"][7:]).read_bytes()
                            )["layers"][-1]["digest"]

    data_dir = base / "data"
    platform = start_platform(data_dir, None, f"--agent-arg=--name={NODE}",
                              f"--agent-arg=--bridge={slot_bridge(1)}",
                              f"--agent-arg=--pod-cidr={slot_cidr(1)}",
                              f"--agent-arg=--port={free_port()}",
                              f"--agent-arg=--run-dir={run_dir(data_dir)}",
                              "--agent-arg=--crashloop-backoff=1",
                              "--agent-arg=--crashloop-backoff-max=4",
                              f"--agent-arg=--registry-ca-file={secure.ca_file}")
    wait_until("the registry node", lambda: platform.kubectl(
        "get", "node", NODE, check=False).returncode == 0, timeout=60)
    yield {"platform": platform, "open": open_reg, "secure": secure, "bb": bb,
           "many_layer": many_layer, "data_dir": data_dir}
    stop_platform(platform)
    cleanup_agent(data_dir / "agent", slot_bridge(1), run_dir(data_dir))
    open_reg.stop()
    secure.stop()


@pytest.fixture
def ns(world: Any) -> str:
    p: Platform = world["platform"]
    name = f"r-{uuid.uuid4().hex[:8]}"
    p.kubectl("create", "namespace", name)
    wait_until("namespace filled in", lambda: p.kubectl(
        "-n", name, "get", "serviceaccount/default", check=False).returncode == 0)
    yield name
    p.kubectl("delete", "namespace", name, "--wait=false", check=False)


def run_pod(p: Platform, ns: str, name: str, image: str, *, policy: str = "",
            secrets: list[str] | None = None) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
           "spec": {"nodeName": NODE, "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": image}]}}
    if policy:
        pod["spec"]["containers"][0]["imagePullPolicy"] = policy
    if secrets:
        pod["spec"]["imagePullSecrets"] = [{"name": s} for s in secrets]
    p.kubectl("apply", "-f", "-", input=json.dumps(pod))


def get(p: Platform, ns: str, name: str) -> dict[str, Any]:
    return json.loads(p.kubectl("-n", ns, "get", "pod", name, "-o", "json").stdout)


def wait_pod(p: Platform, ns: str, name: str, ok: Callable[[dict[str, Any]], bool],
             timeout: float = 90) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        nonlocal seen
        seen = get(p, ns, name)
        return seen if ok(seen) else None
    try:
        return wait_until(f"pod {name}", probe, timeout=timeout, interval=0.3)
    except AssertionError:
        raise AssertionError(f"pod {name}: {json.dumps(seen.get('status'))[:3000]}") from None


def running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def waiting(reason: str) -> Callable[[dict[str, Any]], bool]:
    def ok(pod: dict[str, Any]) -> bool:
        for c in (pod.get("status") or {}).get("containerStatuses") or []:
            if (c.get("state") or {}).get("waiting", {}).get("reason") == reason:
                return True
        return False
    return ok


def events(p: Platform, ns: str, name: str) -> list[dict[str, Any]]:
    out = json.loads(p.kubectl("-n", ns, "get", "events", "--field-selector",
                               f"involvedObject.name={name}", "-o", "json").stdout)
    return out["items"]


def wait_event(p: Platform, ns: str, name: str, reason: str, text: str = "") -> dict[str, Any]:
    return wait_until(f"event {reason} of {name}", lambda: next(
        (e for e in events(p, ns, name) if e["reason"] == reason and text in e["message"]),
        None), timeout=30, interval=0.3)


def test_pull_by_tag_and_by_digest(world: Any, ns: str) -> None:
    p, reg = world["platform"], world["open"]
    image = f"{reg.host}/lib/bb:1"
    run_pod(p, ns, "by-tag", image)
    pod = wait_pod(p, ns, "by-tag", running)
    digest = world["bb"]["digest"]
    assert pod["status"]["containerStatuses"][0]["imageID"] == f"{reg.host}/lib/bb@{digest}"
    assert "from-registry plain" in p.kubectl("-n", ns, "logs", "by-tag").stdout
    wait_event(p, ns, "by-tag", "Pulling", f'Pulling image "{image}"')
    pulled = wait_event(p, ns, "by-tag", "Pulled", "Successfully pulled image")
    assert pulled["message"].startswith(f'Successfully pulled image "{image}" in ')
    assert "including waiting). Image size: " in pulled["message"]
    assert pulled["message"].endswith(" bytes.")
    run_pod(p, ns, "by-digest", f"{reg.host}/lib/bb@{digest}")
    wait_pod(p, ns, "by-digest", running)
    wait_event(p, ns, "by-digest", "Pulled", "already present on machine")


def test_multi_platform_index(world: Any, ns: str) -> None:
    p, reg = world["platform"], world["open"]
    run_pod(p, ns, "multi", f"{reg.host}/lib/multi:1")
    wait_pod(p, ns, "multi", running)
    wait_until("the amd64 image's output", lambda: "from-registry amd64" in p.kubectl(
        "-n", ns, "logs", "multi", check=False).stdout)


def test_pull_secret_and_wrong_password(world: Any, ns: str) -> None:
    p, reg = world["platform"], world["secure"]
    image = f"{reg.host}/private/bb:1"
    for name, password in (("good", PASSWORD), ("bad", PASSWORD[::-1])):
        p.kubectl("-n", ns, "create", "secret", "docker-registry", name,
                  f"--docker-server={reg.host}", "--docker-username=alice",
                  f"--docker-password={password}")
    run_pod(p, ns, "private", image, secrets=["good"])
    wait_pod(p, ns, "private", running)
    # Always: the registry decides (IfNotPresent would run the copy already here, as kubelet)
    run_pod(p, ns, "denied", image, secrets=["bad"], policy="Always")
    pod = wait_pod(p, ns, "denied", waiting("ErrImagePull"))
    message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert message.startswith(f'Failed to pull image "{image}": ')
    assert "unauthorized: authentication required" in message
    pod = wait_pod(p, ns, "denied", waiting("ImagePullBackOff"))
    failed = wait_event(p, ns, "denied", "Failed", "unauthorized")
    everything = json.dumps(pod) + json.dumps(events(p, ns, "denied")) + p.log()
    for secret in (PASSWORD, PASSWORD[::-1]):
        assert secret not in everything
    assert failed["type"] == "Warning"


def test_corrupted_blob_is_refused(world: Any, ns: str) -> None:
    p, reg = world["platform"], world["open"]
    run_pod(p, ns, "corrupt", f"{reg.host}/lib/bad:1")
    pod = wait_pod(p, ns, "corrupt", waiting("ErrImagePull"))
    assert "digest mismatch" in pod["status"]["containerStatuses"][0]["state"]["waiting"][
        "message"]


def test_five_pods_pull_once(world: Any, ns: str) -> None:
    p, reg = world["platform"], world["open"]
    for i in range(5):
        run_pod(p, ns, f"many-{i}", f"{reg.host}/lib/many:1")
    for i in range(5):
        wait_pod(p, ns, f"many-{i}", running, timeout=120)
    assert reg.blob_gets(world["many_layer"]) == 1


def test_pull_policies(world: Any, ns: str) -> None:
    p, reg = world["platform"], world["open"]
    run_pod(p, ns, "never", f"{reg.host}/lib/notpulled:1", policy="Never")
    pod = wait_pod(p, ns, "never", waiting("ErrImageNeverPull"))
    assert "is not present with pull policy of Never" in \
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    image = f"{reg.host}/lib/always:latest"
    run_pod(p, ns, "first", image)  # :latest defaults to Always
    wait_pod(p, ns, "first", running)
    manifests = lambda: reg.log().count('"GET /v2/lib/always/manifests/latest')
    before = manifests()
    run_pod(p, ns, "again", image, policy="Always")
    wait_pod(p, ns, "again", running)
    wait_event(p, ns, "again", "Pulled", "Successfully pulled image")
    assert manifests() == before + 1
    run_pod(p, ns, "present", image, policy="IfNotPresent")
    wait_pod(p, ns, "present", running)
    wait_event(p, ns, "present", "Pulled", "already present on machine")
    run_pod(p, ns, "never-present", image, policy="Never")
    wait_pod(p, ns, "never-present", running)
    assert manifests() == before + 1


class SlowProxy:
    """A proxy in front of the registry that sends blobs at ``rate`` bytes per second:
    slow enough to kill the agent in the middle of a pull."""

    def __init__(self, upstream: str, rate: int) -> None:
        from aiohttp import ClientSession, web

        self.port = free_port()
        self.blob_started = threading.Event()
        self.loop = asyncio.new_event_loop()

        async def forward(request: web.Request) -> web.StreamResponse:
            async with ClientSession(auto_decompress=False) as session:
                async with session.get(f"http://{upstream}{request.path_qs}",
                                       headers={k: v for k, v in request.headers.items()
                                                if k.lower() in ("accept", "authorization")},
                                       allow_redirects=True) as up:
                    resp = web.StreamResponse(status=up.status)
                    for k in ("Content-Type", "Content-Length", "Docker-Content-Digest",
                              "WWW-Authenticate"):
                        if k in up.headers:
                            resp.headers[k] = up.headers[k]
                    await resp.prepare(request)
                    blob = "/blobs/" in request.path
                    async for chunk in up.content.iter_chunked(16 << 10):
                        if blob:
                            self.blob_started.set()
                            await asyncio.sleep(len(chunk) / rate)
                        await resp.write(chunk)
                    return resp

        app = web.Application()
        app.router.add_get("/{tail:.*}", forward)
        self.runner = web.AppRunner(app)

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
            self.loop.run_forever()
        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_pull_survives_an_agent_crash(world: Any, ns: str) -> None:
    p, reg, data_dir = world["platform"], world["open"], world["data_dir"]
    proxy = SlowProxy(reg.host, rate=1 << 20)
    staging = data_dir / "agent" / "images" / "staging" / "pulls"
    try:
        image = f"127.0.0.1:{proxy.port}/lib/slow:1"
        run_pod(p, ns, "crash", image)
        wait_until("a blob half downloaded", lambda: proxy.blob_started.is_set() and any(
            staging.glob("*.blob")), timeout=60)
        kill_and_await_restart(f"agent --kubeconfig {data_dir / 'agent.kubeconfig'}")
        wait_pod(p, ns, "crash", running, timeout=120)
        wait_until("the slow image's output", lambda: "from-registry slow" in p.kubectl(
            "-n", ns, "logs", "crash", check=False).stdout)
        assert list(staging.iterdir()) == []
    finally:
        proxy.stop()
