import XCTest
import Stack
import Timing

/// UDP (RFC 768, RFC 1122 4.1) through the pure stack: frames in, frames out.
final class UDPTests: XCTestCase {
    /// A UDP datagram (header + payload) with a correct checksum, or the given one.
    static func udp(from src: IPv4Address = Frames.peerIP, to dst: IPv4Address = Frames.stackIP, sourcePort: UInt16,
                    destinationPort: UInt16, _ payload: [UInt8], checksum: UInt16? = nil, length: Int? = nil) -> [UInt8] {
        let len = length ?? 8 + payload.count
        var d = Frames.be16(sourcePort) + Frames.be16(destinationPort) + Frames.be16(UInt16(len)) + [0, 0] + payload
        if let checksum {
            d[6] = UInt8(checksum >> 8)
            d[7] = UInt8(checksum & 0xFF)
        } else {
            let pseudo = Frames.be32(src.value) + Frames.be32(dst.value) + [0, 17] + Frames.be16(UInt16(d.count))
            var c = Frames.checksum(pseudo + d + (d.count % 2 == 1 ? [0] : []))
            if c == 0 { c = 0xFFFF }
            d[6] = UInt8(c >> 8)
            d[7] = UInt8(c & 0xFF)
        }
        return d
    }

    static func frame(_ datagram: [UInt8], to dst: IPv4Address = Frames.stackIP, mac: MACAddress = Frames.stackMAC) -> [UInt8] {
        Frames.ethernet(to: mac, type: 0x0800, Frames.ipv4(to: dst, proto: 17, datagram))
    }

    func testDatagramReachesTheBoundSocketWithItsSource() throws {
        let h = Harness()
        let s = h.stack.udpOpen()
        try h.stack.udpBind(s, address: nil, port: 5353)
        h.receive(Self.frame(Self.udp(sourcePort: 4000, destinationPort: 5353, Array("hello".utf8))))
        var changed: [SocketID] = []
        h.stack.takeReadinessChanges(into: &changed)
        XCTAssertEqual(changed, [s])
        let d = try XCTUnwrap(h.stack.udpReceive(s))
        XCTAssertEqual(d.source, IPAddress(Frames.peerIP))
        XCTAssertEqual(d.sourcePort, 4000)
        XCTAssertEqual(d.payload, Array("hello".utf8))
        XCTAssertNil(h.stack.udpReceive(s))
        XCTAssertEqual(h.stack.counters.udpInDatagrams, 1)
        XCTAssertTrue(h.output().isEmpty)
    }

    func testZeroChecksumIsAcceptedAndABadOneCounted() throws {
        let h = Harness()
        let s = h.stack.udpOpen()
        try h.stack.udpBind(s, address: nil, port: 7)
        h.receive(Self.frame(Self.udp(sourcePort: 1, destinationPort: 7, [1, 2, 3], checksum: 0)))
        XCTAssertEqual(h.stack.udpReceive(s)?.payload, [1, 2, 3])
        h.receive(Self.frame(Self.udp(sourcePort: 1, destinationPort: 7, [1, 2, 3], checksum: 0x1234)))
        XCTAssertNil(h.stack.udpReceive(s))
        XCTAssertEqual(h.stack.counters.udpInCsumErrors, 1)
        XCTAssertEqual(h.stack.counters.udpInErrors, 1)
    }

    func testBadLengthsAreCountedAndDropped() throws {
        let h = Harness()
        let s = h.stack.udpOpen()
        try h.stack.udpBind(s, address: nil, port: 7)
        // Length beyond the IP payload, below the header, and a datagram shorter than a header.
        h.receive(Self.frame(Self.udp(sourcePort: 1, destinationPort: 7, [1, 2], checksum: 0, length: 40)))
        h.receive(Self.frame(Self.udp(sourcePort: 1, destinationPort: 7, [1, 2], checksum: 0, length: 4)))
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 17, [0, 1, 0, 7])))
        XCTAssertNil(h.stack.udpReceive(s))
        XCTAssertEqual(h.stack.counters.udpInErrors, 3)
        // IP padding after a shorter UDP length is fine: only `length` bytes are the datagram.
        h.receive(Self.frame(Self.udp(sourcePort: 1, destinationPort: 7, [9], checksum: 0) + [0xEE, 0xEE]))
        XCTAssertEqual(h.stack.udpReceive(s)?.payload, [9])
    }

    func testClosedPortGetsPortUnreachableButBroadcastDoesNot() throws {
        let h = Harness()
        h.learnPeer()
        let datagram = Self.udp(sourcePort: 4000, destinationPort: 9999, Array("x".utf8))
        h.receive(Self.frame(datagram))
        let out = h.output().map { Parsed(frame: $0) }
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(out[0].ipProto, 1)
        XCTAssertEqual(Array(out[0].ipPayload[0..<2]), [3, 3])  // destination unreachable, port
        XCTAssertEqual(h.stack.counters.udpNoPorts, 1)
        let toBroadcast = Self.udp(to: IPv4Address(10, 0, 0, 255), sourcePort: 4000, destinationPort: 9999, Array("x".utf8))
        h.receive(Self.frame(toBroadcast, to: IPv4Address(10, 0, 0, 255), mac: .broadcast))
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.udpNoPorts, 2)
    }

    func testSendBuildsAChecksummedDatagramAndFragmentsLargeOnes() throws {
        let h = Harness()
        h.learnPeer()
        let s = h.stack.udpOpen()
        let payload = (0..<3000).map { UInt8($0 % 251) }
        try payload.withUnsafeBytes { _ = try h.stack.udpSend(s, to: (IPAddress(Frames.peerIP), 53), $0, now: h.now) }
        let out = h.output().map { Parsed(frame: $0) }
        XCTAssertEqual(out.count, 3)
        XCTAssertTrue(out.allSatisfy { $0.ipProto == 17 && $0.ipHeaderValid })
        let whole = out.flatMap(\.ipPayload)
        XCTAssertEqual(whole.count, 3008)
        let names = try XCTUnwrap(h.stack.udpNames(s))
        XCTAssertEqual(Array(whole[0..<8]), Frames.be16(names.localPort) + Frames.be16(53) + Frames.be16(3008) + Array(whole[6..<8]))
        let pseudo = Frames.be32(Frames.stackIP.value) + Frames.be32(Frames.peerIP.value) + [0, 17] + Frames.be16(3008)
        XCTAssertEqual(Frames.checksum(pseudo + whole), 0)
        XCTAssertEqual(Array(whole[8...]), payload)
        XCTAssertTrue((32768...60999).contains(names.localPort))
    }

    func testSendErrors() throws {
        let h = Harness()
        let s = h.stack.udpOpen()
        let big = [UInt8](repeating: 0, count: 65508)
        XCTAssertThrowsError(try big.withUnsafeBytes { try h.stack.udpSend(s, to: (IPAddress(Frames.peerIP), 53), $0, now: h.now) }) {
            XCTAssertEqual($0 as? SocketError, .messageTooLong)
        }
        XCTAssertThrowsError(try [1].withUnsafeBytes { try h.stack.udpSend(s, to: nil, $0, now: h.now) }) {
            XCTAssertEqual($0 as? SocketError, .destinationRequired)
        }
        XCTAssertThrowsError(try [1].withUnsafeBytes { try h.stack.udpSend(s, to: (IPAddress(IPv4Address(10, 0, 0, 255)), 53), $0, now: h.now) }) {
            XCTAssertEqual($0 as? SocketError, .permissionDenied)
        }
        h.stack.udpSetOptions(s, broadcast: true)
        XCTAssertNoThrow(try [1].withUnsafeBytes { try h.stack.udpSend(s, to: (IPAddress(IPv4Address(10, 0, 0, 255)), 53), $0, now: h.now) })
        let out = h.output().map { Parsed(frame: $0) }
        XCTAssertEqual(out.last?.destinationMAC, .broadcast)
    }

    func testPortSharingFollowsReuseOptions() throws {
        let h = Harness()
        let a = h.stack.udpOpen(), b = h.stack.udpOpen()
        try h.stack.udpBind(a, address: nil, port: 6000)
        XCTAssertThrowsError(try h.stack.udpBind(b, address: nil, port: 6000)) { XCTAssertEqual($0 as? SocketError, .addressInUse) }
        let c = h.stack.udpOpen(), d = h.stack.udpOpen()
        h.stack.udpSetOptions(c, reuseAddress: true)
        h.stack.udpSetOptions(d, reuseAddress: true)
        try h.stack.udpBind(c, address: nil, port: 6001)
        try h.stack.udpBind(d, address: nil, port: 6001)
        // Unicast goes to the most recently bound of equals (Linux); broadcast to both.
        h.receive(Self.frame(Self.udp(sourcePort: 1, destinationPort: 6001, [1])))
        XCTAssertNil(h.stack.udpReceive(c))
        XCTAssertEqual(h.stack.udpReceive(d)?.payload, [1])
        h.receive(Self.frame(Self.udp(to: IPv4Address(10, 0, 0, 255), sourcePort: 1, destinationPort: 6001, [2]),
                             to: IPv4Address(10, 0, 0, 255), mac: .broadcast))
        XCTAssertEqual(h.stack.udpReceive(c)?.payload, [2])
        XCTAssertEqual(h.stack.udpReceive(d)?.payload, [2])
        // After close the port is free again.
        h.stack.udpClose(a)
        try h.stack.udpBind(b, address: nil, port: 6000)
    }

    func testConnectedSocketOnlyHearsItsPeerAndLearnsPortUnreachable() throws {
        let h = Harness()
        h.learnPeer()
        let s = h.stack.udpOpen()
        try h.stack.udpConnect(s, to: (IPAddress(Frames.peerIP), 53))
        let port = try XCTUnwrap(h.stack.udpNames(s)).localPort
        h.receive(Self.frame(Self.udp(sourcePort: 54, destinationPort: port, [1])))  // another port: not ours
        XCTAssertNil(h.stack.udpReceive(s))
        h.receive(Self.frame(Self.udp(sourcePort: 53, destinationPort: port, [2])))
        XCTAssertEqual(h.stack.udpReceive(s)?.payload, [2])
        try [7].withUnsafeBytes { _ = try h.stack.udpSend(s, to: nil, $0, now: h.now) }
        let sent = try XCTUnwrap(h.output().map { Parsed(frame: $0) }.last)
        // The peer answers with Port Unreachable quoting our datagram.
        let quote = Array(sent.ip[0..<(sent.ipHeaderLength + 8)])
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, Frames.icmp(type: 3, code: 3, rest: [0, 0, 0, 0], quote))))
        XCTAssertTrue(h.stack.udpHasError(s))
        XCTAssertThrowsError(try [7].withUnsafeBytes { try h.stack.udpSend(s, to: nil, $0, now: h.now) }) {
            XCTAssertEqual($0 as? SocketError, .connectionRefused)
        }
        XCTAssertFalse(h.stack.udpHasError(s))
    }

    func testFullReceiveBufferDropsAndCounts() throws {
        let h = Harness()
        let s = h.stack.udpOpen()
        try h.stack.udpBind(s, address: nil, port: 7)
        h.stack.udpSetOptions(s, receiveBuffer: 3 * (1000 + 256))
        for _ in 0..<5 { h.receive(Self.frame(Self.udp(sourcePort: 1, destinationPort: 7, [UInt8](repeating: 1, count: 1000)))) }
        XCTAssertEqual(h.stack.udpQueued(s), 3)
        XCTAssertEqual(h.stack.counters.udpRcvbufErrors, 2)
        XCTAssertEqual(h.stack.counters.udpInErrors, 2)
        _ = h.stack.udpReceive(s)
        h.receive(Self.frame(Self.udp(sourcePort: 1, destinationPort: 7, [UInt8](repeating: 1, count: 1000))))
        XCTAssertEqual(h.stack.udpQueued(s), 3)
    }

    func testFragmentedDatagramIsReassembledAndDelivered() throws {
        let h = Harness()
        let s = h.stack.udpOpen()
        try h.stack.udpBind(s, address: nil, port: 9000)
        let payload = (0..<8000).map { UInt8($0 % 253) }
        let datagram = Self.udp(sourcePort: 1, destinationPort: 9000, payload)
        for f in Frames.fragments(proto: 17, id: 77, payload: datagram, size: 1480) { h.receive(f) }
        XCTAssertEqual(h.stack.udpReceive(s)?.payload, payload)
    }
}
