"""A hostile TCP peer against a real program on the stack (issue 17): raw frames from the
kernel side of tap0 play the peer (rawpeer.py); a server under lvlip is the victim. Each
scenario checks what the program received (byte-exact), what lvlipd answered, and its
counters."""

import os
import struct
import time

import pytest

from harness import STACK_IP, checksum, ipv4_header
from rawpeer import (ACK, FIN, PEER_IP, RST, SYN, PeerConnection, RawPeer, mss_option, sack_option, seq_diff,
                     source_bytes, start_stack_server, server_result, window_scale_option)

PORT = 7000


@pytest.fixture
def peer():
    p = RawPeer()
    yield p
    p.close()


def pattern(n, salt=0):
    return bytes((i * 13 + salt) & 0xFF for i in range(n))


def finish_sink(conn, proc, procs, sent: bytes):
    """Closes our side; the sink on the stack must have read exactly `sent`, without error."""
    conn.send(FIN | ACK)
    conn.snd += 1
    result = server_result(proc, procs)
    assert result["error"] is None, result
    assert bytes.fromhex(result["received"]) == sent


def is_pure_ack(conn):
    return lambda s: s.flags & (ACK | SYN | RST | FIN) == ACK and not s.payload


def test_rst_and_syn_in_and_out_of_window(daemon, procs, peer):
    server = start_stack_server(procs, "sink", "sink", PORT)
    conn = PeerConnection(peer, PORT)
    conn.connect()
    first = pattern(3000)
    conn.deliver(first)
    before = daemon.stats()

    # RFC 5961 3.2: a RST inside the window but not at RCV.NXT gets a challenge ACK.
    conn.send(RST | ACK, seq=conn.snd + 1000)
    challenge = conn.expect(is_pure_ack(conn), what="challenge ACK for an in-window RST")
    assert challenge.ack == conn.snd & 0xFFFFFFFF and challenge.seq == conn.rcv
    # Outside the window: silently dropped.
    conn.send(RST | ACK, seq=conn.snd + 10_000_000)
    conn.send(RST, seq=conn.snd - 70_000)
    # RFC 5961 4.2: any SYN on a synchronized connection gets a challenge ACK, in window or not.
    conn.send(SYN, seq=conn.snd + 10)
    conn.expect(is_pure_ack(conn), what="challenge ACK for an in-window SYN")
    conn.send(SYN, seq=conn.snd + 50_000_000)
    conn.expect(is_pure_ack(conn), what="challenge ACK for an out-of-window SYN")
    assert peer.drain(settle=0.3) == [], "answered an out-of-window RST"

    after = daemon.stats()
    assert after["TcpExtTCPChallengeACK"] - before["TcpExtTCPChallengeACK"] == 3
    assert after["TcpEstabResets"] == before["TcpEstabResets"]
    assert after["TcpCurrEstab"] == 1

    second = pattern(2000, salt=5)
    conn.deliver(second)
    finish_sink(conn, server, procs, first + second)


def test_challenge_acks_are_rate_limited(daemon, procs, peer):
    server = start_stack_server(procs, "sink", "sink", PORT)
    conn = PeerConnection(peer, PORT)
    conn.connect()
    before = daemon.stats()
    count = 4000
    started = time.monotonic()
    for i in range(count):
        conn.send(RST | ACK, seq=conn.snd + 1 + i)
    daemon.wait_for(lambda s: s["TcpExtTCPChallengeACK"] - before["TcpExtTCPChallengeACK"] == count,
                    what="every in-window RST seen")
    # The daemon handled every RST within this time (it may lag behind our sending).
    elapsed = time.monotonic() - started
    answers = [s for s in peer.drain(settle=0.5) if s.flags & ACK and not s.flags & RST]
    # RFC 5961 7: at most 1000 per second (burst 1000), as Linux's tcp_challenge_ack_limit.
    assert 100 <= len(answers) <= 1000 + 1000 * elapsed + 10, (len(answers), elapsed)
    assert daemon.stats()["TcpCurrEstab"] == 1
    data = pattern(1500)
    conn.deliver(data)
    finish_sink(conn, server, procs, data)
    print(f"challenge ACKs: {count} RSTs in {elapsed:.2f} s, {len(answers)} answered")


def test_blind_injection_and_acks_for_unsent_data(daemon, procs, peer):
    server = start_stack_server(procs, "sink", "sink", PORT)
    conn = PeerConnection(peer, PORT)
    conn.connect()
    first = pattern(2000)
    conn.deliver(first)
    before = daemon.stats()

    # Data beyond the window and data long before it: ACKed with RCV.NXT, never delivered.
    conn.send(ACK, b"X" * 500, seq=conn.snd + 5_000_000)
    conn.expect(lambda s: s.ack == conn.snd, what="duplicate ACK for data beyond the window")
    conn.send(ACK, b"Y" * 500, seq=conn.snd - 1_000_000)
    conn.expect(lambda s: s.ack == conn.snd, what="duplicate ACK for data before the window")
    # RFC 9293 3.10.7.4: an ACK of bytes never sent is answered with an ACK and dropped
    # with its data.
    conn.send(ACK, b"Z" * 300, ack=conn.rcv + 100_000)
    conn.expect(lambda s: s.ack == conn.snd, what="ACK for an ACK of unsent data")
    # RFC 5961 5.2: an ACK far behind SND.UNA is a blind injection: challenge ACK, dropped.
    conn.send(ACK, b"W" * 300, ack=conn.rcv - 2_000_000_000)
    conn.expect(lambda s: s.ack == conn.snd, what="challenge ACK for an old ACK")
    after = daemon.stats()
    assert after["TcpExtTCPChallengeACK"] - before["TcpExtTCPChallengeACK"] == 1
    assert after["TcpCurrEstab"] == 1

    second = pattern(1000, salt=9)
    conn.deliver(second)
    finish_sink(conn, server, procs, first + second)


def test_overlapping_retransmissions_with_conflicting_bytes(daemon, procs, peer):
    server = start_stack_server(procs, "sink", "sink", PORT)
    conn = PeerConnection(peer, PORT)
    conn.connect(options=mss_option(1460) + b"\x04\x02")  # SACK permitted
    original = pattern(4000)
    forged = bytes(b ^ 0xA5 for b in original)
    base = conn.snd
    conn.deliver(original[:1000])
    # A retransmission of delivered bytes with other contents must change nothing.
    conn.send(ACK, forged[:1000], seq=base)
    conn.send(ACK, forged[500:1200], seq=base + 500)  # 200 new bytes, forged
    time.sleep(0.2)
    # Out of order, then overlapping pieces that disagree with what is queued.
    conn.send(ACK, original[2000:3000], seq=base + 2000)
    conn.send(ACK, forged[1500:2500], seq=base + 1500)
    conn.send(ACK, original[1200:2200], seq=base + 1200)
    conn.send(ACK, forged[2800:3500], seq=base + 2800)
    conn.send(ACK, original[2500:3500], seq=base + 2500)
    conn.send(ACK, original[3500:4000], seq=base + 3500)
    conn.snd = base + 4000
    conn.expect(lambda s: s.ack == conn.snd & 0xFFFFFFFF, what="ACK of all 4000 bytes")
    conn.send(FIN | ACK)
    conn.snd += 1
    result = server_result(server, procs)
    assert result["error"] is None
    got = bytes.fromhex(result["received"])
    # Exactly 4000 bytes, each from one of the two versions, and the bytes delivered before
    # any forgery arrived are the original ones.
    assert len(got) == 4000, len(got)
    assert got[:1000] == original[:1000]
    assert all(g in (o, f) for g, o, f in zip(got, original, forged))
    print(f"bytes kept from the forged copies: {sum(g != o for g, o in zip(got, original))}")


@pytest.mark.parametrize("options, what", [
    (b"\x02\x00" + mss_option(1460), "zero-length option"),
    (b"\x01\x01\x08\x00", "zero-length timestamp at the end"),
    (b"\x02\x28\x05\xb4", "MSS option longer than the header"),
    (b"\x03\x03", "window scale cut by the header's end"),
    (b"\x05\x30" + b"\x00" * 6, "SACK option claiming 48 bytes"),
])
def test_malformed_syn_options(daemon, procs, peer, options, what):
    """A SYN with malformed options is answered or ignored, never a crash; the listener then
    serves a well-formed connection."""
    server = start_stack_server(procs, "sink", "sink", PORT)
    bad = PeerConnection(peer, PORT, local_port=41000)
    bad.send(SYN, options=options, ack=0)
    answer = peer.next_segment(1.0, PORT)
    if answer is not None:
        assert answer.flags & (SYN | ACK) == SYN | ACK or answer.flags & RST, answer
        bad.send(RST, seq=bad.iss + 1)
    assert daemon.alive()
    conn = PeerConnection(peer, PORT)
    conn.connect()
    data = pattern(3000)
    conn.deliver(data)
    finish_sink(conn, server, procs, data)
    print(f"{what}: {'answered ' + hex(answer.flags) if answer else 'ignored'}")


def test_mss_zero_and_window_scale_above_14(daemon, procs, peer):
    total = 200_000
    server = start_stack_server(procs, "source", "source", PORT, total)
    conn = PeerConnection(peer, PORT)
    # Window field 1 with shift 15: RFC 7323 2.3 makes the shift 14, so 16384 bytes.
    conn.connect(options=mss_option(0) + window_scale_option(15), window=1)
    window = 1 << 14
    highest = 0
    deadline = time.monotonic() + 30
    while True:
        seg = conn.expect(timeout=max(0.0, deadline - time.monotonic()), what="data")
        end = seq_diff(seg.seq + len(seg.payload), conn.rcv)
        # Never beyond the right edge we advertised (RCV.NXT acknowledged + 16384).
        assert end <= window, f"sent {end} bytes past our last ACK with a {window}-byte window"
        if seg.payload:
            assert 0 < len(seg.payload) <= 536, len(seg.payload)
            highest = max(highest, len(seg.payload))
        fin_before = conn.rcv
        conn.take(seg, window=1)
        if seg.flags & FIN and conn.rcv != fin_before:
            break
    assert bytes(conn.received) == source_bytes(total)
    conn.send(FIN | ACK, window=1)
    assert server_result(server, procs)["error"] is None
    print(f"MSS 0: largest segment {highest} bytes")


def test_sack_blocks_outside_the_window(daemon, procs, peer):
    total = 100_000
    server = start_stack_server(procs, "source", "source", PORT, total)
    conn = PeerConnection(peer, PORT)
    conn.connect(options=mss_option(1460) + b"\x04\x02")
    before = daemon.stats()
    bogus = 0
    deadline = time.monotonic() + 30
    while True:
        seg = conn.expect(timeout=max(0.0, deadline - time.monotonic()), what="data")
        fin_before = conn.rcv
        conn.take(seg)
        if seg.payload and bogus < 60:
            # Duplicate ACKs whose SACK blocks lie beyond SND.NXT, before SND.UNA, or inverted.
            blocks = [[(conn.rcv + 1_000_000, conn.rcv + 1_001_000)],
                      [(conn.rcv - 500_000, conn.rcv - 400_000)],
                      [(conn.rcv + 2000, conn.rcv + 1000), (conn.rcv, conn.rcv + 0x7FFFFFFF)]][bogus % 3]
            conn.send(ACK, options=sack_option(blocks))
            bogus += 1
        if seg.flags & FIN and conn.rcv != fin_before:
            break
    assert bytes(conn.received) == source_bytes(total)
    conn.send(FIN | ACK)
    assert server_result(server, procs)["error"] is None
    after = daemon.stats()
    assert after["TcpExtTCPSackRecovery"] == before["TcpExtTCPSackRecovery"], "bogus SACK blocks started recovery"


# How long the zero window is held: 9 s (five probes, four doublings) in the suite;
# LVLIP_ZERO_WINDOW_SECONDS holds it longer (docs/reliability.md: three minutes).
ZERO_WINDOW_SECONDS = float(os.environ.get("LVLIP_ZERO_WINDOW_SECONDS", "9"))
# The persist timer backs off like the retransmission timer, up to its 120 s ceiling.
MAX_PROBE_GAP = 120.0


def test_zero_window_held(daemon, procs, peer):
    """The peer closes its window (9 s by default): the stack probes with backoff (RFC 9293
    3.8.6.1), sends no data into the closed window, and the stream resumes intact."""
    total = 60_000
    server = start_stack_server(procs, "source", "source", PORT, total)
    conn = PeerConnection(peer, PORT)
    conn.connect(window=3000)
    # Two full segments fill the 3000-byte window (sender SWS avoidance, RFC 9293 3.8.6.2.1,
    # keeps the last 80 bytes back).
    while len(conn.received) < 2920:
        conn.take(conn.expect(lambda s: s.payload, what="the first 2920 bytes"), window=0)
    before = daemon.stats()
    held_from = time.monotonic()
    probes = []
    while time.monotonic() - held_from < ZERO_WINDOW_SECONDS:
        seg = peer.next_segment(0.2, PORT)
        if seg is None:
            continue
        assert seq_diff(seg.seq + len(seg.payload), conn.rcv) <= 1, f"data into a closed window: {seg}"
        probes.append(seg.at)
        conn.send(ACK, window=0)  # still closed
    after = daemon.stats()
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert len(probes) >= 4, probes
    assert after["TcpExtTCPWinProbe"] - before["TcpExtTCPWinProbe"] == len(probes)
    # Exponential backoff: each gap at least 1.5 times the one before, to scheduling noise.
    assert all(b >= min(1.5 * a, MAX_PROBE_GAP) - 0.05 for a, b in zip(gaps, gaps[1:])), gaps
    # The server has shut down its side (FIN-WAIT-1 with the FIN queued): nothing aborted it.
    assert after["TcpExtTCPAbortOnTimeout"] == before["TcpExtTCPAbortOnTimeout"]

    conn.send(ACK, window=65535)
    assert conn.receive_until_fin(window=65535) == source_bytes(total)
    conn.send(FIN | ACK)
    assert server_result(server, procs)["error"] is None
    print(f"zero window: {len(probes)} probes, gaps {[round(g, 2) for g in gaps]}")


def icmp_error(kind, code, quote_seq, conn, rest=0, quote_tcp=None):
    """ICMP error from the peer about a segment the stack sent it (RFC 792 quote)."""
    tcp = quote_tcp if quote_tcp is not None else struct.pack("!HHI", conn.port, conn.local_port,
                                                             quote_seq & 0xFFFFFFFF)
    quoted = ipv4_header(20, proto=6, source=STACK_IP, destination=PEER_IP) + tcp
    message = bytearray(struct.pack("!BBHI", kind, code, 0, rest) + quoted)
    message[2:4] = struct.pack("!H", checksum(bytes(message)))
    return bytes(message)


def test_icmp_errors_with_bogus_quotes_and_mtus(daemon, procs, peer):
    server = start_stack_server(procs, "sink", "sink", PORT)
    conn = PeerConnection(peer, PORT)
    conn.connect()
    first = pattern(2000)
    conn.deliver(first)
    before = daemon.stats()
    # RFC 5927 4.1: sequence numbers outside [SND.UNA, SND.MAX) are ignored.
    for seq in (conn.rcv + 100_000, conn.rcv - 1, conn.rcv + 0x80000000):
        peer.send_ip(icmp_error(3, 3, seq, conn), 1)
    # Unknown connection, and a quote too short to hold a sequence number.
    other = PeerConnection(peer, PORT + 1, local_port=45000)
    peer.send_ip(icmp_error(3, 1, 0, other), 1)
    peer.send_ip(icmp_error(3, 1, 0, conn, quote_tcp=b"\x1b\x58"), 1)
    # Fragmentation needed with nonsense MTUs (RFC 5927 5.2): 0, below 68, larger than ours.
    for mtu in (0, 20, 65535):
        peer.send_ip(icmp_error(3, 4, conn.rcv, conn, rest=mtu), 1)
    # A hard error (port unreachable) in window on an established connection is only a soft
    # error (RFC 5927 4.1, RFC 1122 4.2.3.9): the connection survives.
    peer.send_ip(icmp_error(3, 3, conn.rcv, conn), 1)
    after = daemon.wait_for(lambda s: s["IcmpInMsgs"] - before["IcmpInMsgs"] == 9, what="nine ICMP errors")
    assert after["TcpExtOutOfWindowIcmps"] - before["TcpExtOutOfWindowIcmps"] == 4
    assert after["TcpExtICMPErrors"] - before["TcpExtICMPErrors"] == 1
    assert after["TcpCurrEstab"] == 1

    second = pattern(20_000, salt=3)
    conn.deliver(second, chunk=1460)
    finish_sink(conn, server, procs, first + second)
