"""Helpers for the TCP tests: the pattern peer on the stack (clients/pattern_peer.py under
lvlip), kernel clients of its sink and source, and nftables loss on tap0."""

import contextlib
import re
import socket
import struct
import sys
import time
from pathlib import Path

from harness import STACK_IP, TAP, run
from pattern import pattern_digest, receive_pattern, send_pattern
from processes import wait_until

PEER = Path(__file__).resolve().parent / "clients" / "pattern_peer.py"
RESULT = re.compile(r"^result status=(\S+) (.*)$", re.MULTILINE)


def start_peer(procs, name, *args):
    """Starts the pattern peer under lvlip; a server is waited for until it listens."""
    proc = procs.start(name, [sys.executable, PEER, *args], stack=True)
    if args[0] in ("echo", "sink", "source"):
        wait_until(lambda: f"listening {args[1]}" in proc.out_path.read_text(), 10,
                   f"{name} listening on port {args[1]}", proc, procs)
    return proc


def peer_results(proc, procs, count=1, timeout=60.0):
    """The first `count` result lines of a peer, as {"status", "detail"}, once it printed them."""
    def found():
        return [{"status": m[1], "detail": m[2]} for m in RESULT.finditer(proc.out_path.read_text())]
    deadline = time.monotonic() + timeout
    while len(found()) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"no result from {proc.name} within {timeout} s: {procs.describe(proc)}")
        time.sleep(0.05)
    return found()[:count]


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
    return received, pattern_digest(seed, total)


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
