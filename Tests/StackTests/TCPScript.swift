import Stack
import Timing
import XCTest

/// A segment as seen on the wire, for scripted conversations.
struct Segment {
    var seq: UInt32
    var ack: UInt32
    var flags: TCPFlags
    var window: UInt16
    var options: TCPOptions
    var payload: [UInt8]
    var sourcePort: UInt16
    var destinationPort: UInt16
}

/// The far end of a scripted TCP conversation (smoltcp's send!/recv! style): the test sends
/// segments at chosen times and asserts on exactly what the stack answers.
final class ScriptedPeer {
    let h: Harness
    var port: UInt16 = 40000

    init(configure: (inout StackConfiguration) -> Void = { _ in }) {
        h = Harness { c in
            c.tcp.timeWaitMilliseconds = 1000
            configure(&c)
        }
        h.learnPeer()
    }

    var stack: NetworkStack { h.stack }
    var now: Instant { h.now }

    func send(_ flags: TCPFlags, seq: UInt32, ack: UInt32 = 0, window: UInt16 = 65535, options: TCPOptions? = nil,
              data: [UInt8] = [], to stackPort: UInt16, checksumOK: Bool = true) {
        var segment = [UInt8](repeating: 0, count: 20 + (options?.encodedLength ?? 0) + data.count)
        segment.withUnsafeMutableBytes { b in
            let header = TCPSegment.writeHeader(into: b, sourcePort: port, destinationPort: stackPort, seq: SeqNum(seq),
                                                ack: SeqNum(ack), flags: flags, window: window, options: options)
            for (i, byte) in data.enumerated() { b[header + i] = byte }
            TCPSegment.finishChecksum(b, source: IPAddress(Frames.peerIP), destination: IPAddress(Frames.stackIP))
        }
        if !checksumOK { segment[segment.count - 1] ^= 0xFF }
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 6, segment)))
    }

    /// Every TCP segment the stack has queued since the last call.
    func received() -> [Segment] {
        h.output().compactMap { frame -> Segment? in
            let p = Parsed(frame: frame)
            guard p.ethernetType == 0x0800, p.ipProto == 6 else { return nil }
            let tcp = p.ipPayload
            XCTAssertEqual(tcp.withUnsafeBytes { b in
                InternetChecksum.finish(InternetChecksum.partialSum(b, InternetChecksum.pseudoHeaderSum(
                    source: p.ipSource, destination: p.ipDestination, proto: .tcp, length: b.count)))
            }, 0, "segment checksum")
            return tcp.withUnsafeBytes { b in
                let s = try! TCPSegment(b, source: IPAddress(p.ipSource), destination: IPAddress(p.ipDestination))
                return Segment(seq: s.seq.rawValue, ack: s.ack.rawValue, flags: s.flags, window: s.window, options: s.options,
                               payload: Array(s.payload), sourcePort: s.sourcePort, destinationPort: s.destinationPort)
            }
        }
    }

    /// Exactly one segment, returned.
    func expectOne(_ what: String = "", file: StaticString = #filePath, line: UInt = #line) -> Segment? {
        let segments = received()
        XCTAssertEqual(segments.count, 1, "expected one segment \(what), got \(segments.map { "\($0.flags) seq \($0.seq) ack \($0.ack) len \($0.payload.count)" })", file: file, line: line)
        return segments.first
    }

    func expectNothing(_ what: String = "", file: StaticString = #filePath, line: UInt = #line) {
        let segments = received()
        XCTAssertTrue(segments.isEmpty, "expected nothing \(what), got \(segments.map { "\($0.flags) seq \($0.seq) ack \($0.ack) len \($0.payload.count)" })", file: file, line: line)
    }

    func advance(_ ms: UInt64) { h.advance(milliseconds: ms) }

    static func synOptions(mss: UInt16 = 1460, ws: UInt8? = 7, sack: Bool = true, ts: (UInt32, UInt32)? = nil) -> TCPOptions {
        var o = TCPOptions()
        o.mss = mss
        o.windowScale = ws
        o.sackPermitted = sack
        o.timestamp = ts
        return o
    }

    /// Listens on `port` and completes a passive open from ISN `peerISN` with plain options
    /// (MSS only unless given). Returns the accepted socket and the stack's ISN.
    func establishPassive(port stackPort: UInt16 = 80, peerISN: UInt32 = 1000, options: TCPOptions? = nil,
                          file: StaticString = #filePath, line: UInt = #line) throws -> (SocketID, UInt32) {
        let listener = stack.tcpOpen()
        try stack.tcpBind(listener, port: stackPort)
        try stack.tcpListen(listener, backlog: 8)
        var o = TCPOptions()
        o.mss = 1460
        send(.syn, seq: peerISN, options: options ?? o, to: stackPort)
        let synAck = try XCTUnwrap(expectOne("SYN-ACK", file: file, line: line), file: file, line: line)
        XCTAssertEqual(synAck.flags, [.syn, .ack], file: file, line: line)
        XCTAssertEqual(synAck.ack, peerISN &+ 1, file: file, line: line)
        send(.ack, seq: peerISN &+ 1, ack: synAck.seq &+ 1, to: stackPort)
        expectNothing("after the handshake", file: file, line: line)
        let socket = try stack.tcpAccept(listener)
        XCTAssertEqual(stack.tcpState(socket), .established, file: file, line: line)
        return (socket, synAck.seq)
    }
}
