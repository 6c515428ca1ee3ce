"""lvlipd's busy polling (--busy-poll): after a wake-up with I/O it looks for more without
sleeping for a while, where it can run beside the programs it serves; on one CPU it does not."""

import os

import pytest

import harness
from kernel_servers import KernelServer, echo
from processes import run_script

ROUND_TRIPS = """
import json, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for i in range(300):
    s.sendall(b"x" * 32)
    got = b""
    while len(got) < 32:
        chunk = s.recv(32 - len(got))
        assert chunk, "echo ended early"
        got += chunk
s.close()
print(json.dumps({"round_trips": 300}))
"""


def round_trips(daemon):
    server = KernelServer(7002, echo)
    try:
        assert run_script(ROUND_TRIPS, harness.KERNEL_IP, 7002, stack=daemon)["round_trips"] == 300
    finally:
        server.close()
    return daemon.stats()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="busy polling needs two CPUs")
def test_request_response_is_served_by_busy_polling(start_daemon):
    daemon = start_daemon()
    assert "busy polling 100 µs" in daemon.stderr(), daemon.stderr()
    stats = round_trips(daemon)
    # Each echo comes back within microseconds of the request lvlipd wrote to the TAP (the
    # kernel answers on the other CPU): some are found while polling, without sleeping.
    assert stats["ReactorBusyPollHits"] > 0, stats
    assert stats["ReactorBusyPollMicroseconds"] > 0, stats


def test_one_cpu_or_zero_turns_busy_polling_off(start_daemon):
    pinned = start_daemon(prefix=("taskset", "-c", "0"))
    assert "busy polling off (one CPU)" in pinned.stderr(), pinned.stderr()
    stats = round_trips(pinned)
    assert stats["ReactorBusyPollHits"] == 0 and stats["ReactorBusyPollMicroseconds"] == 0, stats
    assert pinned.terminate() == 0


def test_busy_poll_zero_is_off(start_daemon):
    daemon = start_daemon("--busy-poll", "0")
    assert "busy polling off" in daemon.stderr(), daemon.stderr()
    stats = round_trips(daemon)
    assert stats["ReactorBusyPollHits"] == 0 and stats["ReactorBusyPollMicroseconds"] == 0, stats
