import Stack
import Timing
import XCTest

/// IPv6 receive checks, extension headers, ICMPv6 echo and errors (RFC 8200, RFC 4443).
final class IPv6Tests: XCTestCase {
    func testEchoToGlobalAddressWaitsForResolutionThenIsAnswered() {
        let h = Harness.ipv6()
        h.receive(Frames6.echoRequest(seq: 7))
        var out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.count, 1, "the reply waits while the peer is solicited")
        XCTAssertEqual(out[0].icmpType, 135)
        XCTAssertEqual(out[0].destination.description, "ff02::1:ff00:5")
        XCTAssertEqual(out[0].destinationMAC.description, "33:33:ff:00:00:05")
        XCTAssertEqual(out[0].hopLimit, 255)
        XCTAssertEqual(out[0].source, Frames6.stackGlobal)
        XCTAssertTrue(out[0].checksumValid)
        h.receive(Frames6.neighborAdvertisement(target: Frames6.peerGlobal))
        out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(out[0].icmpType, 129)
        XCTAssertEqual(out[0].destinationMAC, Frames.peerMAC)
        XCTAssertEqual(out[0].source, Frames6.stackGlobal)
        XCTAssertEqual(out[0].destination, Frames6.peerGlobal)
        XCTAssertEqual(Array(out[0].payload[4...]), Frames.be16(0x4242) + Frames.be16(7) + Array(0..<32))
        XCTAssertTrue(out[0].checksumValid)
        XCTAssertEqual(h.stack.counters.icmp6InEchos, 1)
        XCTAssertEqual(h.stack.counters.icmp6OutEchoReplies, 1)
        XCTAssertEqual(h.stack.neighbor6Table.first?.state, "REACHABLE")
    }

    func testEchoToAllNodesIsAnsweredFromTheLinkLocalAddress() {
        let h = Harness.ipv6()
        h.receive(Frames6.neighborSolicitation(target: Frames6.stackLinkLocal, from: Frames6.peerLinkLocal))
        _ = h.output()
        h.receive(Frames6.echoRequest(from: Frames6.peerLinkLocal, to: .allNodes))
        let out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(out[0].icmpType, 129)
        XCTAssertEqual(out[0].source, Frames6.stackLinkLocal)
        XCTAssertTrue(out[0].checksumValid)
    }

    func testMulticastFramesOfOtherGroupsAreNotOurs() {
        let h = Harness.ipv6()
        // MLD report to ff02::16 and a router solicitation to ff02::2, as a new TAP sends.
        h.receive(Frames6.frame(to: MACAddress("33:33:00:00:00:16")!, Frames6.ipv6(to: IPv6Address("ff02::16")!, next: 58, [])))
        h.receive(Frames6.frame(to: MACAddress("33:33:00:00:00:02")!, Frames6.ipv6(to: IPv6Address("ff02::2")!, next: 58, [])))
        // IPv4 to the all-nodes MAC: that group is joined for IPv6 only.
        h.receive(Frames.ethernet(to: IPv6Address.allNodes.multicastMAC, type: 0x0800,
                                  Frames.ipv4(proto: 1, Frames.echoRequest(data: [1, 2]))))
        XCTAssertEqual(h.stack.counters.linkInMulticast, 3)
        XCTAssertEqual(h.stack.counters.ip6InReceives, 0)
        XCTAssertEqual(h.stack.counters.ipInReceives, 0)
    }

    func testIPv6OffIsCountedAndDropped() {
        let h = Harness()
        h.receive(Frames6.echoRequest())
        XCTAssertEqual(h.stack.counters.linkInIPv6, 1)
        XCTAssertTrue(h.output().isEmpty)
    }

    func testMalformedHeadersAreCountedAndDropped() {
        let h = Harness.ipv6()
        let good = Frames6.ipv6(next: 59, [])
        h.receive(Frames6.frame(Array(good[0..<39])))
        var v4 = good
        v4[0] = 0x40
        h.receive(Frames6.frame(v4))
        h.receive(Frames6.frame(Frames6.ipv6(next: 59, payloadLength: 100, [1, 2, 3])))
        h.receive(Frames6.frame(Frames6.ipv6(from: IPv6Address("ff02::1")!, next: 59, [])))
        h.receive(Frames6.frame(Frames6.ipv6(from: .loopback, next: 59, [])))
        h.receive(Frames6.frame(Frames6.ipv6(to: IPv6Address("fd00::9")!, next: 59, [])))
        h.receive(Frames6.frame(Frames6.ipv6(next: 0, payloadLength: 0, [])))
        h.receive(Frames6.frame(good + [0, 0, 0]))  // Ethernet padding is not payload
        let c = h.stack.counters
        XCTAssertEqual(c.ip6InReceives, 8)
        XCTAssertEqual(c.ip6InHdrErrors, 5)
        XCTAssertEqual(c.ip6InTruncatedPkts, 1)
        XCTAssertEqual(c.ip6InAddrErrors, 1)
        XCTAssertEqual(c.ip6InNoNextHeader, 1)
        XCTAssertTrue(h.output().isEmpty)
    }

    func testBadICMPv6ChecksumIsCounted() {
        let h = Harness.ipv6()
        var frame = Frames6.echoRequest()
        frame[frame.count - 1] ^= 0xFF
        h.receive(frame)
        XCTAssertEqual(h.stack.counters.icmp6InCsumErrors, 1)
        XCTAssertEqual(h.stack.counters.icmp6InErrors, 1)
        XCTAssertTrue(h.output().isEmpty)
    }

    // MARK: Errors (RFC 4443)

    private func udp(to dst: IPv6Address = Frames6.stackGlobal, checksum: Bool = true) -> [UInt8] {
        let datagram = Frames.be16(40000) + Frames.be16(9) + Frames.be16(12) + [0, 0] + [1, 2, 3, 4]
        let payload = checksum ? Frames6.withChecksum(datagram, at: 6, from: Frames6.peerGlobal, to: dst, next: 17) : datagram
        return Frames6.ipv6(to: dst, next: 17, payload)
    }

    func testUDPIsAnsweredWithPortUnreachable() {
        let h = Harness.ipv6()
        h.learnPeer6()
        let packet = udp()
        h.receive(Frames6.frame(packet))
        let out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(out[0].icmpType, 1)
        XCTAssertEqual(out[0].icmpCode, 4)
        XCTAssertEqual(Array(out[0].payload[8...]), packet, "the whole offending packet is quoted")
        XCTAssertTrue(out[0].checksumValid)
        XCTAssertEqual(h.stack.counters.udp6NoPorts, 1)
        XCTAssertEqual(h.stack.counters.icmp6OutDestUnreachs, 1)
        // A zero UDP checksum is invalid over IPv6 (RFC 8200 8.1), a wrong one too: no answer.
        h.receive(Frames6.frame(udp(checksum: false)))
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.udp6InCsumErrors, 1)
    }

    /// A TAP with offloads hands over the kernel's UDP with only the pseudo-header's sum in
    /// its checksum field, vouched for by the virtio-net header.
    func testChecksumVouchedForByTheLinkIsTrusted() {
        let h = Harness.ipv6()
        h.learnPeer6()
        let frame = Frames6.frame(udp(checksum: false))
        frame.withUnsafeBytes { h.stack.receive(frame: $0, checksumVerified: true, now: h.now) }
        XCTAssertEqual(h.output().map { Parsed6($0).icmpType }, [1])
        XCTAssertEqual(h.stack.counters.udp6NoPorts, 1)
        XCTAssertEqual(h.stack.counters.udp6InCsumErrors, 0)
    }

    func testUnknownNextHeaderIsAParameterProblemAtItsField() {
        let h = Harness.ipv6()
        h.learnPeer6()
        h.receive(Frames6.frame(Frames6.ipv6(next: 200, [0, 0, 0, 0])))
        // Behind a destination options header, the pointer is that header's Next Header.
        h.receive(Frames6.frame(Frames6.ipv6(next: 60, [200, 0, 1, 4, 0, 0, 0, 0])))
        // Hop-by-hop options anywhere but first is an unrecognized Next Header too.
        h.receive(Frames6.frame(Frames6.ipv6(next: 60, [0, 0, 1, 4, 0, 0, 0, 0, 59, 0, 1, 4, 0, 0, 0, 0])))
        let out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.map(\.icmpType), [4, 4, 4])
        XCTAssertEqual(out.map(\.icmpCode), [1, 1, 1])
        XCTAssertEqual(out.map(\.icmpParameter), [6, 40, 40])
        XCTAssertEqual(h.stack.counters.ip6InUnknownProtos, 3)
        XCTAssertEqual(h.stack.counters.icmp6OutParmProblems, 3)
    }

    func testOptionsAreSkippedOrAnsweredByTheirHighBits() {
        let h = Harness.ipv6()
        h.learnPeer6()
        let echo = Frames6.icmp6(type: 128, body: [0, 1, 0, 1])
        // Pad1, PadN and an unknown 00xxxxxx option are skipped: the echo is answered.
        h.receive(Frames6.frame(Frames6.ipv6(next: 0, [58, 0, 0, 1, 0, 0x07, 1, 0x00] + echo)))
        XCTAssertEqual(h.output().map { Parsed6($0).icmpType }, [129])
        // 01xxxxxx: discarded silently.
        h.receive(Frames6.frame(Frames6.ipv6(next: 60, [58, 0, 0x47, 0, 1, 2, 0, 0] + echo)))
        XCTAssertTrue(h.output().isEmpty)
        // 10xxxxxx: Parameter Problem code 2 pointing at the option, even to a multicast address.
        h.receive(Frames6.frame(to: IPv6Address.allNodes.multicastMAC,
                                Frames6.ipv6(to: .allNodes, next: 60, [58, 0, 1, 0, 0x87, 0, 0, 0] + echo)))
        var out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.map(\.icmpType), [4])
        XCTAssertEqual(out.first?.icmpCode, 2)
        XCTAssertEqual(out.first?.icmpParameter, 44)
        XCTAssertEqual(out.first?.source, Frames6.stackGlobal, "from a unicast address of ours")
        // 11xxxxxx: the same, but not to a multicast address.
        h.receive(Frames6.frame(Frames6.ipv6(next: 60, [58, 0, 0xC7, 0, 1, 2, 0, 0] + echo)))
        out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.map(\.icmpParameter), [42])
        h.receive(Frames6.frame(to: IPv6Address.allNodes.multicastMAC,
                                Frames6.ipv6(to: .allNodes, next: 60, [58, 0, 0xC7, 0, 1, 2, 0, 0] + echo)))
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.ip6InDiscards, 4)
        // An option running past its header is a header error.
        h.receive(Frames6.frame(Frames6.ipv6(next: 60, [58, 0, 1, 9, 0, 0, 0, 0] + echo)))
        XCTAssertEqual(h.stack.counters.ip6InHdrErrors, 1)
    }

    func testRoutingHeaderWithSegmentsLeftIsRefused() {
        let h = Harness.ipv6()
        h.learnPeer6()
        let echo = Frames6.icmp6(type: 128, body: [0, 1, 0, 1])
        h.receive(Frames6.frame(Frames6.ipv6(next: 43, [58, 0, 0, 0, 0, 0, 0, 0] + echo)))
        XCTAssertEqual(h.output().map { Parsed6($0).icmpType }, [129], "segments left 0: ignored (RFC 8200 4.4)")
        h.receive(Frames6.frame(Frames6.ipv6(next: 43, [58, 0, 4, 1, 0, 0, 0, 0] + echo)))
        let out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.map(\.icmpType), [4])
        XCTAssertEqual(out.first?.icmpCode, 0)
        XCTAssertEqual(out.first?.icmpParameter, 42)
    }

    func testNoErrorAboutAnErrorAMulticastDestinationOrAnUnspecifiedSource() {
        let h = Harness.ipv6()
        h.learnPeer6()
        let error = Frames6.icmp6(type: 1, code: 4, body: [0, 0, 0, 0])
        h.receive(Frames6.frame(Frames6.ipv6(next: 60, [58, 0, 0xC7, 0, 1, 2, 0, 0] + error)))
        h.receive(Frames6.frame(to: IPv6Address.allNodes.multicastMAC, udp(to: .allNodes)))
        h.receive(Frames6.frame(Frames6.ipv6(from: .unspecified, next: 200, [])))
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.icmp6OutMsgs, 1, "only the NA that taught the peer")
    }

    func testErrorsAreRateLimited() {
        let h = Harness.ipv6()
        h.learnPeer6()
        for _ in 0..<60 { h.receive(Frames6.frame(udp())) }
        XCTAssertEqual(h.output().count, 50, "the burst")
        XCTAssertEqual(h.stack.counters.icmp6OutRateLimitHost, 10)
        h.advance(milliseconds: 10)
        for _ in 0..<20 { h.receive(Frames6.frame(udp())) }
        XCTAssertEqual(h.output().count, 10, "1000 per second refill 10 in 10 ms")
    }
}
