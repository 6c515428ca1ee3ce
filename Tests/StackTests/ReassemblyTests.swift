import Stack
import Timing
import XCTest

final class ReassemblyTests: XCTestCase {
    private func echo(_ n: Int) -> [UInt8] { Frames.echoRequest(data: (0..<n).map { UInt8(truncatingIfNeeded: $0) }) }

    func testOutOfOrderAndDuplicatesReassemble() {
        let h = Harness()
        h.learnPeer()
        let frags = Frames.fragments(proto: 1, id: 1, payload: echo(2992), size: 1000)
        h.receive(frags[2])
        h.receive(frags[0])
        h.receive(frags[0])
        XCTAssertEqual(h.stack.counters.ipReasmDuplicates, 1)
        h.receive(frags[1])
        XCTAssertEqual(h.stack.counters.ipReasmOKs, 1)
        XCTAssertEqual(h.output().count, 3, "the reply, fragmented")
        XCTAssertEqual(h.stack.reassemblyState.datagrams, 0)
        XCTAssertEqual(h.stack.reassemblyState.bytes, 0)
    }

    func testOverlapDropsWholeDatagram() {
        let h = Harness()
        h.learnPeer()
        let payload = echo(2992)
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, id: 2, moreFragments: true, offset: 0, Array(payload[0..<1000]))))
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, id: 2, moreFragments: true, offset: 992, Array(payload[992..<2000]))))
        XCTAssertEqual(h.stack.counters.ipReasmOverlaps, 1)
        XCTAssertEqual(h.stack.reassemblyState.datagrams, 0)
        // The remaining fragments alone cannot complete it.
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, id: 2, moreFragments: false, offset: 2000, Array(payload[2000...]))))
        XCTAssertEqual(h.stack.counters.ipReasmOKs, 0)
        XCTAssertTrue(h.output().isEmpty)
    }

    func testInvalidFragmentsFail() {
        let h = Harness()
        // A non-final fragment whose length is not a multiple of 8.
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, id: 3, moreFragments: true, offset: 0, [UInt8](repeating: 0, count: 100))))
        // A fragment reaching past 65535 bytes.
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, id: 4, moreFragments: false, offset: 65528, [UInt8](repeating: 0, count: 16))))
        // Two different ends.
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, id: 5, moreFragments: false, offset: 800, [UInt8](repeating: 0, count: 8))))
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, id: 5, moreFragments: false, offset: 1600, [UInt8](repeating: 0, count: 8))))
        XCTAssertEqual(h.stack.counters.ipReasmFails, 3)
        XCTAssertEqual(h.stack.reassemblyState.datagrams, 0)
    }

    /// RFC 792/1122: Time Exceeded code 1 when an incomplete datagram whose first
    /// fragment arrived times out; nothing when the first fragment never came.
    func testTimeoutSendsTimeExceededOnlyWithFirstFragment() {
        let h = Harness()
        h.learnPeer()
        let frags = Frames.fragments(proto: 1, id: 6, payload: echo(2992), size: 1000)
        h.receive(frags[0])
        let later = Frames.fragments(proto: 1, id: 7, payload: echo(2992), size: 1000)
        h.receive(later[1])
        XCTAssertEqual(h.stack.reassemblyState.datagrams, 2)
        h.advance(milliseconds: 29_999)
        XCTAssertTrue(h.output().isEmpty)
        h.advance(milliseconds: 1)
        // The neighbour went stale in 30 s, so a unicast ARP probe accompanies the error.
        let out = h.output().map(Parsed.init).filter { $0.ethernetType == 0x0800 }
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(out[0].ipPayload[0], 11)
        XCTAssertEqual(out[0].ipPayload[1], 1)
        XCTAssertEqual(h.stack.counters.ipReasmTimeout, 2)
        XCTAssertEqual(h.stack.reassemblyState.datagrams, 0)
        XCTAssertEqual(h.stack.reassemblyState.bytes, 0)
    }

    /// Endless fragments of distinct datagrams: memory stays under the limit, the oldest
    /// are evicted, and a complete datagram still goes through afterwards.
    func testMemoryIsBoundedUnderFragmentFlood() {
        let h = Harness { $0.reassembly.memoryLimit = 1 << 20 }
        h.learnPeer()
        for id in 0..<5000 {
            h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 17, id: UInt16(id), moreFragments: true, offset: 60_000, [UInt8](repeating: 1, count: 1400))))
            XCTAssertLessThanOrEqual(h.stack.reassemblyState.bytes, 1 << 20)
        }
        XCTAssertGreaterThan(h.stack.counters.ipReasmFails, 5000 - (1 << 20) / 1400)
        XCTAssertLessThan(h.stack.reassemblyState.datagrams, (1 << 20) / 1400)
        for frame in Frames.fragments(proto: 1, id: 60_000, payload: echo(2000), size: 1000) { h.receive(frame) }
        XCTAssertEqual(h.stack.counters.ipReasmOKs, 1)
    }

    func testTooManyFragmentsFail() {
        let h = Harness { $0.reassembly.maxFragmentsPerDatagram = 16 }
        for i in 0..<17 {
            h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, id: 9, moreFragments: true, offset: i * 16, [UInt8](repeating: 0, count: 8))))
        }
        XCTAssertEqual(h.stack.counters.ipReasmFails, 1)
        XCTAssertEqual(h.stack.reassemblyState.datagrams, 0)
    }
}
