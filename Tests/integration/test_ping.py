"""ICMP echo through the kernel's own ping: fast, large (fragmented both ways), small MTU,
broadcast, Protocol and Port Unreachable, and RST for a closed TCP port."""

import errno
import json
import socket
import subprocess
import sys
import time

import pytest

from harness import KERNEL_IP, STACK_IP, TAP, bin_dir, ping, run


def delta(before, after, name):
    return after[name] - before[name]


def test_fast_ping_loses_nothing(start_daemon):
    # IPv6 stays on here: the kernel's router solicitations and MLD reports arrive on the TAP
    # at once and must not disturb anything.
    daemon = start_daemon(ipv6=True)
    before = daemon.stats()
    result, sent, received, loss = ping("-c", "200", "-i", "0.002", "-W", "1", STACK_IP)
    assert (sent, received, loss) == (200, 200, 0.0), result.stdout
    assert result.returncode == 0
    after = daemon.stats()
    assert delta(before, after, "IcmpInEchos") == 200
    assert delta(before, after, "IcmpOutEchoReps") == 200
    assert after["IcmpInErrors"] == 0 and after["IpInHdrErrors"] == 0
    assert daemon.alive()


def test_ping_of_full_mtu_is_not_fragmented(daemon):
    before = daemon.stats()
    result, sent, received, loss = ping("-c", "3", "-i", "0.2", "-s", "1472", "-W", "1", STACK_IP)
    assert (sent, received, loss) == (3, 3, 0.0), result.stdout
    assert "1480 bytes from 10.0.0.4" in result.stdout
    after = daemon.stats()
    assert delta(before, after, "IcmpOutEchoReps") == 3
    assert delta(before, after, "IpReasmReqds") == 0
    assert delta(before, after, "IpFragCreates") == 0


def test_ping_of_8000_bytes_is_reassembled_and_fragmented(daemon):
    before = daemon.stats()
    result, sent, received, loss = ping("-c", "3", "-i", "0.2", "-s", "8000", "-W", "1", STACK_IP)
    assert (sent, received, loss) == (3, 3, 0.0), result.stdout
    assert "8008 bytes from 10.0.0.4" in result.stdout
    after = daemon.stats()
    # 8008 bytes of ICMP over a 1500-byte MTU: 5 x 1480 + 608, i.e. 6 fragments each way.
    assert delta(before, after, "IpReasmReqds") == 18
    assert delta(before, after, "IpReasmOKs") == 3
    assert delta(before, after, "IpReasmFails") == 0
    assert delta(before, after, "IpFragOKs") == 3
    assert delta(before, after, "IpFragCreates") == 18
    assert after["IpReasmPending"] == 0


def test_ping_of_maximum_size(daemon):
    before = daemon.stats()
    # 65507 + 8 + 20 = 65535, the largest IPv4 datagram: 45 fragments each way.
    result, sent, received, loss = ping("-c", "2", "-i", "0.2", "-s", "65507", "-W", "2", STACK_IP)
    assert (sent, received, loss) == (2, 2, 0.0), result.stdout
    after = daemon.stats()
    assert delta(before, after, "IpReasmOKs") == 2
    assert delta(before, after, "IpFragCreates") == 90
    assert delta(before, after, "IpFragFails") == 0


def test_small_mtu_fragments_both_ways(start_daemon):
    daemon = start_daemon("--mtu", "576")
    link = run(["ip", "-o", "link", "show", TAP], check=True).stdout
    assert " mtu 576 " in link, link
    before = daemon.stats()
    result, sent, received, loss = ping("-c", "3", "-i", "0.2", "-s", "1400", "-W", "1", STACK_IP)
    assert (sent, received, loss) == (3, 3, 0.0), result.stdout
    after = daemon.stats()
    # 1408 bytes of ICMP in fragments of at most 552 (556 rounded down to 8): 3 per datagram.
    assert delta(before, after, "IpReasmReqds") == 9
    assert delta(before, after, "IpReasmOKs") == 3
    assert delta(before, after, "IpFragCreates") == 9


def test_broadcast_ping_is_ignored(daemon):
    before = daemon.stats()
    result, sent, received, _ = ping("-b", "-c", "2", "-i", "0.2", "-W", "1", "10.0.0.255")
    assert received == 0 and sent == 2, result.stdout
    after = daemon.stats()
    assert delta(before, after, "IcmpInEchos") == 2
    assert delta(before, after, "IcmpInBroadcastEchoIgnored") == 2
    assert delta(before, after, "IcmpOutEchoReps") == 0
    # Still answers unicast.
    _, _, received, _ = ping("-c", "1", "-W", "1", STACK_IP)
    assert received == 1


def test_unknown_protocol_gets_protocol_unreachable(daemon):
    """RFC 1122 3.2.2.1: a datagram for a protocol the stack does not serve (253, reserved for
    experiments) is answered with ICMP Protocol Unreachable."""
    before = daemon.stats()
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, 253) as raw:
        raw.sendto(b"hello", (STACK_IP, 0))
    after = daemon.wait_for(lambda s: delta(before, s, "IcmpOutDestUnreachs") >= 1, what="the unreachable")
    assert delta(before, after, "IpInUnknownProtos") == 1
    assert delta(before, after, "IcmpOutDestUnreachs") == 1


def test_udp_to_closed_port_is_refused(daemon):
    """RFC 1122 4.1.3.1: a datagram to a port nobody holds gets Port Unreachable, which a
    connected kernel socket reports as ECONNREFUSED."""
    before = daemon.stats()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(3)
        udp.connect((STACK_IP, 9))
        udp.send(b"hello")
        with pytest.raises(OSError) as raised:
            udp.recv(100)
        assert raised.value.errno == errno.ECONNREFUSED, raised.value
    after = daemon.stats()
    assert delta(before, after, "UdpNoPorts") == 1
    assert delta(before, after, "IcmpOutDestUnreachs") == 1


def test_tcp_connect_to_closed_port_is_refused(daemon):
    """RFC 9293 3.10.7.1: a SYN to a port nobody listens on is answered with RST, which the
    kernel's connect reports as ECONNREFUSED at once."""
    before = daemon.stats()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.settimeout(5)
        with pytest.raises(OSError) as raised:
            tcp.connect((STACK_IP, 80))
        assert raised.value.errno == errno.ECONNREFUSED, raised.value
    after = daemon.stats()
    assert delta(before, after, "TcpOutRsts") == 1
    assert delta(before, after, "TcpExtNoSocket") == 1
    assert delta(before, after, "IpInUnknownProtos") == 0


# MARK: - lvlip ping: ICMP sockets on the stack


def lvlip_ping(daemon, *args, timeout=30):
    """ping run under lvlip (its ICMP socket served by lvlipd); (result, sent, received, loss)."""
    return ping(*args, timeout=timeout, env=daemon.lvlip_env())


@pytest.mark.parametrize("args,count,size", [
    (("-c", "3", "-i", "0.2"), 3, 64),
    (("-c", "3", "-i", "0.2", "-s", "8000"), 3, 8008),       # fragmented both ways
    (("-c", "300", "-f"), 300, 64),                          # flood: as fast as replies come
    (("-c", "100", "-i", "0.01"), 100, 64),
], ids=["plain", "8000", "flood", "interval"])
def test_lvlip_ping_measures_the_stack(daemon, args, count, size):
    """As root in this namespace (ping_group_range "1 0") ping falls back to a raw ICMP
    socket; lvlipd serves it, so its echoes leave from the stack, counted there, and its
    round trips are lvlip's."""
    before = daemon.stats()
    result, sent, received, loss = lvlip_ping(daemon, *args, "-W", "2", KERNEL_IP)
    assert (sent, received, loss) == (count, count, 0.0), result.stdout + result.stderr
    if "-f" not in args:
        assert f"{size} bytes from {KERNEL_IP}: icmp_seq=1 ttl=64" in result.stdout, result.stdout
    after = daemon.stats()
    assert delta(before, after, "IcmpOutEchos") == count
    assert delta(before, after, "IcmpInEchoReps") == count
    if size > 1500:
        assert delta(before, after, "IpFragCreates") >= 2 * count and delta(before, after, "IpReasmOKs") == count


@pytest.mark.parametrize("target", ["127.0.0.1", STACK_IP])
def test_lvlip_ping_over_the_stacks_loopback(daemon, target):
    """ping under lvlip to the stack's own addresses: the echo goes round inside lvlipd (the
    stack answers itself over its loopback), nothing on the TAP."""
    before = daemon.stats()
    result, sent, received, loss = lvlip_ping(daemon, "-c", "3", "-i", "0.2", "-s", "20000", "-W", "2", target)
    assert (sent, received, loss) == (3, 3, 0.0), result.stdout + result.stderr
    assert f"20008 bytes from {target}: icmp_seq=1" in result.stdout, result.stdout
    after = daemon.stats()
    assert delta(before, after, "IcmpOutEchos") == 3 and delta(before, after, "IcmpOutEchoReps") == 3
    assert delta(before, after, "LoopbackDatagrams") == 6
    assert delta(before, after, "IpFragCreates") == 0, "a loopback datagram is never fragmented"


PING_SOCKET = """
import errno, json, os, socket, struct, sys, time

def checksum(b):
    b += bytes(len(b) % 2)
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF

def attempt(kind, proto=socket.IPPROTO_ICMP):
    try:
        s = socket.socket(socket.AF_INET, kind, proto)
    except OSError as error:
        return errno.errorcode[error.errno]
    s.settimeout(3)
    if kind == socket.SOCK_DGRAM:
        s.bind(("0.0.0.0", 0))
        identifier = s.getsockname()[1]
        s.sendto(struct.pack("!BBHHH", 8, 0, 0, 1234, 1) + b"lvlip", (sys.argv[1], 0))
        reply, source = s.recvfrom(2048)
        # The stack put its identifier in (the one getsockname names) and the checksum.
        _, _, _, rid, seq = struct.unpack("!BBHHH", reply[:8])
        return {"source": source[0], "type": reply[0], "id_is_name": rid == identifier, "seq": seq,
                "data": reply[8:].decode(), "valid": checksum(reply) == 0}
    header = struct.pack("!BBHHH", 8, 0, 0, 4321, 7) + b"raw"
    message = header[:2] + struct.pack("!H", checksum(header)) + header[4:]
    s.sendto(message, (sys.argv[1], 0))
    while True:
        packet, source = s.recvfrom(2048)
        ihl = (packet[0] & 15) * 4
        if packet[ihl] == 0:
            return {"source": source[0], "ttl": packet[8], "id": struct.unpack("!H", packet[ihl + 4:ihl + 6])[0],
                    "data": packet[ihl + 8:].decode()}

out = {"dgram": attempt(socket.SOCK_DGRAM)}
with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
    f.write("0 0")
out["dgram_root_group"] = attempt(socket.SOCK_DGRAM)
out["raw"] = attempt(socket.SOCK_RAW)
os.setgid(65534)
os.setuid(65534)
out["raw_nobody"] = attempt(socket.SOCK_RAW)
out["dgram_nobody"] = attempt(socket.SOCK_DGRAM)
print(json.dumps(out))
"""


@pytest.fixture
def ping_group_range():
    path = "/proc/sys/net/ipv4/ping_group_range"
    with open(path) as f:
        saved = f.read()
    yield
    with open(path, "w") as f:
        f.write(saved)


def run_ping_socket_program(daemon=None):
    result = run([sys.executable, "-c", PING_SOCKET, KERNEL_IP], timeout=30,
                 env=daemon.lvlip_env() if daemon else None)
    assert result.returncode == 0, result.stdout + result.stderr
    with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
        f.write("1 0")
    return json.loads(result.stdout.splitlines()[-1])


def test_icmp_sockets_as_linux_offers_them(daemon, ping_group_range):
    """Ping sockets for the groups of net.ipv4.ping_group_range (EACCES otherwise), raw ICMP
    sockets with CAP_NET_RAW (EPERM otherwise): the same program on the kernel and on lvlip."""
    with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
        f.write("1 0")
    before = daemon.stats()
    stack = run_ping_socket_program(daemon)
    after = daemon.stats()
    kernel = run_ping_socket_program()
    assert stack == kernel, (stack, kernel)
    assert stack["dgram"] == "EACCES" and stack["raw_nobody"] == "EPERM" and stack["dgram_nobody"] == "EACCES", stack
    assert stack["dgram_root_group"] == {"source": KERNEL_IP, "type": 0, "id_is_name": True, "seq": 1,
                                         "data": "lvlip", "valid": True}, stack
    assert stack["raw"] == {"source": KERNEL_IP, "ttl": 64, "id": 4321, "data": "raw"}, stack
    assert delta(before, after, "IcmpOutEchos") == 2 and delta(before, after, "IcmpInEchoReps") == 2, \
        {k: delta(before, after, k) for k in ("IcmpOutEchos", "IcmpInEchoReps")}


def test_lvlipctl_ss_lists_icmp_sockets(daemon):
    """`lvlipctl ss -w` shows ping's raw socket and its owner while it runs, as ss -wp does."""
    ping_proc = subprocess.Popen(["ping", "-c", "50", "-i", "0.1", KERNEL_IP], env=daemon.lvlip_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        listing = ""
        while time.monotonic() < deadline:
            listing = run([bin_dir() / "lvlipctl", "ss", "-w", "--socket", daemon.socket]).stdout
            if f'users:(("ping",pid={ping_proc.pid}' in listing:
                break
            time.sleep(0.1)
        assert f'users:(("ping",pid={ping_proc.pid}' in listing and "UNCONN" in listing, listing
        tcp_only = run([bin_dir() / "lvlipctl", "ss", "--socket", daemon.socket]).stdout
        assert "ping" not in tcp_only, tcp_only
    finally:
        ping_proc.kill()
        ping_proc.wait(5)


def test_lvlip_ping_to_a_silent_neighbour_says_host_unreachable(daemon):
    """Nothing answers ARP for 10.0.0.9: when lvlipd gives up, each lost echo is answered by a
    Host Unreachable from the stack to itself (as Linux's ipv4_link_failure); ping reads it
    from its raw socket's error queue (IP_RECVERR) and prints it, as with the kernel."""
    result, sent, received, loss = lvlip_ping(daemon, "-c", "8", "-i", "0.5", "-W", "1", "10.0.0.9", timeout=40)
    assert received == 0 and loss == 100.0, result.stdout
    assert "From 10.0.0.4 icmp_seq=1 Destination Host Unreachable" in result.stdout, result.stdout
    stats = daemon.stats()
    assert stats["ArpResolutionFailures"] >= 1 and stats["IcmpOutDestUnreachs"] >= 1, stats
