import Stack
import Timing
import XCTest

/// In-order data handed to the stack's `directReceiver` before the receive ring
/// (`TCPConfiguration.directDeliveryMinimum`): what it takes and what the application reads
/// from the ring afterwards must make up the sent stream, in order, whatever the wire does.
final class DirectDeliveryTests: XCTestCase {
    /// Takes a seeded share of each offer (nothing, a part, or all) and checks it against the
    /// stream, through the same verifier as the reads from the ring.
    final class Reader: TCPDirectReceiver {
        let stack: NetworkStack
        var socket: SocketID?
        var sink: PatternStream
        var rng: SplitMix64
        var received = 0
        var taken = 0
        var offers = 0
        var offeredWithRingData = 0
        var offeredForAnotherSocket = 0
        var mismatch: UInt64?
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
        var eof = false

        init(stack: NetworkStack, seed: UInt64) {
            self.stack = stack
            sink = PatternStream(seed: seed)
            rng = SplitMix64(state: seed ^ 0x1234)
        }

        deinit {
            scratch.deallocate()
            buffer.deallocate()
        }

        func tcpTakeDirectly(_ id: SocketID, _ bytes: UnsafeRawBufferPointer) -> Int {
            offers += 1
            if id != socket { offeredForAnotherSocket += 1 }
            if stack.tcpReadable(id) != 0 { offeredWithRingData += 1 }
            let n: Int
            switch rng.next() % 3 {
            case 0: n = 0
            case 1: n = Int(rng.next() % UInt64(bytes.count))
            default: n = bytes.count
            }
            accept(UnsafeRawBufferPointer(rebasing: bytes[0..<n]))
            taken += n
            return n
        }

        /// What the application reads from the ring, as much as there is.
        func readRing(now: Instant) {
            while !eof, let socket, let n = try? stack.tcpReceive(socket, into: buffer, now: now) {
                if n == 0 {
                    eof = true
                    break
                }
                accept(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            }
        }

        private func accept(_ data: UnsafeRawBufferPointer) {
            guard !data.isEmpty else { return }
            if mismatch == nil, let at = sink.verify(data, scratch: scratch) { mismatch = UInt64(received) + at }
            received += data.count
        }
    }

    private func transfer(faults: Faults, seed: UInt64, bytes: Int, file: StaticString = #filePath, line: UInt = #line) throws -> Reader {
        let sim = Simulation(seed: seed) { $0.tcp.directDeliveryMinimum = 1000 }
        let (server, client) = try Scenario.connect(sim)
        let reader = Reader(stack: sim.a, seed: seed)
        reader.socket = server
        sim.a.directReceiver = reader
        sim.faults = faults
        var source = PatternStream(seed: seed)
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { chunk.deallocate() }
        var sent = 0
        var pending = 0..<0
        var shut = false
        let ok = sim.run(for: 600_000) {
            while sent < bytes {
                if pending.isEmpty {
                    let n = min(chunk.count, bytes - sent)
                    source.fill(UnsafeMutableRawBufferPointer(rebasing: chunk[0..<n]))
                    pending = 0..<n
                }
                guard let n = try? sim.b.tcpSend(client, UnsafeRawBufferPointer(rebasing: chunk[pending]), now: sim.now), n > 0
                else { break }
                sent += n
                pending = pending.dropFirst(n)
            }
            if sent == bytes && !shut {
                try? sim.b.tcpShutdown(client, .write, now: sim.now)
                shut = true
            }
            reader.readRing(now: sim.now)
            return reader.eof
        }
        XCTAssertTrue(ok, "seed \(seed): \(reader.received) of \(bytes) bytes", file: file, line: line)
        XCTAssertNil(reader.mismatch, "seed \(seed): wrong byte at \(reader.mismatch.map(String.init) ?? "")", file: file, line: line)
        XCTAssertEqual(reader.received, bytes, file: file, line: line)
        XCTAssertEqual(reader.offeredWithRingData, 0, "offered while the ring held data", file: file, line: line)
        XCTAssertEqual(reader.offeredForAnotherSocket, 0, file: file, line: line)
        XCTAssertEqual(sim.a.counters.tcpDirectBytes, UInt64(reader.taken), file: file, line: line)
        XCTAssertEqual(sim.a.tcpInfo(server)?.bytesReceived, UInt64(bytes), file: file, line: line)
        return reader
    }

    /// On a clean wire every in-order segment of 1000 bytes or more is offered; what is not
    /// taken waits in the ring and the application reads it in its place.
    func testTakenAndRingReadBytesMakeUpTheStream() throws {
        let r = try transfer(faults: Faults(), seed: 11, bytes: 1 << 20)
        XCTAssertGreaterThan(r.taken, 0)
        XCTAssertLessThan(r.taken, 1 << 20, "some offers refused or taken in part: the ring carried the rest")
    }

    /// Loss, reordering and duplicates: segments beyond a hole go to the ring (never offered),
    /// the one filling it is not offered either (the ring then holds data), and the stream
    /// stays whole.
    func testTheStreamStaysWholeUnderLossAndReordering() throws {
        var f = Faults()
        f.loss = 0.03
        f.reorder = 0.03
        f.duplicate = 0.01
        for seed: UInt64 in [21, 22, 23] {
            let r = try transfer(faults: f, seed: seed, bytes: 1 << 20)
            XCTAssertGreaterThan(r.taken, 0, "seed \(seed)")
        }
    }

    /// Below `directDeliveryMinimum` nothing is offered: small segments gather in the ring.
    func testSegmentsBelowTheMinimumGoToTheRing() throws {
        let sim = Simulation(seed: 5)
        XCTAssertGreaterThan(sim.a.configuration.tcp.directDeliveryMinimum, sim.a.configuration.mtu)
        let (server, client) = try Scenario.connect(sim)
        let reader = Reader(stack: sim.a, seed: 5)
        reader.socket = server
        sim.a.directReceiver = reader
        var source = PatternStream(seed: 5)
        let data = UnsafeMutableRawBufferPointer.allocate(byteCount: 100_000, alignment: 16)
        defer { data.deallocate() }
        source.fill(data)
        var sent = 0
        XCTAssertTrue(sim.run {
            if sent < data.count, let n = try? sim.b.tcpSend(client, UnsafeRawBufferPointer(rebasing: data[sent...]), now: sim.now) { sent += n }
            reader.readRing(now: sim.now)
            return reader.received == data.count
        })
        XCTAssertNil(reader.mismatch)
        XCTAssertEqual(reader.offers, 0)
        XCTAssertEqual(sim.a.counters.tcpDirectBytes, 0)
    }
}
