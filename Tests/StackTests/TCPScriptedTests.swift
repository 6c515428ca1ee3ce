import Stack
import Timing
import XCTest

extension TCPOptions {
    /// The first SACK block as raw sequence numbers, nil without one.
    var firstSACK: (start: UInt32, end: UInt32)? {
        sack.count > 0 ? (sack[0].start.rawValue, sack[0].end.rawValue) : nil
    }
}

/// RFC behaviour as conversations: a segment in, the exact segment(s) out.
final class TCPScriptedTests: XCTestCase {
    func read(_ p: ScriptedPeer, _ s: SocketID) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        guard let n = try? buffer.withUnsafeMutableBytes({ try p.stack.tcpReceive(s, into: $0, now: p.now) }) else { return nil }
        return Array(buffer[0..<n])
    }

    // RFC 9293 3.5, Figure 6 (server side) and 3.7.1 (MSS), RFC 7323, RFC 2018.
    func testPassiveOpenAnswersSYNWithSYNACKAndOptions() throws {
        let p = ScriptedPeer()
        let listener = p.stack.tcpOpen()
        try p.stack.tcpBind(listener, port: 80)
        try p.stack.tcpListen(listener, backlog: 4)
        p.send(.syn, seq: 5000, options: ScriptedPeer.synOptions(ts: (77, 0)), to: 80)
        let synAck = try XCTUnwrap(p.expectOne())
        XCTAssertEqual(synAck.flags, [.syn, .ack])
        XCTAssertEqual(synAck.ack, 5001)
        XCTAssertEqual(synAck.options.mss, 1460)
        XCTAssertNotNil(synAck.options.windowScale)
        XCTAssertTrue(synAck.options.sackPermitted)
        XCTAssertEqual(synAck.options.timestamp?.echo, 77)
        XCTAssertThrowsError(try p.stack.tcpAccept(listener), "not before the handshake completes")
        p.send(.ack, seq: 5001, ack: synAck.seq &+ 1, options: { var o = TCPOptions(); o.timestamp = (78, synAck.options.timestamp!.value); return o }(), to: 80)
        p.expectNothing()
        let s = try p.stack.tcpAccept(listener)
        let info = try XCTUnwrap(p.stack.tcpInfo(s))
        XCTAssertEqual(info.state, .established)
        XCTAssertEqual(info.sendMSS, 1460 - 12, "MSS less the timestamp option")
        XCTAssertTrue(info.sack && info.timestamps)
    }

    // RFC 9293 3.10.7.1: CLOSED.
    func testClosedPortAnswersWithReset() throws {
        let p = ScriptedPeer()
        p.send(.syn, seq: 100, to: 81)
        let rst = try XCTUnwrap(p.expectOne())
        XCTAssertEqual(rst.flags, [.rst, .ack])
        XCTAssertEqual(rst.seq, 0)
        XCTAssertEqual(rst.ack, 101)
        p.send(.ack, seq: 100, ack: 4242, to: 81)
        let rst2 = try XCTUnwrap(p.expectOne())
        XCTAssertEqual(rst2.flags, .rst)
        XCTAssertEqual(rst2.seq, 4242)
        p.send(.rst, seq: 100, to: 81)
        p.expectNothing("a RST is never answered")
        p.send(.syn, seq: 100, to: 81, checksumOK: false)
        p.expectNothing("a bad checksum is dropped")
        XCTAssertEqual(p.stack.counters.tcpInCsumErrors, 1)
    }

    // RFC 9293 3.5 Figure 5 (client side).
    func testActiveOpen() throws {
        let p = ScriptedPeer()
        let s = p.stack.tcpOpen()
        try p.stack.tcpConnect(s, to: IPAddress(Frames.peerIP), port: p.port, now: p.now)
        let syn = try XCTUnwrap(p.expectOne())
        XCTAssertEqual(syn.flags, .syn)
        XCTAssertEqual(syn.options.mss, 1460)
        XCTAssertTrue(syn.options.sackPermitted)
        XCTAssertNotNil(syn.options.timestamp)
        XCTAssertFalse(p.stack.tcpReadiness(s)!.contains(.writable))
        p.port = syn.destinationPort
        let local = syn.sourcePort
        XCTAssertTrue((UInt16(32768)...UInt16(60999)).contains(local), "ephemeral range (RFC 6056)")
        p.port = syn.destinationPort
        // Reply from the peer's port to our ephemeral port.
        let peer = ScriptedPeerPort(p, peerPort: syn.destinationPort)
        peer.send([.syn, .ack], seq: 9000, ack: syn.seq &+ 1, options: ScriptedPeer.synOptions(mss: 1000, ws: nil, sack: false), to: local)
        let ack = try XCTUnwrap(p.expectOne())
        XCTAssertEqual(ack.flags, .ack)
        XCTAssertEqual(ack.ack, 9001)
        XCTAssertEqual(ack.seq, syn.seq &+ 1)
        XCTAssertEqual(p.stack.tcpState(s), .established)
        XCTAssertTrue(p.stack.tcpReadiness(s)!.contains(.writable))
        let info = try XCTUnwrap(p.stack.tcpInfo(s))
        XCTAssertEqual(info.sendMSS, 1000, "the peer's MSS bounds ours")
        XCTAssertFalse(info.sack)
        XCTAssertNil(info.windowScale, "window scaling needs both sides (RFC 7323 2.2)")
    }

    // RFC 9293 3.7.1: the MSS bounds what we send, down to a floor (as Linux's
    // TCP_MIN_SND_MSS): a peer announcing 10 gets segments of TCPConfiguration.minimumMSS.
    func testTinyPeerMSSIsRaisedToTheFloor() throws {
        let p = ScriptedPeer()
        let s = p.stack.tcpOpen()
        try p.stack.tcpConnect(s, to: IPAddress(Frames.peerIP), port: p.port, now: p.now)
        let syn = try XCTUnwrap(p.expectOne())
        let peer = ScriptedPeerPort(p, peerPort: syn.destinationPort)
        peer.send([.syn, .ack], seq: 9000, ack: syn.seq &+ 1, options: ScriptedPeer.synOptions(mss: 10, ws: nil, sack: false),
                  to: syn.sourcePort)
        _ = try XCTUnwrap(p.expectOne())
        XCTAssertEqual(try XCTUnwrap(p.stack.tcpInfo(s)).sendMSS, TCPConfiguration.minimumMSS)
        // A write of the floor's size goes whole in one segment; one byte more is a second,
        // small segment, which Nagle's algorithm holds back while the first is unacknowledged.
        let data = [UInt8](repeating: 0x61, count: TCPConfiguration.minimumMSS + 1)
        XCTAssertEqual(try data.withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }, data.count)
        XCTAssertEqual(p.received().map(\.payload.count), [TCPConfiguration.minimumMSS])
    }

    // RFC 9293 3.4: sequence numbers wrap; data straddling 2^32 is received in order.
    func testReceiveAcrossSequenceWraparound() throws {
        let p = ScriptedPeer()
        let isn: UInt32 = 0xFFFF_FFF0
        let (s, stackISN) = try p.establishPassive(peerISN: isn)
        let data = (0..<40).map { UInt8($0) }
        p.send([.ack, .psh], seq: isn &+ 1, ack: stackISN &+ 1, data: Array(data[0..<20]), to: 80)
        p.send([.ack, .psh], seq: isn &+ 21, ack: stackISN &+ 1, data: Array(data[20..<40]), to: 80)
        p.advance(40)
        let ack = try XCTUnwrap(p.expectOne("the delayed ACK of both"))
        XCTAssertEqual(ack.ack, isn &+ 41)
        XCTAssertEqual(ack.ack, 0x19, "wrapped past zero")
        XCTAssertEqual(read(p, s), data)
    }

    // RFC 5681 4.2: out-of-order data is ACKed at once, with SACK (RFC 2018).
    func testOutOfOrderIsAckedImmediatelyWithSACK() throws {
        let p = ScriptedPeer()
        let (s, stackISN) = try p.establishPassive(peerISN: 1000, options: ScriptedPeer.synOptions(ws: nil))
        p.send(.ack, seq: 1101, ack: stackISN &+ 1, data: [UInt8](repeating: 2, count: 100), to: 80)
        let dup = try XCTUnwrap(p.expectOne())
        XCTAssertEqual(dup.ack, 1001)
        XCTAssertEqual(dup.options.sack.count, 1)
        XCTAssertEqual(dup.options.sack[0].start.rawValue, 1101)
        XCTAssertEqual(dup.options.sack[0].end.rawValue, 1201)
        p.send(.ack, seq: 1001, ack: stackISN &+ 1, data: [UInt8](repeating: 1, count: 100), to: 80)
        let full = try XCTUnwrap(p.expectOne("filling the hole is ACKed at once"))
        XCTAssertEqual(full.ack, 1201)
        XCTAssertTrue(full.options.sack.isEmpty)
        XCTAssertEqual(read(p, s), [UInt8](repeating: 1, count: 100) + [UInt8](repeating: 2, count: 100))
    }

    // RFC 5681 4.2 with SACK compression (Linux's tcp_comp_sack): the first three duplicate
    // ACKs for one RCV.NXT go at once; later ones are owed until the stack's owner flushes
    // them (after the frames at hand), its timers run, or eight are owed; then one ACK
    // carries the latest SACK block. Filling the hole is still ACKed at once.
    func testDuplicateAcksBeyondThreeAreCoalesced() throws {
        let p = ScriptedPeer()
        let (s, stackISN) = try p.establishPassive(peerISN: 1000, options: ScriptedPeer.synOptions(ws: nil))
        // 1001..<1101 is lost; the segments after it arrive.
        func segment(_ k: Int) {
            p.send(.ack, seq: UInt32(1101 + 100 * k), ack: stackISN &+ 1, data: [UInt8](repeating: 7, count: 100), to: 80)
        }
        for k in 0..<3 {
            segment(k)
            let dup = try XCTUnwrap(p.expectOne("duplicate ACK \(k + 1) goes at once"))
            XCTAssertEqual(dup.ack, 1001)
            XCTAssertEqual(dup.options.firstSACK?.end, UInt32(1201 + 100 * k))
        }
        for k in 3..<6 {
            segment(k)
            p.expectNothing("duplicate ACK \(k + 1) is owed")
        }
        XCTAssertEqual(p.stack.counters.tcpAckCompressed, 0)
        p.stack.flushDeferredAcks(now: p.now)
        let owed = try XCTUnwrap(p.expectOne("one ACK for the three owed"))
        XCTAssertEqual(owed.ack, 1001)
        XCTAssertEqual(owed.options.firstSACK?.start, 1101)
        XCTAssertEqual(owed.options.firstSACK?.end, 1701)
        XCTAssertEqual(p.stack.counters.tcpAckCompressed, 3)
        p.stack.flushDeferredAcks(now: p.now)
        p.expectNothing("nothing is owed any more")
        for k in 6..<13 {
            segment(k)
            p.expectNothing()
        }
        segment(13)
        XCTAssertEqual(p.expectOne("the eighth owed segment sends at once")?.options.firstSACK?.end, 2501)
        segment(14)
        p.expectNothing()
        p.stack.poll(now: p.now)
        XCTAssertEqual(p.expectOne("poll flushes")?.options.firstSACK?.end, 2601)
        p.send(.ack, seq: 1001, ack: stackISN &+ 1, data: [UInt8](repeating: 1, count: 100), to: 80)
        let full = try XCTUnwrap(p.expectOne("filling the hole is ACKed at once"))
        XCTAssertEqual(full.ack, 2601)
        XCTAssertTrue(full.options.sack.isEmpty)
        XCTAssertEqual(read(p, s)?.count, 1600)
    }

    // A new RCV.NXT starts a new run: a second hole gets its three immediate duplicate ACKs.
    func testEachHoleGetsThreeImmediateDuplicateAcks() throws {
        let p = ScriptedPeer()
        let (_, stackISN) = try p.establishPassive(peerISN: 1000, options: ScriptedPeer.synOptions(ws: nil))
        func send(_ seq: UInt32) {
            p.send(.ack, seq: seq, ack: stackISN &+ 1, data: [UInt8](repeating: 7, count: 100), to: 80)
        }
        // Holes at 1001..<1101 and 1601..<1701.
        for seq in stride(from: UInt32(1101), to: 1601, by: 100) { send(seq) }
        XCTAssertEqual(p.received().count, 3, "three at once, two owed")
        for seq in stride(from: UInt32(1701), to: 2201, by: 100) { send(seq) }
        XCTAssertEqual(p.received().count, 0, "still the same RCV.NXT: owed")
        send(1001)
        let partial = try XCTUnwrap(p.expectOne("the first hole filled"))
        XCTAssertEqual(partial.ack, 1601)
        XCTAssertEqual(partial.options.firstSACK?.start, 1701)
        for seq in stride(from: UInt32(2201), to: 2601, by: 100) { send(seq) }
        XCTAssertEqual(p.received().map(\.ack), [1601, 1601, 1601], "three at once for the new RCV.NXT")
    }

    // Without SACK a sender counts duplicate ACKs (RFC 5681 3.2), so none is coalesced.
    func testWithoutSACKEveryDuplicateAckGoesAtOnce() throws {
        let p = ScriptedPeer()
        let (_, stackISN) = try p.establishPassive(peerISN: 1000)
        for k in 0..<6 {
            p.send(.ack, seq: UInt32(1101 + 100 * k), ack: stackISN &+ 1, data: [UInt8](repeating: 7, count: 100), to: 80)
            XCTAssertEqual(p.expectOne("duplicate ACK \(k + 1)")?.ack, 1001)
        }
        p.stack.flushDeferredAcks(now: p.now)
        p.expectNothing()
    }

    // RFC 1122 4.2.3.2 and RFC 5681 4.2: delayed ACK, at most 40 ms here, and at once for
    // every second full-sized segment.
    func testDelayedAck() throws {
        let p = ScriptedPeer()
        let (_, stackISN) = try p.establishPassive(peerISN: 1000)
        p.send(.ack, seq: 1001, ack: stackISN &+ 1, data: [1, 2, 3], to: 80)
        p.expectNothing("a small segment waits")
        p.advance(39)
        p.expectNothing()
        p.advance(1)
        XCTAssertEqual(p.expectOne("the delayed ACK")?.ack, 1004)
        let full = [UInt8](repeating: 9, count: 1460)
        p.send(.ack, seq: 1004, ack: stackISN &+ 1, data: full, to: 80)
        p.expectNothing("one full segment waits")
        p.send(.ack, seq: 1004 + 1460, ack: stackISN &+ 1, data: full, to: 80)
        XCTAssertEqual(p.expectOne("the second full segment is ACKed at once")?.ack, 1004 + 2920)
    }

    // RFC 5961 3.2: a RST in the window but not at RCV.NXT gets a challenge ACK; the
    // exact one resets.
    func testResetProtection() throws {
        let p = ScriptedPeer()
        let (s, stackISN) = try p.establishPassive(peerISN: 1000)
        p.send(.rst, seq: 1500, to: 80)
        let challenge = try XCTUnwrap(p.expectOne("challenge ACK"))
        XCTAssertEqual(challenge.flags, .ack)
        XCTAssertEqual(challenge.ack, 1001)
        XCTAssertEqual(p.stack.tcpState(s), .established)
        p.send(.rst, seq: 900_000, to: 80)
        p.expectNothing("a RST outside the window is dropped silently")
        p.send(.syn, seq: 1001, to: 80)
        XCTAssertEqual(p.expectOne("a SYN in ESTABLISHED gets a challenge ACK (RFC 5961 4.2)")?.ack, 1001)
        p.send(.rst, seq: 1001, to: 80)
        p.expectNothing()
        XCTAssertEqual(p.stack.tcpState(s), .closed)
        var buffer = [UInt8](repeating: 0, count: 10)
        XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { try p.stack.tcpReceive(s, into: $0, now: p.now) }) {
            XCTAssertEqual($0 as? SocketError, .connectionReset)
        }
        _ = stackISN
    }

    // RFC 9293 3.6 / Figure 13: passive close. FIN -> ACK, CLOSE-WAIT, EOF; close -> FIN,
    // LAST-ACK; ACK -> CLOSED.
    func testPassiveClose() throws {
        let p = ScriptedPeer()
        let (s, stackISN) = try p.establishPassive(peerISN: 1000)
        p.send([.fin, .ack], seq: 1001, ack: stackISN &+ 1, to: 80)
        XCTAssertEqual(p.expectOne("ACK of FIN")?.ack, 1002)
        XCTAssertEqual(p.stack.tcpState(s), .closeWait)
        XCTAssertEqual(read(p, s), [], "end of stream")
        p.stack.tcpClose(s, now: p.now)
        let fin = try XCTUnwrap(p.expectOne("our FIN"))
        XCTAssertEqual(fin.flags, [.fin, .ack])
        XCTAssertEqual(fin.seq, stackISN &+ 1)
        p.send(.ack, seq: 1002, ack: stackISN &+ 2, to: 80)
        p.expectNothing()
        XCTAssertEqual(p.stack.counters.tcpCurrEstab, 0)
    }

    // RFC 9293 Figure 13, active side, and TIME-WAIT (2 MSL, shortened to 1 s here).
    func testActiveCloseThroughTimeWait() throws {
        let p = ScriptedPeer()
        let (s, stackISN) = try p.establishPassive(peerISN: 1000)
        try p.stack.tcpShutdown(s, .write, now: p.now)
        let fin = try XCTUnwrap(p.expectOne())
        XCTAssertEqual(fin.flags, [.fin, .ack])
        XCTAssertEqual(p.stack.tcpState(s), .finWait1)
        p.send(.ack, seq: 1001, ack: stackISN &+ 2, to: 80)
        XCTAssertEqual(p.stack.tcpState(s), .finWait2)
        p.send([.fin, .ack], seq: 1001, ack: stackISN &+ 2, to: 80)
        let finAck = try XCTUnwrap(p.expectOne())
        XCTAssertEqual(finAck.ack, 1002)
        XCTAssertEqual(p.stack.tcpState(s), .timeWait)
        // A retransmitted FIN in TIME-WAIT is acknowledged again, with the window already
        // offered (the right edge never moves left), though the rings' storage is gone.
        p.send([.fin, .ack], seq: 1001, ack: stackISN &+ 2, to: 80)
        let again = try XCTUnwrap(p.expectOne())
        XCTAssertEqual(again.ack, 1002)
        XCTAssertEqual(again.window, finAck.window)
        XCTAssertGreaterThan(again.window, 0)
        p.advance(999)
        XCTAssertEqual(p.stack.tcpState(s), .timeWait)
        p.advance(1)
        XCTAssertEqual(p.stack.tcpState(s), .closed)
    }

    // TIME-WAIT keeps one timer, its own: the retransmission, loss-probe and delayed-ACK
    // timers of the exchange before it leave the wheel (rather than each waking the stack
    // once for nothing when it comes due).
    func testTimeWaitKeepsOnlyItsOwnTimer() throws {
        let p = ScriptedPeer()
        let idle = p.stack.pendingTimers
        let (s, stackISN) = try p.establishPassive(peerISN: 1000)
        // Both ways: our data arms the retransmission timer (and a loss probe), theirs a
        // delayed ACK.
        _ = try [UInt8](repeating: 7, count: 100).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        p.stack.poll(now: p.now)
        XCTAssertEqual(p.expectOne("our data")?.payload.count, 100)
        p.send(.ack, seq: 1001, ack: stackISN &+ 101, data: [1, 2, 3], to: 80)
        XCTAssertGreaterThan(p.stack.pendingTimers, idle + 1)
        try p.stack.tcpShutdown(s, .write, now: p.now)
        let fin = try XCTUnwrap(p.expectOne("our FIN"))
        XCTAssertTrue(fin.flags.contains(.fin))
        p.send([.fin, .ack], seq: 1004, ack: stackISN &+ 102, to: 80)
        XCTAssertEqual(p.expectOne("ACK of their FIN")?.ack, 1005)
        XCTAssertEqual(p.stack.tcpState(s), .timeWait)
        XCTAssertEqual(p.stack.pendingTimers, idle + 1)
        p.advance(1000)
        XCTAssertEqual(p.stack.tcpState(s), .closed)
        XCTAssertEqual(p.stack.pendingTimers, idle)
    }

    // As Linux's tcp_max_tw_buckets: beyond maximumTimeWait a closing connection still
    // acknowledges the peer's FIN, then leaves TIME-WAIT at the next tick, counted.
    func testTimeWaitBeyondTheLimitEndsAtTheNextTick() throws {
        let p = ScriptedPeer { $0.tcp.maximumTimeWait = 1 }
        func activeClose(port: UInt16) throws -> SocketID {
            let (s, stackISN) = try p.establishPassive(port: port, peerISN: 1000)
            try p.stack.tcpShutdown(s, .write, now: p.now)
            XCTAssertEqual(p.expectOne("our FIN")?.flags, [.fin, .ack])
            p.send([.fin, .ack], seq: 1001, ack: stackISN &+ 2, to: port)
            XCTAssertEqual(p.expectOne("ACK of their FIN")?.ack, 1002)
            return s
        }
        let first = try activeClose(port: 80)
        let second = try activeClose(port: 81)
        XCTAssertEqual(p.stack.counters.tcpTimeWaitOverflow, 1)
        p.advance(1)
        XCTAssertEqual(p.stack.tcpState(first), .timeWait)
        XCTAssertEqual(p.stack.tcpState(second), .closed)
        // The first one's end makes room again.
        p.advance(999)
        XCTAssertEqual(p.stack.tcpState(first), .closed)
        let third = try activeClose(port: 82)
        p.advance(1)
        XCTAssertEqual(p.stack.tcpState(third), .timeWait)
        XCTAssertEqual(p.stack.counters.tcpTimeWaitOverflow, 1)
    }

    // RFC 9293 Figure 14: simultaneous close goes through CLOSING.
    func testSimultaneousClose() throws {
        let p = ScriptedPeer()
        let (s, stackISN) = try p.establishPassive(peerISN: 1000)
        try p.stack.tcpShutdown(s, .write, now: p.now)
        _ = p.expectOne("our FIN")
        p.send([.fin, .ack], seq: 1001, ack: stackISN &+ 1, to: 80)
        XCTAssertEqual(p.expectOne("ACK of their FIN")?.ack, 1002)
        XCTAssertEqual(p.stack.tcpState(s), .closing)
        p.send(.ack, seq: 1002, ack: stackISN &+ 2, to: 80)
        XCTAssertEqual(p.stack.tcpState(s), .timeWait)
    }

    // Half-close: after our FIN the peer may still send, and we receive it.
    func testHalfClose() throws {
        let p = ScriptedPeer()
        let (s, stackISN) = try p.establishPassive(peerISN: 1000)
        try p.stack.tcpShutdown(s, .write, now: p.now)
        _ = p.expectOne()
        p.send(.ack, seq: 1001, ack: stackISN &+ 2, to: 80)
        p.send([.ack, .psh], seq: 1001, ack: stackISN &+ 2, data: [7, 7, 7], to: 80)
        p.advance(40)
        XCTAssertEqual(p.expectOne()?.ack, 1004)
        XCTAssertEqual(read(p, s), [7, 7, 7])
        XCTAssertEqual(p.stack.tcpState(s), .finWait2)
    }

    // RFC 6298: retransmission after the RTO, doubling each time (Karn: no sample from
    // retransmitted data), and ETIMEDOUT after the limit.
    func testRetransmissionBackoff() throws {
        let p = ScriptedPeer { $0.tcp.maxRetransmits = 3 }
        let (s, stackISN) = try p.establishPassive(peerISN: 1000)
        _ = try [UInt8](repeating: 5, count: 100).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        let first = try XCTUnwrap(p.expectOne())
        XCTAssertEqual(first.seq, stackISN &+ 1)
        let rto = UInt64(p.stack.tcpInfo(s)!.rto / 1000)
        XCTAssertGreaterThanOrEqual(rto, 200)
        var interval = rto
        for attempt in 1...3 {
            p.advance(interval - 1)
            p.expectNothing("before RTO #\(attempt)")
            p.advance(1)
            let again = try XCTUnwrap(p.expectOne("retransmission #\(attempt)"))
            XCTAssertEqual(again.seq, first.seq)
            XCTAssertEqual(again.payload.count, 100)
            interval *= 2
        }
        p.advance(interval)
        XCTAssertEqual(p.stack.tcpState(s), .closed)
        XCTAssertEqual(p.stack.tcpTakeError(s), .timedOut)
    }

    // RFC 9293 3.8.6.1: a zero window is probed; data flows when it opens.
    func testZeroWindowProbe() throws {
        let p = ScriptedPeer()
        let (s, stackISN) = try p.establishPassive(peerISN: 1000)
        p.send(.ack, seq: 1001, ack: stackISN &+ 1, window: 0, to: 80)
        _ = try [UInt8](repeating: 1, count: 10).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        p.expectNothing("the window is closed")
        p.advance(1000)
        let probe = try XCTUnwrap(p.received().first, "a window probe")
        XCTAssertEqual(probe.seq, stackISN, "SND.UNA - 1, no data")
        XCTAssertTrue(probe.payload.isEmpty)
        p.send(.ack, seq: 1001, ack: stackISN &+ 1, window: 1000, to: 80)
        let data = try XCTUnwrap(p.expectOne("data once the window opens"))
        XCTAssertEqual(data.payload.count, 10)
    }

    // RFC 1122 4.2.3.4: Nagle holds a small segment while data is unacknowledged.
    func testNagleAndNoDelay() throws {
        let p = ScriptedPeer()
        let (s, stackISN) = try p.establishPassive(peerISN: 1000)
        _ = try [UInt8](repeating: 1, count: 10).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        XCTAssertEqual(p.expectOne()?.payload.count, 10)
        _ = try [UInt8](repeating: 2, count: 10).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        p.expectNothing("Nagle: wait for the ACK")
        p.send(.ack, seq: 1001, ack: stackISN &+ 11, to: 80)
        XCTAssertEqual(p.expectOne()?.payload, [UInt8](repeating: 2, count: 10))
        try p.stack.tcpSetOptions(s, now: p.now) { $0.noDelay = true }
        _ = try [UInt8](repeating: 3, count: 10).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        XCTAssertEqual(p.expectOne("TCP_NODELAY sends at once")?.payload.count, 10)
    }

    // TCP_CORK (Linux semantics): partial segments wait until uncorked, at most 200 ms.
    func testCorkHoldsPartialSegmentsUpTo200ms() throws {
        let p = ScriptedPeer()
        let (s, _) = try p.establishPassive(peerISN: 1000)
        try p.stack.tcpSetOptions(s, now: p.now) { $0.cork = true }
        _ = try [UInt8](repeating: 1, count: 100).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        p.expectNothing("corked")
        p.advance(199)
        p.expectNothing()
        p.advance(1)
        XCTAssertEqual(p.expectOne("the 200 ms ceiling")?.payload.count, 100)
        _ = try [UInt8](repeating: 2, count: 3000).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        let full = p.received()
        XCTAssertEqual(full.map(\.payload.count), [1460, 1460], "full segments go, the 80-byte rest waits")
        try p.stack.tcpSetOptions(s, now: p.now) { $0.cork = false }
        XCTAssertEqual(p.expectOne("uncorking sends the rest")?.payload.count, 80)
    }

    // RFC 9293 3.10.4 / RFC 2525: closing with unread data resets the connection.
    func testCloseWithUnreadDataSendsReset() throws {
        let p = ScriptedPeer()
        let (s, stackISN) = try p.establishPassive(peerISN: 1000)
        p.send([.ack, .psh], seq: 1001, ack: stackISN &+ 1, data: [1, 2, 3], to: 80)
        p.stack.tcpClose(s, now: p.now)
        let rst = try XCTUnwrap(p.received().last)
        XCTAssertTrue(rst.flags.contains(.rst))
        XCTAssertEqual(p.stack.counters.tcpAbortOnClose, 1)
    }

    // RFC 7323 5.3: PAWS drops a segment with an older timestamp, and ACKs it.
    func testPAWSDropsOldTimestamps() throws {
        let p = ScriptedPeer()
        let (s, stackISN) = try p.establishPassive(peerISN: 1000, options: ScriptedPeer.synOptions(ts: (1000, 0)))
        var ts = TCPOptions()
        ts.timestamp = (2000, 0)
        p.send([.ack, .psh], seq: 1001, ack: stackISN &+ 1, options: ts, data: [1], to: 80)
        ts.timestamp = (1500, 0)
        p.send([.ack, .psh], seq: 1002, ack: stackISN &+ 1, options: ts, data: [2], to: 80)
        XCTAssertEqual(p.stack.counters.tcpPAWSDrops, 1)
        p.advance(40)
        _ = p.received()
        XCTAssertEqual(read(p, s), [1])
    }

    // RFC 7323 5.4: TSval never goes back, even when the caller's clock does between calls
    // (lvlipd stamps each frame with its own read of the clock but serves its sockets with
    // the wake-up's earlier one): a peer's PAWS check would drop the older-stamped segment.
    func testTimestampsStayMonotonicWhenTheCallersClockStepsBack() throws {
        let p = ScriptedPeer()
        let (s, _) = try p.establishPassive(peerISN: 1000, options: ScriptedPeer.synOptions(ts: (1000, 0)))
        try p.stack.tcpSetOptions(s, now: p.now) { $0.noDelay = true }
        let early = p.now
        let later = early.adding(milliseconds: 5)
        _ = try [UInt8]([1]).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: later) }
        let first = try XCTUnwrap(p.expectOne("the first byte")?.options.timestamp)
        _ = try [UInt8]([2]).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: early) }
        let second = try XCTUnwrap(p.expectOne("the second byte")?.options.timestamp)
        XCTAssertGreaterThanOrEqual(second.0 &- first.0, 0)
        XCTAssertLessThan(second.0 &- first.0, 1 << 31, "TSval went back from \(first.0) to \(second.0)")
        XCTAssertEqual(p.stack.clock, later)
    }

    // RFC 4987 3.6: when the SYN queue is full, SYN cookies answer without state, and the
    // completing ACK creates the connection; a forged cookie is refused with RST.
    func testSynCookiesWhenTheSynQueueOverflows() throws {
        let p = ScriptedPeer { $0.tcp.maxSynBacklog = 1 }
        let listener = p.stack.tcpOpen()
        try p.stack.tcpBind(listener, port: 80)
        try p.stack.tcpListen(listener, backlog: 1)
        p.port = 41000
        p.send(.syn, seq: 100, options: ScriptedPeer.synOptions(), to: 80)
        XCTAssertEqual(p.expectOne("a normal SYN-ACK")?.flags, [.syn, .ack])
        p.port = 41001
        p.send(.syn, seq: 5000, options: ScriptedPeer.synOptions(mss: 1460), to: 80)
        let cookie = try XCTUnwrap(p.expectOne("a SYN-ACK carrying a cookie"))
        XCTAssertEqual(cookie.flags, [.syn, .ack])
        XCTAssertEqual(cookie.ack, 5001)
        XCTAssertNil(cookie.options.windowScale, "no state for window scaling")
        XCTAssertEqual(p.stack.counters.tcpSynCookiesSent, 1)
        // A forged cookie from another port.
        p.port = 41002
        p.send(.ack, seq: 7001, ack: cookie.seq &+ 1, to: 80)
        XCTAssertEqual(p.expectOne("RST for a bad cookie")?.flags, .rst)
        XCTAssertEqual(p.stack.counters.tcpSynCookiesFailed, 1)
        // The real completion, with data.
        p.port = 41001
        p.send([.ack, .psh], seq: 5001, ack: cookie.seq &+ 1, data: [4, 2], to: 80)
        p.advance(40)
        XCTAssertEqual(p.expectOne("ACK of the data")?.ack, 5003)
        let s = try p.stack.tcpAccept(listener)
        XCTAssertEqual(p.stack.tcpState(s), .established)
        XCTAssertEqual(read(p, s), [4, 2])
        XCTAssertEqual(p.stack.tcpInfo(s)?.sendMSS, 1460)
        XCTAssertEqual(p.stack.counters.tcpSynCookiesReceived, 1)
    }

    // RFC 1122 4.2.3.6: keep-alive probes after the idle time; no answer ends the connection.
    func testKeepaliveProbesThenTimesOut() throws {
        let p = ScriptedPeer()
        let (s, stackISN) = try p.establishPassive(peerISN: 1000)
        try p.stack.tcpSetOptions(s, now: p.now) {
            $0.keepAlive = true
            $0.keepIdle = 10
            $0.keepInterval = 2
            $0.keepCount = 2
        }
        p.advance(9_999)
        p.expectNothing("idle time not reached")
        p.advance(1)
        let probe = try XCTUnwrap(p.expectOne("first probe"))
        XCTAssertEqual(probe.seq, stackISN, "SND.NXT - 1")
        p.send(.ack, seq: 1001, ack: stackISN &+ 1, to: 80)
        p.advance(9_999)
        p.expectNothing("the answer restarted the idle time")
        p.advance(1)
        _ = p.expectOne("probe after idle")
        p.advance(2000)
        _ = p.expectOne("second probe")
        p.advance(2000)
        XCTAssertEqual(p.stack.tcpState(s), .closed)
        XCTAssertEqual(p.stack.tcpTakeError(s), .timedOut)
    }

    /// An active open from the stack to the scripted peer: returns (socket, our ISN, our port).
    private func connected(_ p: ScriptedPeer, sack: Bool = false) throws -> (SocketID, UInt32, UInt16) {
        let s = p.stack.tcpOpen()
        try p.stack.tcpConnect(s, to: IPAddress(Frames.peerIP), port: p.port, now: p.now)
        let syn = try XCTUnwrap(p.expectOne())
        var o = TCPOptions()
        o.mss = 1460
        o.sackPermitted = sack
        p.send([.syn, .ack], seq: 50_000, ack: syn.seq &+ 1, options: o, to: syn.sourcePort)
        _ = p.received()
        XCTAssertEqual(p.stack.tcpState(s), .established)
        return (s, syn.seq, syn.sourcePort)
    }

    private func icmpUnreachable(code: UInt8, about segment: Segment, seq: UInt32? = nil) -> [UInt8] {
        // Quote our datagram's header and first 8 bytes (ports and sequence number).
        var tcp = [UInt8](repeating: 0, count: 8)
        tcp[0] = UInt8(segment.sourcePort >> 8); tcp[1] = UInt8(segment.sourcePort & 0xFF)
        tcp[2] = UInt8(segment.destinationPort >> 8); tcp[3] = UInt8(segment.destinationPort & 0xFF)
        let q = seq ?? segment.seq
        tcp[4] = UInt8(q >> 24); tcp[5] = UInt8(q >> 16 & 0xFF); tcp[6] = UInt8(q >> 8 & 0xFF); tcp[7] = UInt8(q & 0xFF)
        let quoted = Frames.ipv4(from: Frames.stackIP, to: Frames.peerIP, proto: 6, tcp)
        return Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, Frames.icmp(type: 3, code: code, rest: [0, 0, 0, 0], quoted)))
    }

    // RFC 1122 4.2.3.9 and RFC 5927: an ICMP error quoting our SYN ends the connect; one
    // quoting a sequence number we never sent is ignored.
    func testICMPErrorsDuringConnect() throws {
        let p = ScriptedPeer()
        let s = p.stack.tcpOpen()
        try p.stack.tcpConnect(s, to: IPAddress(Frames.peerIP), port: 9, now: p.now)
        let syn = try XCTUnwrap(p.expectOne())
        p.h.receive(icmpUnreachable(code: 3, about: syn, seq: syn.seq &+ 5000))
        XCTAssertEqual(p.stack.tcpState(s), .synSent, "a quote outside SND.UNA..SND.MAX is ignored")
        XCTAssertEqual(p.stack.counters.tcpICMPIgnored, 1)
        p.h.receive(icmpUnreachable(code: 3, about: syn))
        XCTAssertEqual(p.stack.tcpState(s), .closed)
        XCTAssertEqual(p.stack.tcpTakeError(s), .connectionRefused)
        let s2 = p.stack.tcpOpen()
        try p.stack.tcpConnect(s2, to: IPAddress(Frames.peerIP), port: 9, now: p.now)
        let syn2 = try XCTUnwrap(p.expectOne())
        p.h.receive(icmpUnreachable(code: 1, about: syn2))
        XCTAssertEqual(p.stack.tcpTakeError(s2), .hostUnreachable)
    }

    // TCP_CONGESTION selects the algorithm per socket; unknown names are refused.
    func testCongestionControlSelection() throws {
        let p = ScriptedPeer()
        let (s, _) = try p.establishPassive(peerISN: 1000)
        XCTAssertEqual(p.stack.tcpInfo(s)?.congestionControl, "cubic", "CUBIC is the default")
        try p.stack.tcpSetOptions(s, now: p.now) { $0.congestionControl = "reno" }
        XCTAssertEqual(p.stack.tcpInfo(s)?.congestionControl, "reno")
        XCTAssertThrowsError(try p.stack.tcpSetOptions(s, now: p.now) { $0.congestionControl = "bbr9" }) {
            XCTAssertEqual($0 as? SocketError, .invalidArgument)
        }
    }

    // TCP_USER_TIMEOUT (RFC 5482): unacknowledged data for longer than the timeout ends the
    // connection, long before the retransmission limit.
    func testUserTimeout() throws {
        let p = ScriptedPeer()
        let (s, _) = try p.establishPassive(peerISN: 1000)
        try p.stack.tcpSetOptions(s, now: p.now) { $0.userTimeout = 1500 }
        _ = try [UInt8](repeating: 1, count: 10).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        for _ in 0..<40 { p.advance(100) }
        XCTAssertEqual(p.stack.tcpState(s), .closed)
        XCTAssertEqual(p.stack.tcpTakeError(s), .timedOut)
        XCTAssertLessThan(p.stack.tcpInfo(s)?.retransmits ?? 99, 6)
    }

    // RFC 5681 3.2 / RFC 6582: three duplicate ACKs retransmit the first unacknowledged
    // segment at once (a peer without SACK).
    func testFastRetransmitOnThreeDuplicateAcks() throws {
        let p = ScriptedPeer()
        let (s, isn, port) = try connected(p)
        try p.stack.tcpSetOptions(s, now: p.now) { $0.noDelay = true }
        _ = try [UInt8](repeating: 1, count: 5 * 1448).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        let sent = p.received()
        XCTAssertEqual(sent.count, 5)
        for _ in 0..<2 { p.send(.ack, seq: 50_001, ack: isn &+ 1, to: port) }
        p.expectNothing("two duplicates are not enough")
        p.send(.ack, seq: 50_001, ack: isn &+ 1, to: port)
        let again = try XCTUnwrap(p.expectOne("fast retransmit"))
        XCTAssertEqual(again.seq, isn &+ 1)
        XCTAssertEqual(p.stack.counters.tcpFastRetransmits, 1)
    }

    // RFC 6675 / RFC 8985: SACK blocks above a hole make the hole be resent, not the
    // SACKed data.
    func testSACKRecoveryResendsOnlyTheHole() throws {
        let p = ScriptedPeer()
        let (s, isn, port) = try connected(p, sack: true)
        try p.stack.tcpSetOptions(s, now: p.now) { $0.noDelay = true }
        _ = try [UInt8](repeating: 1, count: 6 * 1460).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        let sent = p.received()
        XCTAssertEqual(sent.count, 6)
        p.advance(1)
        // Segment 2 is lost; 3..6 arrive and are SACKed.
        var o = TCPOptions()
        var blocks = SACKBlocks()
        blocks.append(start: SeqNum(sent[2].seq), end: SeqNum(sent[5].seq &+ UInt32(sent[5].payload.count)))
        o.sack = blocks
        p.send(.ack, seq: 50_001, ack: sent[1].seq, options: o, to: port)
        p.send(.ack, seq: 50_001, ack: sent[1].seq, options: o, to: port)
        p.send(.ack, seq: 50_001, ack: sent[1].seq, options: o, to: port)
        // RACK waits a quarter of the minimum RTT for reordering before declaring the loss.
        p.advance(1)
        let resent = p.received().filter { !$0.payload.isEmpty }
        XCTAssertEqual(resent.map(\.seq), [sent[1].seq], "only the hole")
        XCTAssertEqual(p.stack.counters.tcpSACKRecoveries, 1)
        _ = isn
    }

    // RFC 2883: a SACK block below the cumulative ACK reports a duplicate (D-SACK); RFC 8985
    // 6.2 widens RACK's reordering window for it. Ordinary SACK blocks are not D-SACKs.
    func testDSACKIsRecognised() throws {
        let p = ScriptedPeer()
        let (s, _, port) = try connected(p, sack: true)
        try p.stack.tcpSetOptions(s, now: p.now) { $0.noDelay = true }
        _ = try [UInt8](repeating: 1, count: 4 * 1460).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        let sent = p.received()
        XCTAssertEqual(sent.count, 4)
        p.advance(1)
        var o = TCPOptions()
        var blocks = SACKBlocks()
        blocks.append(start: SeqNum(sent[2].seq), end: SeqNum(sent[3].seq &+ UInt32(sent[3].payload.count)))
        o.sack = blocks
        p.send(.ack, seq: 50_001, ack: sent[1].seq, options: o, to: port)
        XCTAssertEqual(p.stack.counters.tcpDSACKReceived, 0)
        // The first segment again below the cumulative ACK: a duplicate.
        var d = TCPOptions()
        var dup = SACKBlocks()
        dup.append(start: SeqNum(sent[0].seq), end: SeqNum(sent[1].seq))
        dup.append(start: SeqNum(sent[2].seq), end: SeqNum(sent[3].seq &+ UInt32(sent[3].payload.count)))
        d.sack = dup
        p.send(.ack, seq: 50_001, ack: sent[1].seq, options: d, to: port)
        XCTAssertEqual(p.stack.counters.tcpDSACKReceived, 1)
    }

    // RFC 3708 section 3 (RFC 4015's response): when every retransmission of a recovery is
    // reported by D-SACK as a duplicate, nothing was lost and the window cut is undone; a
    // D-SACK of data sent only once does not count. TCP_INFO says what happened.
    func testRecoveryWhoseRetransmissionsAreAllDSACKedIsUndone() throws {
        let p = ScriptedPeer()
        let (s, _, port) = try connected(p, sack: true)
        try p.stack.tcpSetOptions(s, now: p.now) { $0.noDelay = true }
        _ = try [UInt8](repeating: 1, count: 6 * 1460).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        let sent = p.received()
        XCTAssertEqual(sent.count, 6)
        let before = try XCTUnwrap(p.stack.tcpInfo(s))
        p.advance(1)
        func sack(ack: UInt32, _ ranges: [(UInt32, UInt32)]) {
            var o = TCPOptions()
            var blocks = SACKBlocks()
            for (start, end) in ranges { blocks.append(start: SeqNum(start), end: SeqNum(end)) }
            o.sack = blocks
            p.send(.ack, seq: 50_001, ack: ack, options: o, to: port)
        }
        let end = sent[5].seq &+ UInt32(sent[5].payload.count)
        // Segment 1 seems lost (only delayed): 2..5 are SACKed, three times.
        for _ in 0..<3 { sack(ack: sent[1].seq, [(sent[2].seq, end)]) }
        p.advance(1)
        XCTAssertEqual(p.received().filter { !$0.payload.isEmpty }.map(\.seq), [sent[1].seq])
        let cut = try XCTUnwrap(p.stack.tcpInfo(s))
        XCTAssertEqual(cut.congestionState, .recovery)
        XCTAssertLessThan(cut.congestionWindow, before.congestionWindow)
        XCTAssertEqual(cut.retransmittedInFlight, 1)
        // A D-SACK of segment 0, sent once: a duplicate made by the path, not by us.
        sack(ack: sent[1].seq, [(sent[0].seq, sent[1].seq), (sent[2].seq, end)])
        XCTAssertEqual(p.stack.counters.tcpDSACKUndo, 0)
        // The original of segment 1 arrives, then our retransmission of it: D-SACKed.
        sack(ack: end, [(sent[1].seq, sent[2].seq)])
        XCTAssertEqual(p.stack.counters.tcpDSACKUndo, 1)
        let undone = try XCTUnwrap(p.stack.tcpInfo(s))
        XCTAssertEqual(undone.congestionState, .open)
        XCTAssertGreaterThanOrEqual(undone.congestionWindow, before.congestionWindow)
        XCTAssertEqual(undone.slowStartThreshold, before.slowStartThreshold)
        XCTAssertEqual(undone.dsackBlocks, 2)
        XCTAssertEqual(undone.retransmits, 1)
        XCTAssertEqual(undone.bytesRetransmitted, 1460)
        XCTAssertEqual(undone.lostSegments, 0)
    }

    // lvlipd reads an application's bytes straight into the send ring (tcpSendRegions, then
    // tcpCommitSend): what leaves is what was written, in order across the ring's wrap.
    func testBytesReadIntoTheSendRingLeaveInOrderAcrossItsWrap() throws {
        let p = ScriptedPeer()
        var options = TCPSocketOptions()
        options.sendBuffer = 4096
        options.noDelay = true
        let s = p.stack.tcpOpen(options: options)
        try p.stack.tcpConnect(s, to: IPAddress(Frames.peerIP), port: p.port, now: p.now)
        let syn = try XCTUnwrap(p.expectOne())
        var o = TCPOptions()
        o.mss = 1000
        p.send([.syn, .ack], seq: 50_000, ack: syn.seq &+ 1, options: o, to: syn.sourcePort)
        _ = p.received()
        var written: [UInt8] = []
        var onWire: [UInt8] = []
        var wrapped = false
        for _ in 0..<5 {
            let (a, b) = p.stack.tcpSendRegions(s, limit: 3000)
            XCTAssertEqual(a.count + b.count, 3000)
            wrapped = wrapped || b.count > 0
            for region in [a, b] {
                for i in 0..<region.count {
                    region[i] = UInt8(truncatingIfNeeded: written.count * 7 + written.count / 251)
                    written.append(region[i])
                }
            }
            p.stack.tcpCommitSend(s, a.count + b.count, now: p.now)
            onWire += p.received().flatMap(\.payload)
            p.send(.ack, seq: 50_001, ack: syn.seq &+ 1 &+ UInt32(onWire.count), to: syn.sourcePort)
        }
        XCTAssertTrue(wrapped, "the ring never wrapped")
        XCTAssertEqual(onWire.count, written.count)
        XCTAssertEqual(onWire, written)
    }

    // RFC 8985 6.2 step 2: an ACK of a retransmitted segment whose timestamp echo is older
    // than the retransmission was sent for the original (which was only late), and says
    // nothing of when the retransmission arrived. RACK must not take it as such, or the
    // segments sent before the retransmission look overdue and are resent for nothing.
    func testRACKIgnoresAnAckForTheOriginalOfARetransmission() throws {
        let p = ScriptedPeer()
        let s = p.stack.tcpOpen()
        try p.stack.tcpSetOptions(s, now: p.now) { $0.noDelay = true }
        try p.stack.tcpConnect(s, to: IPAddress(Frames.peerIP), port: p.port, now: p.now)
        let syn = try XCTUnwrap(p.expectOne())
        let port = syn.sourcePort
        let synTS = try XCTUnwrap(syn.options.timestamp)
        p.send([.syn, .ack], seq: 50_000, ack: syn.seq &+ 1,
               options: ScriptedPeer.synOptions(mss: 1460, ws: nil, sack: true, ts: (7000, synTS.value)), to: port)
        _ = p.received()
        func send(_ count: Int) throws -> [Segment] {
            _ = try [UInt8](repeating: 1, count: count * 1448).withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
            return p.received().filter { !$0.payload.isEmpty }
        }
        func ack(_ ack: UInt32, sack ranges: [(UInt32, UInt32)] = [], echo: UInt32) {
            var o = TCPOptions()
            o.timestamp = (7001, echo)
            var blocks = SACKBlocks()
            for (start, end) in ranges { blocks.append(start: SeqNum(start), end: SeqNum(end)) }
            o.sack = blocks
            p.send(.ack, seq: 50_001, ack: ack, options: o, to: port)
        }
        let first = try send(4)
        XCTAssertEqual(first.count, 4)
        let echoOfOriginals = try XCTUnwrap(first[0].options.timestamp?.value)
        p.advance(1)
        XCTAssertEqual(try send(1).count, 1)
        p.advance(1)
        // Segments 2 and 3 arrive; 0 and 1 seem lost: RACK marks them and they are resent.
        let end3 = first[3].seq &+ UInt32(first[3].payload.count)
        for _ in 0..<3 { ack(first[0].seq, sack: [(first[2].seq, end3)], echo: echoOfOriginals) }
        p.advance(1)
        XCTAssertEqual(p.received().filter { !$0.payload.isEmpty }.map(\.seq), [first[0].seq, first[1].seq])
        // The original of segment 1 arrives late and is SACKed, echoing the originals'
        // timestamp. Segment 4, sent before the retransmissions and still on its way, is not
        // lost; nor is the retransmission of segment 0.
        p.advance(5)
        ack(first[0].seq, sack: [(first[1].seq, end3)], echo: echoOfOriginals)
        p.advance(1)
        XCTAssertEqual(p.received().filter { !$0.payload.isEmpty }.map(\.seq), [], "resent for nothing")
        XCTAssertEqual(p.stack.counters.tcpRetransSegs, 2)
    }

    // RFC 2883: a segment received twice is reported in the next ACK's first SACK block.
    func testDuplicateSegmentIsReportedWithDSACK() throws {
        let p = ScriptedPeer()
        let (_, isn, port) = try connected(p, sack: true)
        p.send(.ack, seq: 50_001, ack: isn &+ 1, data: [UInt8](repeating: 7, count: 100), to: port)
        _ = p.received()
        p.send(.ack, seq: 50_001, ack: isn &+ 1, data: [UInt8](repeating: 7, count: 100), to: port)
        let ack = try XCTUnwrap(p.received().last)
        XCTAssertEqual(ack.ack, 50_101)
        XCTAssertEqual(ack.options.sack.count, 1)
        XCTAssertEqual(ack.options.sack[0].start, SeqNum(50_001))
        XCTAssertEqual(ack.options.sack[0].end, SeqNum(50_101))
        XCTAssertEqual(p.stack.counters.tcpDSACKSent, 1)
    }

    // RFC 1122 4.2.3.3: when the application reads from a full buffer, a window update is
    // sent, and not before a useful amount is free.
    func testWindowUpdateAfterRead() throws {
        let p = ScriptedPeer()
        let listener = p.stack.tcpOpen(options: { var o = TCPSocketOptions(); o.receiveBuffer = 8192; return o }())
        try p.stack.tcpBind(listener, port: 80)
        try p.stack.tcpListen(listener, backlog: 1)
        var o = TCPOptions()
        o.mss = 1460
        p.send(.syn, seq: 1000, options: o, to: 80)
        let synAck = try XCTUnwrap(p.expectOne())
        XCTAssertEqual(synAck.window, 8192)
        p.send(.ack, seq: 1001, ack: synAck.seq &+ 1, to: 80)
        let s = try p.stack.tcpAccept(listener)
        var seq: UInt32 = 1001
        for _ in 0..<5 {
            p.send(.ack, seq: seq, ack: synAck.seq &+ 1, data: [UInt8](repeating: 3, count: 1460), to: 80)
            seq &+= 1460
        }
        p.send(.ack, seq: seq, ack: synAck.seq &+ 1, data: [UInt8](repeating: 3, count: 892), to: 80)
        seq &+= 892
        p.advance(40)
        let acks = p.received()
        XCTAssertEqual(acks.last?.ack, seq)
        XCTAssertEqual(acks.last?.window, 0, "the buffer is full")
        var small = [UInt8](repeating: 0, count: 100)
        _ = try small.withUnsafeMutableBytes { try p.stack.tcpReceive(s, into: $0, now: p.now) }
        p.expectNothing("100 bytes free is not worth a window update (SWS avoidance)")
        var rest = [UInt8](repeating: 0, count: 8192)
        _ = try rest.withUnsafeMutableBytes { try p.stack.tcpReceive(s, into: $0, now: p.now) }
        let update = try XCTUnwrap(p.expectOne("window update"))
        XCTAssertEqual(update.window, 8192)
    }

    // SO_RCVBUF set before listen sizes the buffer (and the window offered in the SYN-ACK).
    func testReceiveBufferSetBeforeListen() throws {
        let p = ScriptedPeer()
        let listener = p.stack.tcpOpen()
        try p.stack.tcpSetOptions(listener, now: p.now) { $0.receiveBuffer = 4096 }
        try p.stack.tcpBind(listener, port: 80)
        try p.stack.tcpListen(listener, backlog: 1)
        p.send(.syn, seq: 1, to: 80)
        XCTAssertEqual(p.expectOne()?.window, 4096)
    }

    // SO_RCVBUFFORCE/SO_SNDBUFFORCE take up to 2 GB, and lvlip's rings are allocated whole:
    // the ring stops at largestSetBuffer (the window scale in the SYN-ACK shows its size)
    // while the option keeps the size that was set. Found by fuzz-ipc: one SETOPT made
    // lvlipd allocate 2 GB.
    func testHugeBufferSettingsAllocateAtMostTheLargestRing() throws {
        let p = ScriptedPeer { $0.tcp.largestSetBuffer = 1 << 20 }
        let listener = p.stack.tcpOpen()
        let huge = Int(Int32.max) - 1
        try p.stack.tcpSetOptions(listener, now: p.now) {
            $0.receiveBuffer = huge
            $0.sendBuffer = huge
        }
        XCTAssertEqual(p.stack.tcpOptions(listener)?.receiveBuffer, huge)
        XCTAssertEqual(p.stack.tcpOptions(listener)?.sendBuffer, huge)
        try p.stack.tcpBind(listener, port: 80)
        try p.stack.tcpListen(listener, backlog: 1)
        p.send(.syn, seq: 1, options: { var o = TCPOptions(); o.windowScale = 7; return o }(), to: 80)
        let synAck = try XCTUnwrap(p.expectOne())
        XCTAssertEqual(synAck.options.windowScale, 5)  // 65535 << 5 covers 1 MB; 2 GB would need 14
    }

    // RFC 5961 section 7: challenge ACKs are rate limited.
    func testChallengeAckRateLimit() throws {
        let p = ScriptedPeer { $0.tcp.challengeAcksPerSecond = 2 }
        let (_, _) = try p.establishPassive(peerISN: 1000)
        for i in 0..<5 { p.send(.rst, seq: 1100 + UInt32(i), to: 80) }
        XCTAssertEqual(p.received().count, 2)
        XCTAssertEqual(p.stack.counters.tcpChallengeAcks, 5)
    }

    // RFC 6528: the ISN is a keyed function of the names plus a clock: seeded stacks agree,
    // different names differ.
    func testInitialSequenceNumbersAreKeyedAndSeedable() throws {
        func isn(seed: UInt64, port: UInt16) throws -> UInt32 {
            let p = ScriptedPeer { $0.seed = seed }
            let s = p.stack.tcpOpen()
            try p.stack.tcpBind(s, port: 7000)
            try p.stack.tcpConnect(s, to: IPAddress(Frames.peerIP), port: port, now: p.now)
            return try XCTUnwrap(p.expectOne()).seq
        }
        XCTAssertEqual(try isn(seed: 1, port: 80), try isn(seed: 1, port: 80))
        XCTAssertNotEqual(try isn(seed: 1, port: 80), try isn(seed: 2, port: 80))
        XCTAssertNotEqual(try isn(seed: 1, port: 80), try isn(seed: 1, port: 81))
    }

    // A full accept queue drops the handshake's last ACK (the peer retransmits) and new
    // SYNs, as Linux does.
    func testAcceptQueueFullDropsTheFinalAck() throws {
        let p = ScriptedPeer()
        let listener = p.stack.tcpOpen()
        try p.stack.tcpBind(listener, port: 80)
        try p.stack.tcpListen(listener, backlog: 1)
        var synAcks: [Segment] = []
        for (i, port) in [UInt16(41000), 41001].enumerated() {
            p.port = port
            p.send(.syn, seq: 100 * UInt32(i + 1), to: 80)
            synAcks.append(try XCTUnwrap(p.expectOne()))
        }
        for (i, port) in [UInt16(41000), 41001].enumerated() {
            p.port = port
            p.send(.ack, seq: 100 * UInt32(i + 1) + 1, ack: synAcks[i].seq &+ 1, to: 80)
        }
        XCTAssertEqual(p.stack.counters.tcpListenOverflows, 1, "the second final ACK is dropped")
        p.port = 41002
        p.send(.syn, seq: 900, to: 80)
        p.expectNothing("a SYN while the accept queue is full is dropped")
        _ = try p.stack.tcpAccept(listener)
        XCTAssertThrowsError(try p.stack.tcpAccept(listener))
        // Once there is room, the retransmitted final ACK completes the second connection.
        p.port = 41001
        p.send(.ack, seq: 201, ack: synAcks[1].seq &+ 1, to: 80)
        XCTAssertNoThrow(try p.stack.tcpAccept(listener))
    }

    // RFC 9293 Figure 8: simultaneous open.
    func testSimultaneousOpen() throws {
        let p = ScriptedPeer()
        let s = p.stack.tcpOpen()
        try p.stack.tcpBind(s, port: 5555)
        try p.stack.tcpConnect(s, to: IPAddress(Frames.peerIP), port: p.port, now: p.now)
        let syn = try XCTUnwrap(p.expectOne())
        p.send(.syn, seq: 7000, options: ScriptedPeer.synOptions(ws: nil, sack: false), to: 5555)
        let synAck = try XCTUnwrap(p.expectOne("SYN-ACK with our original ISN"))
        XCTAssertEqual(synAck.flags, [.syn, .ack])
        XCTAssertEqual(synAck.seq, syn.seq)
        XCTAssertEqual(synAck.ack, 7001)
        XCTAssertEqual(p.stack.tcpState(s), .synReceived)
        p.send([.syn, .ack], seq: 7000, ack: syn.seq &+ 1, to: 5555)
        // Our SYN-ACK crossed theirs: their SYN-ACK acknowledges our SYN.
        _ = p.received()
        p.send(.ack, seq: 7001, ack: syn.seq &+ 1, to: 5555)
        XCTAssertEqual(p.stack.tcpState(s), .established)
    }
}

/// Sends as the scripted peer from a given port.
struct ScriptedPeerPort {
    let p: ScriptedPeer
    let peerPort: UInt16
    init(_ p: ScriptedPeer, peerPort: UInt16) {
        self.p = p
        self.peerPort = peerPort
    }

    func send(_ flags: TCPFlags, seq: UInt32, ack: UInt32 = 0, window: UInt16 = 65535, options: TCPOptions? = nil,
              data: [UInt8] = [], to stackPort: UInt16) {
        let saved = p.port
        p.port = peerPort
        p.send(flags, seq: seq, ack: ack, window: window, options: options, data: data, to: stackPort)
        p.port = saved
    }
}
