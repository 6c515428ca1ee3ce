import XCTest
import Stack
import Timing

/// ICMP sockets (icmp(7) ping sockets, raw(7) ICMP sockets) through the pure stack.
final class ICMPSocketTests: XCTestCase {
    static func frame(_ message: [UInt8], from src: IPv4Address = Frames.peerIP) -> [UInt8] {
        Frames.ethernet(type: 0x0800, Frames.ipv4(from: src, proto: 1, message))
    }

    func send(_ h: Harness, _ id: SocketID, _ message: [UInt8], to: IPv4Address? = Frames.peerIP) throws -> Int {
        try message.withUnsafeBytes { try h.stack.udpSend(id, to: to.map { (IPAddress($0), 0) }, $0, now: h.now) }
    }

    func testPingSocketStampsItsIdentifierAndChecksum() throws {
        let h = Harness()
        h.learnPeer()
        let s = h.stack.icmpOpen(raw: false)
        try h.stack.udpBind(s, address: nil, port: 0x4242)
        // The application's identifier and checksum are replaced (Linux's ping_v4_sendmsg).
        var request = Frames.echoRequest(id: 7, seq: 9, data: Array("abc".utf8))
        request[2] = 0xDE
        XCTAssertEqual(try send(h, s, request), request.count)
        let out = h.output().map { Parsed(frame: $0) }
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(out[0].ipProto, 1)
        XCTAssertEqual(out[0].ipDestination, Frames.peerIP)
        XCTAssertEqual(out[0].ipPayload, Frames.echoRequest(id: 0x4242, seq: 9, data: Array("abc".utf8)))
        XCTAssertEqual(h.stack.counters.icmpOutEchos, 1)
        XCTAssertEqual(h.stack.counters.icmpOutMsgs, 1)
    }

    func testPingSocketSendsOnlyEchoRequests() throws {
        let h = Harness()
        h.learnPeer()
        let s = h.stack.icmpOpen(raw: false)
        XCTAssertThrowsError(try send(h, s, Frames.icmp(type: 0, rest: [0, 1, 0, 1]))) {
            XCTAssertEqual($0 as? SocketError, .invalidArgument)
        }
        XCTAssertThrowsError(try send(h, s, [8, 0, 0])) { XCTAssertEqual($0 as? SocketError, .invalidArgument) }
        XCTAssertThrowsError(try send(h, s, Frames.echoRequest(data: []), to: nil)) {
            XCTAssertEqual($0 as? SocketError, .destinationRequired)
        }
        XCTAssertTrue(h.output().isEmpty)
    }

    func testEchoRepliesReachTheSocketOwningTheirIdentifier() throws {
        let h = Harness()
        let a = h.stack.icmpOpen(raw: false)
        let b = h.stack.icmpOpen(raw: false)
        try h.stack.udpBind(a, address: nil, port: 100)
        try h.stack.udpBind(b, address: nil, port: 200)
        XCTAssertThrowsError(try h.stack.udpBind(h.stack.icmpOpen(raw: false), address: nil, port: 100)) {
            XCTAssertEqual($0 as? SocketError, .addressInUse)
        }
        let reply = Frames.icmp(type: 0, rest: Frames.be16(200) + Frames.be16(1), Array("pong".utf8))
        h.receive(Self.frame(reply))
        XCTAssertNil(h.stack.udpReceive(a))
        let d = try XCTUnwrap(h.stack.udpReceive(b))
        XCTAssertEqual(d.source, IPAddress(Frames.peerIP))
        XCTAssertEqual(d.payload, reply)
        // An echo request to us is answered by the stack, not given to ping sockets.
        h.learnPeer()
        h.receive(Self.frame(Frames.echoRequest(id: 200, data: [1])))
        XCTAssertNil(h.stack.udpReceive(b))
        XCTAssertEqual(h.output().count, 1)
        XCTAssertEqual(h.stack.counters.udpInDatagrams, 0)
    }

    func testRawSocketGetsEveryMessageWithItsHeaderUnlessFiltered() throws {
        let h = Harness()
        h.learnPeer()
        let raw = h.stack.icmpOpen(raw: true)
        let reply = Frames.icmp(type: 0, rest: Frames.be16(5) + Frames.be16(6), [1, 2, 3])
        h.receive(Self.frame(reply))
        let d = try XCTUnwrap(h.stack.udpReceive(raw))
        XCTAssertEqual(d.payload.count, 20 + reply.count)
        XCTAssertEqual(Array(d.payload[20...]), reply)
        XCTAssertEqual(d.payload[9], 1)
        XCTAssertEqual(Frames.checksum(Array(d.payload[0..<20])), 0)
        // ICMP_FILTER: echo replies (type 0) blocked; a request still comes (and is answered).
        try h.stack.icmpSetFilter(raw, 1 << 0)
        h.receive(Self.frame(reply))
        XCTAssertNil(h.stack.udpReceive(raw))
        h.receive(Self.frame(Frames.echoRequest(id: 1, data: [])))
        XCTAssertEqual(try XCTUnwrap(h.stack.udpReceive(raw)).payload[20], 8)
        XCTAssertEqual(h.output().count, 1)
        XCTAssertThrowsError(try h.stack.icmpSetFilter(h.stack.icmpOpen(raw: false), 0)) {
            XCTAssertEqual($0 as? SocketError, .protocolOption)
        }
    }

    func testRawSocketSendsWhatItIsGiven() throws {
        let h = Harness()
        h.learnPeer()
        let raw = h.stack.icmpOpen(raw: true)
        let message = Frames.echoRequest(id: 0xBEEF, seq: 3, data: [7, 7])
        XCTAssertEqual(try send(h, raw, message), message.count)
        let out = h.output().map { Parsed(frame: $0) }
        XCTAssertEqual(out.map(\.ipPayload), [message])
        XCTAssertEqual(h.stack.counters.icmpOutEchos, 1)
        h.stack.udpClose(raw)
        h.receive(Self.frame(Frames.icmp(type: 0, rest: [0, 0, 0, 0])))
        XCTAssertEqual(h.stack.counters.icmpInEchoReps, 1)
    }
}
