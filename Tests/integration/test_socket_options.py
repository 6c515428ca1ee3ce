"""Socket options answered as Linux answers them, row by row against the kernel.

clients/sockopt_probe.py runs one list of cases on sockets of one kind and prints what each
getsockopt/setsockopt gave (the bytes and length, or the errno). It runs once on kernel sockets
in the test's namespace and once under lvlip, for every kind: TCP unconnected (AF_INET and
AF_INET6), listening, connected (to a kernel server on 10.0.0.5), accepted (from a kernel
client), UDP unbound and connected. Every option number of SOL_SOCKET, IPPROTO_IP and
IPPROTO_TCP up to past Linux 6.18's last gets the same generic steps (reads of 64, 4, 1 and
0 bytes; writes of 1, 0, a 2-byte value, an empty value and -1, each followed by a read), so
that an option lvlip forgot, or one Linux added, shows up; options with rules of their own
get more steps. Every answer must be the kernel's, except where `HOST_SPECIFIC` says the value
depends on the host (then the errno and the length must still match)."""

import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import harness
from kernel_servers import KernelServer

PROBE = Path(__file__).parent / "clients" / "sockopt_probe.py"
KERNEL = harness.KERNEL_IP
STACK = harness.STACK_IP
SOL, IP, TCP, IPV6 = 1, 0, 6, 41
KINDS = ["tcp", "tcp6", "listen", "connected", "accepted", "udp", "udpconn"]


def i32(v):
    return struct.pack("<i", v).hex()


def u64(v):
    return struct.pack("<Q", v).hex()


GENERIC = [["get", 64], ["get", 4], ["get", 1], ["get", 0], ["set", i32(1)], ["get", 64], ["set", i32(0)],
           ["get", 64], ["set", "0100"], ["set", ""], ["set", i32(-1)], ["get", 64]]


def sets_then_get(*values, size=64):
    steps = []
    for v in values:
        steps += [["set", v], ["get", size]]
    return steps


# Steps beyond the generic ones: values with rules of their own (bounds, rounding, strings,
# structs), shorter reads, and reads of another option that a write changes.
EXTRA = {
    (SOL, 2): [["set", i32(1) + "00" * 2000], ["get", 64]],  # an int in a longer value
    (SOL, 7): sets_then_get(i32(5000), i32(1 << 30)) + [["get", 64, SOL, 72]],  # SO_SNDBUF locks it (SO_BUF_LOCK)
    (SOL, 8): sets_then_get(i32(5000), i32(1 << 30)) + [["get", 64, SOL, 72]],
    (SOL, 13): sets_then_get(i32(1) + i32(0), i32(1) + i32(5), i32(0) + i32(7)) + [["get", 4], ["get", 1]],
    (SOL, 18): sets_then_get(i32(100), i32(1000000)),
    (SOL, 25): sets_then_get("6c6f00", "6c6f", "6c6f" + "00" * 20, "6e6f73756368", "00", "", "74617030")
    + [["set", "6c6f00"], ["get", 2], ["get", 3], ["get", 64, SOL, 62]],
    # SO_RCVTIMEO/SO_SNDTIMEO (old: struct timeval; new: __kernel_sock_timeval), the pair's.
    (SOL, 20): sets_then_get(struct.pack("<qq", 1, 500000).hex(), struct.pack("<qq", 0, 0).hex()),
    (SOL, 21): sets_then_get(struct.pack("<qq", 2, 999999).hex(), struct.pack("<qq", 0, 1000000).hex()),
    (SOL, 66): sets_then_get(struct.pack("<qq", 3, 0).hex()),
    (SOL, 67): sets_then_get(struct.pack("<qq", 4, 1).hex()),
    (SOL, 37): sets_then_get(i32(3), i32(0x100), i32(0xff), i32(0x40000), i32(0x80000)),
    (SOL, 47): sets_then_get(u64(5), u64(1 << 40)) + [["get", 4], ["get", 8]],
    (SOL, 57): [["get", 8], ["get", 8], ["get", 7], ["get", 16]],
    (SOL, 62): sets_then_get(i32(1), i32(99)) + [["get", 64, SOL, 25]],
    (SOL, 71): [["get", 8], ["get", 16]],
    (SOL, 72): sets_then_get(i32(2), i32(3), i32(4)),
    (SOL, 74): sets_then_get(i32(2), i32(-2)),
    (IP, 1): sets_then_get(i32(0x10), i32(255), i32(256)) + [["get", 1], ["get", 2]],
    (IP, 2): sets_then_get(i32(255), i32(256), "ff") + [["get", 2]],
    (IP, 4): sets_then_get("0101", "070304", "44040500", "ff", "01" * 40, "01" * 41, "0702"),
    (IP, 9): [["set", i32(1), IP, 13], ["get", 64], ["get", 24], ["get", 20], ["get", 15], ["set", i32(1), IP, 12],
              ["get", 64], ["get", 40]],  # IP_PKTOPTIONS with IP_RECVTOS, IP_RECVTTL
    (IP, 10): sets_then_get(i32(5), i32(6)),
    (IP, 33): sets_then_get(i32(255), i32(256)),
    (IP, 51): sets_then_get(i32(0x10002), i32(0x20001), i32(0x10000)),
    (TCP, 2): sets_then_get(i32(1000), i32(88), i32(87), i32(32767), i32(32768)),
    (TCP, 4): sets_then_get(i32(32767), i32(32768)),
    (TCP, 5): sets_then_get(i32(32767), i32(32768)),
    (TCP, 6): sets_then_get(i32(127), i32(128)),
    (TCP, 7): sets_then_get(i32(127), i32(128)),
    (TCP, 8): sets_then_get(i32(30), i32(121)),
    (TCP, 9): sets_then_get(i32(2), i32(5), i32(10), i32(1000)),
    (TCP, 10): sets_then_get(i32(5000)),
    (TCP, 11): [["get", 104], ["get", 8], ["get", 512]],
    (TCP, 13): sets_then_get("637562696300", "72656e6f", "6e65777265 6e6f".replace(" ", ""), "63" * 20, "637562696300")
    + [["get", 4], ["get", 16]],
    (TCP, 14): [["set", "00" * 216]],
    (TCP, 18): sets_then_get(i32(30000)),
    (TCP, 23): sets_then_get(i32(5)),
    (TCP, 26): [["set", "637562696300", TCP, 13], ["get", 64]],
    (TCP, 27): sets_then_get(i32(2), i32(3)),
    (TCP, 31): [["set", "746c7300"]],
    (TCP, 33): sets_then_get("01" * 16, "02" * 32, "03" * 8),
    (TCP, 44): sets_then_get(i32(999), i32(1000), i32(5000), i32(120000), i32(120001)),
    (TCP, 45): sets_then_get(i32(1000), i32(5000), i32(199999), i32(200000), i32(200001)),
    (TCP, 46): sets_then_get(i32(1000), i32(5000), i32(200000), i32(200001)),
}

# Values that depend on the host rather than on the socket's semantics: compared by errno
# and length only. "default": only the reads before the first successful write (a fresh
# socket's value: buffer sizes and the congestion control algorithm are sysctls, a
# connection's MSS and window depend on the route). "all": every read. "status": before the
# first write, the errno only.
HOST_SPECIFIC = {
    (SOL, 7): "default", (SOL, 8): "default",  # tcp_wmem/tcp_rmem, autotuning
    (SOL, 28): "accepted",  # the peer's ephemeral port
    (SOL, 49): "default",  # the CPU a connection's segments came in on
    (SOL, 55): "all",  # SO_MEMINFO: buffer sizes and allocations
    (SOL, 57): "all",  # SO_COOKIE: a counter (checked apart: nonzero, stable)
    (IP, 14): "all",  # IP_MTU: the route's (lo for the kernel's peer, the TAP for lvlip's)
    (IP, 52): "all",  # IP_PROTOCOL is inet_num: the local port
    (TCP, 2): "connection",  # TCP_MAXSEG of a connection: the route's MTU
    (TCP, 10): "default",  # TCP_WINDOW_CLAMP of a connection
    (TCP, 11): "all",  # TCP_INFO: figures of the connection (its state is checked apart)
    (TCP, 13): "default",  # TCP_CONGESTION: net.ipv4.tcp_congestion_control
    (TCP, 24): "all",  # TCP_TIMESTAMP: the clock
    (TCP, 26): "status",  # TCP_CC_INFO: its length depends on the default algorithm
}

# Options lvlip answers differently on purpose (docs/shim.md, "What is not served"): their
# steps from the first successful write on the kernel are skipped.
NOT_SERVED = {
    # Repair mode: the kernel lets root (these tests) set it; lvlip refuses as for a caller
    # without CAP_NET_ADMIN.
    (TCP, 19),
}


def cases():
    out = []
    names = [(SOL, n) for n in range(1, 90)]
    names += [(IP, n) for n in range(1, 60)] + [(TCP, n) for n in range(1, 50)] + [(IPV6, 26), (IPV6, 67)]
    for level, name in names:
        out.append({"level": level, "name": name, "steps": GENERIC + EXTRA.get((level, name), [])})
    return out


def run_probe(kind, cases_path, env, host, port, connect_to=None, timeout=120):
    proc = subprocess.Popen([sys.executable, str(PROBE), kind, str(cases_path), host, str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held = []
    try:
        if kind == "accepted":
            assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
            count = len(json.loads(Path(cases_path).read_text()))
            for _ in range(count):
                held.append(socket.create_connection((connect_to, port), timeout=10))
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for s in held:
            s.close()
    assert proc.returncode == 0, f"probe {kind} failed:\n{err}"
    return json.loads(out.strip().splitlines()[-1])


class Holder(KernelServer):
    """A kernel TCP server on 10.0.0.5 that keeps every connection open until closed by the
    peer, and a UDP socket for connected UDP probes."""

    def __init__(self, port):
        super().__init__(port, host=KERNEL, backlog=1024, keep=True)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((KERNEL, port))

    def close(self):
        super().close()
        self.udp.close()


def compare(all_cases, kind, kernel, stack, host_specific=HOST_SPECIFIC):
    mismatches = []
    for case, k_steps, s_steps in zip(all_cases, kernel, stack):
        key = (case["level"], case["name"])
        rule = host_specific.get(key)
        written = False
        for index, (step, k, s) in enumerate(zip(case["steps"], k_steps, s_steps)):
            if key in NOT_SERVED and (written or step[0] == "set" and k == ["ok"]):
                written = True
                continue
            if rule == "status" and not written and step[0] == "get":
                if k[0] != s[0] or k[0] == "err" and k[1] != s[1]:
                    mismatches.append(f"{kind} level {key[0]} name {key[1]} step {index} {step}: kernel {k} lvlip {s}")
                continue
            loose = rule == "all" or (rule == "default" and not written) \
                or (rule == "accepted" and kind == "accepted") \
                or (rule == "connection" and kind in ("connected", "accepted"))
            if step[0] == "get" and loose and len(step) == 2:
                same = k[0] == s[0] and (k[0] == "err" and k[1] == s[1] or k[0] == "ok" and len(k[1]) == len(s[1]))
            else:
                same = k == s
            if not same:
                mismatches.append(f"{kind} level {key[0]} name {key[1]} step {index} {step}: kernel {k} lvlip {s}")
            if step[0] == "set" and k == ["ok"] and len(step) == 2:
                written = True
    return mismatches


def test_every_option_answers_as_the_kernel(daemon, tmp_path):
    all_cases = cases()
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(all_cases))
    holder = Holder(7301)
    plain = dict(os.environ)
    plain.pop("LD_PRELOAD", None)
    mismatches = []
    extra = {}
    try:
        for number, kind in enumerate(KINDS):
            port = 7301 if kind in ("connected", "udpconn") else 7310 + number
            kernel = run_probe(kind, path, plain, KERNEL, port, connect_to=KERNEL)
            stack = run_probe(kind, path, daemon.lvlip_env(), KERNEL if kind != "accepted" else "0.0.0.0",
                              port if kind != "accepted" else port + 10, connect_to=STACK)
            assert len(kernel) == len(stack) == len(all_cases)
            mismatches += compare(all_cases, kind, kernel, stack)
            extra[kind] = (kernel, stack)
    finally:
        holder.close()
    assert not mismatches, f"{len(mismatches)} answers differ from the kernel's:\n" + "\n".join(mismatches)

    # The host-specific values still follow their rules on lvlip.
    index = {(c["level"], c["name"]): n for n, c in enumerate(all_cases)}
    for kind, (kernel, stack) in extra.items():
        # SO_COOKIE: nonzero and the same for both reads of one socket (the EXTRA steps).
        cookie = stack[index[(SOL, 57)]][len(GENERIC):len(GENERIC) + 2]
        assert cookie[0] == cookie[1] and cookie[0][0] == "ok" and int(cookie[0][1], 16) != 0, (kind, cookie)
        info = stack[index[(TCP, 11)]]
        if kind not in ("udp", "udpconn"):
            assert info[0][1][:2] == kernel[index[(TCP, 11)]][0][1][:2], (kind, "TCP_INFO state")
        mtu = stack[index[(IP, 14)]][0]
        if kind in ("connected", "accepted", "udpconn"):
            assert mtu == ["ok", struct.pack("<i", 1500).hex()], (kind, mtu)


HOSTILE_VALUES = """
import os, random, socket, struct, sys
rng = random.Random(int(sys.argv[1]))
edges = [-2**31, -2**31 + 1, -4001, -1, 0, 1, 2, 255, 256, 65535, 65536, 2**31 - 4000, 2**31 - 2, 2**31 - 1]
kinds = [(socket.AF_INET, socket.SOCK_STREAM, 0), (socket.AF_INET, socket.SOCK_DGRAM, 0),
         (socket.AF_INET6, socket.SOCK_STREAM, 0), (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)]
calls = 0
for family, kind, proto in kinds:
    s = socket.socket(family, kind, proto)
    for level in (socket.SOL_SOCKET, socket.IPPROTO_IP, socket.IPPROTO_TCP, socket.IPPROTO_IPV6, 255):
        for name in range(0, 80):
            values = [struct.pack("i", v) for v in edges] + [os.urandom(rng.randrange(0, 300)) for _ in range(6)]
            for value in values:
                calls += 1
                try:
                    s.setsockopt(level, name, value)
                except OSError:
                    pass
                try:
                    s.getsockopt(level, name, rng.choice([0, 1, 3, 4, 8, 64, 1024]))
                except OSError:
                    pass
    s.close()
print(calls)
"""


def test_hostile_option_values_never_hurt_lvlipd(daemon):
    """Every option number of every level, set with edge values (Int32 extremes, values one
    rounding away from overflow) and random bytes, then read with odd lengths, on TCP, UDP,
    AF_INET6 and raw ICMP sockets: lvlipd answers each and keeps serving."""
    seed = int(os.environ.get("LVLIP_FUZZ_SEED", "7"))
    result = subprocess.run([sys.executable, "-c", HOSTILE_VALUES, str(seed)], env=daemon.lvlip_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(result.stdout.split()[-1]) > 30_000
    assert daemon.alive(), f"lvlipd died (seed {seed})"
    assert "lvlip:" not in result.stderr, result.stderr
