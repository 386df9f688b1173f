"""The per-container shim: owns one runc container for its whole life.

Forked per container by the shim zygote (``shim.py --zygote SOCKET``, see
``zygote``) into its own session, so it outlives agent restarts (as
containerd's shims do).  It imports only the standard library.  It:

1. becomes a child subreaper, so the container's init process (which
   ``runc create`` leaves behind) is reparented to it and it can reap it;
2. runs ``runc create`` with pipes as the container's stdout/stderr (and, for
   a container with ``stdin: true``, its stdin: the shim relays into it what
   attach sessions write to the ``stdin`` FIFO in its state directory, and
   closes it, so the container reads EOF, when a byte arrives on ``stdin.close``)
   and ``runc start``, then prints ``started <pid>`` on its stdout (the agent
   waits for that line) and closes it;
3. copies the container's output to the log file in the CRI format kubelet
   writes (``<RFC3339Nano> stdout|stderr F|P <text>``), which ``kubectl logs``
   reads back through the agent;
4. when the container exits, records ``exit.json`` (exit code, signal,
   OOM kill, times) atomically and deletes the runc container.

A container whose spec asks for a terminal (``process.terminal``, from ``tty: true``) gets
a pseudo-terminal instead of pipes: runc hands the shim the pty master over a console socket
(``--console-socket``, SCM_RIGHTS); the shim keeps it for the container's life, logs what it
reads as ``stdout`` (partial lines at once, so a prompt shows), writes the ``stdin`` FIFO into
it (``stdin.close`` sends the terminal's EOF, ^D), and applies window sizes written to the
``resize`` FIFO (``<rows> <cols>`` lines) with TIOCSWINSZ.

Everything it knows is in its state directory, so a restarted agent adopts
a running container by reading that directory and the shim's pid.

It runs as ``python -I -S shim.py`` (no site-packages, no ``atoll`` on the path), so the
shared timestamp module (itself standard library only) is loaded from its file.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import importlib.util
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import types

PR_SET_CHILD_SUBREAPER = 36
MAX_LINE = 16 * 1024  # kubelet splits longer lines into partial (P) records


def _load_api_module(name: str) -> types.ModuleType:
    """``atoll.api.<name>`` (a standard-library-only module), from its file beside this
    package: the shim cannot import ``atoll`` (see the module doc)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "api",
                        f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"atoll_shim_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rfc3339 = _load_api_module("timestamps").rfc3339


def write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class LogWriter:
    """CRI log lines from two pipes, each split on newlines."""

    def __init__(self, path: str, *, eager: bool = False) -> None:
        self.file = open(path, "ab", buffering=0)
        self.partial = {"stdout": b"", "stderr": b""}
        #: write an unfinished line at once as a partial record (a terminal's prompt)
        self.eager = eager

    def feed(self, stream: str, data: bytes) -> None:
        buf = self.partial[stream] + data
        lines = buf.split(b"\n")
        self.partial[stream] = lines.pop()
        out = []
        stamp = rfc3339(digits=9).encode()
        for line in lines:
            while len(line) > MAX_LINE:
                out.append(stamp + b" " + stream.encode() + b" P " + line[:MAX_LINE] + b"\n")
                line = line[MAX_LINE:]
            out.append(stamp + b" " + stream.encode() + b" F " + line + b"\n")
        while len(self.partial[stream]) > MAX_LINE or (self.eager and self.partial[stream]):
            chunk, self.partial[stream] = (self.partial[stream][:MAX_LINE],
                                           self.partial[stream][MAX_LINE:])
            out.append(stamp + b" " + stream.encode() + b" P " + chunk + b"\n")
        if out:
            self.file.write(b"".join(out))

    def close(self) -> None:
        stamp = rfc3339(digits=9).encode()
        for stream, rest in self.partial.items():
            if rest:
                self.file.write(stamp + b" " + stream.encode() + b" P " + rest + b"\n")
        self.file.close()


def oom_kills(cgroup_path: str) -> int:
    """The memory cgroup's OOM kill count (cgroup v1 ``memory.oom_control``, or v2 events)."""
    for candidate in (f"/sys/fs/cgroup/memory/{cgroup_path.strip('/')}/memory.oom_control",
                      f"/sys/fs/cgroup/{cgroup_path.strip('/')}/memory.events"):
        try:
            with open(candidate) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zygote", default="", help="serve container requests on this socket")
    ap.add_argument("--runc")
    ap.add_argument("--root", help="runc state root")
    ap.add_argument("--id")
    ap.add_argument("--bundle")
    ap.add_argument("--state", help="this container's state directory")
    ap.add_argument("--log", help="CRI-format log file")
    args = ap.parse_args()
    if args.zygote:
        return zygote(args.zygote)
    return run_container(args)


def zygote(path: str) -> int:
    """Fork a shim per request: an interpreter start per container costs more than runc.

    Each request is one JSON line of shim arguments on a Unix socket; the forked
    shim leaves the zygote's session, reports ``shim <pid>`` and ``started <pid>``
    on the same connection, and lives on its own: neither the zygote's nor the
    agent's death touches it.  The zygote is single-threaded, so forking is safe.
    """
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished shims
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(256)
    while True:
        conn, _ = server.accept()
        try:
            request = json.loads(conn.makefile("rb").readline())
        except (OSError, ValueError):
            conn.close()
            continue
        if os.fork() == 0:
            server.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()
            os.dup2(conn.fileno(), 1)
            conn.close()
            try:
                code = run_container(argparse.Namespace(**request))
            except BaseException:  # noqa: BLE001 - a shim never returns into the zygote loop
                code = 1
                _record_crash(str(request.get("state") or ""))
            os._exit(code)
        conn.close()


def _record_crash(state: str) -> None:
    """The shim's own traceback, in its state directory (the zygote has no stderr)."""
    import traceback

    try:
        with open(os.path.join(state, "shim.err"), "w") as f:
            traceback.print_exc(file=f)
    except OSError:
        pass


def run_container(args: argparse.Namespace) -> int:
    print(f"shim {os.getpid()}", flush=True)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    state = args.state
    write_json(os.path.join(state, "shim.json"), {"pid": os.getpid(), "startedAt": time.time()})
    with open(os.path.join(args.bundle, "config.json")) as f:
        config = json.load(f)
    cgroup_path = config.get("linux", {}).get("cgroupsPath", "")
    tty = bool(config.get("process", {}).get("terminal"))

    runc = [args.runc, "--root", args.root, "--log", os.path.join(state, "runc.log"),
            "--log-format", "json"]
    pid_file = os.path.join(state, "container.pid")
    create = runc + ["create", "--bundle", args.bundle, "--pid-file", pid_file]
    master = -1
    outputs: dict[int, str] = {}
    if tty:
        master, returncode = create_with_terminal(create, args.id)
        if master >= 0:
            outputs[master] = "stdout"
            open_resize(state, master)
            if getattr(args, "stdin", False):
                open_stdin(state, master)
    else:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        outputs = {out_r: "stdout", err_r: "stderr"}
        stdin: int | None = subprocess.DEVNULL
        if getattr(args, "stdin", False):
            stdin = open_stdin(state)
        returncode = subprocess.run(create + [args.id], stdin=stdin, stdout=out_w,
                                    stderr=err_w).returncode
        os.close(out_w)
        os.close(err_w)
        if isinstance(stdin, int) and stdin != subprocess.DEVNULL:
            os.close(stdin)  # the container holds it now
    if returncode != 0:
        write_json(os.path.join(state, "exit.json"), {
            "exitCode": 128, "reason": "StartError", "message": runc_error(state),
            "finishedAt": time.time()})
        subprocess.run(runc + ["delete", "--force", args.id], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        print("failed", flush=True)
        return 1
    with open(pid_file) as f:
        pid = int(f.read().strip())
    started = subprocess.run(runc + ["start", args.id], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    started_at = time.time()
    if started.returncode != 0:
        os.kill(pid, signal.SIGKILL)
    write_json(os.path.join(state, "started.json"), {"pid": pid, "startedAt": started_at})
    print(f"started {pid}", flush=True)
    os.close(1)
    os.open(os.devnull, os.O_WRONLY)  # fd 1 again, so stray prints cannot fail

    exit_status: list[int] = []

    def reap() -> None:
        while True:
            try:
                done, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if done == pid:
                exit_status.append(status)
                return

    reaper = threading.Thread(target=reap, daemon=True)
    reaper.start()
    logs = LogWriter(args.log, eager=tty)
    sel = selectors.DefaultSelector()
    for fd, stream in outputs.items():
        sel.register(fd, selectors.EVENT_READ, stream)
    open_streams = len(outputs)
    drain_deadline: float | None = None
    while open_streams:
        if exit_status and drain_deadline is None:
            drain_deadline = time.monotonic() + 2.0  # descendants may hold the pipes open
        timeout = 0.5 if drain_deadline is None else max(0.0, drain_deadline - time.monotonic())
        if drain_deadline is not None and timeout == 0.0:
            break
        for key, _ in sel.select(timeout):
            try:
                data = os.read(key.fd, 65536)
            except OSError:  # EIO: every holder of the terminal's other side is gone
                data = b""
            if not data:
                sel.unregister(key.fd)
                if key.fd != master:  # the stdin and resize relays may still write to it
                    os.close(key.fd)
                open_streams -= 1
            else:
                logs.feed(key.data, data)
    reaper.join()
    logs.close()
    status = exit_status[0] if exit_status else 0
    result = {"startedAt": started_at, "finishedAt": time.time(), "pid": pid,
              "oomKilled": oom_kills(cgroup_path) > 0}
    if os.WIFSIGNALED(status):
        result["signal"] = os.WTERMSIG(status)
        result["exitCode"] = 128 + os.WTERMSIG(status)
    else:
        result["exitCode"] = os.WEXITSTATUS(status)
    write_json(os.path.join(state, "exit.json"), result)
    subprocess.run(runc + ["delete", "--force", args.id], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return 0


def create_with_terminal(create: list[str], cid: str) -> tuple[int, int]:
    """``runc create`` of a container with a terminal: (pty master, runc's exit code).

    runc connects to the console socket while it creates the container and sends the
    master as SCM_RIGHTS ancillary data; the master is -1 when none came.  The socket is
    abstract (a state directory's path can pass the 108 bytes a socket path may have; runc
    reads a leading ``@`` as abstract), and only runc itself may hand the master over.
    """
    name = f"atoll-console-{os.getpid()}-{os.urandom(6).hex()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen(1)
    server.settimeout(0.2)
    proc = subprocess.Popen(create + ["--console-socket", "@" + name, cid],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    master = -1
    try:
        while master < 0:
            try:
                conn, _ = server.accept()
            except socket.timeout:
                if proc.poll() is not None:
                    break
                continue
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            if struct.unpack("3i", creds)[0] != proc.pid:
                conn.close()
                continue
            with conn:
                conn.settimeout(10)
                try:
                    _, fds, _, _ = socket.recv_fds(conn, 4096, 4)
                except OSError:
                    fds = []
            for extra in fds[1:]:
                os.close(extra)
            if fds:
                master = fds[0]
    finally:
        server.close()
    code = proc.wait()
    if code != 0 and master >= 0:
        os.close(master)
        master = -1
    if code == 0 and master < 0:
        code = 1  # created, but without the terminal it asked for
    return master, code


def open_resize(state: str, master: int) -> None:
    """Apply window sizes written to the ``resize`` FIFO (``<rows> <cols>`` lines)."""
    path = os.path.join(state, "resize")
    if not os.path.exists(path):
        os.mkfifo(path, 0o600)
    fd = os.open(path, os.O_RDWR)  # read-write: writers coming and going never end it

    def relay() -> None:
        with os.fdopen(fd, "rb", buffering=0) as f:
            buf = b""
            while True:
                try:
                    chunk = f.read(256)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    try:
                        rows, cols = (int(x) for x in line.split())
                        fcntl.ioctl(master, termios.TIOCSWINSZ,
                                    struct.pack("HHHH", rows, cols, 0, 0))
                    except (ValueError, OSError):
                        continue

    threading.Thread(target=relay, daemon=True).start()


def open_stdin(state: str, terminal: int = -1) -> int:
    """The container's stdin, fed from the ``stdin`` FIFO: the read end of a pipe, or (with
    a ``terminal`` master) the terminal itself, whose fd is returned.

    The FIFOs are opened read-write so they never report EOF when an attach session
    goes away; the container's stdin ends only when ``stdin.close`` says so (a pipe is
    closed; a terminal is sent its EOF character).
    """
    fifo, close_fifo = os.path.join(state, "stdin"), os.path.join(state, "stdin.close")
    for path in (fifo, close_fifo):
        if not os.path.exists(path):
            os.mkfifo(path, 0o600)
    data_fd = os.open(fifo, os.O_RDWR)
    close_fd = os.open(close_fifo, os.O_RDWR)
    if terminal >= 0:
        pipe_r, pipe_w = terminal, terminal
    else:
        pipe_r, pipe_w = os.pipe()

    def relay() -> None:
        sel = selectors.DefaultSelector()
        sel.register(data_fd, selectors.EVENT_READ, "data")
        sel.register(close_fd, selectors.EVENT_READ, "close")
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "close":
                        if terminal >= 0:
                            os.write(terminal, b"\x04")
                        return
                    chunk = os.read(data_fd, 65536)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(pipe_w, view):]
        except OSError:  # the container closed its stdin or exited
            return
        finally:
            if terminal < 0:
                os.close(pipe_w)

    threading.Thread(target=relay, daemon=True).start()
    return pipe_r


def runc_error(state: str) -> str:
    """The last error runc logged (its JSON log), for the container's status message."""
    message = "runc failed"
    try:
        with open(os.path.join(state, "runc.log")) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("level") in ("error", "fatal"):
                    message = str(entry.get("msg", message))
    except OSError:
        pass
    return message


if __name__ == "__main__":
    sys.exit(main())
