import Stack
import XCTest

/// Which written frames a peer on the TAP's host may answer within the write: everything but
/// a TCP segment without SYN, FIN or data (TapDevice reads once per frame that may have been).
final class FrameAnswersTests: XCTestCase {
    private func tcp(_ flags: TCPFlags, data: Int = 0, options: TCPOptions? = nil) -> [UInt8] {
        var segment = [UInt8](repeating: 0, count: 20 + (options?.encodedLength ?? 0) + data)
        segment.withUnsafeMutableBytes { b in
            _ = TCPSegment.writeHeader(into: b, sourcePort: 40000, destinationPort: 80, seq: SeqNum(1), ack: SeqNum(1),
                                       flags: flags, window: 65535, options: options)
        }
        return segment
    }

    private func answered(_ frame: [UInt8]) -> Bool { frame.withUnsafeBytes { FrameAnswers.mayBeAnsweredAtOnce($0) } }
    private func v4(_ segment: [UInt8]) -> [UInt8] { Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 6, segment)) }
    private func v6(_ segment: [UInt8]) -> [UInt8] { Frames.ethernet(type: 0x86DD, Frames6.ipv6(next: 6, segment)) }

    func testPureAcksAndResetsAreNotAnswered() {
        var timestamps = TCPOptions()
        timestamps.timestamp = (1, 2)
        XCTAssertFalse(answered(v4(tcp(.ack))))
        XCTAssertFalse(answered(v4(tcp(.ack, options: timestamps))), "options are not data")
        XCTAssertFalse(answered(v4(tcp([.rst, .ack]))))
        XCTAssertFalse(answered(v6(tcp(.ack))))
        // Ethernet padding after the IPv4 datagram is not data either.
        XCTAssertFalse(answered(v4(tcp(.ack)) + [UInt8](repeating: 0, count: 6)))
    }

    func testSynFinDataAndEverythingElseMayBe() {
        XCTAssertTrue(answered(v4(tcp(.syn))))
        XCTAssertTrue(answered(v4(tcp([.syn, .ack]))))
        XCTAssertTrue(answered(v4(tcp([.fin, .ack]))))
        XCTAssertTrue(answered(v4(tcp([.ack, .psh], data: 64))))
        XCTAssertTrue(answered(v6(tcp([.ack], data: 1))))
        XCTAssertTrue(answered(v6(tcp(.syn))))
        XCTAssertTrue(answered(Frames.ethernet(type: 0x0806, Frames.arp(op: 1))))
        XCTAssertTrue(answered(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, Frames.echoRequest(data: [1, 2])))))
        XCTAssertTrue(answered(Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 17, [UInt8](repeating: 0, count: 12)))))
        XCTAssertTrue(answered([0x01, 0x02]), "a runt is not recognised as a pure ACK")
        // A truncated TCP header is not recognised as one.
        XCTAssertTrue(answered(Array(v4(tcp(.ack)).prefix(40))))
    }
}
