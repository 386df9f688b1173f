"""Networking: the Service table's sync, traffic through a ClusterIP, the cluster DNS, and how
soon a new Service or NetworkPolicy takes effect, each beside a raw baseline in the same run.

    .venv/bin/python bench/network.py [--quick]

1. Rule sync (no platform): N Services of 10 endpoints each, built in memory, rendered by the
   agent's own ``proxy/rules.py`` and applied with ``nft -f`` to a table in a throw-away network
   namespace.  Render and apply are timed apart; so are one endpoint changed (the partial sync
   of ``host/nfttable.py`` when the tree has it) and a full re-sync.  Baselines: hand-written
   scripts for the same Services and endpoints, with no Atoll code.
2. From the host, HTTP/1.0 GETs (a new connection each) and a 128 MiB download from a busybox
   httpd pod, through its ClusterIP and straight to the pod IP, interleaved.
3. UDP queries/s and latency from the host against the agent's cluster DNS (a fixed number of
   queries outstanding), beside two bare dnslib servers answering one fixed A record.
4. Service create request sent → first TCP connection through its ClusterIP; baseline: pod IP
   in the watch → first connection to the pod, and a bare ``nft add rule`` DNAT.
5. NetworkPolicy (default-deny ingress) create → the first refused or dropped connection from a
   pod-like client (a network namespace on the pod bridge: the host's own traffic to its pods is
   never filtered), and delete → open again; baseline: a bare ``nft add rule ... drop``.

Parts 2 to 5 run on `atoll up` with this session's slot bridge 1 (ATOLL_TEST_SLOT), its pod,
Service and NodePort ranges.  Everything created (network namespaces, veths, tables, the
platform's data dir, bridge and tables) is removed on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

NODE = "bench-net-node"
SLOT_N = 1  # this session's bridge/pod range/Service range number used by the benchmark
EPS_PER_SERVICE = 10
BIG_MIB = 128
TOKEN = b"atoll-bench-web"  # the pods' page


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))] if s else float("nan")


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms" if x < 10 else f"{x:.1f} s"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextmanager
def netns(name: str) -> Iterator[str]:
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def in_netns(ns: str, *argv: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], input=input, capture_output=True)


# -- 1. rule sync ---------------------------------------------------------------------------------
def objects(n: int) -> tuple[list[dict], dict[tuple[str, str], list[dict]]]:
    """n ClusterIP Services (one TCP port) and a slice of 10 ready endpoints each."""
    services, slices = [], {}
    k = 0
    for i in range(n):
        ns, name = f"ns{i % 50}", f"svc{i}"
        services.append({"metadata": {"namespace": ns, "name": name},
                         "spec": {"type": "ClusterIP", "clusterIP": f"172.30.{i // 256}.{i % 256}",
                                  "ports": [{"name": "http", "protocol": "TCP", "port": 80,
                                             "targetPort": 8080}]}})
        eps = []
        for _ in range(EPS_PER_SERVICE):
            k += 1
            eps.append({"addresses": [f"10.{128 + k // 65536}.{(k // 256) % 256}.{k % 256}"],
                        "conditions": {"ready": True}, "nodeName": "bench"})
        slices[(ns, name)] = [{"addressType": "IPv4", "endpoints": eps,
                               "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}]
    return services, slices


def hand_written(n: int, cascade: bool) -> str:
    """The same Services and endpoints without Atoll: one map element per Service, a chain per
    Service and per endpoint (the DNAT).  ``cascade`` picks the endpoint by a rule per endpoint
    instead of an anonymous ``numgen`` verdict map per Service (the shape iptables mode has)."""
    out = ["table ip bench_base {",
           "  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }",
           "  chain services { type nat hook output priority -100; policy accept; "
           "ip daddr . meta l4proto . th dport vmap @service-ips; }"]
    elements, k = [], 0
    for i in range(n):
        chains = []
        for j in range(EPS_PER_SERVICE):
            k += 1
            ip = f"10.{128 + k // 65536}.{(k // 256) % 256}.{k % 256}"
            chains.append(f"ep-{i}-{j}")
            out.append(f"  chain ep-{i}-{j} {{ meta l4proto tcp dnat to {ip}:8080; }}")
        if cascade:
            picks = [f"numgen random mod {EPS_PER_SERVICE - j} 0 goto {c}"
                     for j, c in enumerate(chains[:-1])] + [f"goto {chains[-1]}"]
        else:
            picks = ["numgen random mod %d vmap { %s }" % (
                EPS_PER_SERVICE, ", ".join(f"{j} : goto {c}" for j, c in enumerate(chains)))]
        out.append(f"  chain svc-{i} {{ {'; '.join(picks)}; }}")
        elements.append(f"172.30.{i // 256}.{i % 256} . tcp . 80 : goto svc-{i}")
    out.append("}")
    out.append("add element ip bench_base service-ips { " + ", ".join(elements) + " }")
    return "\n".join(out) + "\n"


def count_rules(script: str) -> int:
    """Rules plus map elements a script writes (either syntax)."""
    n = 0
    for line in script.splitlines():
        line = line.strip()
        if line.startswith("add rule "):
            n += 1
        elif line.startswith("chain ") and "{" in line:
            body = line.split("{", 1)[1].rsplit("}", 1)[0]
            n += len([r for r in _split_rules(body) if r.strip() and not r.strip().startswith(
                ("type ", "policy "))])
        if line.startswith("add element "):
            n += line.count(" : ")
    return n


def _split_rules(body: str) -> list[str]:
    """``a; b { c, d }; e`` → rules, braces respected."""
    out, depth, cur = [], 0, ""
    for ch in body:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == ";" and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


def apply(ns: str, script: str, work: Path) -> float:
    path = work / "script.nft"
    path.write_text(script)
    t0 = time.perf_counter()
    r = in_netns(ns, "nft", "-f", str(path))
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"nft: {r.stderr.decode()[:500]}")
    return took


def sync_bench(sizes: list[int], resync_max: int, work: Path) -> list[dict[str, Any]]:
    from atoll.agent.proxy import rules

    try:
        from atoll.agent.host import nfttable
        partial = getattr(nfttable, "partial_sync", None)
    except ImportError:
        nfttable, partial = None, None
    settings = rules.ProxySettings("bench_svc", "bench", "10.128.0.0/9")
    results = []
    for n in sizes:
        row: dict[str, Any] = {"services": n, "endpoints": n * EPS_PER_SERVICE}
        services, slices = objects(n)
        with netns(f"atoll-b{os.environ.get('ATOLL_TEST_SLOT', '0')}-rules") as ns:
            row["nft_empty"] = apply(ns, "add table ip bench_nop\n", work)
            t0 = time.perf_counter()
            ports = rules.service_ports(services, lambda a, b: slices.get((a, b), []))
            script = rules.script(ports, settings)
            row["render"] = time.perf_counter() - t0
            row["rules"] = count_rules(script)
            row["mb"] = len(script) / 1e6
            print(f"  {n} Services: Atoll renders {row['rules']} rules+elements "
                  f"({row['mb']:.1f} MB) in {ms(row['render'])}; applying...", flush=True)
            row["apply"] = apply(ns, script, work)
            print(f"  {n} Services: Atoll's full sync applied in {ms(row['apply'])}", flush=True)
            # one endpoint changes: the first Service's first endpoint moves
            changed = json.loads(json.dumps(slices[("ns0", "svc0")]))
            changed[0]["endpoints"][0]["addresses"] = ["10.127.255.254"]
            slices2 = {**slices, ("ns0", "svc0"): changed}
            if partial is not None and hasattr(rules, "table"):
                old = rules.table(ports, settings)
                t0 = time.perf_counter()
                ports2 = rules.service_ports(services, lambda a, b: slices2.get((a, b), []))
                delta = partial(old, rules.table(ports2, settings))
                row["inc_render"] = time.perf_counter() - t0
                row["inc_lines"] = delta.count("\n")
                row["inc_apply"] = apply(ns, delta, work)
                print(f"  {n} Services: one endpoint changed: partial sync of "
                      f"{row['inc_lines']} lines, render {ms(row['inc_render'])}, "
                      f"apply {ms(row['inc_apply'])}", flush=True)
            if n <= resync_max:
                t0 = time.perf_counter()
                ports2 = rules.service_ports(services, lambda a, b: slices2.get((a, b), []))
                full2 = rules.script(ports2, settings)
                row["resync_render"] = time.perf_counter() - t0
                row["resync_apply"] = apply(ns, full2, work)
                print(f"  {n} Services: full re-sync onto the table: render "
                      f"{ms(row['resync_render'])}, apply {ms(row['resync_apply'])}", flush=True)
            in_netns(ns, "nft", "delete", "table", "ip", "bench_svc")
            for label, cascade in (("base_vmap", False), ("base_cascade", True)):
                t0 = time.perf_counter()
                base = hand_written(n, cascade)
                row[f"{label}_render"] = time.perf_counter() - t0
                row[f"{label}_rules"] = count_rules(base)
                row[label] = apply(ns, base, work)
                in_netns(ns, "nft", "delete", "table", "ip", "bench_base")
                print(f"  {n} Services: hand-written ({label}, {row[f'{label}_rules']} "
                      f"rules+elements) applied in {ms(row[label])}", flush=True)
        results.append(row)
    return results


# -- helpers run inside network namespaces ----------------------------------------------------------
def probe_main() -> None:
    """A prober in the client namespace: ``open IP PORT`` / ``closed IP PORT`` on stdin →
    tries until a connection succeeds / fails, then prints the CLOCK_MONOTONIC time (the same
    clock in every process) at which the deciding attempt started."""
    for line in sys.stdin:
        want, ip, port = line.split()
        print("probing", flush=True)
        started = (_first_open if want == "open" else _first_closed)(ip, int(port), 30)
        print("timeout" if started is None else f"{started:.6f}", flush=True)


def _first_closed(ip: str, port: int, timeout: float) -> float | None:
    """One attempt at a time (a working one takes well under 1 ms here); a refused one or one
    unanswered after 100 ms decides."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            socket.create_connection((ip, port), timeout=0.1).close()
        except OSError:
            return started
        time.sleep(0.005)
    return None


def _first_open(ip: str, port: int, timeout: float) -> float | None:
    """A new attempt every 5 ms, earlier ones left pending: a SYN dropped before the change
    would only be retried a second later, so waiting on it would hide when it changed."""
    import errno
    import select

    deadline = time.monotonic() + timeout
    pending: dict[socket.socket, float] = {}
    try:
        while time.monotonic() < deadline:
            s = socket.socket()
            s.setblocking(False)
            pending[s] = time.monotonic()
            if s.connect_ex((ip, port)) not in (0, errno.EINPROGRESS):
                pending.pop(s)
                s.close()
            _, ready, _ = select.select([], list(pending), [], 0.005)
            won = [pending[r] for r in ready
                   if r.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
            if won:
                return min(won)
            for r in ready:  # refused: done with it
                pending.pop(r).close()
            for r, t in list(pending.items()):
                if time.monotonic() - t > 1.0:
                    pending.pop(r).close()
        return None
    finally:
        for r in pending:
            r.close()


def floor_main(rounds: int) -> None:
    """In a throw-away namespace: a bare ``nft add rule`` DNAT → first connection through it,
    and a bare ``nft add rule ... drop`` → first failed connection (``nft`` run as the agent
    runs it, one process per change)."""
    def sh(*argv: str, stdin: str | None = None) -> None:
        subprocess.run(argv, input=stdin, text=True, check=True)

    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")  # v1: a black hole
    sh("ip", "addr", "add", "10.0.0.1/24", "dev", "v0")
    sh("ip", "link", "set", "v0", "up")
    sh("ip", "link", "set", "v1", "up")
    sh("ip", "route", "add", "10.0.1.0/24", "dev", "v0")
    srv = socket.create_server(("10.0.0.1", 8080), backlog=128)

    import threading

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    sh("nft", "-f", "-", stdin="table ip floor { chain natout { type nat hook output priority -100; }\n}\n"
       "table inet floorf { chain filterin { type filter hook input priority 0; }\n}\n")

    def until(ip: str, port: int, open_: bool) -> float:
        while True:
            started = time.monotonic()
            try:
                socket.create_connection((ip, port), timeout=0.1).close()
                ok = True
            except OSError:
                ok = False
            if ok == open_:
                return started
            time.sleep(0.005)

    dnat, drop = [], []
    for i in range(rounds):
        vip = f"10.0.1.{i + 1}"
        t0 = time.monotonic()
        sh("nft", "add", "rule", "ip", "floor", "natout", "ip", "daddr", vip, "tcp", "dport", "80",
           "dnat", "to", "10.0.0.1:8080")
        dnat.append(until(vip, 80, True) - t0)
        t0 = time.monotonic()
        sh("nft", "add", "rule", "inet", "floorf", "filterin", "tcp", "dport", "8080", "drop")
        drop.append(until("10.0.0.1", 8080, False) - t0)
        sh("nft", "flush", "chain", "inet", "floorf", "filterin")
    print(json.dumps({"dnat": dnat, "drop": drop}))


def floor_bench(rounds: int) -> dict[str, list[float]]:
    with netns(f"atoll-b{os.environ.get('ATOLL_TEST_SLOT', '0')}-floor") as ns:
        r = in_netns(ns, sys.executable, __file__, "--floor", str(rounds))
        if r.returncode != 0:
            raise RuntimeError(r.stderr.decode()[-2000:])
        return json.loads(r.stdout)


# -- 3. DNS: bare servers and the load generator ------------------------------------------------------
def dns_server_main(kind: str, port: int) -> None:
    """A bare dnslib server answering every query with one fixed A record."""
    from dnslib import QTYPE, RR, A, DNSRecord

    def answer(data: bytes) -> bytes:
        q = DNSRecord.parse(data)
        reply = q.reply()
        reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("10.0.0.1"), ttl=5))
        return reply.pack()

    if kind == "dnslib":  # dnslib's own server: socketserver, a thread per request
        from dnslib.server import BaseResolver, DNSLogger, DNSServer

        class Fixed(BaseResolver):
            def resolve(self, request: Any, handler: Any) -> Any:
                reply = request.reply()
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("10.0.0.1"), ttl=5))
                return reply

        DNSServer(Fixed(), address="127.0.0.1", port=port,
                  logger=DNSLogger(logf=lambda *_: None)).server.serve_forever()
        return

    class Udp(asyncio.DatagramProtocol):  # one event loop, answered in the callback
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(answer(data), addr)

    async def serve() -> None:
        await asyncio.get_running_loop().create_datagram_endpoint(
            Udp, local_addr=("127.0.0.1", port))
        await asyncio.Event().wait()

    asyncio.run(serve())


class _DnsLoad(asyncio.DatagramProtocol):
    def __init__(self, query: bytes, outstanding: int, until: float) -> None:
        self.query, self.outstanding, self.until = query, outstanding, until
        self.sent: dict[int, float] = {}
        self.latencies: list[float] = []
        self.errors = 0
        self.lost = 0
        self.next_id = 0
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        for _ in range(self.outstanding):
            self.send()

    def send(self) -> None:
        qid = self.next_id = (self.next_id + 1) & 0xFFFF
        self.sent[qid] = time.perf_counter()
        self.transport.sendto(qid.to_bytes(2, "big") + self.query[2:])

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = time.perf_counter()
        started = self.sent.pop(int.from_bytes(data[:2], "big"), None)
        if started is None:
            return
        if data[3] & 0x0F:  # rcode
            self.errors += 1
        else:
            self.latencies.append(now - started)
        if now < self.until:
            self.send()
        elif not self.sent and not self.done.done():
            self.done.set_result(None)

    def expire(self) -> None:
        """Queries unanswered after 1 s count as lost and are replaced."""
        now = time.perf_counter()
        for qid, t in list(self.sent.items()):
            if now - t > 1.0:
                del self.sent[qid]
                self.lost += 1
                if now < self.until:
                    self.send()
        if now >= self.until and not self.sent and not self.done.done():
            self.done.set_result(None)


async def dns_load(address: str, port: int, name: str, seconds: float,
                   outstanding: int) -> dict[str, float]:
    from dnslib import DNSRecord

    query = DNSRecord.question(name, "A").pack()
    loop = asyncio.get_running_loop()
    # check the answer once
    reply: asyncio.Future = loop.create_future()

    class One(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not reply.done():
                reply.set_result(data)

    t, _ = await loop.create_datagram_endpoint(One, remote_addr=(address, port))
    for _ in range(50):
        t.sendto(query)
        try:
            async with asyncio.timeout(0.5):
                answer = DNSRecord.parse(await asyncio.shield(reply))
            break
        except TimeoutError:
            continue
    else:
        raise RuntimeError(f"no DNS answer from {address}:{port}")
    t.close()
    a = [str(r.rdata) for r in answer.rr]
    start = time.perf_counter()
    proto = _DnsLoad(query, outstanding, start + seconds)
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, remote_addr=(address, port))
    try:
        while not proto.done.done():
            await asyncio.sleep(0.2)
            proto.expire()
    finally:
        transport.close()
    took = time.perf_counter() - start
    lat = proto.latencies
    return {"qps": len(lat) / took, "p50": pct(lat, .5), "p99": pct(lat, .99),
            "lost": proto.lost, "errors": proto.errors, "answer": ",".join(a)}


@contextmanager
def dns_server(kind: str) -> Iterator[int]:
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--dns-server", kind, str(port)])
    try:
        time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        proc.wait()


# -- 2. traffic -------------------------------------------------------------------------------------
async def conn_rate(ip: str, port: int, seconds: float, concurrency: int) -> dict[str, float]:
    """HTTP/1.0 GETs of a small page, a new TCP connection each, ``concurrency`` at a time."""
    lat: list[float] = []
    errors = 0
    until = time.perf_counter() + seconds
    request = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n"

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            try:
                reader, writer = await asyncio.open_connection(ip, port)
                writer.write(request)
                body = await reader.read()
                writer.close()
                if TOKEN not in body:  # not the pod (see until_serves)
                    raise OSError("not the pod's page")
                lat.append(time.perf_counter() - t0)
            except OSError:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.perf_counter() - start
    return {"rate": len(lat) / took, "p50": pct(lat, .5), "p99": pct(lat, .99),
            "errors": errors}


def download(ip: str, port: int) -> float:
    """MiB/s of one GET of the big file (read into a reused buffer)."""
    s = socket.create_connection((ip, port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.sendall(b"GET /big HTTP/1.0\r\nHost: bench\r\n\r\n")
    buf = bytearray(1 << 20)
    total = 0
    t0 = time.perf_counter()
    while True:
        n = s.recv_into(buf)
        if not n:
            break
        total += n
    took = time.perf_counter() - t0
    s.close()
    if total < BIG_MIB << 20:
        raise RuntimeError(f"short download: {total} bytes")
    return total / took / (1 << 20)


# -- the platform and its objects -------------------------------------------------------------------
WEB_SCRIPT = ("mkdir -p /w && echo atoll-bench-web > /w/index.html && "
              f"dd if=/dev/zero of=/w/big bs=1M count={BIG_MIB} 2>/dev/null && "
              "exec httpd -f -p 8080 -h /w")


def web_pod(name: str, app: str, big: bool = False) -> dict:
    script = WEB_SCRIPT if big else "mkdir -p /w && echo atoll-bench-web > /w/index.html && " \
                                    "exec httpd -f -p 8080 -h /w"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "web", "image": "busybox",
                                     "command": ["sh", "-c", script],
                                     "ports": [{"name": "http", "containerPort": 8080}],
                                     "readinessProbe": {"tcpSocket": {"port": 8080},
                                                        "periodSeconds": 1}}]}}


def service(name: str, app: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": app},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def deny_all(name: str) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}


async def ready_pod(client: Any, ns: str, name: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        pod = await client.get(f"/api/v1/namespaces/{ns}/pods/{name}")
        conds = {c.get("type"): c.get("status") for c in
                 (pod.get("status") or {}).get("conditions") or []}
        if conds.get("Ready") == "True":
            return pod
        assert time.monotonic() < deadline, f"pod {ns}/{name} not Ready"
        await asyncio.sleep(0.2)


async def until_serves(ip: str, port: int, timeout: float = 30) -> float:
    """perf_counter time at which the first GET answered by the web pod started.  An answer
    must carry the pod's page: this host's egress proxy accepts any TCP connection to an
    address it does not know, so a connect alone proves nothing.  A new attempt every 5 ms,
    earlier ones left pending (a dropped SYN is only retried a second later)."""
    loop = asyncio.get_running_loop()
    won: asyncio.Future[float] = loop.create_future()
    tasks: set[asyncio.Task] = set()

    async def attempt(started: float) -> None:
        try:
            async with asyncio.timeout(2):
                reader, writer = await asyncio.open_connection(ip, port)
                writer.write(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
                body = await reader.read()
                writer.close()
        except (OSError, TimeoutError):
            return
        if TOKEN in body and not won.done():
            won.set_result(started)

    deadline = time.perf_counter() + timeout
    try:
        while not won.done():
            assert time.perf_counter() < deadline, f"{ip}:{port} never served the page"
            task = asyncio.create_task(attempt(time.perf_counter()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.wait([won], timeout=0.005)
        return won.result()
    finally:
        for task in tasks:
            task.cancel()


async def namespace(client: Any, name: str) -> None:
    await client.create("/api/v1/namespaces", {"metadata": {"name": name}})
    deadline = time.monotonic() + 30
    while True:  # a namespace is used once its service account is there (as upstream's e2e)
        try:
            await client.get(f"/api/v1/namespaces/{name}/serviceaccounts/default")
            return
        except Exception:
            assert time.monotonic() < deadline, f"namespace {name} not filled in"
            await asyncio.sleep(0.2)


@contextmanager
def client_netns(bridge: str, cidr: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """A pod-like client: a namespace with a veth on the pod bridge, an address high in the pod
    range (the agent hands them out from the bottom), and a prober running in it."""
    import ipaddress

    slot = os.environ.get("ATOLL_TEST_SLOT", "0")
    net = ipaddress.ip_network(cidr)
    gateway, address = next(net.hosts()), net.broadcast_address - 5
    host_end = f"ab{slot}c0"
    with netns(f"atoll-b{slot}-client") as ns:
        subprocess.run(["ip", "link", "delete", host_end], capture_output=True)
        for cmd in (["ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0",
                     "netns", ns],
                    ["ip", "link", "set", host_end, "master", bridge, "up"]):
            subprocess.run(cmd, check=True)
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "addr", "add", f"{address}/{net.prefixlen}", "dev", "eth0"],
                    ["ip", "link", "set", "eth0", "up"],
                    ["ip", "route", "add", "default", "via", str(gateway)]):
            r = in_netns(ns, *cmd)
            assert r.returncode == 0, r.stderr
        prober = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, __file__, "--probe"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            yield ns, prober
        finally:
            prober.stdin.close()
            prober.wait()
            subprocess.run(["ip", "link", "delete", host_end], capture_output=True)


def ask(prober: subprocess.Popen, want: str, ip: str, port: int) -> None:
    prober.stdin.write(f"{want} {ip} {port}\n")
    prober.stdin.flush()
    assert prober.stdout.readline().strip() == "probing"


def answer(prober: subprocess.Popen) -> float:
    line = prober.stdout.readline().strip()
    assert line != "timeout", "the prober gave up"
    return float(line)


async def platform_bench(data: Path, args: argparse.Namespace, bridge: str,
                         cidr: str) -> dict[str, Any]:
    from atoll.client import kubeconfig
    from atoll.client.rest import ApiClient

    out: dict[str, Any] = {}
    client = ApiClient(kubeconfig.load(data / "admin.kubeconfig"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                await client.get(f"/api/v1/nodes/{NODE}")
                break
            except Exception:
                assert time.monotonic() < deadline, "the agent did not register its Node"
                await asyncio.sleep(0.2)
        ns = "bench-net"
        await namespace(client, ns)
        await client.create(f"/api/v1/namespaces/{ns}/pods", web_pod("web", "web", big=True))
        svc = await client.create(f"/api/v1/namespaces/{ns}/services", service("web", "web"))
        cluster_ip = svc["spec"]["clusterIP"]
        pod = await ready_pod(client, ns, "web")
        pod_ip = pod["status"]["podIP"]
        await until_serves(cluster_ip, 80)
        print(f"web: pod {pod_ip}:8080, Service {cluster_ip}:80", flush=True)

        # 2. traffic, the two paths interleaved so load from elsewhere hits both alike
        rounds = 1 if args.quick else 2
        for conc in (1, 16):
            for label, ip, port in (("pod", pod_ip, 8080), ("svc", cluster_ip, 80)):
                out.setdefault(f"conn{conc}_{label}", [])
            for _ in range(rounds):
                for label, ip, port in (("pod", pod_ip, 8080), ("svc", cluster_ip, 80)):
                    r = await conn_rate(ip, port, args.seconds, conc)
                    out[f"conn{conc}_{label}"].append(r)
                    print(f"  connections, {conc} at a time, {label}: {r['rate']:.0f}/s "
                          f"p99 {ms(r['p99'])} errors {r['errors']}", flush=True)
        out["tput_pod"], out["tput_svc"] = [], []
        for _ in range(1 if args.quick else 3):
            for label, ip, port in (("pod", pod_ip, 8080), ("svc", cluster_ip, 80)):
                mib = await asyncio.to_thread(download, ip, port)
                out[f"tput_{label}"].append(mib)
                print(f"  {BIG_MIB} MiB download, {label}: {mib:.0f} MiB/s", flush=True)

        # 3. DNS
        gateway = str(next(__import__("ipaddress").ip_network(cidr).hosts()))
        name = f"web.{ns}.svc.cluster.local"
        out["dns"] = {}
        for label, addr, port, qname in (("agent", gateway, 53, name),):
            r = await dns_load(addr, port, qname, args.seconds, args.outstanding)
            out["dns"][label] = r
        for kind in ("dnslib", "asyncio"):
            with dns_server(kind) as port:
                out["dns"][kind] = await dns_load("127.0.0.1", port, name, args.seconds,
                                                  args.outstanding)
        for label, r in out["dns"].items():
            print(f"  DNS {label}: {r['qps']:.0f} q/s p50 {ms(r['p50'])} p99 {ms(r['p99'])} "
                  f"lost {r['lost']} answer {r['answer']}", flush=True)
        assert out["dns"]["agent"]["answer"] == cluster_ip, "the agent's DNS answered wrong"

        # 4. Service create → first connection (split at the EndpointSlice's arrival)
        slice_seen: dict[str, float] = {}
        listing = await client.get(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices")

        async def watch_slices() -> None:
            async for ev in client.watch(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                                         resource_version=listing["metadata"]["resourceVersion"],
                                         timeout_seconds=600):
                obj = ev.get("object") or {}
                svc_name = ((obj.get("metadata") or {}).get("labels") or {}).get(
                    "kubernetes.io/service-name")
                if svc_name and obj.get("endpoints") and svc_name not in slice_seen:
                    slice_seen[svc_name] = time.perf_counter()

        watcher = asyncio.create_task(watch_slices())
        await asyncio.sleep(0.2)
        svc_lat, slice_lat = [], []
        for i in range(args.rounds):
            t0 = time.perf_counter()
            created = await client.create(f"/api/v1/namespaces/{ns}/services",
                                          service(f"s{i}", "web"))
            t1 = await until_serves(created["spec"]["clusterIP"], 80)
            svc_lat.append(t1 - t0)
            await asyncio.sleep(0.05)
            if f"s{i}" in slice_seen:
                slice_lat.append(slice_seen[f"s{i}"] - t0)
            await asyncio.sleep(0.2)
        watcher.cancel()
        out["svc_lat"], out["slice_lat"] = svc_lat, slice_lat
        print(f"  Service create → connects: p50 {ms(pct(svc_lat, .5))} "
              f"p99 {ms(pct(svc_lat, .99))}", flush=True)

        # baseline: pod IP in the watch → first connection to the pod
        ip_seen: dict[str, float] = {}
        listing = await client.get(f"/api/v1/namespaces/{ns}/pods")
        events: dict[str, asyncio.Event] = {}

        async def watch_pods() -> None:
            async for ev in client.watch(f"/api/v1/namespaces/{ns}/pods",
                                         resource_version=listing["metadata"]["resourceVersion"],
                                         timeout_seconds=600):
                obj = ev.get("object") or {}
                pname = (obj.get("metadata") or {}).get("name", "")
                ip = (obj.get("status") or {}).get("podIP")
                if ip and pname not in ip_seen:
                    ip_seen[pname] = time.perf_counter()
                    events.setdefault(pname, asyncio.Event()).set()

        watcher = asyncio.create_task(watch_pods())
        await asyncio.sleep(0.2)
        pod_lat = []
        for i in range(args.rounds):
            pname = f"b{i}"
            events[pname] = asyncio.Event()
            await client.create(f"/api/v1/namespaces/{ns}/pods", web_pod(pname, f"b{i}"))
            await asyncio.wait_for(events[pname].wait(), 120)
            ip = (await client.get(f"/api/v1/namespaces/{ns}/pods/{pname}"))["status"]["podIP"]
            t1 = await until_serves(ip, 8080)
            pod_lat.append(max(0.0, t1 - ip_seen[pname]))
        watcher.cancel()
        out["pod_lat"] = pod_lat
        print(f"  pod IP seen → connects: p50 {ms(pct(pod_lat, .5))} "
              f"p99 {ms(pct(pod_lat, .99))}", flush=True)
        await client.delete(f"/api/v1/namespaces/{ns}/pods", gracePeriodSeconds=0,
                            labelSelector="app!=web")

        # 5. NetworkPolicy create → enforced, from a pod-like client on the bridge
        pns = "bench-pol"
        await namespace(client, pns)
        await client.create(f"/api/v1/namespaces/{pns}/pods", web_pod("target", "target"))
        target_ip = (await ready_pod(client, pns, "target"))["status"]["podIP"]
        deny, reopen = [], []
        with client_netns(bridge, cidr) as (_, prober):
            ask(prober, "open", target_ip, 8080)
            answer(prober)
            for i in range(args.rounds):
                ask(prober, "closed", target_ip, 8080)
                t0 = time.monotonic()
                await client.create(f"/apis/networking.k8s.io/v1/namespaces/{pns}/networkpolicies",
                                    deny_all(f"deny{i}"))
                deny.append(answer(prober) - t0)
                ask(prober, "open", target_ip, 8080)
                t0 = time.monotonic()
                await client.delete(
                    f"/apis/networking.k8s.io/v1/namespaces/{pns}/networkpolicies/deny{i}")
                reopen.append(answer(prober) - t0)
        out["deny"], out["reopen"] = deny, reopen
        print(f"  NetworkPolicy create → enforced: p50 {ms(pct(deny, .5))} "
              f"p99 {ms(pct(deny, .99))}; delete → open p99 {ms(pct(reopen, .99))}", flush=True)
        for n in (ns, pns):
            await client.delete(f"/api/v1/namespaces/{n}")
    finally:
        await client.close()
    return out


@contextmanager
def slot_platform(work: Path) -> Iterator[tuple[Path, str, str]]:
    from tests.conftest import (cleanup_agent, free_port, run_dir, slot_bridge, slot_cidr,
                                start_platform, stop_platform)

    bridge, cidr = slot_bridge(SLOT_N), slot_cidr(SLOT_N)
    data = work / "data"
    p = start_platform(data, None, f"--agent-arg=--name={NODE}", f"--agent-arg=--bridge={bridge}",
                       f"--agent-arg=--pod-cidr={cidr}", f"--agent-arg=--port={free_port()}",
                       f"--agent-arg=--run-dir={run_dir(data)}")
    try:
        yield data, bridge, cidr
    finally:
        stop_platform(p)
        cleanup_agent(data / "agent", bridge, run_dir(data))
        shutil.copy(p.log_path, Path(tempfile.gettempdir()) / "atoll-bench-network-up.log")


# -- report -----------------------------------------------------------------------------------------
def report(sync: list[dict[str, Any]], plat: dict[str, Any] | None,
           floor: dict[str, list[float]], loads: tuple[str, str]) -> None:
    print("\n== 1. Service rule sync (nft -f in a throw-away netns; 10 endpoints per Service)")
    print(f"{'':52} " + " ".join(f"{r['services']:>10,}" for r in sync))

    def line(label: str, key: str, fmt: Any = ms) -> None:
        print(f"{label:52} " + " ".join(f"{fmt(r[key]) if key in r else '-':>10}" for r in sync))

    line("atoll: rules + map elements", "rules", lambda v: f"{v:,}")
    line("atoll: full sync, render (rules.py)", "render")
    line("atoll: full sync, apply (nft -f)", "apply")
    line("atoll: one endpoint changed, render + diff", "inc_render")
    line("atoll: one endpoint changed, apply (partial sync)", "inc_apply")
    line("atoll: one endpoint changed, lines written", "inc_lines", lambda v: f"{v}")
    line("atoll: full re-sync onto the table, render", "resync_render")
    line("atoll: full re-sync onto the table, apply", "resync_apply")
    line("hand-written, numgen vmap per Service: rules", "base_vmap_rules", lambda v: f"{v:,}")
    line("hand-written, numgen vmap per Service: apply", "base_vmap")
    line("hand-written, a rule per endpoint: apply", "base_cascade")
    line("nft -f of an empty transaction", "nft_empty")
    print("reference: kube-proxy (nftables mode) publishes ~1.4 s per sync at 100,000 endpoints")
    print("\n== 4/5 floor in a throw-away netns: a bare `nft add rule` until it takes effect")
    for k, label in (("dnat", "nft add rule (DNAT) → first connection"),
                     ("drop", "nft add rule (drop) → first failed connection")):
        print(f"{label:52} p50 {ms(pct(floor[k], .5)):>9} p99 {ms(pct(floor[k], .99)):>9}")
    if plat:
        print("\n== 2. From the host to a busybox httpd pod: ClusterIP vs pod IP")
        print(f"{'':40} {'pod IP':>10} {'ClusterIP':>10} {'ratio':>7}")
        for conc in (1, 16):
            a = statistics.median(r["rate"] for r in plat[f"conn{conc}_pod"])
            b = statistics.median(r["rate"] for r in plat[f"conn{conc}_svc"])
            print(f"{f'new connections/s, {conc} at a time':40} {a:10.0f} {b:10.0f} {b / a:7.2f}")
            a = statistics.median(r["p99"] for r in plat[f"conn{conc}_pod"])
            b = statistics.median(r["p99"] for r in plat[f"conn{conc}_svc"])
            print(f"{f'  p99 per GET, {conc} at a time':40} {ms(a):>10} {ms(b):>10}")
        a, b = statistics.median(plat["tput_pod"]), statistics.median(plat["tput_svc"])
        print(f"{f'{BIG_MIB} MiB download, MiB/s':40} {a:10.0f} {b:10.0f} {b / a:7.2f}")
        print("\n== 3. DNS from the host, UDP, fixed queries outstanding")
        print(f"{'':40} {'q/s':>8} {'p50':>9} {'p99':>9} {'lost':>5}")
        for label, title in (("agent", "atoll agent's cluster DNS (cluster name)"),
                             ("dnslib", "bare dnslib DNSServer (fixed A)"),
                             ("asyncio", "bare asyncio + dnslib (fixed A)")):
            r = plat["dns"][label]
            print(f"{title:40} {r['qps']:8.0f} {ms(r['p50']):>9} {ms(r['p99']):>9} "
                  f"{r['lost']:5}")
        print("\n== 4/5. Time to take effect")
        for key, title in (("svc_lat", "Service create → first connection"),
                           ("slice_lat", "  of which create → EndpointSlice in a watch"),
                           ("pod_lat", "pod IP in the watch → first connection"),
                           ("deny", "NetworkPolicy create → enforced"),
                           ("reopen", "NetworkPolicy delete → open again")):
            v = plat[key]
            print(f"{title:52} p50 {ms(pct(v, .5)):>9} p99 {ms(pct(v, .99)):>9} (n={len(v)})")
    print(f"\nload average before {loads[0]}, after {loads[1]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--sizes", help="Services per rule-sync run (default 1000,10000)")
    ap.add_argument("--resync-max", type=int, default=1000,
                    help="largest size also timed for a full re-sync (10,000 takes minutes)")
    ap.add_argument("--seconds", type=float, help="per traffic and DNS run")
    ap.add_argument("--rounds", type=int, help="Services, pods and policies timed")
    ap.add_argument("--outstanding", type=int, default=32, help="DNS queries in flight")
    ap.add_argument("--skip-platform", action="store_true", help="part 1 only")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--floor", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dns-server", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        return probe_main()
    if args.floor:
        return floor_main(args.floor)
    if args.dns_server:
        return dns_server_main(args.dns_server[0], int(args.dns_server[1]))
    sizes = [int(s) for s in (args.sizes or ("100,1000" if args.quick else "1000,10000")).split(",")]
    args.seconds = args.seconds or (1.0 if args.quick else 3.0)
    args.rounds = args.rounds or (5 if args.quick else 20)
    before = load()
    print(f"load average {before}; part 1: rule sync for {sizes} Services", flush=True)
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-network-"))
    try:
        sync = sync_bench(sizes, args.resync_max, work)
        floor = floor_bench(args.rounds)
        plat = None
        if not args.skip_platform:
            with slot_platform(work) as (data, bridge, cidr):
                plat = asyncio.run(platform_bench(data, args, bridge, cidr))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(sync, plat, floor, (before, load()))


if __name__ == "__main__":
    main()
