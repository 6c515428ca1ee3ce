import Stack
import XCTest

/// Connections' ring storage is reused from one connection to the next (`RingStoragePool`),
/// within the pool's limit.
final class RingStoragePoolTests: XCTestCase {
    private func address(of ring: ByteRing) -> UnsafeMutableRawPointer? {
        // The free space of an empty ring starts at its storage.
        ring.freeRegions(limit: 1).0.baseAddress
    }

    func testTheStorageOfAFreedRingServesTheNextRingOfItsSize() throws {
        let pool = RingStoragePool(maximumBytes: 1 << 20)
        var ring: ByteRing? = ByteRing(capacity: 65536, pool: pool)
        let first = try XCTUnwrap(address(of: ring!))
        ring = nil
        XCTAssertEqual(pool.bytes, 65536)
        let other = ByteRing(capacity: 32768, pool: pool)
        XCTAssertNotEqual(address(of: other), first, "another size is not served from it")
        let next = ByteRing(capacity: 65536, pool: pool)
        XCTAssertEqual(address(of: next), first)
        XCTAssertEqual(pool.bytes, 0)
    }

    func testThePoolKeepsNoMoreThanItsLimitAndNoTinyRings() {
        let pool = RingStoragePool(maximumBytes: 100_000)
        var rings: [ByteRing] = [ByteRing(capacity: 65536, pool: pool), ByteRing(capacity: 65536, pool: pool),
                                 ByteRing(capacity: 1, pool: pool)]
        rings.removeAll()
        XCTAssertEqual(pool.bytes, 65536)
    }

    /// A ring whose storage went back (TIME-WAIT) holds nothing and takes nothing, and its
    /// storage is not given back a second time when it is freed.
    func testAReleasedRingHoldsNothingAndTakesNothing() throws {
        let pool = RingStoragePool(maximumBytes: 1 << 20)
        var ring: ByteRing? = ByteRing(capacity: 4096, pool: pool)
        let bytes: [UInt8] = Array(repeating: 7, count: 100)
        XCTAssertEqual(bytes.withUnsafeBytes { ring!.append($0) }, 100)
        ring!.consume(100)
        ring!.releaseStorage()
        XCTAssertEqual(pool.bytes, 4096)
        XCTAssertEqual(ring!.capacity, 0)
        XCTAssertEqual(ring!.free, 0)
        XCTAssertEqual(bytes.withUnsafeBytes { ring!.append($0) }, 0)
        XCTAssertEqual(ring!.freeRegions(limit: 100).0.count + ring!.freeRegions(limit: 100).1.count, 0)
        ring = nil
        XCTAssertEqual(pool.bytes, 4096, "given back once")
    }

    /// A connection that reaches TIME-WAIT gives its rings to the stack's pool, and the next
    /// connection takes them.
    func testAConnectionInTimeWaitGivesItsRingsToTheNextConnection() throws {
        let p = ScriptedPeer()
        let (s, isn) = try p.establishPassive()
        try p.stack.tcpShutdown(s, .write, now: p.now)
        let fin = try XCTUnwrap(p.received().first { $0.flags.contains(.fin) })
        p.send([.fin, .ack], seq: 1001, ack: fin.seq &+ 1, to: 80)
        _ = p.received()
        XCTAssertEqual(p.stack.tcpState(s), .timeWait)
        let kept = p.stack.ringPool.bytes
        XCTAssertGreaterThanOrEqual(kept, 2 * 256 * 1024, "both rings kept")
        _ = isn
        let next = p.stack.tcpOpen()
        XCTAssertEqual(p.stack.ringPool.bytes, kept - 2 * 256 * 1024)
        p.stack.tcpClose(next, now: p.now)
    }
}
