"""TCP between lvlipd and the Linux kernel over tap0: bulk transfers verified byte for byte
(sha256 and the seeded pattern) both ways, with and without loss, many connections, the
errors of connect, and zero-window probing. lvlipd's built-in test applications drive its
socket API (the shim does not exist yet)."""

import os
import socket
import threading
import time

import pytest

from harness import KERNEL_IP, STACK_IP, run
from tcp_helpers import (KernelServer, download_from_stack_source, kernel_tcp_counter, nft_loss, upload_to_stack_sink,
                         wait_result)

MB = 1 << 20
BULK = int(os.environ.get("LVLIP_TCP_MB", "100")) * MB
LOSSY = int(os.environ.get("LVLIP_TCP_LOSSY_MB", "100")) * MB


def test_kernel_client_to_stack_sink(start_daemon):
    daemon = start_daemon("--test-sink", "5001", "--log-level", "notice")
    verdict = upload_to_stack_sink(5001, seed=11, total=BULK)
    assert verdict == f"OK {BULK}"
    assert wait_result(daemon, "sink")[0]["status"] == "OK"


def test_kernel_client_from_stack_source(start_daemon):
    daemon = start_daemon("--test-source", "5002", "--log-level", "notice")
    (received, mismatch, digest), expected = download_from_stack_source(5002, seed=12, total=BULK)
    assert (received, mismatch) == (BULK, None)
    assert digest == expected
    assert wait_result(daemon, "source")[0]["status"] == "OK"


def test_stack_client_to_kernel_sink(start_daemon):
    server = KernelServer("sink")
    daemon = start_daemon("--test-upload", f"{KERNEL_IP}:{server.port}:{BULK}:13", "--log-level", "notice")
    (received, mismatch, _), = server.join()
    assert (received, mismatch) == (BULK, None)
    result = wait_result(daemon, "upload")[0]
    assert result["status"] == "OK", result


def test_stack_client_from_kernel_source(start_daemon):
    server = KernelServer("source")
    daemon = start_daemon("--test-download", f"{KERNEL_IP}:{server.port}:{BULK}:14", "--log-level", "notice")
    server.join()
    result = wait_result(daemon, "download")[0]
    assert result["status"] == "OK", result
    assert f"received {BULK} of {BULK}" in result["detail"]


@pytest.mark.parametrize("percent", [1, 5])
def test_transfers_both_ways_under_loss_reordering_duplication(start_daemon, percent):
    """nftables loses `percent`% of frames each way; lvlipd's injector reorders and
    duplicates 1% and corrupts 0.1% each way (the checksums must catch every corruption).
    Data flows both ways at once, byte-exact: lvlipd downloads from a kernel source while a
    kernel client downloads from lvlipd's source."""
    server = KernelServer("source", timeout=300)
    daemon = start_daemon("--test-source", "5003", "--test-download", f"{KERNEL_IP}:{server.port}:{LOSSY}:15",
                          "--faults", "0,0.01,0.01,0.001,99", "--log-level", "notice")
    kernel_retransmits = kernel_tcp_counter("RetransSegs")
    with nft_loss(percent):
        result = {}
        download = threading.Thread(target=lambda: result.update(d=download_from_stack_source(5003, 16, LOSSY, timeout=300)))
        download.start()
        server.join(timeout=300)
        download.join(300)
        stack_download = wait_result(daemon, "download", timeout=120)[0]
    assert stack_download["status"] == "OK" and f"received {LOSSY} of {LOSSY}" in stack_download["detail"], stack_download
    (got, bad, digest), expected = result["d"]
    assert (got, bad, digest) == (LOSSY, None, expected)
    stats = daemon.stats()
    # The kernel's segments to lvlipd were lost too, and it retransmitted them: at least half
    # the expected losses among its ~LOSSY/1448 data segments (measured: 857 of ~724 at 1%,
    # 3,587 of ~3,620 at 5%). A `drop` on tap0 egress is reported to the kernel's TCP, which
    # resends at once, mostly uncounted (195 and 261, from the injected faults).
    retransmitted = kernel_tcp_counter("RetransSegs") - kernel_retransmits
    expected_losses = LOSSY // 1448 * percent // 100
    assert retransmitted >= expected_losses // 2, f"kernel retransmitted {retransmitted}, ~{expected_losses} lost"
    assert stats["TcpRetransSegs"] >= expected_losses // 2, f"lvlipd retransmitted {stats['TcpRetransSegs']}"
    print(f"retransmitted at {percent}%: kernel {retransmitted}, lvlipd {stats['TcpRetransSegs']}, ~{expected_losses} lost each way")
    assert stats["FaultReordered"] > 0 and stats["FaultDuplicated"] > 0 and stats["FaultCorrupted"] > 0


def test_stack_connect_to_closed_kernel_port_is_refused(start_daemon):
    daemon = start_daemon("--test-upload", f"{KERNEL_IP}:9:1000:1", "--log-level", "notice")
    result = wait_result(daemon, "upload", timeout=10)[0]
    assert result["status"] == "ERROR" and "connectionRefused (errno 111)" in result["detail"], result


def test_stack_connect_to_absent_host_fails_with_host_unreachable(start_daemon):
    """Nobody answers ARP for 10.0.0.99: after three requests the connect fails with
    EHOSTUNREACH, as on Linux, in about 3 s."""
    started = time.monotonic()
    daemon = start_daemon("--test-upload", "10.0.0.99:80:1000:1", "--log-level", "notice")
    result = wait_result(daemon, "upload", timeout=15)[0]
    assert result["status"] == "ERROR" and "hostUnreachable (errno 113)" in result["detail"], result
    assert time.monotonic() - started < 8
    assert daemon.stats()["ArpResolutionFailures"] >= 1


def test_stack_connect_to_silent_port_times_out(start_daemon):
    """The kernel drops the SYNs (nftables): connect fails with ETIMEDOUT after the SYN
    retries (shortened to 2 here: 1 + 2 + 4 s)."""
    run(["nft", "add", "table", "inet", "lvlipsilent"], check=True)
    try:
        run(["nft", "add", "chain", "inet", "lvlipsilent", "in", "{ type filter hook input priority 0; }"], check=True)
        run(["nft", "add", "rule", "inet", "lvlipsilent", "in", "tcp", "dport", "7777", "drop"], check=True)
        started = time.monotonic()
        daemon = start_daemon("--test-upload", f"{KERNEL_IP}:7777:1000:1", "--tcp-syn-retries", "2",
                              "--log-level", "notice")
        result = wait_result(daemon, "upload", timeout=20)[0]
        elapsed = time.monotonic() - started
    finally:
        run(["nft", "delete", "table", "inet", "lvlipsilent"])
    assert result["status"] == "ERROR" and "timedOut (errno 110)" in result["detail"], result
    assert 6 < elapsed < 15, elapsed


def test_thousand_simultaneous_connections(start_daemon):
    """1,000 kernel clients connect at once to the stack's echo server, each echoes 100
    bytes, all complete."""
    import resource
    import selectors

    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    daemon = start_daemon("--test-echo", "7", "--log-level", "warning")
    count = 1000
    selector = selectors.DefaultSelector()
    state = {}
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((STACK_IP, 7))
        message = f"connection {i:04d} ".encode() * 6 + b"\n" * (100 - 16 * 6)
        state[s] = {"message": message, "sent": False, "received": b""}
        selector.register(s, selectors.EVENT_WRITE)
    done = 0
    deadline = time.monotonic() + 60
    while done < count and time.monotonic() < deadline:
        for key, events in selector.select(timeout=1):
            s = key.fileobj
            st = state[s]
            if events & selectors.EVENT_WRITE and not st["sent"]:
                error = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                assert error == 0, os.strerror(error)
                s.sendall(st["message"])
                st["sent"] = True
                selector.modify(s, selectors.EVENT_READ)
            elif events & selectors.EVENT_READ:
                block = s.recv(4096)
                st["received"] += block
                if len(st["received"]) >= len(st["message"]):
                    assert st["received"] == st["message"]
                    selector.unregister(s)
                    s.close()
                    done += 1
    assert done == count, f"only {done} of {count} connections completed"
    stats = daemon.stats()
    assert stats["TcpPassiveOpens"] >= count


def test_zero_window_probing_and_recovery(start_daemon):
    """A kernel client with a small receive buffer stops reading: the stack's window
    probes keep the connection alive, and the transfer completes when it reads again."""
    daemon = start_daemon("--test-source", "5004", "--log-level", "notice")
    total = 8 * MB
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(30)
    s.connect((STACK_IP, 5004))
    import struct
    s.sendall(struct.pack("<QQ", 21, total))
    time.sleep(3)  # not reading: the window closes and the stack must probe
    stats = daemon.wait_for(lambda st: st["TcpExtTCPWinProbe"] >= 2, timeout=10, what="zero-window probes")
    from pattern import Pattern
    pattern = Pattern(21)
    received = 0
    while True:
        block = s.recv(1 << 20)
        if not block:
            break
        assert pattern.check(block) is None
        received += len(block)
    s.close()
    assert received == total
    assert wait_result(daemon, "source")[0]["status"] == "OK"
    assert stats["TcpExtTCPWinProbe"] >= 2


def test_lvlipctl_ss_lists_listeners_and_connections(start_daemon):
    from harness import bin_dir
    daemon = start_daemon("--test-echo", "7", "--log-level", "warning")
    with socket.create_connection((STACK_IP, 7), timeout=10) as s:
        s.sendall(b"x" * 50000)
        got = 0
        while got < 50000:
            got += len(s.recv(65536))
        local_port = s.getsockname()[1]
        out = run([bin_dir() / "lvlipctl", "ss", "--socket", daemon.socket], timeout=10)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["State", "Recv-Q", "Send-Q"]
    # A listener bound to any address shows it, as ss does: it also takes the stack's loopback.
    assert any(l.split()[0] == "LISTEN" and l.split()[3] == "0.0.0.0:7" for l in lines), out.stdout
    estab = [l for l in lines if l.startswith("ESTAB") and f"{KERNEL_IP}:{local_port}" in l]
    assert estab, out.stdout
    details = lines[lines.index(estab[0]) + 1]
    for field in ("cubic", "rto:", "rtt:", "cwnd:", "bytes_received:50000", "sack", "ts"):
        assert field in details, details
    listening = run([bin_dir() / "lvlipctl", "ss", "-l", "--socket", daemon.socket], timeout=10).stdout
    assert "ESTAB" not in listening and "LISTEN" in listening
