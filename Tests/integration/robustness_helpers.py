"""Helpers for test_compat_robustness.py: bounded child processes (the `children`
fixture kills what a test left running), programs under lvlip, lvlipctl queries, the
kernel peers the tests talk to (an echo server, a receiver, a sender, a silent holder), and
the C clients under clients/ (also built by test_held_requests.py)."""

import os
import queue
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from harness import KERNEL_IP, bin_dir, run

HERE = os.path.dirname(os.path.abspath(__file__))
MB = 1 << 20
PYTHON = sys.executable
NOFILE = 16384


def compile_client(directory, name):
    """Builds clients/NAME.c into `directory`; returns the binary's path. cc is installed by
    scripts/install-deps, so its absence is a failure, not a skip."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.fail("cc is not installed (scripts/install-deps installs gcc)")
    binary = os.path.join(str(directory), name)
    result = run([cc, "-O2", "-Wall", "-o", binary, os.path.join(HERE, "clients", f"{name}.c")], timeout=120)
    assert result.returncode == 0, f"cc failed:\n{result.stderr}"
    return binary


def raise_nofile():
    """Room for thousands of descriptors in this process and the children it starts (they
    inherit the limit; set here rather than in a preexec_fn, which is unsafe with threads)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < NOFILE:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, max(NOFILE, hard)))


class Child:
    """A bounded subprocess: stdout lines arrive on a queue, stderr is collected."""

    def __init__(self, argv, env=None, registry=None, name=None):
        self.name = name or os.path.basename(str(argv[0]))
        raise_nofile()
        self.proc = subprocess.Popen([str(a) for a in argv], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self._lines = queue.Queue()
        self._out = []
        self._err = []
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self._out, self._lines), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self._err, None), daemon=True)]
        for t in self._threads:
            t.start()
        if registry is not None:
            registry.append(self)

    @staticmethod
    def _pump(stream, sink, lines):
        try:
            for line in stream:
                sink.append(line)
                if lines is not None:
                    lines.put(line.rstrip("\n"))
        except (OSError, ValueError):
            pass
        if lines is not None:
            lines.put(None)

    @property
    def stdout(self):
        return "".join(self._out)

    @property
    def stderr(self):
        return "".join(self._err)

    def describe(self):
        return (f"{self.name} (pid {self.pid}, status {self.proc.poll()})\n--- stdout ---\n{self.stdout}"
                f"--- stderr ---\n{self.stderr}")

    def line(self, timeout):
        """The next stdout line; fails if none comes within `timeout` s or the child exits."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout} s from {self.describe()}") from None
        if line is None:
            self.proc.wait(timeout=5)
            raise AssertionError(f"exited without the expected output: {self.describe()}")
        return line

    def tell(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout):
        """Waits for the exit; fails (after killing it) if it does not come within `timeout` s."""
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"did not exit within {timeout} s (killed): {self.describe()}") from None
        for t in self._threads:
            t.join(timeout=5)
        return status

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()

    def stop(self):
        self.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin,):
            try:
                stream.close()
            except (OSError, BrokenPipeError):
                pass
        for t in self._threads:
            t.join(timeout=2)


@pytest.fixture
def children():
    """Subprocesses the test started; any still running at teardown are killed (SIGKILL)."""
    started = []
    yield started
    for child in reversed(started):
        child.stop()


def under_lvlip(daemon, children, script, *args, name="client"):
    """A python3 program with its TCP sockets on `daemon`."""
    return Child([PYTHON, "-c", script, *args], env=daemon.lvlip_env(), registry=children, name=name)


def lvlipctl(*args):
    return run([bin_dir() / "lvlipctl", *args], timeout=10)


def ss(daemon):
    result = lvlipctl("ss", "--socket", daemon.socket)
    assert result.returncode == 0, f"lvlipctl ss failed ({result.returncode}): {result.stderr}"
    return result.stdout


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# MARK: - Kernel peers

ECHO_SERVER = r"""
import selectors, socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], 0))
server.listen(4096)
server.setblocking(False)
print(server.getsockname()[1], flush=True)
selector = selectors.DefaultSelector()
selector.register(server, selectors.EVENT_READ)
pending = {}
finished = set()   # the peer sent FIN: echo what is left, then close

def drop(s):
    selector.unregister(s)
    pending.pop(s, None)
    finished.discard(s)
    s.close()

while True:
    for key, events in selector.select():
        s = key.fileobj
        if s is server:
            while True:
                try:
                    c, _ = server.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                c.setblocking(False)
                pending[c] = bytearray()
                selector.register(c, selectors.EVENT_READ)
            continue
        buf = pending[s]
        if events & selectors.EVENT_READ:
            try:
                data = s.recv(262144)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                finished.add(s)
            elif data:
                buf += data
        if buf:
            try:
                n = s.send(buf)
                del buf[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                drop(s)
                continue
        if s in finished and not buf:
            drop(s)
            continue
        wanted = (0 if s in finished else selectors.EVENT_READ) | (selectors.EVENT_WRITE if buf else 0)
        selector.modify(s, wanted)
"""


def start_echo_server(children):
    """A kernel echo server on 10.0.0.5 (selectors, backlog 4096, room for 16k descriptors)."""
    server = Child([PYTHON, "-c", ECHO_SERVER, KERNEL_IP], registry=children, name="kernel echo server")
    port = int(server.line(timeout=10))
    return server, port


def kernel_listener(rcvbuf=None):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((KERNEL_IP, 0))
    s.listen(16)
    s.settimeout(15)
    return s


class Receiver(threading.Thread):
    """Kernel side of an upload: counts bytes and records how the stream ended ("FIN" for
    end of stream, "RST" for ECONNRESET) and when. Calls `at_threshold` once `threshold`
    bytes arrived."""

    def __init__(self, threshold, at_threshold, idle_timeout=15):
        super().__init__(daemon=True)
        self.listener = kernel_listener()
        self.port = self.listener.getsockname()[1]
        self.threshold = threshold
        self.at_threshold = at_threshold
        self.idle_timeout = idle_timeout
        self.received = 0
        self.outcome = None
        self.ended_at = None
        self.crossed_at = None
        self.done = threading.Event()
        self.start()

    def run(self):
        conn = None
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(self.idle_timeout)
            while True:
                block = conn.recv(1 << 20)
                if not block:
                    self.outcome = "FIN"
                    break
                self.received += len(block)
                if self.crossed_at is None and self.received >= self.threshold:
                    self.crossed_at = time.monotonic()
                    self.at_threshold()
        except ConnectionResetError:
            self.outcome = "RST"
        except socket.timeout:
            self.outcome = "timeout"
        except OSError as error:
            self.outcome = f"{type(error).__name__} {error}"
        finally:
            self.ended_at = time.monotonic()
            if conn is not None:
                conn.close()
            self.listener.close()
            self.done.set()


class Sender(threading.Thread):
    """Kernel side of a download: sends `total` bytes, calls `at_threshold` once `threshold`
    went out, records how it ended ("finished", the exception's name, "timeout") and when."""

    def __init__(self, total, threshold, at_threshold, idle_timeout=15):
        super().__init__(daemon=True)
        self.listener = kernel_listener()
        self.port = self.listener.getsockname()[1]
        self.total = total
        self.threshold = threshold
        self.at_threshold = at_threshold
        self.idle_timeout = idle_timeout
        self.sent = 0
        self.outcome = None
        self.ended_at = None
        self.crossed_at = None
        self.done = threading.Event()
        self.go = threading.Event()
        self.start()

    def run(self):
        conn = None
        chunk = bytes(range(256)) * 256  # 64 KiB
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(self.idle_timeout)
            if not self.go.wait(timeout=30):
                raise socket.timeout()
            while self.sent < self.total:
                conn.sendall(chunk)
                self.sent += len(chunk)
                if self.crossed_at is None and self.sent >= self.threshold:
                    self.crossed_at = time.monotonic()
                    self.at_threshold()
            self.outcome = "finished"
        except socket.timeout:
            self.outcome = "timeout"
        except OSError as error:
            self.outcome = type(error).__name__
        finally:
            self.ended_at = time.monotonic()
            if conn is not None:
                conn.close()
            self.listener.close()
            self.done.set()


class Holder(threading.Thread):
    """A kernel server that accepts and then neither reads nor writes (small receive buffer)."""

    def __init__(self, count):
        super().__init__(daemon=True)
        self.listener = kernel_listener(rcvbuf=32768)
        self.port = self.listener.getsockname()[1]
        self.count = count
        self.connections = []
        self.start()

    def run(self):
        try:
            for _ in range(self.count):
                conn, _ = self.listener.accept()
                self.connections.append(conn)
        except OSError:
            pass

    def close(self):
        for conn in self.connections:
            conn.close()
        self.listener.close()
