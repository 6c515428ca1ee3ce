import XCTest
import Stack
import Timing

/// IP_RECVERR (ip(7)): ICMP errors about a socket's datagrams, reported in detail.
final class UDPErrorQueueTests: XCTestCase {
    /// Sends `payload` from `s` to the peer's port 53 and answers with an ICMP error quoting
    /// the datagram (its IP header and `quoted` bytes of UDP), from `offender`.
    func sendAndRefuse(_ h: Harness, _ s: SocketID, _ payload: [UInt8], type: UInt8 = 3, code: UInt8 = 3,
                       rest: [UInt8] = [0, 0, 0, 0], quoted: Int = 12, offender: IPv4Address = Frames.peerIP) throws {
        try payload.withUnsafeBytes { _ = try h.stack.udpSend(s, to: (IPAddress(Frames.peerIP), 53), $0, now: h.now) }
        let sent = try XCTUnwrap(h.output().map { Parsed(frame: $0) }.last)
        let quote = Array(sent.ip[0..<(sent.ipHeaderLength + min(quoted, 8 + payload.count))])
        h.receive(Frames.ethernet(type: 0x0800, Frames.ipv4(from: offender, proto: 1,
                                                            Frames.icmp(type: type, code: code, rest: rest, quote))))
    }

    func testUnconnectedSocketHearsNothingWithoutIPRecvErr() throws {
        let h = Harness()
        h.learnPeer()
        let s = h.stack.udpOpen()
        try sendAndRefuse(h, s, Array("data".utf8))
        XCTAssertFalse(h.stack.udpHasError(s))
        XCTAssertNil(h.stack.udpTakeErrorReport(s))
    }

    func testUnconnectedSocketWithIPRecvErrGetsTheDetails() throws {
        let h = Harness()
        h.learnPeer()
        let s = h.stack.udpOpen()
        h.stack.udpSetReceiveErrors(s, true)
        try sendAndRefuse(h, s, Array("data".utf8))
        XCTAssertTrue(h.stack.udpHasError(s))
        let report = try XCTUnwrap(h.stack.udpTakeErrorReport(s))
        XCTAssertEqual(report.error, .connectionRefused)
        XCTAssertEqual([report.type, report.code], [3, 3])
        XCTAssertEqual(report.info, 0)
        XCTAssertEqual([report.offender, report.destination], [IPAddress(Frames.peerIP), IPAddress(Frames.peerIP)])
        XCTAssertEqual(report.destinationPort, 53)
        XCTAssertEqual(report.payload, Array("data".utf8))
        XCTAssertFalse(h.stack.udpHasError(s))
        XCTAssertNil(h.stack.udpTakeError(s), "with IP_RECVERR the report carries the error")
    }

    func testHostUnreachableIsTransientWithoutIPRecvErr() throws {
        // Linux's icmp_err_convert: host unreachable is not a hard error; protocol unreachable is.
        let h = Harness()
        h.learnPeer()
        let s = h.stack.udpOpen()
        try h.stack.udpConnect(s, to: (IPAddress(Frames.peerIP), 53))
        try sendAndRefuse(h, s, [1], code: 1)
        XCTAssertFalse(h.stack.udpHasError(s))
        try sendAndRefuse(h, s, [1], code: 2)
        XCTAssertEqual(h.stack.udpTakeError(s), .protocolOption)
    }

    func testFragmentationNeededCarriesTheNextHopMTU() throws {
        let h = Harness()
        h.learnPeer()
        let s = h.stack.udpOpen()
        h.stack.udpSetReceiveErrors(s, true)
        // RFC 1191: the next-hop MTU in the low 16 bits of the ICMP header's second word.
        try sendAndRefuse(h, s, [1, 2], code: 4, rest: [0, 0, 0x05, 0x78], quoted: 8, offender: IPv4Address(0x0A00_0001))
        let report = try XCTUnwrap(h.stack.udpTakeErrorReport(s))
        XCTAssertEqual(report.error, .messageTooLong)
        XCTAssertEqual(report.info, 1400)
        XCTAssertEqual(report.offender, IPAddress(IPv4Address(0x0A00_0001)))
        XCTAssertEqual(report.payload, [], "the quote held only the UDP header")
    }

    func testAnotherPeersErrorIsNotAConnectedSocketsAndTurningItOffClears() throws {
        let h = Harness()
        h.learnPeer()
        let s = h.stack.udpOpen()
        h.stack.udpSetReceiveErrors(s, true)
        try h.stack.udpConnect(s, to: (IPAddress(Frames.peerIP), 54))
        try sendAndRefuse(h, s, [9])  // to port 53: not the connected peer's
        XCTAssertFalse(h.stack.udpHasError(s))
        try h.stack.udpConnect(s, to: nil)
        try sendAndRefuse(h, s, [9])
        XCTAssertTrue(h.stack.udpHasError(s))
        h.stack.udpSetReceiveErrors(s, false)
        XCTAssertFalse(h.stack.udpHasError(s))
    }
}
