import Stack
import Timing
import XCTest

final class ARPTests: XCTestCase {
    func testAnswersRequestForOurAddress() {
        let h = Harness()
        h.receive(Frames.ethernet(to: .broadcast, type: 0x0806, Frames.arp(op: 1)))
        let out = h.output()
        XCTAssertEqual(out.count, 1)
        let reply = Parsed(frame: out[0])
        XCTAssertEqual(reply.ethernetType, 0x0806)
        XCTAssertEqual(reply.destinationMAC, Frames.peerMAC)
        XCTAssertEqual(reply.arpOperation, 2)
        XCTAssertEqual(reply.arpSenderIP, Frames.stackIP)
        XCTAssertEqual(reply.arpTargetIP, Frames.peerIP)
        XCTAssertEqual(Array(out[0][22..<28]), Frames.mac(Frames.stackMAC), "sender hardware address is ours")
        XCTAssertGreaterThanOrEqual(out[0].count, 60, "padded to the Ethernet minimum")
        XCTAssertEqual(h.stack.counters.arpOutReplies, 1)
        XCTAssertEqual(h.stack.neighborTable.first?.address, Frames.peerIP, "the requester is learnt (RFC 826)")
    }

    func testIgnoresRequestForAnotherAddressAndDoesNotLearn() {
        let h = Harness()
        h.receive(Frames.ethernet(to: .broadcast, type: 0x0806, Frames.arp(op: 1, targetIP: IPv4Address(10, 0, 0, 9))))
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertTrue(h.stack.neighborTable.isEmpty)
        XCTAssertEqual(h.stack.counters.arpInRequests, 1)
    }

    func testMalformedARPIsCounted() {
        let h = Harness()
        h.receive(Frames.ethernet(to: .broadcast, type: 0x0806, Array(Frames.arp(op: 1)[0..<27])))
        var wrongHardware = Frames.arp(op: 1)
        wrongHardware[1] = 6
        h.receive(Frames.ethernet(to: .broadcast, type: 0x0806, wrongHardware))
        h.receive(Frames.ethernet(to: .broadcast, type: 0x0806, Frames.arp(op: 9)))
        h.receive(Frames.ethernet(to: .broadcast, type: 0x0806, Frames.arp(op: 1, senderMAC: .broadcast)))
        h.receive(Frames.ethernet(to: .broadcast, type: 0x0806, Frames.arp(op: 1, senderIP: .any)))
        XCTAssertEqual(h.stack.counters.arpInTruncated, 1)
        XCTAssertEqual(h.stack.counters.arpInUnsupported, 1)
        XCTAssertEqual(h.stack.counters.arpInUnknownOperation, 1)
        XCTAssertEqual(h.stack.counters.arpInBadAddress, 1)
        // The probe (sender 0.0.0.0, RFC 5227) is answered but its sender is not learnt.
        XCTAssertEqual(h.output().count, 1)
        XCTAssertTrue(h.stack.neighborTable.isEmpty)
    }

    func testConflictingClaimOfOurAddressIsCountedNotLearnt() {
        let h = Harness()
        h.receive(Frames.ethernet(to: .broadcast, type: 0x0806,
                                  Frames.arp(op: 1, senderIP: Frames.stackIP, targetIP: Frames.stackIP)))
        XCTAssertEqual(h.stack.counters.arpInConflicts, 1)
        XCTAssertTrue(h.stack.neighborTable.isEmpty)
        XCTAssertTrue(h.output().isEmpty)
    }

    func testGratuitousAnnouncementsAtStart() {
        let h = Harness()
        h.stack.start(now: h.now)
        var out = h.output()
        XCTAssertEqual(out.count, 1)
        let first = Parsed(frame: out[0])
        XCTAssertEqual(first.destinationMAC, .broadcast)
        XCTAssertEqual(first.arpOperation, 1)
        XCTAssertEqual(first.arpSenderIP, Frames.stackIP)
        XCTAssertEqual(first.arpTargetIP, Frames.stackIP)
        h.advance(milliseconds: 1999)
        XCTAssertTrue(h.output().isEmpty)
        h.advance(milliseconds: 1)
        out = h.output()
        XCTAssertEqual(out.count, 1, "second announcement after ANNOUNCE_INTERVAL")
        h.advance(milliseconds: 60_000)
        XCTAssertTrue(h.output().isEmpty, "ANNOUNCE_NUM is 2")
    }

    /// An echo request from a host we have no entry for: the reply waits for resolution.
    func testResolutionQueuesThenSends() {
        let h = Harness()
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, Frames.echoRequest(data: [1, 2, 3]))))
        var out = h.output()
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(Parsed(frame: out[0]).ethernetType, 0x0806)
        XCTAssertEqual(Parsed(frame: out[0]).arpTargetIP, Frames.peerIP)
        XCTAssertEqual(Parsed(frame: out[0]).destinationMAC, .broadcast)
        h.advance(milliseconds: 10)
        h.receive(Frames.ethernet(type: 0x0806, Frames.arp(op: 2, targetMAC: Frames.stackMAC)))
        out = h.output()
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(Parsed(frame: out[0]).ethernetType, 0x0800)
        XCTAssertEqual(Parsed(frame: out[0]).destinationMAC, Frames.peerMAC)
    }

    func testResolutionRetriesThenFailsAndDropsQueue() {
        let h = Harness()
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, Frames.echoRequest(data: [1]))))
        XCTAssertEqual(h.output().count, 1)
        h.advance(milliseconds: 1000)
        XCTAssertEqual(h.output().count, 1, "second request after retrans_time")
        h.advance(milliseconds: 1000)
        XCTAssertEqual(h.output().count, 1, "third request")
        h.advance(milliseconds: 1000)
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.arpResolutionFailures, 1)
        XCTAssertEqual(h.stack.counters.arpPendingDrops, 1)
        XCTAssertTrue(h.stack.neighborTable.isEmpty)
        // A late reply must not resurrect the entry nor release anything.
        h.receive(Frames.ethernet(type: 0x0806, Frames.arp(op: 2, targetMAC: Frames.stackMAC)))
        XCTAssertTrue(h.output().isEmpty)
    }

    func testPendingQueueIsBounded() {
        let h = Harness { $0.arp.pendingBytesPerNeighbor = 1000 }
        for seq in 0..<10 {
            h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, Frames.echoRequest(seq: UInt16(seq), data: [UInt8](repeating: 7, count: 292)))))
        }
        XCTAssertEqual(h.output().count, 1, "one request while resolving")
        XCTAssertEqual(h.stack.counters.arpPendingDrops, 7, "300-byte replies: three fit in 1000 bytes")
        h.receive(Frames.ethernet(type: 0x0806, Frames.arp(op: 2, targetMAC: Frames.stackMAC)))
        let out = h.output().map(Parsed.init)
        XCTAssertEqual(out.count, 3)
        XCTAssertEqual(out.map { UInt16($0.ipPayload[6]) << 8 | UInt16($0.ipPayload[7]) }, [7, 8, 9], "the oldest were dropped")
    }

    /// Confirmed entries go stale, are still used, and a unicast probe re-confirms them.
    func testStaleEntryIsProbedWhileUsed() {
        let h = Harness()
        h.learnPeer()
        h.advance(milliseconds: 30_001)
        XCTAssertEqual(h.stack.neighborTable.first?.state, "STALE")
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, Frames.echoRequest(data: [1]))))
        let out = h.output().map(Parsed.init)
        XCTAssertEqual(out.count, 2)
        XCTAssertEqual(out[0].ethernetType, 0x0806)
        XCTAssertEqual(out[0].destinationMAC, Frames.peerMAC, "the probe is unicast")
        XCTAssertEqual(out[1].ethernetType, 0x0800, "the reply is not held back")
        h.receive(Frames.ethernet(type: 0x0806, Frames.arp(op: 2, targetMAC: Frames.stackMAC)))
        XCTAssertEqual(h.stack.neighborTable.first?.state, "REACHABLE")
    }

    func testUnusedStaleEntryIsForgotten() {
        let h = Harness()
        h.learnPeer()
        h.advance(milliseconds: 30_001 + 60_000)
        XCTAssertTrue(h.stack.neighborTable.isEmpty)
    }
}
