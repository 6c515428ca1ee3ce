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
from tcp_helpers import (KernelServer, download_from_stack_source, nft_loss, upload_to_stack_sink, wait_result)

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
    """nftables drops `percent`% of frames each way; lvlipd's injector reorders and
    duplicates 1% each way. Both directions at once, byte-exact."""
    server = KernelServer("sink")
    daemon = start_daemon("--test-source", "5003", "--test-upload", f"{KERNEL_IP}:{server.port}:{LOSSY}:15",
                          "--faults", "0,0.01,0.01,0,99", "--log-level", "notice")
    with nft_loss(percent):
        result = {}
        download = threading.Thread(target=lambda: result.update(d=download_from_stack_source(5003, 16, LOSSY, timeout=300)))
        download.start()
        (received, mismatch, _), = server.join(timeout=300)
        download.join(300)
    assert (received, mismatch) == (LOSSY, None)
    (got, bad, digest), expected = result["d"]
    assert (got, bad, digest) == (LOSSY, None, expected)
    assert wait_result(daemon, "upload", timeout=60)[0]["status"] == "OK"
    stats = daemon.stats()
    assert stats["TcpRetransSegs"] > 0, "loss must cause retransmissions"
    assert stats["FaultReordered"] > 0 and stats["FaultDuplicated"] > 0
