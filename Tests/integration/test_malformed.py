"""A flood of 10,000 malformed frames from the kernel side of tap0, paced and at full speed.

Each category maps to the counters it must move, so the test checks every stack counter's
change exactly: a frame counted under the wrong reason, or twice, fails it. Random frames
(seeded) are classified by a small mirror of the stack's checks; any random frame the stack
would accept as valid is redrawn, so that no frame provokes a reply. Afterwards the daemon must
still answer ping with bounded memory.
"""

import itertools
import os
import random
import socket
import struct
import threading
import time
from collections import Counter

from harness import (ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, KERNEL_IP, STACK_IP, STACK_MAC, RawLink, arp,
                     checksum, ethernet, icmp_echo, ipv4, ipv4_header, ping, rss_kib, tap_tx_dropped)
from processes import run_script

SEED = 0x1F1F_2024
TOTAL_FRAMES = 10_000
BATCH = 250
OTHER_HOST_MAC = bytes.fromhex("020000000099")
MULTICAST_MAC = bytes.fromhex("01005e0000fb")
GROUP_SOURCE_MAC = bytes.fromhex("0300deadbeef")

REASSEMBLY_LIMIT = 4 * 1024 * 1024
RSS_GROWTH_LIMIT_KIB = 16 * 1024
# The unpaced flood: frames to send at least (0: one pass of every category) and the TCP
# transfer that must be byte-exact afterwards.
FLOOD_FRAMES = int(os.environ.get("LVLIP_FLOOD_FRAMES", "0"))
TRANSFER_BYTES = int(os.environ.get("LVLIP_FLOOD_TRANSFER", str(1 << 20)))

# Counters that legitimately move without any input, or are checked separately.
NOT_EXACT = {"LinkOutFrames", "ArpOutAnnouncements", "TapWrites", "ReactorWakeups", "ReactorBusyPollHits",
             "ReactorBusyPollMicroseconds", "IpReasmFails",
             "IpReasmPending", "IpReasmBytes", "ArpEntries", "Ip6TentativeAddresses", "Ndp6Entries"}


class Flood:
    """Frames grouped in units (fragments of one datagram stay together and in order), with
    the counter increments each unit must cause."""

    def __init__(self, kernel_mac: bytes, rng: random.Random):
        self.kernel_mac = kernel_mac
        self.rng = rng
        self.units = []
        self.expected = Counter()
        self.per_category = Counter()
        self.datagrams_started = 0
        self._next_id = 0x100

    def add(self, category: str, frames, **increments):
        frames = list(frames)
        self.units.append(frames)
        self.per_category[category] += len(frames)
        self.expected.update({"LinkInFrames": len(frames), "TapReads": len(frames)})
        self.expected.update(increments)

    def frame_count(self):
        return sum(len(unit) for unit in self.units)

    def to_us(self, ethertype: int, payload: bytes) -> bytes:
        return ethernet(STACK_MAC, self.kernel_mac, ethertype, payload)

    def identification(self) -> int:
        self._next_id += 1
        return self._next_id

    def echo(self, size=None) -> bytes:
        size = self.rng.randrange(0, 200) if size is None else size
        return icmp_echo(0x4242, self.rng.randrange(1 << 16), self.rng.randbytes(size))


def ip_frame(flood: Flood, payload: bytes) -> bytes:
    return flood.to_us(ETHERTYPE_IPV4, payload)


def build_categories(flood: Flood):
    rng = flood.rng
    ip = dict(IpInReceives=1, IpInHdrErrors=1)

    for _ in range(400):  # Fewer than 20 bytes of IP header.
        flood.add("ip-truncated-header", [ip_frame(flood, ipv4(flood.echo())[:rng.randrange(0, 20)])], **ip)
    for _ in range(400):
        flood.add("ip-bad-checksum", [ip_frame(flood, ipv4(flood.echo(), good_checksum=False))],
                  IpInCsumErrors=1, **ip)
    for _ in range(400):
        version = rng.choice([v for v in range(16) if v != 4])
        flood.add("ip-bad-version", [ip_frame(flood, ipv4(flood.echo(), version=version))], **ip)
    for _ in range(200):
        flood.add("ip-ihl-below-5", [ip_frame(flood, ipv4(flood.echo(), ihl=rng.randrange(0, 5)))], **ip)
    for _ in range(200):  # The header claims more bytes than the frame holds.
        ihl = rng.randrange(6, 16)
        datagram = ipv4_header(0, ihl=ihl) + rng.randbytes(rng.randrange(0, ihl * 4 - 20))
        flood.add("ip-ihl-beyond-frame", [ip_frame(flood, datagram)], **ip)
    for _ in range(200):
        datagram = ipv4(flood.echo(), total_length=rng.randrange(0, 20))
        flood.add("ip-total-below-header", [ip_frame(flood, datagram)], **ip)
    for _ in range(300):  # Total length beyond the frame: truncated in transit.
        message = flood.echo()
        datagram = ipv4(message, total_length=min(65535, 20 + len(message) + rng.randrange(1, 2000)))
        flood.add("ip-truncated", [ip_frame(flood, datagram)], IpInReceives=1, IpInTruncatedPkts=1)
    for i in range(200):  # Martian source (RFC 1812 5.3.7), or a destination that is not ours.
        source, destination = [("127.0.0.1", STACK_IP), (STACK_IP, STACK_IP), ("224.0.0.9", STACK_IP),
                               (KERNEL_IP, "10.0.0.9"), (KERNEL_IP, "192.0.2.1"), (KERNEL_IP, "127.0.0.1")][i % 6]
        datagram = ipv4(flood.echo(), source=source, destination=destination)
        counter = "IpInMartianSources" if source != KERNEL_IP else "IpInAddrErrors"
        flood.add("ip-bad-address", [ip_frame(flood, datagram)], IpInReceives=1, **{counter: 1})

    for _ in range(300):
        ethertype = ETHERTYPE_IPV4
        while ethertype in (ETHERTYPE_IPV4, ETHERTYPE_ARP, ETHERTYPE_IPV6):
            ethertype = rng.randrange(1 << 16)
        flood.add("unknown-ethertype", [flood.to_us(ethertype, rng.randbytes(rng.randrange(0, 100)))],
                  LinkInUnknownEtherType=1)
    for _ in range(300):  # IPv6 of another version, or shorter than its fixed header.
        packet = bytearray(rng.randbytes(rng.randrange(0, 120)))
        if len(packet) >= 40 and packet[0] >> 4 == 6:
            packet[0] ^= 0x80
        flood.add("ipv6", [flood.to_us(ETHERTYPE_IPV6, bytes(packet))], Ip6InReceives=1, Ip6InHdrErrors=1)

    request = arp(1, flood.kernel_mac, KERNEL_IP, b"\0" * 6, STACK_IP)
    for _ in range(200):
        flood.add("arp-truncated", [flood.to_us(ETHERTYPE_ARP, request[:rng.randrange(0, 28)])],
                  ArpInPackets=1, ArpInTruncated=1)
    for _ in range(200):
        wrong = arp(1, flood.kernel_mac, KERNEL_IP, b"\0" * 6, STACK_IP,
                    hardware_type=rng.choice([0, 6, 24, 0xFFFF]))
        flood.add("arp-unsupported", [flood.to_us(ETHERTYPE_ARP, wrong)], ArpInPackets=1, ArpInUnsupported=1)

    icmp = dict(IpInReceives=1, IpInDelivers=1, IcmpInMsgs=1, IcmpInErrors=1)
    for _ in range(300):
        message = icmp_echo(7, rng.randrange(1 << 16), rng.randbytes(rng.randrange(0, 200)), good_checksum=False)
        flood.add("icmp-bad-checksum", [ip_frame(flood, ipv4(message))], IcmpInCsumErrors=1, **icmp)
    for _ in range(100):
        flood.add("icmp-truncated", [ip_frame(flood, ipv4(rng.randbytes(rng.randrange(0, 8))))], **icmp)

    fragment = dict(IpInReceives=2, IpReasmReqds=2)
    for _ in range(200):  # [0, 16) then [8, 24): a partial overlap drops the datagram.
        ident = flood.identification()
        data = rng.randbytes(24)
        first = ipv4(data[:16], identification=ident, more_fragments=True)
        second = ipv4(data[8:24], identification=ident, more_fragments=True, offset=8)
        flood.add("fragment-overlap", [ip_frame(flood, first), ip_frame(flood, second)], IpReasmOverlaps=1,
                  **fragment)
        flood.datagrams_started += 1
    for _ in range(100):  # The same fragment twice.
        ident = flood.identification()
        offset = 8 * rng.randrange(1, 100)
        frame = ip_frame(flood, ipv4(rng.randbytes(16), identification=ident, more_fragments=True, offset=offset))
        flood.add("fragment-duplicate", [frame, frame], IpReasmDuplicates=1, **fragment)
        flood.datagrams_started += 1
    for _ in range(1100):  # One fragment each, far into a datagram that never completes.
        datagram = ipv4(rng.randbytes(8 * rng.randrange(1, 9)), identification=flood.identification(),
                        more_fragments=True, offset=8 * rng.randrange(1000, 8000))
        flood.add("fragment-endless", [ip_frame(flood, datagram)], IpInReceives=1, IpReasmReqds=1)
        flood.datagrams_started += 1
    # Full-size fragments with 8-byte holes between them: ~64 KB held per datagram that never
    # completes, so together they press against the 4 MB reassembly bound.
    for _ in range(70):
        ident = flood.identification()
        pieces = [ip_frame(flood, ipv4(rng.randbytes(1480), identification=ident, more_fragments=True,
                                       offset=offset))
                  for offset in range(0, 65515 - 1480 + 1, 1488)]
        flood.add("fragment-hoard", pieces, IpInReceives=len(pieces), IpReasmReqds=len(pieces))
        flood.datagrams_started += 1

    valid = ipv4(flood.echo())
    for _ in range(200):
        flood.add("other-host", [ethernet(OTHER_HOST_MAC, flood.kernel_mac, ETHERTYPE_IPV4, valid)],
                  LinkInOtherHost=1)
    for _ in range(100):
        flood.add("multicast", [ethernet(MULTICAST_MAC, flood.kernel_mac, ETHERTYPE_IPV4, valid)],
                  LinkInMulticast=1)
    for _ in range(50):
        flood.add("group-source", [ethernet(STACK_MAC, GROUP_SOURCE_MAC, ETHERTYPE_IPV4, valid)],
                  LinkInBadSource=1)

    random_frames = TOTAL_FRAMES - flood.frame_count()
    assert random_frames >= 1000, "the categories leave too little room for random frames"
    for _ in range(random_frames):
        frame, increments = random_frame(flood)
        flood.add("random", [frame], **increments)
    assert flood.frame_count() == TOTAL_FRAMES


# MARK: - Random frames and a mirror of the stack's checks


def random_frame(flood: Flood):
    """A seeded random frame addressed to the stack, and the counters it must move. Frames
    the stack would accept are redrawn (at most a bounded number of times)."""
    rng = flood.rng
    for _ in range(1000):
        source = bytearray(rng.randbytes(6))
        if rng.random() >= 0.1:  # Mostly unicast sources, so that most frames go deeper.
            source[0] &= 0xFE
        source = bytes(source)
        kind = rng.random()
        original_header = None
        if kind < 0.3:
            ethertype = rng.randrange(1 << 16)
            payload = rng.randbytes(rng.randrange(0, 1500))
        elif kind < 0.5:
            ethertype = ETHERTYPE_IPV4
            payload = rng.randbytes(rng.randrange(0, 1500))
        elif kind < 0.8:  # A valid echo request with a few bytes changed, maybe cut short.
            ethertype = ETHERTYPE_IPV4
            datagram = bytearray(ipv4(flood.echo(rng.randrange(0, 1400))))
            original_header = bytes(datagram[:20])
            for _ in range(rng.randrange(1, 4)):
                datagram[rng.randrange(len(datagram))] = rng.randrange(256)
            if rng.random() < 0.3:
                datagram = datagram[:rng.randrange(0, len(datagram))]
            payload = bytes(datagram)
        else:
            ethertype = ETHERTYPE_ARP
            payload = rng.randbytes(rng.randrange(0, 60))
        frame = ethernet(STACK_MAC, source, ethertype, payload)
        increments = classify(frame, original_header)
        if increments is not None:
            return frame, increments
    raise AssertionError("could not draw an invalid random frame")


def classify(frame: bytes, original_header):
    """The counters lvlipd moves for a frame addressed to it; None if the frame is valid (or
    the mirror cannot tell) and must not be sent."""
    if frame[6] & 1:
        return {"LinkInBadSource": 1}
    ethertype = struct.unpack("!H", frame[12:14])[0]
    payload = frame[14:]
    if ethertype == ETHERTYPE_IPV4:
        return classify_ipv4(payload, original_header)
    if ethertype == ETHERTYPE_ARP:
        if len(payload) < 28:
            return {"ArpInPackets": 1, "ArpInTruncated": 1}
        if payload[:6] != bytes.fromhex("000108000604"):
            return {"ArpInPackets": 1, "ArpInUnsupported": 1}
        return None
    if ethertype == ETHERTYPE_IPV6:
        if len(payload) < 40 or payload[0] >> 4 != 6:
            return {"Ip6InReceives": 1, "Ip6InHdrErrors": 1}
        return None
    return {"LinkInUnknownEtherType": 1}


def classify_ipv4(datagram: bytes, original_header):
    header_error = {"IpInReceives": 1, "IpInHdrErrors": 1}
    if len(datagram) < 20 or datagram[0] >> 4 != 4:
        return header_error
    ihl = (datagram[0] & 0x0F) * 4
    if ihl < 20 or ihl > len(datagram):
        return header_error
    total = struct.unpack("!H", datagram[2:4])[0]
    if total < ihl:
        return header_error
    if total > len(datagram):
        return {"IpInReceives": 1, "IpInTruncatedPkts": 1}
    if checksum(datagram[:ihl]) != 0:
        return {"IpInReceives": 1, "IpInHdrErrors": 1, "IpInCsumErrors": 1}
    # A header that survived: only an unchanged one (ours, to the stack, not a fragment) can
    # be classified further without re-implementing the stack.
    if datagram[:20] != original_header:
        return None
    message = datagram[ihl:total]
    if len(message) >= 8 and checksum(message) == 0:
        return None
    increments = {"IpInReceives": 1, "IpInDelivers": 1, "IcmpInMsgs": 1, "IcmpInErrors": 1}
    if len(message) >= 8:
        increments["IcmpInCsumErrors"] = 1
    return increments


# MARK: - The test


def test_malformed_flood(daemon):
    link = RawLink()
    rng = random.Random(SEED)
    flood = Flood(link.mac, rng)
    build_categories(flood)
    rng.shuffle(flood.units)
    frames = [frame for unit in flood.units for frame in unit]

    # Warm up (ARP and one echo), then take the baseline.
    _, _, received, _ = ping("-c", "2", "-i", "0.1", "-W", "1", STACK_IP)
    assert received == 2
    rss_before = rss_kib(daemon.pid)
    before = daemon.stats()
    dropped_before = tap_tx_dropped()

    # Frames shorter than an Ethernet header: the kernel refuses to send them on an
    # Ethernet device (dev_validate_header), so LinkInTooShort must count only those it took.
    short_sent = 0
    for length in range(14):
        try:
            link.send(bytes(length))
            short_sent += 1
        except OSError:
            pass

    started = time.monotonic()
    sent = short_sent
    for start in range(0, len(frames), BATCH):
        for frame in frames[start:start + BATCH]:
            assert link.send(frame) == len(frame)
            sent += 1
        # Pace the flood so the TAP's queue never overflows: wait until lvlipd read it all.
        target = before["LinkInFrames"] + sent
        daemon.wait_for(lambda s: s["LinkInFrames"] >= target, timeout=10,
                        what=f"lvlipd to read {sent} frames (TAP tx drops: {tap_tx_dropped() - dropped_before})")
    elapsed = time.monotonic() - started
    link.close()
    after = daemon.stats()

    expected = flood.expected.copy()
    expected.update({"LinkInFrames": short_sent, "TapReads": short_sent, "LinkInTooShort": short_sent})
    # lvlipd's own start-up output runs on timers and may fall inside the flood: its Router
    # Solicitations (RFC 4861 6.3.7: after DAD, about 1 s from the start, then 4 s apart).
    # Each counts as one IPv6 datagram and one ICMPv6 message sent; anything else is a reply.
    solicits = after["Icmp6OutRouterSolicits"] - before["Icmp6OutRouterSolicits"]
    for name in ("Icmp6OutRouterSolicits", "Icmp6OutMsgs", "Ip6OutRequests"):
        expected[name] = expected.get(name, 0) + solicits
    mismatches = []
    for name in after:
        if name in NOT_EXACT:
            continue
        change = after[name] - before[name]
        if change != expected.get(name, 0):
            mismatches.append(f"{name}: changed by {change}, expected {expected.get(name, 0)}")
    unknown = set(expected) - set(after)
    assert not unknown, f"counters missing from lvlipctl stat: {unknown}"
    assert not mismatches, (f"{len(frames)} frames in {elapsed:.1f} s, categories {dict(flood.per_category)}:\n"
                            + "\n".join(mismatches))

    # Nothing malformed may provoke output; only the start-up announcements and solicitations
    # may be sent.
    assert (after["LinkOutFrames"] - before["LinkOutFrames"]
            == after["ArpOutAnnouncements"] - before["ArpOutAnnouncements"] + solicits)

    # Every datagram started by a fragment either is still pending or has failed (evicted
    # under the memory bound, overlapped, or timed out); none completed.
    assert before["IpReasmPending"] == 0
    assert after["IpReasmOKs"] == before["IpReasmOKs"]
    failed = after["IpReasmFails"] - before["IpReasmFails"]
    assert failed + after["IpReasmPending"] == flood.datagrams_started
    assert 0 < after["IpReasmPending"] <= 1024
    assert after["IpReasmBytes"] <= REASSEMBLY_LIMIT + 64 * 1024

    # Still alive and answering, with bounded memory.
    assert daemon.alive()
    result, _, received, loss = ping("-c", "5", "-i", "0.05", "-W", "1", STACK_IP)
    assert received == 5 and loss == 0.0, result.stdout
    growth = rss_kib(daemon.pid) - rss_before
    assert growth < RSS_GROWTH_LIMIT_KIB, f"lvlipd RSS grew by {growth} KiB"


# MARK: - The same flood at full speed

TRANSFER_CLIENT = """
import hashlib, json, os, socket, sys
data = os.urandom(int(sys.argv[3]))
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
echoed = bytearray()
while True:
    block = s.recv(1 << 16)
    if not block:
        break
    echoed += block
print(json.dumps({"sent": len(data), "echoed": len(echoed), "exact": bytes(echoed) == data}))
"""


def kernel_echo_once():
    """A kernel listener on 10.0.0.5 that echoes one connection until its FIN; (port, thread)."""
    listener = socket.socket()
    listener.bind((KERNEL_IP, 0))
    listener.listen(1)
    listener.settimeout(20)

    def serve():
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(20)
                while block := conn.recv(1 << 16):
                    conn.sendall(block)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_malformed_flood_unpaced(daemon):
    """The flood again (another seed), sent as fast as the raw socket takes it: the TAP's
    queue may overflow. Every frame must be accounted for, read by lvlipd or counted as
    dropped by the kernel at the TAP, none may provoke output, and afterwards lvlipd answers
    ping and carries a 1 MB TCP transfer byte-exact."""
    link = RawLink()
    _, _, received, _ = ping("-c", "2", "-i", "0.1", "-W", "1", STACK_IP)
    assert received == 2
    rss_before = rss_kib(daemon.pid)
    before = daemon.stats()
    dropped_before = tap_tx_dropped()

    # One pass of every category by default; LVLIP_FLOOD_FRAMES asks for more passes (each
    # with its own seed) until that many frames went out (docs/reliability.md: a million).
    sent = 0
    started = time.monotonic()
    for run in itertools.count():
        flood = Flood(link.mac, random.Random(SEED + 1 + run))
        build_categories(flood)
        flood.rng.shuffle(flood.units)
        for unit in flood.units:
            for frame in unit:
                assert link.send(frame) == len(frame)
                sent += 1
        if sent >= FLOOD_FRAMES:
            break
    elapsed = time.monotonic() - started
    link.close()

    def accounted(stats):
        return stats["LinkInFrames"] - before["LinkInFrames"] + tap_tx_dropped() - dropped_before == sent
    after = daemon.wait_for(accounted, timeout=30, what="every frame to be read by lvlipd or dropped at the TAP")
    read = after["LinkInFrames"] - before["LinkInFrames"]
    print(f"{sent} frames in {elapsed:.2f} s: lvlipd read {read}, the TAP dropped {sent - read}")
    assert after["TapReads"] - before["TapReads"] == read
    assert (after["LinkOutFrames"] - before["LinkOutFrames"]
            == after["ArpOutAnnouncements"] - before["ArpOutAnnouncements"])
    assert after["IpReasmOKs"] == before["IpReasmOKs"]
    assert after["IpReasmBytes"] <= REASSEMBLY_LIMIT + 64 * 1024

    assert daemon.alive()
    result, _, received, loss = ping("-c", "5", "-i", "0.05", "-W", "1", STACK_IP)
    assert received == 5 and loss == 0.0, result.stdout
    port, echo = kernel_echo_once()
    transfer = run_script(TRANSFER_CLIENT, KERNEL_IP, port, TRANSFER_BYTES, stack=daemon, timeout=60)
    echo.join(timeout=10)
    assert transfer == {"sent": TRANSFER_BYTES, "echoed": TRANSFER_BYTES, "exact": True}, transfer
    growth = rss_kib(daemon.pid) - rss_before
    print(f"lvlipd RSS {rss_before} KiB before, grew by {growth} KiB; {TRANSFER_BYTES} bytes echoed byte-exact after")
    assert growth < RSS_GROWTH_LIMIT_KIB, f"lvlipd RSS grew by {growth} KiB"
