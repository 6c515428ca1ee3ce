"""lvlipd against IPC clients that exhaust what it has: its descriptors (accept fails with
EMFILE) and its memory (a client that asks and never reads the answers).

Each test talks to lvlipd's socket directly with the message layouts of lvlip_ipc.h
(ipc_wire), and checks the daemon's own figures: its descriptor limit (prlimit on its pid),
its CPU time and RSS from /proc, and its log."""

import os
import resource
import select
import socket
import time

import ipc_wire as W
from harness import rss_kib

HELLO_SIZE = W.size("lvlip_hello")
HEADER_SIZE = W.size("lvlip_msg_header")
MSG_HELLO = W.const("LVLIP_MSG_HELLO")
MSG_SOCKETS = W.const("LVLIP_MSG_SOCKETS")
MSG_STATS = W.const("LVLIP_MSG_STATS")


def greeted_connection(path, timeout=1.0):
    """A connection to lvlipd that sent HELLO; (socket, whether the reply came within `timeout`)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(path)
    s.sendall(W.header(HELLO_SIZE, MSG_HELLO, 0, 1) + W.pack("lvlip_hello", W.const("LVLIP_IPC_MAGIC"),
                                                               W.const("LVLIP_IPC_VERSION"), 0, os.getpid()))
    return s, replied(s, timeout)


def replied(s, timeout):
    """Whether the HELLO reply (a header and a body) is readable on `s` within `timeout` s."""
    if not select.select([s], [], [], timeout)[0]:
        return False
    s.settimeout(timeout)
    data = b""
    while len(data) < HEADER_SIZE:
        block = s.recv(HEADER_SIZE - len(data))
        if not block:
            return False
        data += block
    length = W.unpack_from("lvlip_msg_header", data)["length"]
    while len(data) < HEADER_SIZE + length:
        block = s.recv(HEADER_SIZE + length - len(data))
        if not block:
            return False
        data += block
    return True


def cpu_seconds(pid):
    """User plus system CPU time of `pid` (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settled_fds(pid):
    """lvlipd's open descriptors once a query client's connection is gone: lvlipd closes its
    end when it reads the client's EOF, which may come after the client has its reply."""
    deadline = time.monotonic() + 5
    fds = set(os.listdir(f"/proc/{pid}/fd"))
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = set(os.listdir(f"/proc/{pid}/fd"))
        if now == fds:
            break
        fds = now
    return {int(fd) for fd in fds}


def test_accept_out_of_descriptors_waits_without_spinning_and_recovers(daemon):
    """lvlipd's RLIMIT_NOFILE is lowered to a few above what it holds; IPC clients connect
    until one gets no HELLO reply (accept fails with EMFILE, the connection waits in the
    backlog). While it waits lvlipd must not spin on its level-triggered listener (CPU under
    10%), must log the failure, and must answer other clients' queries; once the held
    connections close, the waiting client and new ones are served without a restart."""
    daemon.stats()
    hard = resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE)[1]
    fds = settled_fds(daemon.pid)
    limit = max(fds) + 1 + 16
    # Free descriptors under the limit: the 16 above the highest and any hole below it.
    room = limit - len(fds)
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (limit, hard))
    held = []
    try:
        waiting = None
        while waiting is None:
            assert len(held) <= room, f"{len(held)} connections served under a limit of {room} more descriptors"
            s, served = greeted_connection(daemon.socket)
            if served:
                held.append(s)
            else:
                waiting = s
        print(f"{len(held)} connections served, the next one waits")

        time.sleep(0.3)
        cpu_before, started = cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(2)
        share = (cpu_seconds(daemon.pid) - cpu_before) / (time.monotonic() - started)
        print(f"lvlipd CPU while out of descriptors: {share:.1%}")
        assert daemon.alive()
        assert share < 0.10, f"lvlipd uses {share:.0%} of a CPU while accept fails with EMFILE"
        log = daemon.stderr()
        assert "IPC accept failed: accept4: Too many open files" in log, log[-2000:]
        assert log.count("IPC accept failed") == 1, f"{log.count('IPC accept failed')} warnings for one run of failures"
        # Clients already connected are still answered.
        held[0].sendall(W.header(0, MSG_STATS, 0, 2))
        assert replied(held[0], 2), "a connected client got no STATS reply while lvlipd was out of descriptors"

        for s in held:
            s.close()
        held = []
        assert replied(waiting, 3), "the client waiting in the backlog was not served once descriptors came back"
        waiting.close()
    finally:
        for s in held:
            s.close()
    again, served = greeted_connection(daemon.socket, timeout=3)
    again.close()
    assert served, "a new client is not served after descriptors came back"
    assert "IPC accept works again after" in daemon.stderr()
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (hard, hard))
    assert daemon.stats()["IpcSocketsOpen"] == 0


def test_client_that_never_reads_is_closed_with_bounded_memory(daemon):
    """A client sends SOCKETS queries as fast as it can and never reads a reply: lvlipd keeps
    at most 4 MB of unread replies for it, then closes it with a logged reason; its RSS stays
    bounded, and other clients are served throughout."""
    daemon.stats()
    rss_before = rss_kib(daemon.pid)
    s, served = greeted_connection(daemon.socket, timeout=3)
    assert served
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    query = W.header(0, MSG_SOCKETS, 0, 3) * 256
    sent = 0
    peak = rss_before
    closed = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            sent += s.send(query)
        except BlockingIOError:
            select.select([], [s], [], 0.05)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        peak = max(peak, rss_kib(daemon.pid))
        if "not reading its replies" in daemon.stderr():
            closed = True
            break
    s.close()
    print(f"{sent // HEADER_SIZE} queries sent unread; lvlipd RSS {rss_before} KiB before, peak {peak} KiB")
    assert closed, f"lvlipd still serves a client that read none of {sent // HEADER_SIZE} replies"
    deadline = time.monotonic() + 2
    while "closed: not reading its replies" not in daemon.stderr():  # logged just after the close
        assert time.monotonic() < deadline, daemon.stderr()[-2000:]
        time.sleep(0.02)
    assert peak - rss_before < 16 * 1024, f"lvlipd RSS grew from {rss_before} to {peak} KiB"
    assert daemon.alive()
    assert daemon.stats()["IpcSocketsOpen"] == 0
