import Stack
import Timing
import XCTest

final class IPv4ICMPTests: XCTestCase {
    func testEchoReplyMirrorsRequest() {
        let h = Harness()
        h.learnPeer()
        let data = (0..<56).map { UInt8($0) }
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, Frames.echoRequest(id: 0xBEEF, seq: 7, data: data))))
        let out = h.output().map(Parsed.init)
        XCTAssertEqual(out.count, 1)
        let reply = out[0]
        XCTAssertTrue(reply.ipHeaderValid)
        XCTAssertEqual(reply.ipSource, Frames.stackIP)
        XCTAssertEqual(reply.ipDestination, Frames.peerIP)
        XCTAssertEqual(reply.ipProto, 1)
        XCTAssertEqual(reply.ip[8], 64, "our TTL")
        let icmp = reply.ipPayload
        XCTAssertEqual(icmp[0], 0, "echo reply")
        XCTAssertEqual(Array(icmp[4..<8]), [0xBE, 0xEF, 0, 7])
        XCTAssertEqual(Array(icmp[8...]), data)
        XCTAssertEqual(Frames.checksum(icmp), 0)
        XCTAssertEqual(h.stack.counters.icmpOutEchoReps, 1)
    }

    func testTTLZeroAndOneAreAccepted() {
        // RFC 1122 3.2.1.7: a host must not discard a datagram for a TTL below 2.
        let h = Harness()
        h.learnPeer()
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, ttl: 0, Frames.echoRequest(data: []))))
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, ttl: 1, Frames.echoRequest(data: []))))
        XCTAssertEqual(h.output().count, 2)
    }

    func testHeaderErrorsAreCountedAndDropped() {
        let h = Harness()
        h.learnPeer()
        let good = Frames.ipv4(proto: 1, Frames.echoRequest(data: [1, 2]))
        var badChecksum = good
        badChecksum[10] ^= 0xFF
        var badVersion = good
        badVersion[0] = 0x65
        h.receive(Frames.ethernet(type: 0x0800, badChecksum))
        h.receive(Frames.ethernet(type: 0x0800, badVersion))
        h.receive(Frames.ethernet(type: 0x0800, Array(good[0..<good.count - 1])))
        h.receive(Frames.ethernet(type: 0x0800, Array(good[0..<10])))
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.ipInCsumErrors, 1)
        XCTAssertEqual(h.stack.counters.ipInHdrErrors, 3)
        XCTAssertEqual(h.stack.counters.ipInTruncatedPkts, 1)
        XCTAssertEqual(h.stack.counters.ipInReceives, 4)
    }

    func testNotForUsIsAnAddressErrorAndMartianSourcesAreCountedApart() {
        let h = Harness()
        h.learnPeer()
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(to: IPv4Address(10, 0, 0, 9), proto: 1, Frames.echoRequest(data: []))))
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(from: IPv4Address(224, 0, 0, 1), proto: 1, Frames.echoRequest(data: []))))
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(from: IPv4Address(127, 0, 0, 1), proto: 1, Frames.echoRequest(data: []))))
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(from: Frames.stackIP, proto: 1, Frames.echoRequest(data: []))))
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.ipInAddrErrors, 1)
        XCTAssertEqual(h.stack.counters.ipInMartianSources, 3)
    }

    func testLinkLayerFiltering() {
        let h = Harness()
        let ping = Frames.ipv4(proto: 1, Frames.echoRequest(data: []))
        h.receive([1, 2, 3])
        h.receive(Frames.ethernet(to: MACAddress(0x0200_0000_0099), type: 0x0800, ping))
        h.receive(Frames.ethernet(to: MACAddress(0x3333_0000_0001), type: 0x86DD, [0x60]))
        h.receive(Frames.ethernet(type: 0x86DD, [0x60, 0, 0, 0]))
        h.receive(Frames.ethernet(type: 0x88CC, [1, 2, 3]))
        h.receive(Frames.ethernet(from: MACAddress(0x0100_5E00_0001), type: 0x0800, ping))
        let c = h.stack.counters
        XCTAssertEqual(c.linkInFrames, 6)
        XCTAssertEqual(c.linkInTooShort, 1)
        XCTAssertEqual(c.linkInOtherHost, 1)
        XCTAssertEqual(c.linkInMulticast, 1)
        XCTAssertEqual(c.linkInIPv6, 1)
        XCTAssertEqual(c.linkInUnknownEtherType, 1)
        XCTAssertEqual(c.linkInBadSource, 1)
        XCTAssertTrue(h.output().isEmpty)
    }

    func testBroadcastEchoIsIgnored() {
        let h = Harness()
        h.learnPeer()
        h.receive(Frames.ethernet(to: .broadcast, type: 0x0800, Frames.ipv4(to: IPv4Address(10, 0, 0, 255), proto: 1, Frames.echoRequest(data: []))))
        h.receive(Frames.ethernet(to: .broadcast, type: 0x0800, Frames.ipv4(to: .broadcast, proto: 1, Frames.echoRequest(data: []))))
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.icmpInBroadcastEchoIgnored, 2)
    }

    func testBadICMPChecksumCounted() {
        let h = Harness()
        h.learnPeer()
        var icmp = Frames.echoRequest(data: [1, 2, 3])
        icmp[2] ^= 0x55
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, icmp)))
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, [8, 0, 0])))
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.icmpInCsumErrors, 1)
        XCTAssertEqual(h.stack.counters.icmpInErrors, 2)
    }

    /// RFC 1122 3.2.2.1: Protocol Unreachable for a protocol nobody serves, quoting the
    /// offending header and at least 8 bytes of its data.
    func testProtocolUnreachable() {
        let h = Harness()
        h.learnPeer()
        let offending = Frames.ipv4(proto: 253, id: 77, [UInt8](repeating: 0xAB, count: 100))
        h.receive(Frames.ethernet(type: 0x0800, offending))
        let out = h.output().map(Parsed.init)
        XCTAssertEqual(out.count, 1)
        let icmp = out[0].ipPayload
        XCTAssertEqual(icmp[0], 3)
        XCTAssertEqual(icmp[1], 2)
        XCTAssertEqual(Frames.checksum(icmp), 0)
        XCTAssertEqual(Array(icmp[8..<28]), Array(offending[0..<20]), "the original header")
        XCTAssertEqual(Array(icmp[28..<36]), [UInt8](repeating: 0xAB, count: 8))
        XCTAssertEqual(h.stack.counters.ipInUnknownProtos, 1)
        XCTAssertEqual(h.stack.counters.icmpOutDestUnreachs, 1)
    }

    func testNoICMPErrorAboutBroadcastOrICMPErrors() {
        let h = Harness()
        h.learnPeer()
        h.receive(Frames.ethernet(to: .broadcast, type: 0x0800, Frames.ipv4(to: .broadcast, proto: 253, [1, 2, 3])))
        h.receive(Frames.ethernet(to: .broadcast, type: 0x0800, Frames.ipv4(proto: 253, [1, 2, 3])))
        let unreachable = Frames.icmp(type: 3, code: 3, rest: [0, 0, 0, 0], Frames.ipv4(from: Frames.stackIP, to: Frames.peerIP, proto: 17, [0, 0, 0, 0, 0, 0, 0, 0]))
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, unreachable)))
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.icmpInDestUnreachs, 1)
        XCTAssertEqual(h.stack.counters.ipInUnknownProtos, 2)
    }

    func testICMPErrorsAreRateLimited() {
        let h = Harness { $0.icmpErrorsPerSecond = 100; $0.icmpErrorBurst = 10 }
        h.learnPeer()
        for i in 0..<50 { h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 253, id: UInt16(i), [1]))) }
        XCTAssertEqual(h.output().count, 10, "the burst")
        XCTAssertEqual(h.stack.counters.icmpOutRateLimited, 40)
        h.advance(milliseconds: 50)
        for i in 0..<50 { h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 253, id: UInt16(i), [1]))) }
        XCTAssertEqual(h.output().count, 5, "100/s refills 5 tokens in 50 ms")
    }

    /// An 8000-byte ping: the request arrives in fragments, the reply leaves in fragments
    /// (RFC 791 3.2) that reassemble to the exact echo.
    func testLargeEchoIsReassembledAndReplyFragmented() throws {
        let h = Harness()
        h.learnPeer()
        let data = (0..<8000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let request = Frames.echoRequest(id: 9, seq: 3, data: data)
        for frame in Frames.fragments(proto: 1, id: 500, payload: request, size: 1480).reversed() { h.receive(frame) }
        let out = h.output().map(Parsed.init)
        XCTAssertEqual(out.count, 6, "8008 bytes in 1480-byte fragments")
        var reassembled = [UInt8](repeating: 0, count: 8008)
        for (i, fragment) in out.enumerated() {
            XCTAssertTrue(fragment.ipHeaderValid)
            XCTAssertLessThanOrEqual(fragment.ipTotalLength, 1500)
            XCTAssertEqual(fragment.fragmentOffset % 8, 0)
            XCTAssertEqual(fragment.moreFragments, i < 5)
            XCTAssertEqual(fragment.ipID, out[0].ipID)
            let payload = fragment.ipPayload
            reassembled.replaceSubrange(fragment.fragmentOffset..<fragment.fragmentOffset + payload.count, with: payload)
        }
        XCTAssertEqual(reassembled[0], 0)
        XCTAssertEqual(Array(reassembled[4..<8]), [0, 9, 0, 3])
        XCTAssertEqual(Array(reassembled[8...]), data)
        XCTAssertEqual(Frames.checksum(reassembled), 0)
        XCTAssertEqual(h.stack.counters.ipReasmOKs, 1)
        XCTAssertEqual(h.stack.counters.ipFragOKs, 1)
        XCTAssertEqual(h.stack.counters.ipFragCreates, 6)
    }

    func testSmallMTUFragmentsTo68() {
        let h = Harness { $0.mtu = 68 }
        h.learnPeer()
        let request = Frames.echoRequest(data: [UInt8](repeating: 1, count: 100))
        for frame in Frames.fragments(proto: 1, id: 1, payload: request, size: 48) { h.receive(frame) }
        let out = h.output().map(Parsed.init)
        XCTAssertEqual(out.count, 3, "108 bytes in 48-byte fragments")
        XCTAssertTrue(out.allSatisfy { $0.ipTotalLength <= 68 })
    }

    func testNoRouteOffLinkWithoutGateway() {
        let h = Harness()
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(from: IPv4Address(192, 168, 9, 9), proto: 1, Frames.echoRequest(data: []))))
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.ipOutNoRoutes, 1)
    }

    func testOffLinkReplyGoesThroughGateway() {
        let gateway = IPv4Address(10, 0, 0, 1)
        let gatewayMAC = MACAddress(0x0200_0000_0001)
        let h = Harness { $0.gateway = gateway }
        h.learnPeer(ip: gateway, mac: gatewayMAC)
        h.receive(Frames.ethernet(from: gatewayMAC, type: 0x0800, Frames.ipv4(from: IPv4Address(192, 168, 9, 9), proto: 1, Frames.echoRequest(data: []))))
        let out = h.output().map(Parsed.init)
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(out[0].destinationMAC, gatewayMAC)
        XCTAssertEqual(out[0].ipDestination, IPv4Address(192, 168, 9, 9))
    }
}
