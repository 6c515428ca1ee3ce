import XCTest
import Stack

/// SipHash-2-4 keys the stack's secret functions (RFC 6528 initial sequence numbers, RFC 6056
/// port offsets, SYN cookies). Checked against the reference vectors (key 00..0f, message
/// 00..len-1), whatever widths the message is added in.
final class SipHashTests: XCTestCase {
    private let key0: UInt64 = 0x0706_0504_0302_0100
    private let key1: UInt64 = 0x0F0E_0D0C_0B0A_0908

    /// From the reference implementation's vectors.h (lengths 0, 1, 7, 8, 15) and the paper's
    /// appendix A (15 bytes).
    private let vectors: [Int: UInt64] = [
        0: 0x726F_DB47_DD0E_0E31,
        1: 0x74F8_39C5_93DC_67FD,
        7: 0xAB02_00F5_8B01_D137,
        8: 0x93F5_F579_9A93_2462,
        15: 0xA129_CA61_49BE_45E5,
    ]

    func testReferenceVectorsAddedByteByByte() {
        for (length, expected) in vectors {
            var h = SipHash24(key0: key0, key1: key1)
            for i in 0..<length { h.add(UInt8(i)) }
            XCTAssertEqual(h.finalize(), expected, "length \(length)")
        }
    }

    func testReferenceVectorAddedInMixedWidths() {
        // 00 01 | 02 03 04 05 | 06 07 08 09 0a 0b 0c 0d | 0e: every width crosses a word.
        var h = SipHash24(key0: key0, key1: key1)
        h.add(UInt16(0x0100))
        h.add(UInt32(0x0504_0302))
        h.add(UInt64(0x0D0C_0B0A_0908_0706))
        h.add(UInt8(0x0E))
        XCTAssertEqual(h.finalize(), 0xA129_CA61_49BE_45E5)
    }

    func testEverySplitOfAMessageHashesAlike() {
        let message = (0..<40).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        var whole = SipHash24(key0: key0, key1: key1)
        for b in message { whole.add(b) }
        let expected = whole.finalize()
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var h = SipHash24(key0: key0, key1: key1)
            var i = 0
            while i < message.count {
                let width = [1, 2, 4, 8].filter { i + $0 <= message.count }.randomElement(using: &generator)!
                var value: UInt64 = 0
                for k in 0..<width { value |= UInt64(message[i + k]) << UInt64(8 * k) }
                switch width {
                case 1: h.add(UInt8(value))
                case 2: h.add(UInt16(value))
                case 4: h.add(UInt32(value))
                default: h.add(value)
                }
                i += width
            }
            XCTAssertEqual(h.finalize(), expected)
        }
    }
}
