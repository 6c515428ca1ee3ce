"""Helpers for the lvlipd integration tests: starting the daemon, reading its counters,
running bounded commands, and building Ethernet/ARP/IPv4/ICMP frames with the stdlib.

Everything here assumes it runs inside the private network namespace that scripts/test
creates (conftest.py refuses to run anywhere else).
"""

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

STACK_IP = "10.0.0.4"
KERNEL_IP = "10.0.0.5"
STACK_MAC = bytes.fromhex("02000a000004")
TAP = "tap0"

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def bin_dir() -> Path:
    value = os.environ.get("LVLIP_BIN")
    if not value:
        raise RuntimeError("LVLIP_BIN must name the directory holding lvlipd and lvlipctl")
    return Path(value)


REPO = Path(__file__).resolve().parents[2]


def shim_path() -> Path:
    """The LD_PRELOAD shim built by scripts/build, beside lvlipd."""
    return bin_dir() / "liblvlip.so"


def require_tool(name):
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed")


def run(args, timeout=30, check=False, **kwargs):
    """Runs a command to completion with a time bound; returns the CompletedProcess."""
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          check=check, **kwargs)


def interfaces():
    """Network interfaces of the current namespace. /proc/net follows the caller's network
    namespace; /sys/class/net does not (sysfs is not remounted by unshare), so never use it."""
    names = []
    with open("/proc/net/dev") as f:
        for line in f.readlines()[2:]:
            names.append(line.split(":", 1)[0].strip())
    return names


def tap_tx_dropped(name=TAP):
    """Frames the kernel dropped while handing them to the TAP (its TX 'drop' column)."""
    with open("/proc/net/dev") as f:
        for line in f.readlines()[2:]:
            iface, data = line.split(":", 1)
            if iface.strip() == name:
                return int(data.split()[11])
    raise LookupError(name)


def set_ipv6_default(enabled: bool):
    """IPv6 on interfaces created from now on, in this namespace only."""
    with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
        f.write("0" if enabled else "1")


def parse_stats(text: str) -> dict:
    lines = text.splitlines()
    assert lines and lines[0] == "#lvlipd", f"unexpected lvlipctl output: {text!r}"
    stats = {}
    for line in lines[1:]:
        name, value = line.split()
        stats[name] = int(value)
    return stats


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LookupError("VmRSS")


class Daemon:
    """One lvlipd process serving tap0, with its stderr in a file."""

    def __init__(self, workdir: Path, extra_args=(), socket_path=None, ipv6=False, configure_kernel=True,
                 addr=STACK_IP + "/24", prefix=()):
        self.workdir = Path(workdir)
        self.socket = str(socket_path or self.workdir / "lvlipd.sock")
        self.stderr_path = self.workdir / f"lvlipd-{time.monotonic_ns()}.stderr"
        self.returncode = None
        self.killed = False
        set_ipv6_default(ipv6)
        # prefix: a command lvlipd runs under (taskset).
        args = [*prefix, bin_dir() / "lvlipd", "--tap", TAP, "--addr", addr, "--socket", self.socket, *extra_args]
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([str(a) for a in args], stdin=subprocess.DEVNULL,
                                     stdout=self._stderr, stderr=self._stderr)
        self.pid = self.proc.pid
        self._wait_ready()
        if configure_kernel:
            run(["ip", "addr", "add", f"{KERNEL_IP}/24", "dev", TAP], check=True, timeout=10)

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if os.path.exists(self.socket) and TAP in interfaces():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"lvlipd exited with {self.proc.returncode} before serving:\n{self.stderr()}")
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"lvlipd did not create {self.socket} within {READY_TIMEOUT} s:\n{self.stderr()}")

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stats(self) -> dict:
        result = run([bin_dir() / "lvlipctl", "stat", "--socket", self.socket, "--zeros"], timeout=10)
        assert result.returncode == 0, f"lvlipctl stat failed ({result.returncode}): {result.stderr}"
        return parse_stats(result.stdout)

    def wait_for(self, predicate, timeout=5.0, what="condition"):
        """Polls stats() until predicate(stats) holds; returns the last stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; stats: {stats}")
            time.sleep(0.02)

    def terminate(self, timeout=STOP_TIMEOUT) -> int:
        """SIGTERM, then wait; returns the exit status (SIGKILL and an error if it hangs)."""
        if self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"lvlipd (pid {self.pid}) ignored SIGTERM for {timeout} s")
        self._stderr.close()
        return self.returncode

    def lvlip_env(self, base=None) -> dict:
        """Environment that runs a program with its TCP sockets on this daemon (what
        `scripts/lvlip` sets up): LD_PRELOAD of the shim and LVLIP_SOCKET."""
        env = dict(os.environ if base is None else base)
        env["LD_PRELOAD"] = str(shim_path())
        env["LVLIP_SOCKET"] = self.socket
        return env

    def lvlip(self, *args) -> list:
        """argv running args through scripts/lvlip against this daemon (pass env=lvlip_env())."""
        return [str(REPO / "scripts" / "lvlip"), *[str(a) for a in args]]

    def kill(self):
        """SIGKILL, as a crash would; the fixture then expects no clean exit."""
        self.killed = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
        self.returncode = self.proc.returncode


# MARK: - ping / arping


PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received(?:, \+\d+ errors)?, ([\d.]+)% packet loss")


def ping(*args, timeout=30, env=None):
    """Runs ping (under lvlip with env=daemon.lvlip_env()); returns (CompletedProcess,
    transmitted, received, loss percent)."""
    result = run(["ping", *args], timeout=timeout, env=env)
    match = PING_SUMMARY.search(result.stdout)
    assert match, f"no ping summary in:\n{result.stdout}\n{result.stderr}"
    return result, int(match[1]), int(match[2]), float(match[3])


# MARK: - Frames


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_address(text: str) -> bytes:
    return socket.inet_aton(text)


def ethernet(destination: bytes, source: bytes, ethertype: int, payload: bytes) -> bytes:
    return destination + source + struct.pack("!H", ethertype) + payload


def ipv4_header(payload_length: int, proto: int = 1, source: str = KERNEL_IP, destination: str = STACK_IP,
                identification: int = 0, more_fragments: bool = False, offset: int = 0, ttl: int = 64,
                version: int = 4, ihl: int = 5, total_length=None, good_checksum=True) -> bytes:
    """A 20-byte IPv4 header (fields may be made invalid on purpose)."""
    flags = (0x2000 if more_fragments else 0) | (offset // 8)
    total = 20 + payload_length if total_length is None else total_length
    header = bytearray(struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, total, identification, flags, ttl,
                                   proto, 0, ip_address(source), ip_address(destination)))
    csum = checksum(bytes(header))
    if not good_checksum:
        csum ^= 0x5A5A
    header[10:12] = struct.pack("!H", csum)
    return bytes(header)


def ipv4(payload: bytes, **fields) -> bytes:
    return ipv4_header(len(payload), **fields) + payload


def icmp_echo(identifier: int, sequence: int, data: bytes, good_checksum=True, kind=8) -> bytes:
    message = bytearray(struct.pack("!BBHHH", kind, 0, 0, identifier, sequence) + data)
    csum = checksum(bytes(message))
    if not good_checksum:
        csum ^= 0x0F0F
    message[2:4] = struct.pack("!H", csum)
    return bytes(message)


def arp(operation: int, sender_mac: bytes, sender_ip: str, target_mac: bytes, target_ip: str,
        hardware_type: int = 1, protocol_type: int = ETHERTYPE_IPV4) -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", hardware_type, protocol_type, 6, 4, operation, sender_mac,
                       ip_address(sender_ip), target_mac, ip_address(target_ip))


class RawLink:
    """AF_PACKET access to the kernel side of tap0: frames sent here go to lvlipd. The socket
    binds protocol 0, so it receives nothing."""

    def __init__(self):
        self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.tx.bind((TAP, 0))
        self.mac = self.tx.getsockname()[4]

    def send(self, frame: bytes) -> int:
        return self.tx.send(frame)

    def close(self):
        self.tx.close()
