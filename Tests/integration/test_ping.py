"""ICMP echo through the kernel's own ping: fast, large (fragmented both ways), small MTU,
broadcast, Protocol and Port Unreachable, and RST for a closed TCP port."""

import errno
import socket

import pytest

from harness import STACK_IP, TAP, ping, run


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
