"""The daemon's life: stopping under load, pcap output, command-line errors, lvlipctl."""

import os
import shutil
import signal
import struct
import subprocess
import time

import pytest

from harness import STACK_IP, TAP, bin_dir, interfaces, ping, require_tool, run

USAGE_EXIT = 64


def lvlipd(*args, timeout=10):
    return run([bin_dir() / "lvlipd", *args], timeout=timeout)


def test_sigterm_during_ping_exits_promptly(daemon):
    pinger = subprocess.Popen(["ping", "-c", "3000", "-i", "0.01", "-W", "1", STACK_IP],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        daemon.wait_for(lambda s: s["IcmpOutEchoReps"] >= 20, timeout=5, what="pings to be answered")
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        status = daemon.proc.wait(timeout=5)
        elapsed = time.monotonic() - started
    finally:
        pinger.terminate()
        pinger.wait(timeout=5)
    assert status == 0, daemon.stderr()
    assert elapsed < 1.0, f"lvlipd took {elapsed:.2f} s to stop"
    assert not os.path.exists(daemon.socket)
    assert "lvlipd stopped" in daemon.stderr()
    # The TAP is not persistent: it goes with the daemon.
    assert TAP not in interfaces()


def test_sigint_exits_zero(daemon):
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(timeout=5) == 0
    assert not os.path.exists(daemon.socket)


def test_pcap_records_arp_and_echo(start_daemon, workdir):
    require_tool("tshark")
    capture = workdir / "lvlipd.pcap"
    daemon = start_daemon("--pcap", str(capture))
    result, _, received, _ = ping("-c", "3", "-i", "0.1", "-W", "1", STACK_IP)
    assert received == 3, result.stdout
    assert daemon.terminate() == 0

    with open(capture, "rb") as f:
        magic, major, minor, _, _, _, linktype = struct.unpack("<IHHiIII", f.read(24))
    assert magic in (0xA1B2C3D4, 0xA1B23C4D) and (major, minor) == (2, 4)
    assert linktype == 1  # LINKTYPE_ETHERNET

    shown = run(["tshark", "-n", "-r", capture], timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert sum("Echo (ping) request" in line for line in lines) == 3, shown.stdout
    assert sum("Echo (ping) reply" in line for line in lines) == 3, shown.stdout
    assert any(" ARP " in line for line in lines), shown.stdout
    # The stack's own announcement and its answer to the kernel's request.
    assert any("Gratuitous ARP for 10.0.0.4" in line or "ARP Announcement for 10.0.0.4" in line
               for line in lines), shown.stdout
    assert any("10.0.0.4 is at 02:00:0a:00:00:04" in line for line in lines), shown.stdout


@pytest.mark.parametrize("args, complaint", [
    (["--addr", "10.0.0.0/24"], "--addr"),
    (["--addr", "foo"], "--addr"),
    (["--addr", "10.0.0.4/24", "--mtu", "5"], "--mtu"),
    (["--addr", "10.0.0.4/24", "--gateway", "192.168.1.1"], "--gateway"),
    (["--addr", "10.0.0.4/24", "--mac", "01:00:5e:00:00:01"], "--mac"),
    (["--addr", "10.0.0.4/24", "--log-level", "loud"], "--log-level"),
    ([], "--addr"),
    (["--addr", "10.0.0.4/24", "--addr", "fd00::4/129"], "fd00::4/129"),
    (["--addr", "10.0.0.4/24", "--addr", "fd00::4/0"], "fd00::4/0"),
    (["--addr", "10.0.0.4/24", "--addr", "ff02::1/64"], "ff02::1/64"),
    (["--addr", "10.0.0.4/24", "--addr", "fd00::4"], "fd00::4"),
    (["--addr", "fd00::4/64"], "IPv4 address"),
    (["--addr", "10.0.0.4/24", "--addr", "10.0.0.6/24"], "only one IPv4"),
    (["--addr", "10.0.0.4/24", "--addr", "fd00::4/64", "--mtu", "1000"], "--mtu"),
    (["--addr", "10.0.0.4/24", "--busy-poll", "1001"], "--busy-poll"),
    (["--addr", "10.0.0.4/24", "--busy-poll", "-1"], "--busy-poll"),
])
def test_bad_arguments_exit_64_with_usage(args, complaint, workdir):
    result = lvlipd("--tap", TAP, "--socket", workdir / "bad.sock", *args)
    assert result.returncode == USAGE_EXIT, result.stderr
    assert "Usage: lvlipd" in result.stderr, result.stderr
    assert complaint in result.stderr, result.stderr
    assert TAP not in interfaces(), "a rejected command line must not create the TAP"
    assert not (workdir / "bad.sock").exists()


def test_second_daemon_is_refused_and_first_keeps_working(daemon, workdir):
    same_socket = lvlipd("--tap", "tap1", "--addr", "10.0.1.4/24", "--socket", daemon.socket)
    assert same_socket.returncode == 1, same_socket.stderr
    assert "lvlipd: error:" in same_socket.stderr and "in use by a running lvlipd" in same_socket.stderr
    assert "tap1" not in interfaces(), "the refused daemon must not touch its TAP"

    same_tap = lvlipd("--tap", TAP, "--addr", "10.0.0.4/24", "--socket", workdir / "other.sock")
    assert same_tap.returncode == 1, same_tap.stderr
    assert "lvlipd: error:" in same_tap.stderr and "TAP tap0 is busy" in same_tap.stderr
    assert not (workdir / "other.sock").exists()

    assert os.path.exists(daemon.socket)
    assert daemon.alive()
    result, _, received, loss = ping("-c", "3", "-i", "0.1", "-W", "1", STACK_IP)
    assert received == 3 and loss == 0.0, result.stdout
    assert daemon.stats()["IcmpOutEchoReps"] >= 3


def test_stale_socket_file_is_replaced(workdir, start_daemon):
    # A socket file left by a killed daemon must not stop the next one.
    first = start_daemon()
    first.kill()
    assert os.path.exists(first.socket)
    second = start_daemon(socket_path=first.socket)
    _, _, received, _ = ping("-c", "1", "-W", "1", STACK_IP)
    assert received == 1
    assert second.stats()["IcmpOutEchoReps"] == 1


def test_unprivileged_daemon_explains(workdir):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    result = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                  bin_dir() / "lvlipd", "--tap", TAP, "--addr", "10.0.0.4/24", "--socket", workdir / "np.sock"],
                 timeout=10)
    assert result.returncode == 1, result.stderr
    assert "lvlipd: error:" in result.stderr and "root" in result.stderr, result.stderr
    assert TAP not in interfaces()


def test_lvlipctl_without_daemon_fails_clearly(workdir):
    missing = workdir / "missing.sock"
    result = run([bin_dir() / "lvlipctl", "stat", "--socket", missing], timeout=10)
    assert result.returncode == 1
    assert f"cannot connect to lvlipd at {missing}" in result.stderr, result.stderr
    assert "is lvlipd running?" in result.stderr
    assert result.stdout == ""


def test_lvlipctl_selects_counters_by_prefix(daemon):
    _, _, received, _ = ping("-c", "2", "-i", "0.1", "-W", "1", STACK_IP)
    assert received == 2
    result = run([bin_dir() / "lvlipctl", "stat", "--socket", daemon.socket, "icmp"], timeout=10)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "#lvlipd"
    rows = dict(line.split() for line in lines[1:])
    assert rows and all(name.startswith("Icmp") for name in rows), result.stdout
    assert rows["IcmpInEchos"] == "2" and rows["IcmpOutEchoReps"] == "2"
    assert "IcmpInErrors" not in rows, "zero counters are hidden without --zeros"
    # The environment variable names the socket too.
    by_env = run([bin_dir() / "lvlipctl", "stat", "IcmpOutEchoReps"], timeout=10,
                 env={**os.environ, "LVLIP_SOCKET": daemon.socket})
    assert by_env.returncode == 0 and "IcmpOutEchoReps" in by_env.stdout, by_env.stderr
