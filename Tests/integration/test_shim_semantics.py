"""The socket semantics the shim must get right (../shared/DESIGN.md, "The shim"), each checked
with a Python program under lvlip against the kernel on 10.0.0.5, and where it matters the same
program against the kernel alone, so that lvlip must answer as Linux does.

Each scenario is a small script run as `python3 -c SCRIPT` under the shim; it prints one JSON
object that the test compares."""

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest

import harness
from kernel_servers import KernelServer, echo
from processes import run_script
from robustness_helpers import compile_client

KERNEL = harness.KERNEL_IP
STACK = harness.STACK_IP


@pytest.fixture
def echo_server(daemon):
    server = KernelServer(7001, echo)
    yield server
    server.close()


CONNECT_STYLES = """
import errno, json, select, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
out = {}

def err(e):
    return errno.errorcode.get(e, str(e))

# 1. POLLOUT + getsockopt(SO_ERROR)
s = socket.socket(); s.setblocking(False)
r = s.connect_ex((host, port))
p = select.poll(); p.register(s, select.POLLOUT)
events = p.poll(5000)
out["poll"] = [err(r), sorted(k for k, v in [("OUT", select.POLLOUT), ("ERR", select.POLLERR), ("HUP", select.POLLHUP)] if events and events[0][1] & v), err(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))]
s.close()

# 2. a second connect() after POLLOUT
s = socket.socket(); s.setblocking(False)
s.connect_ex((host, port))
select.select([], [s], [], 5)
out["second"] = err(s.connect_ex((host, port)))
out["third"] = err(s.connect_ex((host, port)))
s.close()

# 3. EPOLLOUT then send
s = socket.socket(); s.setblocking(False)
s.connect_ex((host, port))
ep = select.epoll(); ep.register(s.fileno(), select.EPOLLOUT)
ep.poll(5)
try:
    s.send(b"x"); out["send"] = "ok"
except OSError as e:
    out["send"] = err(e.errno)
s.close()

# 4. plain blocking connect
s = socket.socket(); s.settimeout(None)
try:
    s.connect((host, port)); out["blocking"] = "ok"
except OSError as e:
    out["blocking"] = err(e.errno)
s.close()

# 5. connect with a timeout (non-blocking connect through FIONBIO + poll + SO_ERROR)
try:
    socket.create_connection((host, port), timeout=3).close(); out["timeout"] = "ok"
except OSError as e:
    out["timeout"] = err(e.errno) if e.errno else type(e).__name__
print(json.dumps(out))
"""


def test_connect_styles_succeed(daemon, echo_server):
    got = run_script(CONNECT_STYLES, KERNEL, 7001, stack=daemon)
    ref = run_script(CONNECT_STYLES, KERNEL, 7001)
    assert ref == {"poll": ["EINPROGRESS", ["OUT"], "0"], "second": "0", "third": "EISCONN", "send": "ok",
                   "blocking": "ok", "timeout": "ok"}, ref
    assert got == ref, got


def test_connect_styles_refused_as_the_kernel(daemon):
    # Port 7999 is closed on 10.0.0.5: every style must surface ECONNREFUSED.
    got = run_script(CONNECT_STYLES, KERNEL, 7999, stack=daemon)
    # The kernel itself, connecting to its own closed port, as the reference.
    ref = run_script(CONNECT_STYLES, KERNEL, 7999)
    assert got["poll"][0] == "EINPROGRESS" and got["poll"][2] == "ECONNREFUSED", got
    assert "OUT" in got["poll"][1] and "ERR" in got["poll"][1] and "HUP" in got["poll"][1], got
    assert got["poll"] == ref["poll"], (got, ref)
    assert got["second"] == ref["second"] == "ECONNREFUSED", (got, ref)
    assert got["send"] == ref["send"] == "ECONNREFUSED", (got, ref)
    assert got["blocking"] == ref["blocking"] == "ECONNREFUSED", (got, ref)
    assert got["timeout"] == "ECONNREFUSED", got


def test_connect_timeout_to_silent_host_is_honoured(daemon):
    # 10.0.0.9 does not exist: no ARP answer. A 1 s timeout must end the attempt in ~1 s.
    script = """
    import json, socket, time
    start = time.monotonic()
    try:
        socket.create_connection(("10.0.0.9", 80), timeout=1); r = "connected"
    except socket.timeout:
        r = "timeout"
    except OSError as e:
        r = e.strerror
    print(json.dumps({"result": r, "elapsed": time.monotonic() - start}))
    """
    got = run_script(script, stack=daemon)
    assert got["result"] == "timeout" and 0.8 < got["elapsed"] < 2.5, got


ENDS = """
import errno, json, signal, socket, sys, time
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {}
s = socket.create_connection((host, port), timeout=10)
if mode == "half-close":
    s.sendall(b"hello world")
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        block = s.recv(4096)
        if not block:
            break
        data += block
    out["echo"] = data.decode()
    try:
        s.send(b"more"); out["after-shutdown"] = "sent"
    except OSError as e:
        out["after-shutdown"] = errno.errorcode[e.errno]
elif mode == "reset":
    s.sendall(b"x")
    time.sleep(0.5)  # the server resets the connection
    try:
        out["recv1"] = len(s.recv(10))
    except OSError as e:
        out["recv1"] = errno.errorcode[e.errno]
    try:
        out["recv2"] = len(s.recv(10))
    except OSError as e:
        out["recv2"] = errno.errorcode[e.errno]
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        s.send(b"y"); s.send(b"y"); out["send"] = "sent"
    except OSError as e:
        out["send"] = errno.errorcode[e.errno]
elif mode == "sigpipe":
    # Peer closed and reset: writes must fail with EPIPE and SIGPIPE (default action kills).
    s.sendall(b"x")
    time.sleep(0.5)
    got = []
    signal.signal(signal.SIGPIPE, lambda *a: got.append("SIGPIPE"))
    for _ in range(3):
        try:
            s.send(b"y" * 1000)
        except OSError as e:
            got.append(errno.errorcode[e.errno])
    out["sequence"] = got
print(json.dumps(out))
"""


def reset_after_one_byte(conn):
    conn.recv(1)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return "reset"


@pytest.mark.parametrize("lvlip", [True, False], ids=["lvlip", "kernel"])
def test_half_close_keeps_the_other_direction(daemon, echo_server, lvlip):
    got = run_script(ENDS, KERNEL, 7001, "half-close", stack=daemon if lvlip else None)
    assert got == {"echo": "hello world", "after-shutdown": "EPIPE"}, got


@pytest.mark.parametrize("lvlip", [True, False], ids=["lvlip", "kernel"])
def test_reset_gives_econnreset_then_eof_then_epipe(daemon, lvlip):
    server = KernelServer(7002, reset_after_one_byte)
    try:
        got = run_script(ENDS, KERNEL, 7002, "reset", stack=daemon if lvlip else None)
    finally:
        server.close()
    assert got == {"recv1": "ECONNRESET", "recv2": 0, "send": "EPIPE"}, got


@pytest.mark.parametrize("lvlip", [True, False], ids=["lvlip", "kernel"])
def test_write_after_reset_raises_sigpipe(daemon, lvlip):
    server = KernelServer(7003, reset_after_one_byte)
    try:
        got = run_script(ENDS, KERNEL, 7003, "sigpipe", stack=daemon if lvlip else None)
    finally:
        server.close()
    # The order in which Python runs the handler and raises the error is its own business.
    assert got["sequence"][0] == "ECONNRESET" and sorted(got["sequence"][1:]) == ["EPIPE", "EPIPE", "SIGPIPE", "SIGPIPE"], got


def test_peek_waitall_fionread_and_names(daemon, echo_server):
    script = """
    import array, fcntl, json, socket, sys, termios, time
    s = socket.socket(socket.AF_INET6)
    s.connect(("::ffff:10.0.0.5", 7001))
    s.sendall(b"abcdefgh")
    time.sleep(0.3)
    n = array.array("i", [0]); fcntl.ioctl(s, termios.FIONREAD, n)
    out = {"fionread": n[0], "peek": s.recv(4, socket.MSG_PEEK).decode(), "waitall": s.recv(8, socket.MSG_WAITALL).decode()}
    out["peer"] = s.getpeername()[:2]
    out["local"] = s.getsockname()[0]
    s.setblocking(False)
    try:
        s.recv(10); out["dontwait"] = "data"
    except BlockingIOError:
        out["dontwait"] = "EAGAIN"
    out["nodelay"] = [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)]
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out["nodelay"].append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    out["type"] = [s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE), s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)]
    try:
        s.setsockopt(socket.SOL_SOCKET, 9999, 1); out["unknown"] = "accepted"
    except OSError as e:
        out["unknown"] = e.errno
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    out["tcpi_state"] = info[0]
    out["tcpi_snd_mss"] = int.from_bytes(info[16:20], "little")
    out["cc"] = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\\0").decode()
    print(json.dumps(out))
    """
    got = run_script(script, stack=daemon)
    assert got["fionread"] == 8 and got["peek"] == "abcd" and got["waitall"] == "abcdefgh", got
    assert got["peer"] == ["::ffff:10.0.0.5", 7001] and got["local"] == "::ffff:10.0.0.4", got
    assert got["dontwait"] == "EAGAIN" and got["nodelay"] == [0, 1], got
    assert got["type"] == [socket.SOCK_STREAM, socket.AF_INET6], got
    assert got["unknown"] == 92, got  # ENOPROTOOPT, as Linux
    assert got["tcpi_state"] == 1 and got["tcpi_snd_mss"] == 1448, got  # ESTABLISHED
    assert got["cc"] == "cubic", got


def test_dual_stack_listener_accepts_ipv4_as_mapped(daemon):
    script = """
    import json, socket, subprocess, sys
    l = socket.socket(socket.AF_INET6)
    l.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("::", 7010)); l.listen(5)
    # A V6ONLY socket on the same port takes no IPv4 port (nginx, redis bind both).
    v6 = socket.socket(socket.AF_INET6)
    v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    v6.bind(("::", 7011)); v6.listen(5)
    v4 = socket.socket(); v4.bind(("0.0.0.0", 7011)); v4.listen(5)
    print("ready", flush=True)
    c, addr = l.accept()
    out = {"addr": addr[0], "local": c.getsockname()[0], "data": c.recv(100).decode(), "v6name": v6.getsockname()[:2]}
    print(json.dumps(out))
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=daemon.lvlip_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        with socket.create_connection((STACK, 7010), timeout=5) as c:
            c.sendall(b"mapped")
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    got = json.loads(out.strip().splitlines()[-1])
    assert got == {"addr": "::ffff:10.0.0.5", "local": "::ffff:10.0.0.4", "data": "mapped", "v6name": ["::", 7011]}, got


def test_fork_shares_sockets_and_exec_keeps_them(daemon, echo_server):
    # The parent connects, forks; the child writes through the inherited socket and execs
    # `cat`-like python reading the socket as stdin; the parent closes its copy at once.
    script = """
    import json, os, socket, sys
    s = socket.create_connection(("10.0.0.5", 7001), timeout=10)
    pid = os.fork()
    if pid == 0:
        s.sendall(b"from child ")
        s.shutdown(socket.SHUT_WR)
        os.dup2(s.fileno(), 0)
        os.execv(sys.executable, [sys.executable, "-c", "import sys; d = sys.stdin.buffer.read(); sys.stdout.write(d.decode()); sys.stdout.flush()"])
    s.close()
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"status": status}))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=daemon.lvlip_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("from child "), result.stdout
    assert json.loads(result.stdout[len("from child "):]) == {"status": 0}


SOCKETS_BEFORE_FORK = """
import json, os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
# The shim's socket() does not wait for lvlipd's reply (the next request, or fork, reads it):
# more sockets than it keeps outstanding, one made just before fork and used only by the
# child, options set without waiting, and names asked of sockets never used.
many = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM if i % 2 else socket.SOCK_STREAM) for i in range(40)]
s = socket.socket()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
pid = os.fork()
if pid == 0:
    s.connect((host, port))
    s.sendall(b"child")
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = s.recv(100)
        if not chunk:
            break
        data += chunk
    os._exit(0 if data == b"child" else 3)
_, status = os.waitpid(pid, 0)
out = {"status": status,
       "nodelay": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0,
       "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0,
       "error": s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR),
       "names": sorted({x.getsockname() for x in many})}
for x in many:
    x.close()
s.close()
print(json.dumps(out))
"""


def test_sockets_made_before_fork_and_options_without_waiting(daemon, echo_server):
    got = run_script(SOCKETS_BEFORE_FORK, KERNEL, 7001, stack=daemon)
    ref = run_script(SOCKETS_BEFORE_FORK, KERNEL, 7001)
    assert ref == {"status": 0, "nodelay": True, "keepalive": True, "error": 0, "names": [["0.0.0.0", 0]]}, ref
    assert got == ref, got


PEER_NAME_LIFECYCLE = """
import errno, json, socket, sys, time
host = sys.argv[1]

def peer(s):
    try:
        return s.getpeername()[1]
    except OSError as e:
        return errno.errorcode[e.errno]

out = {}
s = socket.socket()
out["unconnected"] = peer(s)
s.close()
# We close first, the server after: the connection is over (TIME-WAIT here).
s = socket.create_connection((host, 7021), timeout=5)
s.sendall(b"x")
s.shutdown(socket.SHUT_WR)
while s.recv(100):
    pass
time.sleep(0.2)
out["both_fins"] = peer(s)
s.close()
# The server closes first: CLOSE-WAIT here, the connection lasts.
s = socket.create_connection((host, 7022), timeout=5)
while s.recv(100):
    pass
time.sleep(0.2)
out["close_wait"] = peer(s)
s.close()
# The server resets (once it has our byte: the connect is over on both sides first).
s = socket.create_connection((host, 7023), timeout=5)
s.sendall(b"x")
try:
    while s.recv(100):
        pass
    out["reset_read"] = "eof"
except OSError as e:
    out["reset_read"] = errno.errorcode[e.errno]
out["after_reset"] = peer(s)
s.close()
print(json.dumps(out))
"""


NEVER_CONNECTED = """
import errno, json, socket

def outcome(call):
    try:
        return repr(call())
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

out = {}
for mode in ("blocking", "non-blocking", "listening"):
    s = socket.socket()
    if mode == "non-blocking":
        s.setblocking(False)
    if mode == "listening":
        s.bind(("0.0.0.0", 0))
        s.listen(1)
        s.setblocking(False)
    out[mode] = {"recv": outcome(lambda: s.recv(10)), "recv_into": outcome(lambda: s.recv_into(bytearray(4))),
                 "recvmsg": outcome(lambda: s.recvmsg(10)[0]), "send": outcome(lambda: s.send(b"x"))}
    s.close()
print(json.dumps(out))
"""


def test_reads_and_writes_on_a_socket_never_connected_fail_as_the_kernel(daemon):
    # A read would wait on the pair for ever: Linux says ENOTCONN at once. (Python's
    # settimeout polls before it reads, and the pair of a socket never connected is not hung
    # up as Linux's socket is: poll is not interposed.)
    got = run_script(NEVER_CONNECTED, stack=daemon, timeout=10)
    ref = run_script(NEVER_CONNECTED)
    assert ref["blocking"] == {"recv": "ENOTCONN", "recv_into": "ENOTCONN", "recvmsg": "ENOTCONN", "send": "EPIPE"}, ref
    assert got == ref, got


def test_peer_name_through_the_connection_lifecycle(daemon):
    # Linux answers getpeername with ENOTCONN once the connection is over (its socket in
    # CLOSE after TIME-WAIT or a reset), while the descriptor is still open.
    def reset(conn):
        conn.recv(1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))

    servers = [KernelServer(7021, echo), KernelServer(7022, lambda conn: None), KernelServer(7023, reset)]
    try:
        got = run_script(PEER_NAME_LIFECYCLE, KERNEL, stack=daemon)
        ref = run_script(PEER_NAME_LIFECYCLE, KERNEL)
    finally:
        for server in servers:
            server.close()
    assert ref == {"unconnected": "ENOTCONN", "both_fins": "ENOTCONN", "close_wait": 7022,
                   "reset_read": "ECONNRESET", "after_reset": "ENOTCONN"}, ref
    assert got == ref, got


def test_threads_share_a_socket_and_block_independently(daemon, echo_server):
    script = """
    import json, socket, threading, time
    s = socket.create_connection(("10.0.0.5", 7001), timeout=10)
    got = []
    def reader():
        while len(b"".join(got)) < 200000:
            got.append(s.recv(65536))
    t = threading.Thread(target=reader); t.start()
    time.sleep(0.2)  # the reader blocks in recv; a control request from this thread must not wait for it
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(20):
        s.sendall(bytes([i]) * 10000)
    t.join(10)
    print(json.dumps({"bytes": len(b"".join(got)), "alive": t.is_alive()}))
    """
    got = run_script(script, stack=daemon)
    assert got == {"bytes": 200000, "alive": False}, got


BLOCKING_CONNECT = """
import json, socket, sys, time
s = socket.socket()
start = time.monotonic()
s.connect((sys.argv[1], int(sys.argv[2])))  # blocking: no timeout set
elapsed = time.monotonic() - start
s.sendall(b"hello")
got = b""
while len(got) < 5:
    got += s.recv(5 - len(got))
print(json.dumps({"echo": got.decode(), "slow": elapsed > 0.5}))
"""


def test_blocking_connect_that_outlasts_the_reply_writes_its_filler_then(daemon, echo_server):
    # A blocking connect sends CONNECT without filler; to a peer that answers within lvlipd's
    # wake-up it is answered 0 (every other test). Here tap0 drops the first SYN, so the
    # handshake ends a retransmission later: the shim writes its filler after the
    # -EINPROGRESS answer and tells lvlipd (LVLIP_CONNECT_FILLER), which takes it, not the
    # peer: the echo is exactly what was sent.
    table = "lvlipsyn"
    subprocess.run(["nft", "add", "table", "netdev", table], check=True)
    try:
        subprocess.run(["nft", "add", "chain", "netdev", table, "in",
                        f"{{ type filter hook ingress device {harness.TAP} priority 0; }}"], check=True)
        subprocess.run(["nft", "add", "rule", "netdev", table, "in", "tcp", "dport", "7001", "tcp", "flags", "syn",
                        "quota", "until", "100", "bytes", "drop"], check=True)
        got = run_script(BLOCKING_CONNECT, KERNEL, 7001, stack=daemon)
    finally:
        subprocess.run(["nft", "delete", "table", "netdev", table])
    assert got == {"echo": "hello", "slow": True}, got


SEND_BUFFERS = """
import ctypes, json, os, select, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
host, port = sys.argv[1], int(sys.argv[2])

def pair_send_buffer(s):  # the pair's own, past the shim (whose getsockopt answers as TCP)
    value, length = ctypes.c_int(0), ctypes.c_uint32(4)
    assert libc.syscall(55, s.fileno(), socket.SOL_SOCKET, socket.SO_SNDBUF, ctypes.byref(value), ctypes.byref(length)) == 0
    return value.value

out = {}
blocking = socket.create_connection((host, port))  # no timeout: a blocking connect
blocking.sendall(b"x")
out["blocking"] = pair_send_buffer(blocking)
nonblocking = socket.socket()
nonblocking.setblocking(False)
nonblocking.connect_ex((host, port))
select.select([], [nonblocking], [], 5)
nonblocking.send(b"x")
out["nonblocking"] = pair_send_buffer(nonblocking)
print(json.dumps(out))
"""


def test_connected_streams_write_through_the_large_send_buffer(daemon, echo_server):
    # Whichever way the connect went (a blocking one needs no filler), the application's end
    # has lvlip's send buffer by its first write: 512 KB (SO_SNDBUFFORCE as root, else capped
    # at wmem_max), doubled by the kernel. With the default 208 KB a bulk sender ran 15% slower.
    with open("/proc/sys/net/core/wmem_max") as f:
        wmem_max = int(f.read())
    size = 512 * 1024 if os.geteuid() == 0 else min(512 * 1024, wmem_max)
    got = run_script(SEND_BUFFERS, KERNEL, 7001, stack=daemon)
    assert got == {"blocking": 2 * size, "nonblocking": 2 * size}, got


def delayed_echo(conn):
    """Echoes each read 0.2 s later, until the peer's FIN."""
    while data := conn.recv(100):
        time.sleep(0.2)
        conn.sendall(data)


# Helpers of the blocking-read scripts: `s` is their connected socket.
READ_HELPERS = """
libc = ctypes.CDLL(None, use_errno=True)

def read():  # libc's read(2) itself: Python's recv retries EINTR
    buf = ctypes.create_string_buffer(100)
    n = libc.read(s.fileno(), buf, 100)
    return buf.raw[:n].decode() if n >= 0 else errno.errorcode[ctypes.get_errno()]

def send_later(data, delay):
    child = os.fork()
    if child == 0:
        time.sleep(delay)
        s.send(data)
        os._exit(0)
    return child
"""

# A handler without SA_RESTART interrupts the wait; with SA_RESTART (and no handler without
# it: Python's own SIGINT handler does not restart) the read goes on to the answer.
SIGNALLED_READS = """
signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGALRM, lambda *a: None)
signal.setitimer(signal.ITIMER_REAL, SIGNAL_AFTER)
out["interrupted"] = read()
signal.siginterrupt(signal.SIGALRM, False)
child = send_later(b"restarted", 0.3)
signal.setitimer(signal.ITIMER_REAL, SIGNAL_AFTER)
out["restarted"] = read()
os.waitpid(child, 0)
"""

BLOCKING_READS = """
import ctypes, errno, json, os, signal, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.settimeout(None)
out = {}
""" + READ_HELPERS + """
def sleeps():
    for line in open("/proc/self/status"):
        if line.startswith("voluntary_ctxt_switches"):
            return int(line.split()[1])

# 1. Blocked while another process sends the request: woken once, for the answer.
out["wakes"] = []
for word in ("one", "two", "three"):
    child = send_later(word.encode(), 0.1)
    before = sleeps()
    got = read()
    out["wakes"].append([got, sleeps() - before])
    os.waitpid(child, 0)

# 2, 3. Signals 0.1 s into the read.
SIGNAL_AFTER = 0.1
""" + SIGNALLED_READS + """
# 4. A receive timeout, and a non-blocking socket.
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, bytes(8) + (300000).to_bytes(8, "little"))
start = time.monotonic()
out["timeout"] = [read(), round(time.monotonic() - start, 1)]
s.setblocking(False)
out["nonblocking"] = read()
print(json.dumps(out))
"""


def test_blocking_reads_wake_for_data_only(daemon):
    # A reader blocked on the pair would be woken when lvlipd takes what was sent on it (the
    # pair's write space), and sleep again: blocking reads wait in poll for POLLIN instead,
    # with the read's own answers to signals, timeouts and non-blocking descriptors.
    server = KernelServer(7011, delayed_echo)
    try:
        ref = run_script(BLOCKING_READS, KERNEL, 7011)
        got = run_script(BLOCKING_READS, KERNEL, 7011, stack=daemon)
    finally:
        server.close()
    assert ref == {"wakes": [["one", 1], ["two", 1], ["three", 1]], "interrupted": "EINTR",
                   "restarted": "restarted", "timeout": ["EAGAIN", 0.3], "nonblocking": "EAGAIN"}, ref
    assert got == ref, got


BUSY_POLLED_READS = """
import ctypes, errno, json, os, resource, signal, socket, sys, time
if sys.argv[3] != "default":
    os.environ["LVLIP_BUSY_POLL"] = sys.argv[3]  # read by the shim at its first blocking wait
if sys.argv[4] == "one-cpu":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
out = {}
""" + READ_HELPERS + """
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

# Signals 20 ms into the read.
SIGNAL_AFTER = 0.02
""" + SIGNALLED_READS + """
# The CPU a read that waits for its answer (0.3 s, and the server's 0.2 s) takes: the
# polling window's worth.
child = send_later(b"answer", 0.3)
before = cpu()
out["answer"] = read()
out["cpu"] = round(cpu() - before, 3)
os.waitpid(child, 0)
print(json.dumps(out))
"""


def test_blocking_reads_busy_poll_and_answer_signals_while_polling(daemon):
    # Where the program may use two CPUs, a blocking read polls the pair for up to
    # LVLIP_BUSY_POLL microseconds before it sleeps (default 50). A signal that comes while it
    # polls must interrupt the read, or not, as it would interrupt a sleeping read: with a
    # 100 ms window, the signal 20 ms into the read comes while polling.
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("busy polling needs two usable CPUs")
    server = KernelServer(7012, delayed_echo)
    try:
        ref = run_script(BUSY_POLLED_READS, KERNEL, 7012, "default", "all-cpus")
        polled = run_script(BUSY_POLLED_READS, KERNEL, 7012, "100000", "all-cpus", stack=daemon)
        off = run_script(BUSY_POLLED_READS, KERNEL, 7012, "0", "all-cpus", stack=daemon)
        one_cpu = run_script(BUSY_POLLED_READS, KERNEL, 7012, "100000", "one-cpu", stack=daemon)
        default = run_script(BUSY_POLLED_READS, KERNEL, 7012, "default", "all-cpus", stack=daemon)
    finally:
        server.close()
    answers = {"interrupted": "EINTR", "restarted": "restarted", "answer": "answer"}
    for got in (ref, polled, off, one_cpu, default):
        assert {k: got[k] for k in answers} == answers, got
    assert ref["cpu"] < 0.03, ref
    assert polled["cpu"] >= 0.05, polled       # about 0.1 s of the 0.3 s wait
    assert off["cpu"] < 0.03, off              # LVLIP_BUSY_POLL=0: sleeps at once
    assert one_cpu["cpu"] < 0.03, one_cpu      # one CPU: the answer needs it, no polling
    assert default["cpu"] < 0.03, default      # 50 µs


def test_busy_poll_setting_out_of_range_is_said_and_replaced(daemon, echo_server):
    script = """
    import json, socket
    s = socket.create_connection(("10.0.0.5", 7001), timeout=10)
    s.sendall(b"ping")
    print(json.dumps({"echo": s.recv(10).decode()}))
    """
    env = daemon.lvlip_env()
    env["LVLIP_BUSY_POLL"] = "2000000"
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and '"echo": "ping"' in result.stdout, result
    lines = [line for line in result.stderr.splitlines() if line.startswith("lvlip:")]
    assert lines == ["lvlip: LVLIP_BUSY_POLL=2000000 is not 0 to 100000 microseconds; using 50"], result.stderr


def test_mixed_select_with_a_pipe(daemon, echo_server):
    script = """
    import json, os, select, socket, time
    s = socket.create_connection(("10.0.0.5", 7001), timeout=10)
    r, w = os.pipe()
    os.write(w, b"p")
    ready1 = select.select([s, r], [], [], 2)[0]
    s.sendall(b"ping")
    time.sleep(0.3)
    ready2 = select.select([s, r], [], [], 2)[0]
    print(json.dumps({"first": [x == r for x in ready1], "second": sorted(x == s for x in ready2)}))
    """
    got = run_script(script, stack=daemon)
    assert got == {"first": [True], "second": [False, True]}, got


def test_daemon_not_running_fails_fast_with_a_message(daemon, workdir):
    env = daemon.lvlip_env()
    env["LVLIP_SOCKET"] = str(workdir / "nobody-here.sock")
    script = "import socket\ntry:\n    socket.socket()\nexcept OSError as e:\n    print('errno', e.errno)\n"
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=10)
    assert time.monotonic() - start < 5
    assert "errno 100" in result.stdout, result  # ENETDOWN
    lines = [line for line in result.stderr.splitlines() if line.startswith("lvlip:")]
    assert len(lines) == 1 and "nobody-here.sock" in lines[0], result.stderr


def test_ipc_socket_mode_and_group(start_daemon):
    import grp
    # A group that exists on Debian; the test does not change the system's groups.
    group = next(g for g in ("nogroup", "daemon", "users") if g in {e.gr_name for e in grp.getgrall()})
    d = start_daemon("--group", group)
    info = os.stat(d.socket)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == grp.getgrnam(group).gr_gid


def test_unix_and_netlink_sockets_pass_through(daemon):
    # Sockets the stack does not serve go to the kernel untouched: an AF_UNIX pair, and a
    # netlink socket that lists the kernel's interfaces.
    script = """
    import json, socket
    a, b = socket.socketpair()
    a.sendall(b"unix"); u = b.recv(10).decode()
    n = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    n.bind((0, 0))
    print(json.dumps({"unix": u, "netlink": n.getsockname()[0] > 0, "names": sorted(name for _, name in socket.if_nameindex())}))
    """
    got = run_script(script, stack=daemon)
    assert got == {"unix": "unix", "netlink": True, "names": ["lo", "tap0"]}, got


def test_lvlipctl_ss_shows_the_owner(daemon, echo_server):
    script = """
    import json, os, socket, subprocess, sys
    s = socket.create_connection(("10.0.0.5", 7001), timeout=10)
    s.sendall(b"x"); s.recv(1)
    env = dict(os.environ); env.pop("LD_PRELOAD")
    ss = subprocess.run([sys.argv[1], "ss", "--socket", sys.argv[2]], capture_output=True, text=True, env=env).stdout
    print(json.dumps({"pid": os.getpid(), "ss": ss}))
    """
    got = run_script(script, harness.bin_dir() / "lvlipctl", daemon.socket, stack=daemon)
    lines = [line for line in got["ss"].splitlines() if "10.0.0.5:7001" in line]
    assert len(lines) == 1 and lines[0].startswith("ESTAB"), got["ss"]
    assert f'users:(("python3",pid={got["pid"]},uid=0))' in lines[0], got["ss"]


def record_end(conn):
    """Reads until the connection ends; returns how: 'fin' or 'rst'."""
    conn.settimeout(10)
    try:
        while conn.recv(65536):
            pass
        return "fin"
    except ConnectionResetError:
        return "rst"


CLOSE_WAYS = """
import socket, struct, sys, time
mode = sys.argv[1]
s = socket.create_connection(("10.0.0.5", 7020), timeout=10)
s.sendall(b"data")
if mode == "linger0":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
elif mode == "unread":
    time.sleep(0.5)  # the server's bytes arrive and stay unread
s.close()
print("{}")
"""


@pytest.mark.parametrize("mode,expected", [("plain", "fin"), ("linger0", "rst"), ("unread", "rst")])
def test_close_ends_the_connection_as_the_kernel(daemon, mode, expected):
    def handler(conn):
        if mode == "unread":
            conn.sendall(b"unread bytes")
        return record_end(conn)

    server = KernelServer(7020, handler)
    try:
        run_script(CLOSE_WAYS, mode, stack=daemon)
        deadline = time.monotonic() + 10
        while not server.results and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.close()
    assert server.results == [expected], server.results
    # Nothing left behind in lvlipd but (for a FIN) the orphan finishing its close.
    daemon.wait_for(lambda s: s["IpcSocketsOpen"] == 0, what="the socket record to be released")


CONNECTS = """
import json, os, socket, sys
os.sched_setaffinity(0, {0})
def sleeps():
    for line in open("/proc/thread-self/status"):
        if line.startswith("voluntary_ctxt_switches"):
            return int(line.split()[1])
n = 300
before = sleeps()
for i in range(n):
    s = socket.socket()
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.close()
print(json.dumps({"sleeps": sleeps() - before, "connects": n}))
"""


@pytest.mark.skipif(0 not in os.sched_getaffinity(0), reason="needs CPU 0")
def test_a_request_sleeps_once_for_its_reply(start_daemon):
    """A blocking connect sends lvlipd one write (SOCKET and CONNECT) and sleeps once, until
    the reply. lvlipd reading that write makes the kernel wake whoever sleeps on the shim's
    end to say there is room again (unix_write_space); a shim asleep in recvmsg woke for it,
    found nothing and slept again: two sleeps per request. The program and lvlipd share
    CPU 0 here, so that the program is always asleep when lvlipd reads (unpinned, lvlipd on
    another CPU often reads first, and the extra wake-up comes and goes)."""
    daemon = start_daemon(prefix=("taskset", "-c", "0"))
    server = KernelServer(7003, lambda conn: None, backlog=128)
    try:
        result = run_script(CONNECTS, KERNEL, 7003, stack=daemon)
    finally:
        server.close()
    assert result["sleeps"] <= 1.1 * result["connects"], result


def test_sendmmsg_on_a_stream_answers_as_the_kernel(daemon, echo_server, tmp_path):
    """sendmmsg on a TCP socket is a sendmsg per message: refused with EPIPE before connect
    and after shutdown, and each message's address ignored once connected (Linux's TCP). The
    shim passed it to the pair as it was: a socket never connected wrote into its pair, and
    a named message failed with the pair's EISCONN."""
    client = compile_client(tmp_path, "sendmmsg_stream")
    outputs = {}
    for where, env in (("lvlip", daemon.lvlip_env()), ("kernel", None)):
        result = subprocess.run([client, KERNEL, "7001"], env=env, capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"{where}: {result.stderr}"
        outputs[where] = json.loads(result.stdout.splitlines()[-1])
    assert outputs["kernel"]["connected"][3] == "abcdefghi", outputs
    assert outputs["lvlip"] == outputs["kernel"], outputs
