"""IPv6: lvlipd's addresses answer neighbour discovery and the kernel's ping -6, large pings
in fragments both ways; Packet Too Big lowers the path MTU; a default router comes from a
router advertisement or --gateway6. UDP to a closed port is refused with Port Unreachable,
and UDP's checksum is mandatory."""

import errno
import socket
import struct
import time

import pytest

from harness import TAP, bin_dir, interfaces, ping, require_tool, run

STACK_IP6 = "fd00::4"
KERNEL_IP6 = "fd00::5"
STACK_MAC = "02:00:0a:00:00:04"
# The modified EUI-64 of 02:00:0a:00:00:04 (RFC 4291 appendix A).
STACK_LINK_LOCAL = "fe80::aff:fe00:4"


def start_ipv6_daemon(start_daemon, *extra):
    """lvlipd with fd00::4/64 beside 10.0.0.4/24, the kernel side fd00::5/64 (nodad: no wait
    for the kernel's own DAD), and lvlipd's DAD finished."""
    daemon = start_daemon("--addr", f"{STACK_IP6}/64", *extra, ipv6=True)
    run(["ip", "-6", "addr", "add", f"{KERNEL_IP6}/64", "dev", TAP, "nodad"], check=True, timeout=10)
    daemon.wait_for(lambda s: s["Ip6TentativeAddresses"] == 0, timeout=5, what="lvlipd's DAD")
    return daemon


def delta(before, after, name):
    return after[name] - before[name]


def test_ping6_global_and_link_local(start_daemon):
    daemon = start_ipv6_daemon(start_daemon)
    before = daemon.stats()
    result, sent, received, loss = ping("-6", "-c", "5", "-i", "0.05", "-W", "1", STACK_IP6)
    assert (sent, received, loss) == (5, 5, 0.0), result.stdout + result.stderr
    result, sent, received, loss = ping("-6", "-c", "5", "-i", "0.05", "-W", "1", f"{STACK_LINK_LOCAL}%{TAP}")
    assert (sent, received, loss) == (5, 5, 0.0), result.stdout + result.stderr
    after = daemon.stats()
    assert delta(before, after, "Icmp6InEchos") == 10
    assert delta(before, after, "Icmp6OutEchoReplies") == 10
    assert delta(before, after, "Icmp6InNeighborSolicits") >= 1
    assert delta(before, after, "Icmp6OutNeighborAdvertisements") >= 1
    assert after["Icmp6InErrors"] == 0 and after["Ip6InHdrErrors"] == 0
    assert daemon.alive()


def test_kernel_neighbour_table_learns_lvlip_and_lvlipctl_shows_its_cache(start_daemon):
    daemon = start_ipv6_daemon(start_daemon)
    result, _, received, _ = ping("-6", "-c", "2", "-i", "0.1", "-W", "1", STACK_IP6)
    assert received == 2, result.stdout
    neigh = run(["ip", "-6", "neigh", "show", "dev", TAP], check=True).stdout
    line = next((l for l in neigh.splitlines() if l.startswith(STACK_IP6 + " ")), "")
    assert f"lladdr {STACK_MAC}" in line, neigh
    shown = run([bin_dir() / "lvlipctl", "neigh", "--socket", daemon.socket], check=True).stdout
    assert any(l.startswith(KERNEL_IP6 + " ") and "lladdr" in l for l in shown.splitlines()), shown
    assert f"inet6 {STACK_LINK_LOCAL}/64 preferred" in shown, shown
    assert f"inet6 {STACK_IP6}/64 preferred" in shown, shown
    assert daemon.stats()["Ndp6Entries"] >= 1


def test_multicast_ping_is_answered(start_daemon):
    daemon = start_ipv6_daemon(start_daemon)
    before = daemon.stats()
    # ff02::1 through tap0: the kernel answers itself too, and ping may stop at its own
    # answers, so lvlip's second reply is waited for in its counters. The kernel sends from
    # its global address, so lvlip answers from its own (RFC 6724 source selection).
    result = run(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", f"ff02::1%{TAP}"], timeout=30)
    assert f"from {STACK_IP6}:" in result.stdout, result.stdout + result.stderr
    daemon.wait_for(lambda s: delta(before, s, "Icmp6OutEchoReplies") == 2, what="two replies to ff02::1")


def test_udp_to_a_closed_port_is_refused_with_port_unreachable(start_daemon):
    daemon = start_ipv6_daemon(start_daemon)
    before = daemon.stats()
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.settimeout(3)
        s.connect((STACK_IP6, 9))
        s.send(b"hello")
        with pytest.raises(ConnectionRefusedError):
            s.recv(100)
    finally:
        s.close()
    after = daemon.stats()
    assert delta(before, after, "Udp6NoPorts") == 1
    assert delta(before, after, "Icmp6OutDestUnreachs") == 1


def udp6_checksum(source, destination, datagram):
    """The UDP checksum over the IPv6 pseudo-header (RFC 8200 8.1), as the sender computes it."""
    data = (socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, destination)
            + struct.pack("!II", len(datagram), socket.IPPROTO_UDP) + datagram)
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_udp_without_a_right_checksum_is_dropped(start_daemon):
    """RFC 8200 8.1: over IPv6 a zero UDP checksum is an error, not "none" as over IPv4. A raw
    socket sends the datagrams as written (the kernel fills no checksum for IPPROTO_UDP)."""
    daemon = start_ipv6_daemon(start_daemon)
    before = daemon.stats()
    header = struct.pack("!HHH", 40000, 9, 12)
    good = udp6_checksum(KERNEL_IP6, STACK_IP6, header + b"\0\0" + b"ping")
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_UDP)
    try:
        s.bind((KERNEL_IP6, 0))
        for checksum in (0, good ^ 0x0100):
            s.sendto(header + struct.pack("!H", checksum) + b"ping", (STACK_IP6, 0))
        daemon.wait_for(lambda st: delta(before, st, "Udp6InCsumErrors") == 2, what="two checksum errors")
        # The right checksum reaches UDP: port 9 is closed.
        s.sendto(header + struct.pack("!H", good) + b"ping", (STACK_IP6, 0))
        daemon.wait_for(lambda st: delta(before, st, "Udp6NoPorts") == 1, what="the closed port")
    finally:
        s.close()
    after = daemon.stats()
    assert delta(before, after, "Udp6InErrors") == 2
    assert delta(before, after, "Icmp6OutDestUnreachs") == 1


def test_unknown_next_header_gets_parameter_problem(start_daemon):
    daemon = start_ipv6_daemon(start_daemon)
    before = daemon.stats()
    # A raw IPv6 socket of protocol 253 (experimental, RFC 3692): lvlip knows no such header.
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 253)
    try:
        s.sendto(b"\0" * 8, (STACK_IP6, 0))
        daemon.wait_for(lambda st: delta(before, st, "Icmp6OutParmProblems") == 1, what="a parameter problem")
    finally:
        s.close()
    assert delta(before, daemon.stats(), "Ip6InUnknownProtos") == 1


def test_pcap_records_ipv6(start_daemon, workdir):
    require_tool("tshark")
    capture = workdir / "lvlipd6.pcap"
    daemon = start_ipv6_daemon(start_daemon, "--pcap", str(capture))
    result, _, received, _ = ping("-6", "-c", "2", "-i", "0.1", "-W", "1", STACK_IP6)
    assert received == 2, result.stdout
    assert daemon.terminate() == 0
    shown = run(["tshark", "-n", "-r", capture], timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert sum("Echo (ping) reply" in l and "ICMPv6" in l for l in lines) == 2, shown.stdout
    assert any("Neighbor Solicitation" in l and "from ::" not in l for l in lines), shown.stdout
    assert any("Neighbor Advertisement" in l for l in lines), shown.stdout


def test_daemon_with_ipv6_off_on_the_kernel_side(start_daemon):
    # The default fixture's kernel side has no IPv6: lvlipd still forms its link-local
    # address, probes it once, and IPv4 is unaffected.
    daemon = start_daemon("--addr", f"{STACK_IP6}/64")
    daemon.wait_for(lambda s: s["Ip6TentativeAddresses"] == 0, timeout=5, what="lvlipd's DAD")
    result, sent, received, loss = ping("-c", "3", "-i", "0.1", "-W", "1", "10.0.0.4")
    assert received == 3, result.stdout
    stats = daemon.stats()
    assert stats["Ndp6DADFailures"] == 0
    assert stats["Icmp6OutNeighborSolicits"] == 2
    assert daemon.alive()


def test_large_ping6_is_reassembled_and_answered_in_fragments(start_daemon):
    daemon = start_ipv6_daemon(start_daemon)
    before = daemon.stats()
    # 4008 bytes of ICMPv6: the kernel sends each request in three fragments; lvlipd
    # reassembles them and sends its reply in three fragments of its own.
    result, sent, received, loss = ping("-6", "-c", "3", "-i", "0.1", "-W", "2", "-s", "4000", STACK_IP6)
    assert (sent, received, loss) == (3, 3, 0.0), result.stdout + result.stderr
    after = daemon.stats()
    assert delta(before, after, "Ip6ReasmReqds") == 9
    assert delta(before, after, "Ip6ReasmOKs") == 3
    assert delta(before, after, "Ip6FragOKs") == 3
    assert delta(before, after, "Ip6FragCreates") == 9
    assert after["Ip6ReasmFails"] == 0 and after["Ip6FragFails"] == 0
    assert after["Ip6ReasmPending"] == 0 and after["Ip6ReasmBytes"] == 0


def ipv6_bytes(text):
    return socket.inet_pton(socket.AF_INET6, text)


def icmp6_socket(hop_limit=64):
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hop_limit)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hop_limit)
    # The kernel must not take its own advertisement for another router's.
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    return s


def routes(daemon):
    return run([bin_dir() / "lvlipctl", "route", "--socket", daemon.socket], check=True).stdout


def test_packet_too_big_lowers_the_path_mtu(start_daemon):
    daemon = start_ipv6_daemon(start_daemon)
    before = daemon.stats()
    # As a router between would send it (RFC 4443 3.2): MTU 1300, quoting a 1448-byte reply
    # of lvlipd's to the kernel's address; the kernel computes the ICMPv6 checksum.
    quoted = struct.pack("!IHBB", 0x60000000, 1448, 58, 64) + ipv6_bytes(STACK_IP6) + ipv6_bytes(KERNEL_IP6)
    quoted += bytes([129, 0, 0, 0]) + bytes(1444)
    s = icmp6_socket()
    try:
        s.sendto(struct.pack("!BBHI", 2, 0, 0, 1300) + quoted[:1232], (STACK_IP6, 0))
        daemon.wait_for(lambda st: delta(before, st, "Pmtu6Decreases") == 1, what="the path MTU lowered")
        # Quoting a packet lvlipd cannot have sent (another source): ignored (RFC 5927).
        forged = quoted[:8] + ipv6_bytes("fd00::77") + quoted[24:]
        s.sendto(struct.pack("!BBHI", 2, 0, 0, 1280) + forged[:1232], (STACK_IP6, 0))
        daemon.wait_for(lambda st: delta(before, st, "Pmtu6Ignored") == 1, what="the forged one ignored")
    finally:
        s.close()
    assert f"{KERNEL_IP6} cache expires" in routes(daemon) and "mtu 1300" in routes(daemon), routes(daemon)
    # 1448-byte replies now leave in two fragments each, which the kernel reassembles.
    result, sent, received, loss = ping("-6", "-c", "3", "-i", "0.1", "-W", "2", "-s", "1400", STACK_IP6)
    assert (sent, received, loss) == (3, 3, 0.0), result.stdout + result.stderr
    after = daemon.stats()
    assert delta(before, after, "Ip6FragOKs") == 3
    assert delta(before, after, "Ip6FragCreates") == 6
    assert delta(before, after, "Icmp6InPktTooBigs") == 2


def kernel_link_local():
    """The kernel side's link-local address, once its own DAD let it be used."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        shown = run(["ip", "-6", "-o", "addr", "show", "dev", TAP, "scope", "link"], check=True).stdout
        for line in shown.splitlines():
            if "tentative" not in line:
                return line.split()[3].split("/")[0]
        time.sleep(0.1)
    raise AssertionError("no usable link-local address on the kernel side")


def ping_from_off_link():
    """A ping from an address outside lvlipd's prefix: its replies need a router."""
    run(["ip", "-6", "addr", "add", "fd09::5/64", "dev", TAP, "nodad"], check=True, timeout=10)
    return ping("-6", "-c", "2", "-i", "0.1", "-W", "1", "-I", "fd09::5", STACK_IP6)


def test_router_advertisement_gives_the_default_router(start_daemon):
    daemon = start_ipv6_daemon(start_daemon)
    router = kernel_link_local()
    link = run(["ip", "-o", "link", "show", "dev", TAP], check=True).stdout.split()
    kernel_mac = bytes.fromhex(link[link.index("link/ether") + 1].replace(":", ""))
    result, _, received, _ = ping_from_off_link()
    assert received == 0, result.stdout
    before = daemon.stats()
    assert before["Ip6OutNoRoutes"] >= 2
    # RFC 4861 4.2 from the kernel's link-local address with hop limit 255: router lifetime
    # 1800 s, our link-layer address, MTU 1400.
    advertisement = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
    advertisement += bytes([1, 1]) + kernel_mac + struct.pack("!BBHI", 5, 1, 0, 1400)
    s = icmp6_socket(hop_limit=255)
    try:
        s.sendto(advertisement, ("ff02::1", 0, 0, socket.if_nametoindex(TAP)))
        daemon.wait_for(lambda st: delta(before, st, "Icmp6InRouterAdvertisements") == 1, what="the advertisement")
    finally:
        s.close()
    assert daemon.stats()["Ndp6RouterAdvertisementsInvalid"] == 0
    shown = routes(daemon)
    assert f"default via {router} expires" in shown and "mtu 1400" in shown, shown
    result, sent, received, loss = ping("-6", "-c", "2", "-i", "0.1", "-W", "1", "-I", "fd09::5", STACK_IP6)
    assert (sent, received) == (2, 2), result.stdout + result.stderr
    assert delta(before, daemon.stats(), "Ip6OutNoRoutes") == 0
    assert daemon.stats()["Icmp6OutRouterSolicits"] >= 1, "lvlipd solicited routers at start"


def test_gateway6_is_the_default_router(start_daemon):
    daemon = start_ipv6_daemon(start_daemon, "--gateway6", "fe80::1")
    run(["ip", "-6", "addr", "add", "fe80::1/64", "dev", TAP, "nodad"], check=True, timeout=10)
    assert "default via fe80::1\n" in routes(daemon), routes(daemon)
    result, sent, received, loss = ping_from_off_link()
    assert (sent, received) == (2, 2), result.stdout + result.stderr
    stats = daemon.stats()
    assert stats["Ip6OutNoRoutes"] == 0
    assert stats["Icmp6OutRouterSolicits"] == 0, "no solicitations with a router given"


@pytest.mark.parametrize("args, complaint", [
    (["--addr", "fd00::4/64", "--gateway6", "fe80::zz"], "--gateway6"),
    (["--addr", "fd00::4/64", "--gateway6", "ff02::2"], "--gateway6"),
    (["--addr", "fd00::4/64", "--gateway6", "fd01::1"], "link-local"),
    (["--addr", "fd00::4/64", "--gateway6", "fd00::4"], "own addresses"),
    (["--gateway6", "fd00::1"], "link-local"),
    (["--gateway6", "10.0.0.1"], "--gateway6"),
])
def test_bad_gateway6_is_a_usage_error(args, complaint, workdir):
    result = run([bin_dir() / "lvlipd", "--tap", TAP, "--socket", workdir / "bad.sock", "--addr", "10.0.0.4/24", *args],
                 timeout=10)
    assert result.returncode == 64, result.stderr
    assert "Usage: lvlipd" in result.stderr and complaint in result.stderr, result.stderr
    assert TAP not in interfaces()
