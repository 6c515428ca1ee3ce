"""Kernel-side peers and helpers for the TCP tests: pattern clients and servers on the
kernel's sockets, lvlipd's test-result log lines, and nftables loss on tap0."""

import contextlib
import hashlib
import re
import socket
import struct
import threading
import time

from harness import KERNEL_IP, STACK_IP, TAP, run
from pattern import Pattern

RESULT = re.compile(r"test-result app=(\S+) status=(\S+)(.*)")
CHUNK = 1 << 20


def wait_result(daemon, app, timeout=60.0, count=1):
    """Waits for `count` test-result lines of `app` in lvlipd's log; returns them parsed."""
    deadline = time.monotonic() + timeout
    while True:
        found = [{"app": m[1], "status": m[2], "detail": m[3].strip()}
                 for m in RESULT.finditer(daemon.stderr()) if m[1] == app]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no test-result for {app} within {timeout} s:\n{daemon.stderr()[-3000:]}")
        time.sleep(0.05)


def send_pattern(sock, seed, total):
    pattern = Pattern(seed)
    digest = hashlib.sha256()
    sent = 0
    while sent < total:
        block = pattern.read(min(CHUNK, total - sent))
        sock.sendall(block)
        digest.update(block)
        sent += len(block)
    return digest.hexdigest()


def receive_pattern(sock, seed):
    """Reads to EOF, checking the stream; returns (bytes, first mismatch or None, sha256)."""
    pattern = Pattern(seed)
    digest = hashlib.sha256()
    received = 0
    mismatch = None
    while True:
        block = sock.recv(CHUNK)
        if not block:
            return received, mismatch, digest.hexdigest()
        digest.update(block)
        if mismatch is None:
            mismatch = pattern.check(block)
        received += len(block)


def upload_to_stack_sink(port, seed, total, timeout=120):
    """Kernel client -> stack sink: seed, stream, then the verdict line."""
    with socket.create_connection((STACK_IP, port), timeout=timeout) as s:
        s.sendall(struct.pack("<Q", seed))
        send_pattern(s, seed, total)
        s.shutdown(socket.SHUT_WR)
        verdict = b""
        while True:
            block = s.recv(100)
            if not block:
                return verdict.decode().strip()
            verdict += block


def download_from_stack_source(port, seed, total, timeout=120):
    """Kernel client <- stack source: returns (bytes, mismatch, sha256) and the expected sha256."""
    with socket.create_connection((STACK_IP, port), timeout=timeout) as s:
        s.sendall(struct.pack("<QQ", seed, total))
        received = receive_pattern(s, seed)
    expected = hashlib.sha256()
    pattern = Pattern(seed)
    left = total
    while left:
        block = pattern.read(min(CHUNK, left))
        expected.update(block)
        left -= len(block)
    return received, expected.hexdigest()


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        block = sock.recv(n - len(data))
        if not block:
            raise AssertionError(f"EOF after {len(data)} of {n} header bytes")
        data += block
    return data


class KernelServer:
    """A kernel TCP server on 10.0.0.5 in a thread: 'sink' checks an uploaded stream and
    answers a verdict; 'source' answers a (seed, length) request with the stream."""

    def __init__(self, kind, port=0, timeout=120):
        self.kind = kind
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Any address: tap0 and 10.0.0.5 appear only once lvlipd runs.
        self.listener.bind(("0.0.0.0", port))
        self.listener.listen(16)
        self.listener.settimeout(timeout)
        self.port = self.listener.getsockname()[1]
        self.results = []
        self.error = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(self.listener.gettimeout())
            with conn:
                if self.kind == "sink":
                    seed = struct.unpack("<Q", recv_exactly(conn, 8))[0]
                    received, mismatch, digest = receive_pattern(conn, seed)
                    verdict = f"OK {received}" if mismatch is None else f"MISMATCH {mismatch}"
                    conn.sendall((verdict + "\n").encode())
                    self.results.append((received, mismatch, digest))
                else:
                    seed, total = struct.unpack("<QQ", recv_exactly(conn, 16))
                    self.results.append(send_pattern(conn, seed, total))
        except Exception as error:  # reported by join()
            self.error = error

    def join(self, timeout=130):
        self.thread.join(timeout)
        self.listener.close()
        assert not self.thread.is_alive(), "kernel server did not finish"
        if self.error:
            raise self.error
        return self.results


SINK, SINK_PEER = "lvliplosssink0", "lvliplosssink1"


@contextlib.contextmanager
def nft_loss(percent, direction="both"):
    """Random loss on tap0 with nftables netdev hooks (netem is not in this kernel).
    Frames lvlipd sends are dropped at tap0 ingress. Frames the kernel sends are diverted at
    tap0 egress to a sink veth whose peer discards them: a `drop` there would be reported to
    the sending kernel TCP (NET_XMIT_DROP), which sends the segment again at once, so lvlipd
    would see no loss at all."""
    table = "lvliploss"
    sink = direction in ("both", "to-stack")
    if sink:
        run(["ip", "link", "add", SINK, "type", "veth", "peer", "name", SINK_PEER], check=True)
        run(["ip", "link", "set", SINK, "up"], check=True)
        run(["ip", "link", "set", SINK_PEER, "up"], check=True)
    run(["nft", "add", "table", "netdev", table], check=True)
    try:
        if direction in ("both", "from-stack"):
            run(["nft", "add", "chain", "netdev", table, "in", f"{{ type filter hook ingress device {TAP} priority 0; }}"], check=True)
            run(["nft", "add", "rule", "netdev", table, "in", "numgen", "random", "mod", "100", "<", str(percent), "drop"], check=True)
        if sink:
            run(["nft", "add", "chain", "netdev", table, "out", f"{{ type filter hook egress device {TAP} priority 0; }}"], check=True)
            run(["nft", "add", "rule", "netdev", table, "out", "numgen", "random", "mod", "100", "<", str(percent),
                 "fwd", "to", SINK], check=True)
        yield
    finally:
        run(["nft", "delete", "table", "netdev", table])
        if sink:
            run(["ip", "link", "delete", SINK])


def kernel_tcp_counter(name):
    """A Tcp counter of this namespace's kernel (/proc/net/snmp), e.g. RetransSegs."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index(name)])
