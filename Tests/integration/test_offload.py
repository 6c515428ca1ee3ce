"""Segmentation and checksum offload on output, against the kernel over tap0: a program under
lvlip uploads to a kernel receiver, and lvlipd writes TCP super-segments of up to 64 KB with a
virtio-net header (gso_type TCPV4, gso_size the MSS, the checksum left partial) that the
kernel accepts whole; `--no-offload` keeps one MTU frame per segment. Every transfer is
compared byte for byte, and the retransmissions of a lossless link counted."""

import struct

from harness import KERNEL_IP, STACK_IP
from kernel_servers import KernelServer, pattern_sink
from pattern import pattern_digest
from tcp_helpers import peer_results, start_peer

MB = 1 << 20


def upload(procs, total, seed):
    """A program under lvlip sends `total` bytes of the seeded pattern to a kernel sink."""
    server = KernelServer(0, pattern_sink, timeout=120)
    try:
        peer = start_peer(procs, "upload", "upload", KERNEL_IP, server.port, total, seed)
        (received, mismatch, digest), = server.wait(timeout=130)
    finally:
        server.close()
    assert (received, mismatch, digest) == (total, None, pattern_digest(seed, total))
    result, = peer_results(peer, procs)
    assert result["status"] == "OK", result
    procs.finish(peer, timeout=10)


def sent_counters(daemon):
    stats = daemon.stats()
    return stats["TcpOutSegs"], stats["TapWrites"], stats["TcpRetransSegs"]


def test_upload_leaves_as_super_segments(daemon, procs):
    segments0, writes0, retransmitted0 = sent_counters(daemon)
    upload(procs, 40 * MB, seed=21)
    segments, writes, retransmitted = (a - b for a, b in zip(sent_counters(daemon), (segments0, writes0, retransmitted0)))
    assert segments >= 40 * MB // 1448, (segments, writes)
    # Most data segments share a frame with others (each write carries up to 44).
    assert writes * 4 < segments, f"{writes} TAP writes for {segments} segments"
    # A lossless link: the few allowed are tail loss probes after a stall of the machine.
    assert retransmitted * 200 <= segments, f"{retransmitted} of {segments} segments retransmitted"


def test_without_offload_every_segment_is_a_frame(start_daemon, procs_for):
    daemon = start_daemon("--no-offload")
    procs = procs_for(daemon)
    segments0, writes0, _ = sent_counters(daemon)
    upload(procs, 10 * MB, seed=22)
    segments, writes, _ = (a - b for a, b in zip(sent_counters(daemon), (segments0, writes0, 0)))
    assert segments >= 10 * MB // 1448
    assert writes >= segments, f"{writes} TAP writes for {segments} segments"


def tcp_checksum_ok(frame: bytes) -> bool:
    ihl = (frame[14] & 0x0F) * 4
    total = struct.unpack("!H", frame[16:18])[0]
    segment = frame[14 + ihl:14 + total]
    pseudo = frame[26:34] + struct.pack("!BBH", 0, 6, len(segment))
    data = pseudo + segment + (b"\0" if len(segment) % 2 else b"")
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def test_pcap_shows_super_segments_with_their_checksums_finished(start_daemon, procs_for, workdir):
    capture = workdir / "offload.pcap"
    daemon = start_daemon("--pcap", str(capture))
    procs = procs_for(daemon)
    upload(procs, 4 * MB, seed=23)
    assert daemon.terminate() == 0
    sent = []
    with open(capture, "rb") as f:
        f.read(24)
        while header := f.read(16):
            _, _, length, _ = struct.unpack("<IIII", header)
            frame = f.read(length)
            if frame[12:14] == b"\x08\x00" and frame[23] == 6 and frame[26:30] == bytes(map(int, STACK_IP.split("."))):
                sent.append(frame)
    large = [f for f in sent if len(f) > 1514]
    assert large, "no super-segment in the capture"
    assert max(len(f) for f in large) <= 65535 + 14
    bad = [i for i, f in enumerate(sent) if not tcp_checksum_ok(f)]
    assert not bad, f"{len(bad)} of {len(sent)} TCP frames with a wrong checksum in the capture"
