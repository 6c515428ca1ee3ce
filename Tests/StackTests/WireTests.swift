import Stack
import XCTest

final class WireTests: XCTestCase {
    func testChecksumRFC1071Example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (after folding).
        let bytes: [UInt8] = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]
        XCTAssertEqual(bytes.withUnsafeBytes { InternetChecksum.checksum($0) }, ~UInt16(0xDDF2))
    }

    func testChecksumMatchesReferenceForEveryLengthAndAlignment() {
        var rng = SystemRandomNumberGenerator()
        for length in 0..<300 {
            let data = (0..<(length + 8)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            for start in [0, 2, 4, 6] where start + length <= data.count {
                let slice = Array(data[start..<start + length])
                let fast = data.withUnsafeBytes { InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: $0[start..<start + length])) }
                XCTAssertEqual(fast, Frames.checksum(slice), "length \(length) start \(start)")
            }
        }
        // All 0xFF: the largest sums, where carries matter most.
        let ones = [UInt8](repeating: 0xFF, count: 70_001)
        XCTAssertEqual(ones.withUnsafeBytes { InternetChecksum.checksum($0) }, Frames.checksum(ones))
    }

    func testIPv4AddressParsing() {
        XCTAssertEqual(IPv4Address("10.0.0.4")?.value, 0x0A00_0004)
        XCTAssertEqual(IPv4Address("255.255.255.255"), .broadcast)
        for bad in ["", "10.0.0", "10.0.0.4.5", "256.0.0.1", "10.0.0.-1", "010.0.0.1", "10..0.1", "a.b.c.d", " 10.0.0.1", "1e1.0.0.1"] {
            XCTAssertNil(IPv4Address(bad), bad)
        }
        XCTAssertEqual(IPv4Address(10, 0, 0, 4).description, "10.0.0.4")
    }

    func testCIDRParsing() {
        let i = IPv4Interface(cidr: "10.0.0.4/24")
        XCTAssertEqual(i?.address, IPv4Address(10, 0, 0, 4))
        XCTAssertEqual(i?.prefixLength, 24)
        XCTAssertEqual(i?.subnetBroadcast, IPv4Address(10, 0, 0, 255))
        XCTAssertEqual(i?.network, IPv4Address(10, 0, 0, 0))
        XCTAssertTrue(i!.contains(IPv4Address(10, 0, 0, 200)))
        XCTAssertFalse(i!.contains(IPv4Address(10, 0, 1, 1)))
        XCTAssertNotNil(IPv4Interface(cidr: "192.168.1.1/32"))
        for bad in ["10.0.0.4", "10.0.0.4/", "10.0.0.4/33", "10.0.0.4/0", "10.0.0.0/24", "10.0.0.255/24",
                    "10.0.0.4/24/1", "10.0.0.4/x", "0.0.0.0/8", "224.0.0.1/24", "127.0.0.1/8", "10.0.0.4/+8"] {
            XCTAssertNil(IPv4Interface(cidr: bad), bad)
        }
    }

    func testMACParsing() {
        XCTAssertEqual(MACAddress("02:00:0a:00:00:04"), MACAddress(0x0200_0A00_0004))
        XCTAssertEqual(MACAddress("02-00-0A-00-00-04"), MACAddress(0x0200_0A00_0004))
        XCTAssertEqual(MACAddress(0x0200_0A00_0004).description, "02:00:0a:00:00:04")
        for bad in ["", "02:00:0a:00:00", "02:00:0a:00:00:04:05", "02:00:0a:00:00:4g", "020:0:0a:00:00:04"] {
            XCTAssertNil(MACAddress(bad), bad)
        }
        XCTAssertTrue(MACAddress.broadcast.isGroup)
        XCTAssertTrue(MACAddress(0x0100_5E00_0001).isGroup)
        XCTAssertFalse(MACAddress(0x0200_0A00_0004).isGroup)
        XCTAssertEqual(MACAddress(derivedFrom: IPv4Address(10, 0, 0, 4)), MACAddress(0x0200_0A00_0004))
    }

    func testIPv4ParseErrors() {
        func parse(_ bytes: [UInt8]) -> IPv4Packet.ParseError? {
            bytes.withUnsafeBytes { b -> IPv4Packet.ParseError? in
                do {
                    _ = try IPv4Packet(b)
                    return nil
                } catch let e as IPv4Packet.ParseError { return e } catch { return nil }
            }
        }
        let good = Frames.ipv4(proto: 1, [1, 2, 3, 4])
        XCTAssertNil(parse(good))
        XCTAssertNil(parse(good + [0, 0, 0]), "link padding after total length is allowed")
        XCTAssertEqual(parse(Array(good[0..<19])), .truncatedHeader)
        var v6 = good
        v6[0] = 0x65
        XCTAssertEqual(parse(v6), .badVersion)
        var ihl = good
        ihl[0] = 0x44
        XCTAssertEqual(parse(ihl), .badHeaderLength)
        var ihlLong = good
        ihlLong[0] = 0x4F
        XCTAssertEqual(parse(ihlLong), .badHeaderLength)
        XCTAssertEqual(parse(Array(good[0..<22])), .truncated)
        var checksum = good
        checksum[8] ^= 1
        XCTAssertEqual(parse(checksum), .badChecksum)
        let options = Frames.ipv4(proto: 1, options: [1, 1, 1, 0], [9])
        XCTAssertNil(parse(options))
        XCTAssertEqual(options.withUnsafeBytes { try! IPv4Packet($0).payload.count }, 1)
    }
}
