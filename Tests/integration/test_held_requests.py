"""Requests the shim holds back (docs/ipc.md, "Requests held back"): a new stream socket's
SOCKET and the options set on it travel with the next request, and a connected socket's
TCP_NODELAY with its next write that Nagle's algorithm could hold back. Each place where lvlipd
must know of them first is checked: a program started with exec, posix_spawn, system or popen, or given the
descriptor over an AF_UNIX socket, uses a socket made just before, which no request has named;
and a TCP_NODELAY set after the first write reaches lvlipd before the second."""

import json
import subprocess
import sys

import pytest

import harness
from kernel_servers import KernelServer, echo
from processes import run_script, wait_until
from rawpeer import ACK, FIN, PeerConnection, RawPeer
from robustness_helpers import compile_client

KERNEL = harness.KERNEL_IP

# The program that receives the socket: connects it, echoes a word through the kernel's echo
# server, prints what came back.
USER = """
import json, socket, sys
s = socket.socket(fileno=int(sys.argv[1]))
s.connect((sys.argv[2], int(sys.argv[3])))
s.sendall(sys.argv[4].encode())
s.shutdown(socket.SHUT_WR)
data = b"".join(iter(lambda: s.recv(100), b""))
print(json.dumps({"echo": data.decode(), "nodelay": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0}))
"""

# A fresh socket (its SOCKET and a TCP_NODELAY held) handed to USER without any other request.
HANDOVER = """
import ctypes, os, shlex, socket, sys
how, host, port, user = sys.argv[1:5]
# A process's first socket waits for its SOCKET reply (which tells how many more the user may
# make); later ones do not.
first = socket.socket()


def fresh():
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    os.set_inheritable(s.fileno(), True)
    return s


def user_argv(s):
    return [sys.executable, "-c", user, str(s.fileno()), host, port, how]


def spawned(argv):
    pid = os.posix_spawn(sys.executable, argv, os.environ)
    return lambda: sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))


if how == "dup":
    # A copy the shim does not see made (dup is not interposed): identified by its peer.
    s = fresh()
    sys.argv[1:] = [str(os.dup(s.fileno())), host, port, how]
    exec(user)
elif how == "exec":
    s = fresh()
    os.execv(sys.executable, user_argv(s))
elif how == "posix_spawn":
    s = fresh()
    wait = spawned(user_argv(s))
    s.close()
    wait()
elif how == "system":
    # libc's system() and popen() start the program with libc's own spawn (not interposable).
    s = fresh()
    status = os.system(shlex.join(user_argv(s)))
    sys.exit(os.waitstatus_to_exitcode(status))
elif how == "popen":
    s = fresh()
    libc = ctypes.CDLL(None)
    libc.popen.restype = ctypes.c_void_p
    libc.pclose.argtypes = [ctypes.c_void_p]
    stream = libc.popen(shlex.join(user_argv(s)).encode(), b"w")
    sys.exit(os.waitstatus_to_exitcode(libc.pclose(stream)))
else:
    # Descriptor passing: the receiver starts before the socket is made (so that nothing else
    # sends what is held) and takes the descriptor over an AF_UNIX pair.
    here, there = socket.socketpair()
    os.set_inheritable(there.fileno(), True)
    receive = ("import socket, sys; c = socket.socket(fileno=int(sys.argv[1])); "
               "_, fds, _, _ = socket.recv_fds(c, 1, 1); sys.argv[1] = str(fds[0]); exec(sys.argv.pop())")
    wait = spawned([sys.executable, "-c", receive, str(there.fileno()), host, port, how, user])
    there.close()
    s = fresh()
    socket.send_fds(here, [b"x"], [s.fileno()])
    s.close()
    wait()
"""


@pytest.fixture
def echo_server(daemon):
    server = KernelServer(7001, echo)
    yield server
    server.close()


@pytest.mark.parametrize("how", ["dup", "exec", "posix_spawn", "descriptor", "system", "popen"])
def test_a_fresh_socket_handed_to_another_program_is_known_to_lvlipd(daemon, echo_server, how):
    got = run_script(HANDOVER, how, KERNEL, 7001, USER, stack=daemon)
    assert got == {"echo": how, "nodelay": True}, got


@pytest.fixture(scope="module")
def exec_client(tmp_path_factory):
    return compile_client(tmp_path_factory.mktemp("exec"), "exec_fresh_socket")


@pytest.mark.parametrize("form", ["execl", "execlp", "execle"])
def test_a_fresh_socket_survives_the_list_forms_of_exec(daemon, echo_server, exec_client, form):
    result = subprocess.run([str(exec_client), form, sys.executable, USER, KERNEL, "7001"], env=daemon.lvlip_env(),
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"echo": form, "nodelay": True}, result.stdout


# One connection's server on the stack: accepts, writes one byte, waits, writes another, then
# reads to the end; with TCP_NODELAY set after accept ("before"), after the second write
# ("after"), or never ("never").
NAGLE_SERVER = """
import json, socket, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(1)
print("listening", port, flush=True)
c, _ = s.accept()
if mode == "before":
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.send(b"a")
# The first byte is out, unacknowledged, and retransmitted once (the RTO is 200 ms) before the
# second is written: that retransmission carries the first alone.
time.sleep(0.3)
c.send(b"b")
if mode == "after":
    time.sleep(0.05)  # Nagle's algorithm holds the second byte back (the next RTO is at 0.6 s)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # which sends it
while c.recv(100):
    pass
print(json.dumps({"done": True}), flush=True)
"""


@pytest.mark.parametrize("mode", ["before", "after", "never"])
def test_nodelay_reaches_lvlipd_before_nagle_holds_anything_back(daemon, procs, mode):
    # "before": the option, held past the one-segment first write, goes before the second.
    # "after": set once the socket has written, it goes at once, and lvlipd sends the byte
    # Nagle's algorithm was holding (RFC 9293 3.7.4; Linux pushes pending data then too).
    port = 7002
    nodelay = mode != "never"
    server = procs.start("nagle", ["python3", "-c", NAGLE_SERVER, str(port), mode], stack=True)
    wait_until(lambda: f"listening {port}" in server.out_path.read_text(), 10, "server listening", server, procs)
    peer = RawPeer()
    try:
        conn = PeerConnection(peer, port)
        conn.connect()
        first = conn.expect(lambda s: s.payload, what="the first byte")
        assert first.payload == b"a", first
        # The first byte stays unacknowledged: Nagle's algorithm holds the second back until
        # TCP_NODELAY is set (or, without it, until the first is acknowledged).
        if nodelay:
            # (The first byte may be retransmitted meanwhile: the RTO is 200 ms.)
            second = conn.expect(lambda s: s.payload and s.seq != first.seq, what="the second byte, while the first is unacknowledged")
            assert (second.seq, second.payload) == ((first.seq + 1) & 0xFFFFFFFF, b"b"), second
        else:
            # (A retransmission of the first byte may carry the second with it.)
            held = [s for s in peer.drain(settle=0.5, port=port) if s.payload and s.seq != first.seq]
            assert held == [], f"sent past Nagle's algorithm without TCP_NODELAY: {held}"
        conn.rcv = (first.seq + 1) & 0xFFFFFFFF
        conn.send(ACK)
        if not nodelay:
            second = conn.expect(lambda s: s.payload and s.seq == (first.seq + 1) & 0xFFFFFFFF,
                                 what="the second byte once the first is acknowledged")
            assert second.payload == b"b", second
        conn.rcv = (second.seq + 1) & 0xFFFFFFFF
        conn.send(FIN | ACK)  # the server's read ends
        conn.snd += 1
        wait_until(lambda: '"done"' in server.out_path.read_text(), 10, "server done", server, procs)
    finally:
        peer.close()
    print(json.dumps({"mode": mode, "first": first.seq, "second": second.seq}))
