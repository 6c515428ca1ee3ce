import Stack
import Timing
import XCTest

/// IPv6 reassembly (RFC 8200 4.5, RFC 5722, RFC 6946, RFC 7112).
final class IPv6ReassemblyTests: XCTestCase {
    /// The echo replies among the output (fragmented or not), as parsed frames.
    private func replies(_ h: Harness) -> [Parsed6] { h.output().map(Parsed6.init) }

    func testInOrderFragmentsReassembleAndTheEchoIsAnswered() {
        let h = Harness.ipv6()
        h.learnPeer6()
        for f in Frames6.fragments(of: Frames6.echoMessage(count: 1000), id: 1, size: 512) { h.receive(f) }
        let out = replies(h)
        XCTAssertEqual(out.map(\.icmpType), [129])
        XCTAssertEqual(out.first?.payload.count, 1008)
        XCTAssertEqual(out.first.map { Array($0.payload[8...]) }, (0..<1000).map { UInt8(truncatingIfNeeded: $0) })
        XCTAssertTrue(out.first?.checksumValid ?? false)
        let c = h.stack.counters
        XCTAssertEqual(c.ip6ReasmReqds, 2)
        XCTAssertEqual(c.ip6ReasmOKs, 1)
        XCTAssertEqual(c.ip6ReasmFails, 0)
        XCTAssertEqual(h.stack.reassembly6State.datagrams, 0)
        XCTAssertEqual(h.stack.reassembly6State.bytes, 0)
    }

    func testReversedFragmentsAndDuplicatesReassemble() {
        let h = Harness.ipv6()
        h.learnPeer6()
        let frags = Frames6.fragments(of: Frames6.echoMessage(count: 1200), id: 2, size: 256)
        for f in frags.reversed() { h.receive(f) }
        XCTAssertEqual(replies(h).map(\.icmpType), [129])
        XCTAssertEqual(h.stack.counters.ip6ReasmOKs, 1)
        // A duplicate of a fragment already taken changes nothing until the rest come.
        for f in [frags[1], frags[1], frags[0]] + frags[2...] { h.receive(f) }
        XCTAssertEqual(replies(h).map(\.icmpType), [129])
        XCTAssertEqual(h.stack.counters.ip6ReasmOKs, 2)
        XCTAssertEqual(h.stack.counters.ip6ReasmFails, 0)
    }

    /// RFC 5722: an overlap discards the whole packet and its later fragments, silently.
    func testOverlapDiscardsTheDatagramAndItsLaterFragments() {
        let h = Harness.ipv6()
        h.learnPeer6()
        let message = Frames6.echoMessage(count: 2000)
        h.receive(Frames6.fragment(id: 3, offset: 0, more: true, Array(message[0..<1000])))
        h.receive(Frames6.fragment(id: 3, offset: 992, more: true, Array(message[992..<1504])))
        XCTAssertEqual(h.stack.counters.ip6ReasmFails, 1)
        h.receive(Frames6.fragment(id: 3, offset: 1000, more: true, Array(message[1000..<1504])))
        h.receive(Frames6.fragment(id: 3, offset: 1504, more: false, Array(message[1504...])))
        h.receive(Frames6.fragment(id: 3, offset: 0, more: true, Array(message[0..<1000])))
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.ip6ReasmOKs, 0)
        XCTAssertEqual(h.stack.counters.ip6ReasmFails, 4)
        XCTAssertEqual(h.stack.reassembly6State.datagrams, 1, "kept, empty, to discard the later fragments")
        XCTAssertLessThan(h.stack.reassembly6State.bytes, 200)
        // When it times out, no Time Exceeded: it was discarded, not left incomplete.
        h.advance(milliseconds: 60_000)
        XCTAssertFalse(h.output().map(Parsed6.init).contains { $0.nextHeader == 58 && $0.icmpType == 3 })
        XCTAssertEqual(h.stack.counters.ip6ReasmTimeout, 0)
        XCTAssertEqual(h.stack.reassembly6State.datagrams, 0)
        // The same identification later is a new packet.
        for f in Frames6.fragments(of: message, id: 3, size: 1000) { h.receive(f) }
        XCTAssertEqual(h.stack.counters.ip6ReasmOKs, 1)
        XCTAssertEqual(h.stack.counters.icmp6OutEchoReplies, 1)
    }

    func testDatagramCountAndMemoryAreBounded() {
        let h = Harness {
            $0.reassembly.maxDatagrams = 4
            $0.reassembly.memoryLimit = 4096
            $0.ipv6 = IPv6Configuration(addresses: [IPv6Interface(cidr: "fd00::4/64")!])
            $0.ipv6!.dadTransmits = 0
        }
        for id in 0..<6 { h.receive(Frames6.fragment(id: UInt32(id), offset: 8, more: true, [UInt8](repeating: 1, count: 8))) }
        XCTAssertEqual(h.stack.reassembly6State.datagrams, 4)
        XCTAssertEqual(h.stack.counters.ip6ReasmFails, 2, "the oldest two evicted")
        for id in 100..<200 {
            h.receive(Frames6.fragment(id: UInt32(id), offset: 8000, more: true, [UInt8](repeating: 1, count: 1400)))
            XCTAssertLessThanOrEqual(h.stack.reassembly6State.bytes, 4096)
        }
        XCTAssertLessThanOrEqual(h.stack.reassembly6State.datagrams, 4)
        // A complete packet still goes through.
        h.learnPeer6()
        for f in Frames6.fragments(of: Frames6.echoMessage(count: 600), id: 500, size: 304) { h.receive(f) }
        XCTAssertEqual(h.stack.counters.ip6ReasmOKs, 1)
    }

    /// RFC 8200 4.5: after 60 s, Time Exceeded code 1 quoting the first fragment if it came;
    /// nothing if it did not.
    func testTimeoutSendsTimeExceededOnlyWithTheFirstFragment() {
        let h = Harness.ipv6()
        h.learnPeer6()
        let frags = Frames6.fragments(of: Frames6.echoMessage(count: 1000), id: 4, size: 512)
        h.receive(frags[0])
        let other = Frames6.fragments(of: Frames6.echoMessage(count: 1000), id: 5, size: 512)
        h.receive(other[1])
        XCTAssertEqual(h.stack.reassembly6State.datagrams, 2)
        h.advance(milliseconds: 59_999)
        XCTAssertFalse(h.output().map(Parsed6.init).contains { $0.icmpType == 3 })
        h.advance(milliseconds: 1)
        // The peer's entry, learnt STALE from its solicitation, was forgotten at 60 s too:
        // the error waits for resolution.
        XCTAssertEqual(h.output().map { Parsed6($0).icmpType }, [135])
        h.receive(Frames6.neighborAdvertisement(target: Frames6.peerGlobal))
        let errors = h.output().map(Parsed6.init).filter { $0.nextHeader == 58 && $0.icmpType == 3 }
        XCTAssertEqual(errors.count, 1)
        XCTAssertEqual(errors.first?.icmpCode, 1)
        XCTAssertEqual(errors.first?.destination, Frames6.peerGlobal)
        XCTAssertEqual(errors.first.map { Array($0.payload[8...]) }, Array(frags[0][14...]), "the first fragment, whole")
        XCTAssertTrue(errors.first?.checksumValid ?? false)
        XCTAssertEqual(h.stack.counters.ip6ReasmTimeout, 2)
        XCTAssertEqual(h.stack.counters.icmp6OutTimeExcds, 1)
        XCTAssertEqual(h.stack.reassembly6State.datagrams, 0)
    }

    /// RFC 6946: offset 0 and M clear is processed at once, apart from a reassembly of the
    /// same identification.
    func testAtomicFragmentIsProcessedAtOnceAndApart() {
        let h = Harness.ipv6()
        h.learnPeer6()
        let frags = Frames6.fragments(of: Frames6.echoMessage(count: 1000, seq: 1), id: 6, size: 512)
        h.receive(frags[0])
        h.receive(Frames6.fragment(id: 6, offset: 0, more: false, Frames6.echoMessage(count: 16, seq: 2)))
        var out = replies(h)
        XCTAssertEqual(out.map(\.icmpType), [129])
        XCTAssertEqual(out.first?.payload[7], 2)
        h.receive(frags[1])
        out = replies(h)
        XCTAssertEqual(out.map(\.icmpType), [129])
        XCTAssertEqual(out.first?.payload[7], 1)
        XCTAssertEqual(h.stack.counters.ip6ReasmOKs, 2)
    }

    /// RFC 8200 4.5: a non-final fragment whose length is not a multiple of 8 gets Parameter
    /// Problem code 0 at the Payload Length; one reaching past 65535 at the Fragment Offset.
    func testBadLengthsAreAnsweredWithParameterProblem() {
        let h = Harness.ipv6()
        h.learnPeer6()
        h.receive(Frames6.fragment(id: 7, offset: 0, more: true, Array(Frames6.echoMessage(count: 93))))
        var out = replies(h)
        XCTAssertEqual(out.map(\.icmpType), [4])
        XCTAssertEqual(out.first?.icmpCode, 0)
        XCTAssertEqual(out.first?.icmpParameter, 4)
        h.receive(Frames6.fragment(id: 8, offset: 65528, more: false, [UInt8](repeating: 0, count: 16)))
        out = replies(h)
        XCTAssertEqual(out.map(\.icmpType), [4])
        XCTAssertEqual(out.first?.icmpCode, 0)
        XCTAssertEqual(out.first?.icmpParameter, 42)
        XCTAssertEqual(h.stack.reassembly6State.datagrams, 0)
    }

    /// RFC 7112: a first fragment that ends inside the header chain is dropped with Parameter
    /// Problem code 3, pointer 0.
    func testFirstFragmentWithoutTheWholeHeaderChainIsRefused() {
        let h = Harness.ipv6()
        h.learnPeer6()
        // A destination options header naming ICMPv6, then nothing of the ICMPv6 header.
        h.receive(Frames6.fragment(next: 60, id: 9, offset: 0, more: true, [58, 0, 1, 4, 0, 0, 0, 0]))
        let out = replies(h)
        XCTAssertEqual(out.map(\.icmpType), [4])
        XCTAssertEqual(out.first?.icmpCode, 3)
        XCTAssertEqual(out.first?.icmpParameter, 0)
        XCTAssertEqual(h.stack.reassembly6State.datagrams, 0)
    }

    /// The reassembled packet goes on through the headers after the Fragment header.
    func testHeadersAfterTheFragmentHeaderAreWalked() {
        let h = Harness.ipv6()
        h.learnPeer6()
        let message = [58, 0, 1, 4, 0, 0, 0, 0] + Frames6.echoMessage(count: 600)
        for f in Frames6.fragments(of: message, next: 60, id: 10, size: 304) { h.receive(f) }
        XCTAssertEqual(replies(h).map(\.icmpType), [129])
    }

    /// Each fragment fits 65535 bytes with its own headers, but the first fragment's longer
    /// unfragmentable part would make the packet too large: it is dropped.
    func testFirstFragmentsLongerHeadersCannotOverflowThePacket() {
        let h = Harness.ipv6()
        h.learnPeer6()
        let options: [UInt8] = [44, 1] + [UInt8](repeating: 0, count: 14)  // 16-byte destination options, PadN
        let first = Frames6.frame(Frames6.ipv6(next: 60, options + [58, 0, 0, 1, 0, 0, 0, 11] + Frames6.echoMessage(count: 1272)))
        h.receive(first)
        h.receive(Frames6.fragment(id: 11, offset: 1280, more: false, [UInt8](repeating: 0, count: 65535 - 8 - 1280)))
        XCTAssertEqual(h.stack.counters.ip6ReasmOKs, 0)
        XCTAssertEqual(h.stack.counters.ip6ReasmFails, 1)
        XCTAssertEqual(h.stack.reassembly6State.datagrams, 0)
    }
}
