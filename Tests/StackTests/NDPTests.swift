import Stack
import Timing
import XCTest

/// Neighbour discovery (RFC 4861) and duplicate address detection (RFC 4862) on the virtual clock.
final class NDPTests: XCTestCase {
    func testMulticastSolicitationIsAnsweredAndItsSourceLearntStale() {
        let h = Harness.ipv6()
        h.receive(Frames6.neighborSolicitation(target: Frames6.stackGlobal))
        let out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.count, 1)
        let na = out[0]
        XCTAssertEqual(na.icmpType, 136)
        XCTAssertEqual(na.hopLimit, 255)
        XCTAssertEqual(na.destination, Frames6.peerGlobal)
        XCTAssertEqual(na.destinationMAC, Frames.peerMAC, "to the solicitation's source link-layer address")
        XCTAssertEqual(na.source, Frames6.stackGlobal)
        XCTAssertEqual(na.target, Frames6.stackGlobal)
        XCTAssertEqual(na.naFlags, 0x60, "Solicited and Override, not Router")
        XCTAssertEqual(Array(na.payload[24..<32]), [2, 1] + Frames.mac(Frames.stackMAC), "target link-layer option")
        XCTAssertTrue(na.checksumValid)
        // Learnt STALE (7.2.3), then DELAY: the advertisement itself used the entry (7.3.3).
        XCTAssertEqual(h.stack.neighbor6Table.map(\.state), ["DELAY"])
        XCTAssertEqual(h.stack.counters.icmp6InNeighborSolicits, 1)
        XCTAssertEqual(h.stack.counters.icmp6OutNeighborAdvertisements, 1)
    }

    func testUnicastSolicitationForTheLinkLocalAddress() {
        let h = Harness.ipv6()
        h.receive(Frames6.neighborSolicitation(target: Frames6.stackLinkLocal, from: Frames6.peerLinkLocal,
                                               to: Frames6.stackLinkLocal))
        let out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.map(\.icmpType), [136])
        XCTAssertEqual(out.first?.source, Frames6.stackLinkLocal)
    }

    func testSolicitationFromTheUnspecifiedAddressIsAnsweredToAllNodes() {
        let h = Harness.ipv6()
        h.receive(Frames6.neighborSolicitation(target: Frames6.stackGlobal, from: .unspecified, sourceLinkLayer: nil))
        let out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(out[0].destination, .allNodes)
        XCTAssertEqual(out[0].destinationMAC.description, "33:33:00:00:00:01")
        XCTAssertEqual(out[0].naFlags, 0x20, "Override only: unsolicited")
        XCTAssertTrue(h.stack.neighbor6Table.isEmpty)
    }

    func testInvalidSolicitationsAreCountedAndIgnored() {
        let h = Harness.ipv6()
        h.receive(Frames6.neighborSolicitation(target: Frames6.stackGlobal, hopLimit: 254))
        h.receive(Frames6.neighborSolicitation(target: IPv6Address("ff02::1")!, to: Frames6.stackGlobal.solicitedNode))
        // From :: with a source link-layer option, or not to a solicited-node address.
        h.receive(Frames6.neighborSolicitation(target: Frames6.stackGlobal, from: .unspecified))
        h.receive(Frames6.neighborSolicitation(target: Frames6.stackGlobal, from: .unspecified, to: Frames6.stackGlobal,
                                               sourceLinkLayer: nil))
        // An option of length zero.
        let src = Frames6.peerGlobal, dst = Frames6.stackGlobal.solicitedNode
        h.receive(Frames6.frame(to: dst.multicastMAC, Frames6.ipv6(from: src, to: dst, next: 58, hopLimit: 255,
            Frames6.icmp6(type: 135, body: [0, 0, 0, 0] + Frames6.bytes(Frames6.stackGlobal) + [1, 0, 0, 0, 0, 0, 0, 0],
                          from: src, to: dst))))
        XCTAssertEqual(h.stack.counters.ndp6InInvalid, 5)
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertTrue(h.stack.neighbor6Table.isEmpty)
        // A solicitation for an address not ours is not answered, and not learnt from.
        h.receive(Frames6.neighborSolicitation(target: IPv6Address("fd00::9")!))
        XCTAssertTrue(h.output().isEmpty)
    }

    func testResolutionGivesUpAfterThreeSolicitations() {
        let h = Harness.ipv6()
        h.receive(Frames6.echoRequest())
        XCTAssertEqual(h.output().count, 1)
        XCTAssertEqual(h.stack.neighbor6Table.map(\.state), ["INCOMPLETE"])
        h.advance(milliseconds: 1000)
        XCTAssertEqual(h.output().map { Parsed6($0).icmpType }, [135])
        h.advance(milliseconds: 1000)
        XCTAssertEqual(h.output().map { Parsed6($0).icmpType }, [135])
        h.advance(milliseconds: 1000)
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertTrue(h.stack.neighbor6Table.isEmpty)
        XCTAssertEqual(h.stack.counters.ndp6ResolutionFailures, 1)
        XCTAssertEqual(h.stack.counters.ndp6PendingDrops, 1)
        XCTAssertEqual(h.stack.counters.icmp6OutNeighborSolicits, 3)
    }

    func testReachableStaleDelayProbeAndExpiry() {
        let h = Harness.ipv6()
        h.receive(Frames6.echoRequest())
        _ = h.output()
        h.receive(Frames6.neighborAdvertisement(target: Frames6.peerGlobal))
        XCTAssertEqual(h.output().count, 1, "the queued reply")
        XCTAssertEqual(h.stack.neighbor6Table.map(\.state), ["REACHABLE"])
        // ReachableTime is 15 to 45 s (0.5 to 1.5 x 30 s).
        h.advance(milliseconds: 45_001)
        XCTAssertEqual(h.stack.neighbor6Table.map(\.state), ["STALE"])
        h.receive(Frames6.echoRequest(seq: 2))
        XCTAssertEqual(h.output().map { Parsed6($0).icmpType }, [129], "a stale entry is used at once")
        XCTAssertEqual(h.stack.neighbor6Table.map(\.state), ["DELAY"])
        h.advance(milliseconds: 5000)
        let probe = h.output().map(Parsed6.init)
        XCTAssertEqual(probe.map(\.icmpType), [135])
        XCTAssertEqual(probe.first?.destination, Frames6.peerGlobal, "a unicast probe")
        XCTAssertEqual(probe.first?.destinationMAC, Frames.peerMAC)
        XCTAssertEqual(h.stack.neighbor6Table.map(\.state), ["PROBE"])
        h.advance(milliseconds: 2000)
        XCTAssertEqual(h.output().count, 2)
        h.advance(milliseconds: 1000)
        XCTAssertTrue(h.stack.neighbor6Table.isEmpty, "three unanswered probes")
    }

    func testProbeAnsweredReturnsToReachable() {
        let h = Harness.ipv6()
        h.learnPeer6()
        h.receive(Frames6.echoRequest())
        _ = h.output()
        XCTAssertEqual(h.stack.neighbor6Table.map(\.state), ["DELAY"])
        h.advance(milliseconds: 5000)
        _ = h.output()
        h.receive(Frames6.neighborAdvertisement(target: Frames6.peerGlobal))
        XCTAssertEqual(h.stack.neighbor6Table.map(\.state), ["REACHABLE"])
    }

    /// RFC 4861 7.2.5: an advertisement without Override does not replace a known address.
    func testAdvertisementFlags() {
        let h = Harness.ipv6()
        let other = MACAddress("02:00:00:00:00:99")!
        h.learnPeer6()
        h.receive(Frames6.neighborAdvertisement(target: Frames6.peerGlobal, solicited: true, override: false,
                                                targetLinkLayer: other))
        XCTAssertEqual(h.stack.neighbor6Table.first?.mac, Frames.peerMAC)
        h.receive(Frames6.neighborAdvertisement(target: Frames6.peerGlobal, solicited: true))
        XCTAssertEqual(h.stack.neighbor6Table.first?.state, "REACHABLE")
        h.receive(Frames6.neighborAdvertisement(target: Frames6.peerGlobal, solicited: true, override: false,
                                                targetLinkLayer: other))
        XCTAssertEqual(h.stack.neighbor6Table.first?.state, "STALE", "doubted, not replaced")
        XCTAssertEqual(h.stack.neighbor6Table.first?.mac, Frames.peerMAC)
        h.receive(Frames6.neighborAdvertisement(target: Frames6.peerGlobal, router: true, solicited: false,
                                                targetLinkLayer: other))
        XCTAssertEqual(h.stack.neighbor6Table.first?.mac, other, "Override replaces it")
        XCTAssertEqual(h.stack.neighbor6Table.first?.router, true)
        // Never created by an advertisement; a multicast one must not be Solicited.
        h.receive(Frames6.neighborAdvertisement(target: IPv6Address("fd00::7")!))
        XCTAssertEqual(h.stack.neighbor6Table.count, 1)
        h.receive(Frames6.neighborAdvertisement(target: IPv6Address("fd00::7")!, to: .allNodes, solicited: true))
        XCTAssertEqual(h.stack.counters.ndp6InInvalid, 1)
    }

    func testQueueWhileResolvingIsBounded() {
        let h = Harness.ipv6 { $0.pendingBytesPerNeighbor = 100 }
        for seq in 0..<3 { h.receive(Frames6.echoRequest(seq: UInt16(seq), data: Array(repeating: 0, count: 32))) }
        _ = h.output()
        XCTAssertEqual(h.stack.counters.ndp6PendingDrops, 1, "40-byte replies: two fit in 100 bytes")
        h.receive(Frames6.neighborAdvertisement(target: Frames6.peerGlobal))
        XCTAssertEqual(h.output().map { Parsed6($0).payload[7] }, [1, 2], "the newest kept, in order")
    }

    // MARK: Duplicate address detection

    func testAddressesAreTentativeUntilDADPasses() {
        let h = Harness.ipv6(dad: 1)
        h.stack.start(now: h.now)
        let probes = h.output().map(Parsed6.init).filter { $0.ethernetType == 0x86DD }
        XCTAssertEqual(probes.count, 2, "one probe per address: link-local and fd00::4")
        for p in probes {
            XCTAssertEqual(p.icmpType, 135)
            XCTAssertEqual(p.source, .unspecified)
            XCTAssertEqual(p.destination, p.target.solicitedNode)
            XCTAssertEqual(p.payload.count, 24, "no source link-layer option from ::")
        }
        XCTAssertEqual(Set(probes.map(\.target)), [Frames6.stackLinkLocal, Frames6.stackGlobal])
        h.receive(Frames6.echoRequest())
        XCTAssertTrue(h.output().isEmpty, "a tentative address receives nothing")
        XCTAssertEqual(h.stack.counters.ip6InAddrErrors, 1)
        h.advance(milliseconds: 999)
        XCTAssertTrue(h.stack.ipv6Addresses.allSatisfy(\.isTentative))
        h.advance(milliseconds: 1)
        XCTAssertTrue(h.stack.ipv6Addresses.allSatisfy(\.isPreferred))
        h.learnPeer6()
        h.receive(Frames6.echoRequest())
        XCTAssertEqual(h.output().map { Parsed6($0).icmpType }, [129])
    }

    func testAnotherNodesProbeOrAdvertisementMakesTheAddressDuplicate() {
        let h = Harness.ipv6(dad: 1)
        h.stack.start(now: h.now)
        _ = h.output()
        h.receive(Frames6.neighborSolicitation(target: Frames6.stackGlobal, from: .unspecified, sourceLinkLayer: nil))
        h.receive(Frames6.neighborAdvertisement(target: Frames6.stackLinkLocal, to: .allNodes, solicited: false))
        XCTAssertTrue(h.output().isEmpty)
        h.advance(milliseconds: 1000)
        XCTAssertEqual(h.stack.counters.ndp6DADFailures, 2)
        XCTAssertFalse(h.stack.ipv6Addresses.contains { $0.isPreferred || $0.isTentative })
        h.receive(Frames6.neighborSolicitation(target: Frames6.stackGlobal))
        XCTAssertTrue(h.output().isEmpty, "a duplicate address is not used")
    }
}
