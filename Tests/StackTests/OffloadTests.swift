import Stack
import XCTest

/// Offloads on output (`FrameOffload`): what a stack configured for them sends, finished in
/// software as the kernel finishes what lvlipd writes to the TAP, is byte for byte what a
/// stack without them sends; and the virtio-net header says what the frame asks.
final class OffloadTests: XCTestCase {
    private let segmentation = OutputOffload(checksum: true, tcpSegmentation: true)

    /// The frames an established connection sends for one write of `bytes` (the peer's
    /// window is wide; the initial congestion window is ten segments of 1448 bytes).
    private func burst(_ offload: OutputOffload, bytes: Int, noDelay: Bool = false) throws
        -> (frames: [[UInt8]], offloaded: [([UInt8], FrameOffload)]) {
        let p = ScriptedPeer { $0.offload = offload }
        let (s, _) = try p.establishPassive(options: ScriptedPeer.synOptions(ts: (1000, 0)))
        if noDelay { try p.stack.tcpSetOptions(s, now: p.now) { $0.noDelay = true } }
        p.h.link.offloaded.removeAll()
        let data = (0..<bytes).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8) }
        let sent = try data.withUnsafeBytes { try p.stack.tcpSend(s, $0, now: p.now) }
        XCTAssertEqual(sent, bytes)
        return (p.h.output(), p.h.link.offloaded)
    }

    func testASuperSegmentCutInSoftwareIsTheOrdinarySegments() throws {
        let plain = try burst(OutputOffload(), bytes: 30_000)
        let offloaded = try burst(segmentation, bytes: 30_000)
        XCTAssertEqual(plain.frames.count, 10, "the initial window")
        XCTAssertEqual(offloaded.offloaded.count, 1, "one super-segment")
        XCTAssertEqual(offloaded.frames, plain.frames)
        let (frame, offload) = try XCTUnwrap(offloaded.offloaded.first)
        XCTAssertEqual(offload, FrameOffload(segmentSize: 1448, checksumStart: 34, checksumOffset: 16))
        XCTAssertEqual(frame.count, 14 + 20 + 32 + 10 * 1448)
        var header = [UInt8](repeating: 0xAA, count: 10)
        header.withUnsafeMutableBytes { h in frame.withUnsafeBytes { offload.writeVirtioHeader(into: h, frame: $0) } }
        // NEEDS_CSUM, GSO_TCPV4, hdr_len 66, gso_size 1448, csum_start 34, csum_offset 16.
        XCTAssertEqual(header, [1, 1, 66, 0, 0xA8, 0x05, 34, 0, 16, 0])
    }

    /// The end of the data with TCP_NODELAY: the short last segment rides in the burst and
    /// alone carries PSH.
    func testTheShortLastSegmentGoesInTheBurstWithNoDelay() throws {
        let plain = try burst(OutputOffload(), bytes: 5000, noDelay: true)
        let offloaded = try burst(segmentation, bytes: 5000, noDelay: true)
        XCTAssertEqual(plain.frames.count, 4)
        XCTAssertEqual(offloaded.offloaded.count, 1)
        XCTAssertEqual(offloaded.frames, plain.frames)
    }

    /// Nagle holds the short last segment while the burst is unacknowledged, in both.
    func testNagleHoldsTheShortLastSegmentOutOfTheBurst() throws {
        let plain = try burst(OutputOffload(), bytes: 5000)
        let offloaded = try burst(segmentation, bytes: 5000)
        XCTAssertEqual(plain.frames.count, 3)
        XCTAssertEqual(offloaded.frames, plain.frames)
    }

    /// Checksum offload alone: every TCP frame leaves with the pseudo-header's sum, which the
    /// link's completion turns into the checksum a stack without offload computes.
    func testChecksumOffloadLeavesThePseudoHeaderSumToFinish() throws {
        let plain = try burst(OutputOffload(), bytes: 3000, noDelay: true)
        let offloaded = try burst(OutputOffload(checksum: true), bytes: 3000, noDelay: true)
        XCTAssertEqual(plain.frames.count, 3)
        XCTAssertEqual(offloaded.offloaded.count, 3)
        XCTAssertTrue(offloaded.offloaded.allSatisfy { $0.1.segmentSize == 0 && $0.1.checksumStart == 34 })
        XCTAssertEqual(offloaded.frames, plain.frames)
    }
}
