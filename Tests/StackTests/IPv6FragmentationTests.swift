import Stack
import Timing
import XCTest

/// Fragmentation of our packets (RFC 8200 4.5) and path MTU discovery (RFC 8201, RFC 5927).
final class IPv6FragmentationTests: XCTestCase {
    /// A 4000-byte echo: the reply leaves in fragments of at most the MTU, each but the last
    /// a multiple of 8, and a stack at the peer's address reassembles it.
    func testLargeReplyIsFragmentedAndOurReassemblyRebuildsIt() {
        let h = Harness.ipv6()
        h.learnPeer6()
        for f in Frames6.fragments(of: Frames6.echoMessage(count: 4000), id: 1, size: 1232) { h.receive(f) }
        let frames = h.output()
        let out = frames.map(Parsed6.init)
        XCTAssertEqual(out.count, 3)
        XCTAssertTrue(frames.allSatisfy { $0.count <= 1514 })
        XCTAssertTrue(out.allSatisfy { $0.nextHeader == 44 && $0.payload[0] == 58 })
        XCTAssertEqual(out.map(\.fragmentOffset), [0, 1448, 2896])
        XCTAssertEqual(out.map(\.moreFragments), [true, true, false])
        XCTAssertEqual(Set(out.map(\.fragmentIdentification)).count, 1)
        XCTAssertEqual(out.map { $0.payload.count - 8 }, [1448, 1448, 1112])
        let c = h.stack.counters
        XCTAssertEqual(c.ip6FragOKs, 1)
        XCTAssertEqual(c.ip6FragCreates, 3)
        XCTAssertEqual(c.icmp6OutEchoReplies, 1)

        let peer = Harness.ipv6Peer()
        for f in frames.reversed() { peer.receive(f) }
        XCTAssertEqual(peer.stack.counters.ip6ReasmOKs, 1)
        XCTAssertEqual(peer.stack.counters.icmp6InEchoReplies, 1)
        XCTAssertEqual(peer.stack.counters.icmp6InCsumErrors, 0)
    }

    func testEachPacketGetsItsOwnIdentification() {
        let h = Harness.ipv6()
        h.learnPeer6()
        for seq in 0..<3 {
            for f in Frames6.fragments(of: Frames6.echoMessage(count: 2000, seq: UInt16(seq)), id: UInt32(seq), size: 1232) {
                h.receive(f)
            }
        }
        let ids = h.output().map(Parsed6.init).map(\.fragmentIdentification)
        XCTAssertEqual(ids.count, 6)
        XCTAssertEqual(Set(ids).count, 3)
    }

    /// The reply that waited for neighbour resolution is fragmented when it leaves.
    func testPacketQueuedForResolutionIsFragmentedWhenSent() {
        let h = Harness.ipv6()
        for f in Frames6.fragments(of: Frames6.echoMessage(count: 3000), id: 1, size: 1232) { h.receive(f) }
        XCTAssertEqual(h.output().map { Parsed6($0).icmpType }, [135])
        h.receive(Frames6.neighborAdvertisement(target: Frames6.peerGlobal))
        let frames = h.output()
        XCTAssertEqual(frames.count, 3)
        XCTAssertTrue(frames.allSatisfy { $0.count <= 1514 && Parsed6($0).nextHeader == 44 })
        XCTAssertEqual(h.stack.counters.ip6FragOKs, 1)
    }

    /// What the quoted packet of a Packet Too Big looks like: one of ours to the peer.
    private func ourPacket(from source: IPv6Address = Frames6.stackGlobal, to destination: IPv6Address = Frames6.peerGlobal) -> [UInt8] {
        Frames6.ipv6(from: source, to: destination, next: 58, Frames6.icmp6(type: 129, body: [UInt8](repeating: 0, count: 1400),
                                                                             from: source, to: destination))
    }

    func testPacketTooBigLowersThePathMTUWhichAgesOut() {
        let h = Harness.ipv6()
        h.learnPeer6()
        XCTAssertEqual(h.stack.pathMTU(toward: Frames6.peerGlobal), 1500)
        h.receive(Frames6.packetTooBig(mtu: 1400, quoting: ourPacket()))
        XCTAssertEqual(h.stack.pathMTU(toward: Frames6.peerGlobal), 1400)
        XCTAssertEqual(h.stack.pathMTU(toward: IPv6Address("fd00::6")!), 1500, "per destination")
        XCTAssertEqual(h.stack.counters.pmtu6Decreases, 1)
        XCTAssertEqual(h.stack.pathMTU6Table.first?.mtu, 1400)
        // A 1400-byte reply no longer fits whole.
        h.receive(Frames6.echoRequest(data: [UInt8](repeating: 7, count: 1400)))
        let frames = h.output()
        XCTAssertEqual(frames.count, 2)
        XCTAssertTrue(frames.allSatisfy { $0.count <= 1414 })
        // RFC 8201 4: never raised by a Packet Too Big.
        h.receive(Frames6.packetTooBig(mtu: 1450, quoting: ourPacket()))
        XCTAssertEqual(h.stack.pathMTU(toward: Frames6.peerGlobal), 1400)
        XCTAssertEqual(h.stack.counters.pmtu6Ignored, 1)
        // RFC 8201 5.3: after 10 minutes the link MTU is tried again.
        h.advance(milliseconds: 600_000)
        XCTAssertEqual(h.stack.pathMTU(toward: Frames6.peerGlobal), 1500)
        XCTAssertTrue(h.stack.pathMTU6Table.isEmpty)
    }

    /// RFC 8201 4 / RFC 8021: an MTU below 1280 is taken as 1280; packets then leave whole
    /// up to 1280 bytes, never as atomic fragments.
    func testMTUBelowTheMinimumIsClampedTo1280() {
        let h = Harness.ipv6()
        h.learnPeer6()
        h.receive(Frames6.packetTooBig(mtu: 576, quoting: ourPacket()))
        XCTAssertEqual(h.stack.pathMTU(toward: Frames6.peerGlobal), 1280)
        h.receive(Frames6.echoRequest(data: [UInt8](repeating: 7, count: 1232)))
        let out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.map(\.nextHeader), [58], "1280 bytes: whole, no Fragment header")
    }

    /// RFC 5927: a Packet Too Big about a packet we could not have sent is ignored.
    func testPacketTooBigAboutSomeoneElsesPacketIsIgnored() {
        let h = Harness.ipv6()
        h.learnPeer6()
        h.receive(Frames6.packetTooBig(mtu: 1300, quoting: ourPacket(from: IPv6Address("fd00::99")!)))
        h.receive(Frames6.packetTooBig(mtu: 1300, quoting: ourPacket(to: IPv6Address("ff02::1")!)))
        h.receive(Frames6.packetTooBig(mtu: 1300, quoting: Array(ourPacket().prefix(20))))
        XCTAssertEqual(h.stack.pathMTU(toward: Frames6.peerGlobal), 1500)
        XCTAssertEqual(h.stack.counters.pmtu6Ignored, 3)
        XCTAssertEqual(h.stack.counters.icmp6InPktTooBigs, 3)
        XCTAssertTrue(h.output().isEmpty)
    }
}
