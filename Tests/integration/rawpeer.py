"""A hostile TCP peer made of raw frames on the kernel side of tap0 (the test_hostile_* suites).

The peer uses an address the kernel does not own (10.0.0.77) and a MAC of its own, and answers
lvlipd's ARP requests for it itself: frames lvlipd sends to that MAC reach the kernel as
"other host" frames and are dropped there, so the kernel's TCP never resets the connection
the peer plays. Frames are built with harness.py's stdlib helpers.
"""

import json
import queue
import socket
import struct
import sys
import threading
import time
from collections import namedtuple

from harness import (ETHERTYPE_ARP, ETHERTYPE_IPV4, STACK_IP, STACK_MAC, TAP, arp, checksum, ethernet, ip_address,
                     ipv4)
from processes import wait_until

PEER_IP = "10.0.0.77"
PEER_MAC = bytes.fromhex("020000000077")
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4

FIN, SYN, RST, PSH, ACK, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x80

Segment = namedtuple("Segment", "at sport dport seq ack flags window options payload")
IcmpMessage = namedtuple("IcmpMessage", "at type code body")


def tcp_segment(sport, dport, seq, ack, flags, window=65535, options=b"", payload=b"", source=PEER_IP,
                destination=STACK_IP) -> bytes:
    """A TCP segment with a correct checksum (options padded to 32 bits with NOPs)."""
    options += b"\x01" * (-len(options) % 4)
    header = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                         (5 + len(options) // 4) << 4, flags, window, 0, 0) + options
    pseudo = ip_address(source) + ip_address(destination) + struct.pack("!BBH", 0, 6, len(header) + len(payload))
    csum = checksum(pseudo + header + payload)
    return header[:16] + struct.pack("!H", csum) + header[18:] + payload


def mss_option(value) -> bytes:
    return struct.pack("!BBH", 2, 4, value)


def window_scale_option(shift) -> bytes:
    return struct.pack("!BBB", 3, 3, shift)


def sack_option(blocks) -> bytes:
    return struct.pack("!BB", 5, 2 + 8 * len(blocks)) + b"".join(
        struct.pack("!II", left & 0xFFFFFFFF, right & 0xFFFFFFFF) for left, right in blocks)


def seq_diff(a, b) -> int:
    """a - b in sequence space (RFC 9293 3.4), as a signed 32-bit number."""
    d = (a - b) & 0xFFFFFFFF
    return d - (1 << 32) if d >= 1 << 31 else d


SOL_PACKET, PACKET_VNET_HDR, VNET_HDR_SIZE, GSO_TCPV4 = 263, 15, 10, 1


class RawPeer:
    """Frames to and from lvlipd for PEER_IP: a thread answers ARP for it and queues every TCP
    segment and ICMP message lvlipd sends it.

    The socket reads tap0 with each frame's virtio-net header (PACKET_VNET_HDR): a TCP
    super-segment lvlipd wrote for the kernel to cut (TSO) is cut here into the segments a
    host across a wire would receive, as the kernel cuts it when it forwards."""

    def __init__(self, ip=PEER_IP, mac=PEER_MAC):
        self.ip, self.mac = ip, mac
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        self.sock.bind((TAP, ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.settimeout(0.05)
        self.segments = queue.Queue()
        self.icmp = queue.Queue()
        self.arp_requests = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                packet, address = self.sock.recvfrom(VNET_HDR_SIZE + 65536 + 14)
            except socket.timeout:
                continue
            except OSError:
                return
            header, frame = packet[:VNET_HDR_SIZE], packet[VNET_HDR_SIZE:]
            if address[2] == PACKET_OUTGOING or frame[6:12] != STACK_MAC:
                continue
            ethertype = struct.unpack("!H", frame[12:14])[0]
            if ethertype == ETHERTYPE_ARP and len(frame) >= 42:
                operation = struct.unpack("!H", frame[20:22])[0]
                if operation == 1 and frame[38:42] == ip_address(self.ip):
                    self.arp_requests += 1
                    self.send_frame(ETHERTYPE_ARP, arp(2, self.mac, self.ip, STACK_MAC, STACK_IP), STACK_MAC)
            elif ethertype == ETHERTYPE_IPV4:
                _, gso_type, _, gso_size = struct.unpack("<BBHH", header[:6])
                self._ipv4(frame[14:], gso_size if gso_type == GSO_TCPV4 else 0)

    def _ipv4(self, datagram, gso_size=0):
        if datagram[16:20] != ip_address(self.ip):
            return
        body = datagram[(datagram[0] & 0x0F) * 4:struct.unpack("!H", datagram[2:4])[0]]
        now = time.monotonic()
        if datagram[9] == 6:
            sport, dport, seq, ack, offset, flags, window = struct.unpack("!HHIIBBH", body[:16])
            length = (offset >> 4) * 4
            options, payload = body[20:length], body[length:]
            size = gso_size or len(payload) or 1
            pieces = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
            for i, piece in enumerate(pieces):
                # Linux's tcp_gso_segment: FIN and PSH on the last segment only, CWR on the first.
                piece_flags = flags if i == len(pieces) - 1 else flags & ~(FIN | PSH)
                if i > 0:
                    piece_flags &= ~CWR
                self.segments.put(Segment(now, sport, dport, (seq + i * size) & 0xFFFFFFFF, ack, piece_flags, window,
                                          options, piece))
        elif datagram[9] == 1:
            self.icmp.put(IcmpMessage(now, body[0], body[1], body[4:]))

    def send_frame(self, ethertype, payload, destination=STACK_MAC):
        self.sock.send(bytes(VNET_HDR_SIZE) + ethernet(destination, self.mac, ethertype, payload))

    def send_ip(self, payload, proto, **fields):
        self.send_frame(ETHERTYPE_IPV4, ipv4(payload, proto=proto, source=self.ip, **fields))

    def next_segment(self, timeout=3.0, port=None):
        """The next segment lvlipd sent (from `port` when given), or None after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                seg = self.segments.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if port is None or seg.sport == port:
                return seg

    def drain(self, settle=0.3, port=None) -> list:
        """Every segment that arrives until none has for `settle` seconds."""
        out = []
        while (seg := self.next_segment(settle, port)) is not None:
            out.append(seg)
        return out

    def close(self):
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()


class PeerConnection:
    """One TCP connection played from raw frames: `snd` is our next sequence number, `rcv`
    the next byte expected from the stack."""

    def __init__(self, peer: RawPeer, port: int, local_port: int = 40000):
        self.peer, self.port, self.local_port = peer, port, local_port
        self.iss = 0x1000_0000 + local_port
        self.snd = self.iss
        self.rcv = None
        self.stack_window = 0
        self.received = bytearray()

    def send(self, flags=ACK, payload=b"", seq=None, ack=None, window=65535, options=b""):
        segment = tcp_segment(self.local_port, self.port, self.snd if seq is None else seq,
                              (self.rcv or 0) if ack is None else ack, flags, window, options, payload)
        self.peer.send_ip(segment, 6)

    def expect(self, predicate=lambda s: True, timeout=3.0, what="a segment"):
        """The first segment of this connection satisfying predicate; fails after timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seg = self.peer.next_segment(deadline - time.monotonic(), self.port)
            if seg is not None and seg.dport == self.local_port and predicate(seg):
                return seg
        raise AssertionError(f"no {what} from the stack within {timeout} s")

    def connect(self, options=None, window=65535):
        """Our SYN, the stack's SYN-ACK, our ACK; returns the SYN-ACK."""
        self.send(SYN, options=mss_option(1460) if options is None else options, window=window, ack=0)
        synack = self.expect(lambda s: s.flags & (SYN | ACK) == SYN | ACK, what="SYN-ACK")
        assert synack.ack == (self.iss + 1) & 0xFFFFFFFF, synack
        self.snd = self.iss + 1
        self.rcv = (synack.seq + 1) & 0xFFFFFFFF
        self.stack_window = synack.window
        self.send(ACK, window=window)
        return synack

    def push(self, data: bytes, seq=None):
        """Sends data at `seq` (default: the next byte) without waiting; advances snd."""
        start = self.snd if seq is None else seq
        self.send(ACK | PSH, data, seq=start)
        self.snd = max(self.snd, start + len(data))

    def deliver(self, data: bytes, chunk=1000, timeout=5.0):
        """Sends data in chunks, each acknowledged before the next (a simple window of one)."""
        for offset in range(0, len(data), chunk):
            self.push(data[offset:offset + chunk])
            self.expect(lambda s: s.flags & ACK and seq_diff(s.ack, self.snd) >= 0, timeout,
                        f"ACK of byte {self.snd - self.iss - 1}")

    def take(self, seg, window=65535):
        """Accepts an in-order data segment (and FIN) from the stack and acknowledges it."""
        if seg.payload and seg.seq == self.rcv:
            self.received += seg.payload
            self.rcv = (self.rcv + len(seg.payload)) & 0xFFFFFFFF
        if seg.flags & FIN and seq_diff(seg.seq + len(seg.payload), self.rcv) == 0:
            self.rcv = (self.rcv + 1) & 0xFFFFFFFF
        if seg.payload or seg.flags & FIN:
            self.send(ACK, window=window)

    def receive_until_fin(self, timeout=15.0, window=65535):
        """Receives the stack's stream until its FIN; returns the bytes."""
        deadline = time.monotonic() + timeout
        while True:
            seg = self.expect(timeout=max(0.0, deadline - time.monotonic()), what="data or FIN")
            fin_before = self.rcv
            self.take(seg, window)
            if seg.flags & FIN and self.rcv != fin_before:
                return bytes(self.received)


# A program on the stack (run under lvlip): a one-connection TCP server printing JSON.
# sink: reads to EOF, prints {"received": hex, "error": errno-name or null}.
# source N: writes N bytes of pattern(i) = (i * 7 + i // 251) & 0xFF, then closes.
STACK_SERVER = r"""
import errno, json, socket, sys
mode, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(16)
print("listening", port, flush=True)
c, _ = s.accept()
result = {"received": "", "error": None}
try:
    if mode == "sink":
        data = bytearray()
        while True:
            block = c.recv(65536)
            if not block:
                break
            data += block
        result["received"] = data.hex()
    else:
        total = int(sys.argv[3])
        c.sendall(bytes((i * 7 + i // 251) & 0xFF for i in range(total)))
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
except OSError as e:
    result["error"] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(result), flush=True)
"""


def source_bytes(total: int) -> bytes:
    return bytes((i * 7 + i // 251) & 0xFF for i in range(total))


def start_stack_server(procs, name, mode, port, *args):
    """Starts STACK_SERVER under lvlip and waits until it listens."""
    proc = procs.start(name, [sys.executable, "-c", STACK_SERVER, mode, port, *args], stack=True)
    wait_until(lambda: f"listening {port}" in proc.out_path.read_text(), 10, f"{name} listening", proc, procs)
    return proc


def server_result(proc, procs, timeout=10):
    """The JSON line the stack server printed once it finished."""
    procs.finish(proc, timeout)
    lines = [line for line in proc.out_path.read_text().splitlines() if line.startswith("{")]
    assert lines, procs.describe(proc)
    return json.loads(lines[-1])
