"""Loopback inside the stack: programs under lvlip talk to themselves and to each other over
127.0.0.0/8 and over the stack's own address (10.0.0.4), as on Linux's lo, and nothing of it
reaches tap0 (RFC 1122 3.2.1.3 (g)). From tap0, 127/8 sources are martians and 127/8
destinations are not ours: both are dropped and counted.

Every test that expects loopback traffic checks lvlipd's LoopbackDatagrams counter (the
traffic went through the stack, not through the kernel's lo, which is up in the namespace),
and a capture on the kernel side of tap0 sees no 127/8 address and no frame of the test's
ports. Every process is bounded in time.
"""

import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from harness import ETHERTYPE_IPV4, KERNEL_IP, STACK_IP, STACK_MAC, TAP, RawLink, ethernet, ipv4
from processes import bounded, need, ok, ss_rows, stack_ss, wait_until

PY = sys.executable

# Ports, distinct across the file.
P_ONE_PROGRAM = 7101
P_TWO_PROGRAMS = 7111
P_UDP = 7121
P_UDP_CLOSED = 7122
P_REDIS = 7131
P_MARTIAN = 7141
P_CONTROL = 7151  # closed on the stack
P_MAPPED = 7161
RESOLVER = "127.0.0.53"  # systemd-resolved's stub address

MB = 1 << 20


class Capture:
    """Every frame on tap0 in both directions (AF_PACKET, ETH_P_ALL), read by a thread."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((TAP, 0))
        self.sock.settimeout(0.1)
        self.frames = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                self.frames.append(self.sock.recv(65600))
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self):
        if not self.running:
            return self.frames
        # A control: the capture must see what the stack sends. A datagram from the kernel
        # to a closed port of the stack draws an ICMP port unreachable onto tap0.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.sendto(b"control", (STACK_IP, P_CONTROL))
        deadline = time.monotonic() + 5
        while not any(ip[9] == 1 and ip[12:16] == socket.inet_aton(STACK_IP) for ip in ipv4_frames(list(self.frames))):
            assert time.monotonic() < deadline, f"the capture on {TAP} saw no ICMP error from the stack"
            time.sleep(0.02)
        self.running = False
        self.thread.join(timeout=5)
        self.sock.close()
        return self.frames


def ipv4_frames(frames):
    for frame in frames:
        if len(frame) >= 34 and struct.unpack("!H", frame[12:14])[0] == ETHERTYPE_IPV4:
            yield frame[14:]


def assert_nothing_local_on_tap(frames, ports):
    """No 127/8 address, no segment or datagram of the loopback test's ports on tap0."""
    for ip in ipv4_frames(frames):
        source, destination = ip[12:16], ip[16:20]
        assert source[0] != 127 and destination[0] != 127, f"a 127/8 datagram on {TAP}: {ip[:40].hex()}"
        header = (ip[0] & 0x0F) * 4
        if ip[9] in (6, 17) and len(ip) >= header + 4:
            sport, dport = struct.unpack("!HH", ip[header:header + 4])
            assert sport not in ports and dport not in ports, f"loopback traffic on {TAP}: {ip[:60].hex()}"


@pytest.fixture
def capture(daemon):
    cap = Capture()
    yield cap
    cap.stop()


def run_json(script, daemon, *args, timeout=60):
    result = ok(bounded([PY, "-c", script, *map(str, args)], timeout=timeout, stack=daemon))
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result: {result.stdout!r} {result.stderr!r}"
    return eval(lines[-1])  # a dict of str, int, tuple literals printed by the script below


# One program, a listener and a client in it, 1 MB each way at once, checked byte for byte.
ONE_PROGRAM = r"""
import hashlib, socket, sys, threading
address, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def pattern(seed):
    return bytes((i * 7 + seed + (i >> 10)) & 0xFF for i in range(size))
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((address, port))
listener.listen(4)
client = socket.create_connection((address, port), timeout=30)
server, accepted_from = listener.accept()
server.settimeout(30)
names = {"client_name": client.getsockname(), "client_peer": client.getpeername(),
         "server_name": server.getsockname(), "server_peer": server.getpeername(),
         "accepted_from": accepted_from, "listener_name": listener.getsockname()}
got = {}
def pump(name, sock, data):
    def send():
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    sender = threading.Thread(target=send)
    sender.start()
    chunks = []
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    sender.join()
    got[name] = b"".join(chunks)
to_server, to_client = pattern(1), pattern(2)
threads = [threading.Thread(target=pump, args=("server", server, to_client)),
           threading.Thread(target=pump, args=("client", client, to_server))]
for t in threads: t.start()
for t in threads: t.join(60)
print({"server_ok": got.get("server") == to_server, "client_ok": got.get("client") == to_client,
       "server_bytes": len(got.get("server", b"")), "client_bytes": len(got.get("client", b"")), **names})
"""


@pytest.mark.parametrize("address", ["127.0.0.1", STACK_IP])
def test_one_program_talks_to_itself_1mb_each_way(daemon, capture, address):
    before = daemon.stats()
    r = run_json(ONE_PROGRAM, daemon, address, P_ONE_PROGRAM, MB)
    after = daemon.stats()
    assert r["server_bytes"] == MB and r["client_bytes"] == MB, r
    assert r["server_ok"] and r["client_ok"], "byte-exact both ways"
    # Linux's names: the client's local address is the destination's own (127.0.0.1 toward
    # 127/8, 10.0.0.4 toward itself), and each side sees the other's.
    assert r["client_name"][0] == address and r["client_peer"] == (address, P_ONE_PROGRAM), r
    assert r["server_name"] == (address, P_ONE_PROGRAM) and r["server_peer"] == r["client_name"], r
    assert r["accepted_from"] == r["client_name"] and r["listener_name"] == (address, P_ONE_PROGRAM), r
    # Through the stack's loopback (64 KB segments: about 2 x 16 data segments plus ACKs).
    assert after["LoopbackDatagrams"] - before["LoopbackDatagrams"] >= 32
    assert after["TcpActiveOpens"] - before["TcpActiveOpens"] == 1
    assert after["TcpRetransSegs"] == before["TcpRetransSegs"]
    assert_nothing_local_on_tap(capture.stop(), {P_ONE_PROGRAM})


TWO_SERVER = r"""
import hashlib, socket, sys
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(1)
print("listening", flush=True)
conn, peer = listener.accept()
conn.settimeout(30)
digest, total = hashlib.sha256(), 0
while True:
    chunk = conn.recv(1 << 16)
    if not chunk:
        break
    digest.update(chunk)
    total += len(chunk)
reply = (f"{total} {digest.hexdigest()} {peer[0]}:{peer[1]}\n").encode()
conn.sendall(reply + bytes(range(256)) * 4096)
conn.close()
"""

TWO_CLIENT = r"""
import hashlib, socket, sys
size = int(sys.argv[2])
data = bytes((i * 13 + (i >> 9)) & 0xFF for i in range(size))
conn = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
print("connected", conn.getsockname(), flush=True)
sys.stdin.readline()
conn.sendall(data)
conn.shutdown(socket.SHUT_WR)
chunks = []
while True:
    chunk = conn.recv(1 << 16)
    if not chunk:
        break
    chunks.append(chunk)
answer = b"".join(chunks)
line, _, rest = answer.partition(b"\n")
total, digest, peer = line.decode().split()
name = conn.getsockname()
print({"sent_ok": int(total) == size and digest == hashlib.sha256(data).hexdigest(),
       "peer_seen": peer, "name": f"{name[0]}:{name[1]}", "back_ok": rest == bytes(range(256)) * 4096})
"""


def test_two_programs_over_loopback_and_ss_shows_them(daemon, procs, capture):
    before = daemon.stats()
    server = procs.start("server", [PY, "-c", TWO_SERVER, P_TWO_PROGRAMS], stack=True)
    listening = ("LISTEN", f"127.0.0.1:{P_TWO_PROGRAMS}")
    wait_until(lambda: listening in [r[:2] for r in ss_rows(stack_ss(daemon, listening=True))],
               10, "the server's listener on 127.0.0.1", server, procs)
    client = procs.start("client", [PY, "-c", TWO_CLIENT, P_TWO_PROGRAMS, MB], stack=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = client.stdout.readline().decode()
    assert line.startswith("connected ('127.0.0.1',"), line
    # Both ends of the connection, with their loopback names, in lvlipctl ss.
    client_name = line.split("'127.0.0.1', ")[1].split(")")[0]
    established = [r for r in ss_rows(stack_ss(daemon)) if r[0] == "ESTAB"]
    assert ("ESTAB", f"127.0.0.1:{client_name}", f"127.0.0.1:{P_TWO_PROGRAMS}") in established, established
    assert ("ESTAB", f"127.0.0.1:{P_TWO_PROGRAMS}", f"127.0.0.1:{client_name}") in established, established
    client.stdin.write(b"go\n")
    client.stdin.flush()
    out, _ = client.communicate(timeout=60)
    assert client.returncode == 0, procs.describe(client)
    r = eval(out.decode().strip().splitlines()[-1])
    assert r["sent_ok"] and r["back_ok"], r
    assert r["peer_seen"] == r["name"] and r["name"].startswith("127.0.0.1:"), r
    procs.finish(server, timeout=10)
    after = daemon.stats()
    assert after["LoopbackDatagrams"] - before["LoopbackDatagrams"] >= 32
    assert_nothing_local_on_tap(capture.stop(), {P_TWO_PROGRAMS})


UDP_PROGRAM = r"""
import errno, socket, sys
port, closed = int(sys.argv[1]), int(sys.argv[2])
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.1", port))
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.settimeout(10)
server.settimeout(10)
ok = 0
for i, size in enumerate([0, 1, 100, 1472, 1473, 9000, 60000, 65507]):
    payload = bytes((i + j) & 0xFF for j in range(size))
    client.sendto(payload, ("127.0.0.1", port))
    data, source = server.recvfrom(65536)
    server.sendto(data[::-1], source)
    echo, echo_source = client.recvfrom(65536)
    ok += data == payload and echo == payload[::-1] and echo_source == ("127.0.0.1", port) and source[0] == "127.0.0.1"
# Bound to another loopback address, reached there only.
other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
other.bind(("127.0.0.2", port))
client.sendto(b"two", ("127.0.0.2", port))
two = other.recvfrom(100)
# Nobody on the port: the looped ICMP port unreachable refuses the connected socket, as Linux.
connected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
connected.settimeout(5)
connected.connect(("127.0.0.1", closed))
name = connected.getsockname()
connected.send(b"anyone?")
try:
    connected.recv(100)
    refused = "no error"
except ConnectionRefusedError:
    refused = "ECONNREFUSED"
except OSError as e:
    refused = errno.errorcode.get(e.errno, str(e))
print({"ok": ok, "two": two, "refused": refused, "connected_name": name[0]})
"""


LOOPBACK_SOURCE_TO_LINK = r"""
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
try:
    s.sendto(b"x", (sys.argv[1], 9))
    result = "sent"
except OSError as e:
    result = errno.errorcode.get(e.errno, str(e))
print({"result": result})
"""


def test_loopback_source_cannot_reach_the_link(daemon, capture):
    """A UDP socket bound to 127.0.0.1 sending to a host on the link: EINVAL, as the kernel
    (its route lookup refuses a loopback source on another device), and nothing leaves."""
    kernel = subprocess.run([PY, "-c", LOOPBACK_SOURCE_TO_LINK, "10.0.0.9"], capture_output=True, text=True, timeout=10)
    assert "'result': 'EINVAL'" in kernel.stdout, kernel
    before = daemon.stats()
    assert run_json(LOOPBACK_SOURCE_TO_LINK, daemon, KERNEL_IP)["result"] == "EINVAL"
    after = daemon.stats()
    assert after["UdpOutDatagrams"] == before["UdpOutDatagrams"]
    assert_nothing_local_on_tap(capture.stop(), {9})


def test_udp_over_loopback(daemon, capture):
    before = daemon.stats()
    r = run_json(UDP_PROGRAM, daemon, P_UDP, P_UDP_CLOSED)
    after = daemon.stats()
    assert r["ok"] == 8, r
    assert r["two"][0] == b"two" and r["two"][1][0] == "127.0.0.1", r
    assert r["refused"] == "ECONNREFUSED" and r["connected_name"] == "127.0.0.1", r
    assert after["UdpNoPorts"] - before["UdpNoPorts"] == 1
    assert after["IcmpOutDestUnreachs"] - before["IcmpOutDestUnreachs"] == 1
    assert after["UdpInDatagrams"] - before["UdpInDatagrams"] == 17
    assert after["LoopbackDatagrams"] - before["LoopbackDatagrams"] >= 19
    assert_nothing_local_on_tap(capture.stop(), {P_UDP, P_UDP_CLOSED})


def test_redis_server_and_cli_on_the_stack_over_loopback(daemon, procs, workdir, capture):
    """redis-server with Debian's packaged configuration (bind 127.0.0.1 -::1, protected
    mode on), changed only so as to run in the foreground, in the test's directory and without
    saving; redis-cli on the same stack reaches it over 127.0.0.1 (it listens on ::1 too, the
    stack's IPv6 loopback)."""
    need("redis-server", "redis-cli")
    conf = "/etc/redis/redis.conf"
    server = procs.start("redis-server", ["redis-server", conf, "--port", P_REDIS, "--daemonize", "no",
                                          "--supervised", "no", "--pidfile", workdir / "redis.pid", "--logfile", "",
                                          "--dir", workdir, "--save", ""], stack=True)
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(P_REDIS)]

    def answers():
        result = subprocess.run([*cli, "ping"], capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL,
                                env=daemon.lvlip_env())
        return result.stdout.strip() == "PONG"

    wait_until(answers, 20, "redis-server on 127.0.0.1 of the stack", server, procs)
    listeners = ss_rows(stack_ss(daemon, listening=True))
    assert ("LISTEN", f"127.0.0.1:{P_REDIS}") in [r[:2] for r in listeners], listeners
    assert ok(bounded([*cli, "set", "greeting", "x" * 100000], timeout=15, stack=daemon)).stdout.strip() == "OK"
    value = ok(bounded([*cli, "get", "greeting"], timeout=15, stack=daemon)).stdout.strip()
    assert value == "x" * 100000
    # Protected mode lets only loopback clients in: redis saw the client as 127.0.0.1.
    clients = ok(bounded([*cli, "client", "list"], timeout=15, stack=daemon)).stdout
    assert "addr=127.0.0.1:" in clients, clients
    # The kernel's own lo has no redis: a program without lvlip is refused.
    refused = subprocess.run([*cli, "ping"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert "PONG" not in refused.stdout and "refused" in (refused.stdout + refused.stderr).lower(), refused
    procs.stop(server)
    assert_nothing_local_on_tap(capture.stop(), {P_REDIS})


def test_loopback_addresses_from_tap_are_dropped_and_counted(daemon):
    """A frame from the kernel side with a 127/8 source is a martian (RFC 1812 5.3.7); one to
    127/8 is not for us (RFC 1122 3.2.1.3 (g)). Neither is delivered."""
    link = RawLink()
    try:
        udp = struct.pack("!HHHH", 4000, P_MARTIAN, 12, 0) + b"mars"
        before = daemon.stats()
        for _ in range(5):
            link.send(ethernet(STACK_MAC, link.mac, ETHERTYPE_IPV4, ipv4(udp, proto=17, source="127.0.0.1")))
            link.send(ethernet(STACK_MAC, link.mac, ETHERTYPE_IPV4, ipv4(udp, proto=17, destination="127.0.0.1")))
        after = daemon.wait_for(lambda s: s["IpInReceives"] - before["IpInReceives"] >= 10, what="10 datagrams")
    finally:
        link.close()
    assert after["IpInMartianSources"] - before["IpInMartianSources"] == 5
    assert after["IpInAddrErrors"] - before["IpInAddrErrors"] == 5
    assert after["UdpInDatagrams"] == before["UdpInDatagrams"]
    assert after["IpInDelivers"] == before["IpInDelivers"]
    assert after["LoopbackDatagrams"] == before["LoopbackDatagrams"]


MAPPED_PROGRAM = r"""
import errno, socket, sys
port = int(sys.argv[1])
listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
listener.bind(("::ffff:127.0.0.1", port))
listener.listen(1)
client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
client.settimeout(10)
client.connect(("::ffff:127.0.0.1", port))
server, peer = listener.accept()
client.sendall(b"mapped")
data = server.recv(100)
# ::1 is the stack's loopback too (TCP serves IPv6).
six = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
try:
    six.bind(("::1", 0))
    bind_v6 = "bound"
except OSError as e:
    bind_v6 = errno.errorcode.get(e.errno, str(e))
print({"data": data, "client_name": client.getsockname()[:2], "peer": peer[:2],
       "listener_name": listener.getsockname()[:2], "bind_v6": bind_v6})
"""


def test_v4_mapped_loopback_on_inet6_sockets(daemon):
    before = daemon.stats()
    r = run_json(MAPPED_PROGRAM, daemon, P_MAPPED)
    after = daemon.stats()
    assert r["data"] == b"mapped", r
    assert r["client_name"][0] == "::ffff:127.0.0.1" and r["peer"] == r["client_name"], r
    assert r["listener_name"] == ("::ffff:127.0.0.1", P_MAPPED), r
    assert r["bind_v6"] == "bound", r
    assert after["LoopbackDatagrams"] > before["LoopbackDatagrams"]


# A DNS responder answering every A question with one address (enough for getaddrinfo and dig).
RESPONDER = r"""
import socket, struct, sys
answer = socket.inet_aton(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("ready", flush=True)
s.settimeout(30)
while True:
    try:
        q, peer = s.recvfrom(512)
    except socket.timeout:
        break
    end = 12
    while q[end] != 0:
        end += q[end] + 1
    a = struct.unpack("!H", q[end + 1:end + 3])[0] == 1
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + answer if a else b""
    s.sendto(q[:2] + struct.pack("!HHHHH", 0x8180, 1, int(a), 0, 0) + q[12:end + 5] + rr, peer)
"""


def test_resolver_on_loopback_is_the_stacks(daemon, procs, workdir):
    """/etc/resolv.conf naming a loopback resolver (127.0.0.53). A program's own DNS client
    (dig) sends through the shim to the stack's loopback: refused while nothing listens there,
    answered once a resolver runs on the stack, as in a separate network namespace; lvlip
    never forwards it to the kernel's resolver. glibc's getaddrinfo makes its sockets inside
    libc, where no LD_PRELOAD can interpose, so it still asks the kernel's (docs/shim.md)."""
    need("dig")
    kernel = procs.start("kernel-resolver", [PY, "-c", RESPONDER, RESOLVER, "10.9.8.1"], stdout=subprocess.PIPE)
    assert kernel.stdout.readline() == b"ready\n", procs.describe(kernel)
    dig = ["dig", "+short", "+time=1", "+tries=1", f"@{RESOLVER}", "host.test"]
    before = daemon.stats()
    refused = bounded(dig, timeout=15, stack=daemon)
    assert "connection refused" in refused.stdout + refused.stderr, refused
    after = daemon.stats()
    assert after["UdpNoPorts"] - before["UdpNoPorts"] >= 1
    assert after["IcmpOutDestUnreachs"] - before["IcmpOutDestUnreachs"] >= 1

    stack = procs.start("stack-resolver", [PY, "-c", RESPONDER, RESOLVER, "10.9.8.2"], stack=True,
                        stdout=subprocess.PIPE)
    assert stack.stdout.readline() == b"ready\n", procs.describe(stack)
    assert ok(bounded(dig, timeout=15, stack=daemon)).stdout.strip() == "10.9.8.2"

    # getaddrinfo with resolv.conf naming 127.0.0.53, in a mount namespace of its own.
    resolv = workdir / "resolv.conf"
    resolv.write_text(f"nameserver {RESOLVER}\noptions timeout:1 attempts:1\n")
    lookup = "import socket; print(socket.getaddrinfo('host.test', 80, socket.AF_INET)[0][4][0])"
    result = ok(bounded(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                         'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv, PY, "-c", lookup],
                        timeout=15, stack=daemon))
    assert result.stdout.strip() == "10.9.8.1", result
