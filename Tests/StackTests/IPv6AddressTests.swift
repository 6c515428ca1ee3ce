import Stack
import XCTest

final class IPv6AddressTests: XCTestCase {
    /// RFC 5952 section 4 and its examples: one text form for each address.
    func testCanonicalTextOfRFC5952() {
        let cases: [(String, String)] = [
            ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),  // 4.1 leading zeros
            ("2001:db8:0:0:0:0:2:1", "2001:db8::2:1"),  // 4.2.1 shorten as much as possible
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  // 4.2.2 not a single 16-bit 0
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),  // 4.2.3 the longest run
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  // 4.2.3 the first of equal runs
            ("2001:DB8::ABCD", "2001:db8::abcd"),  // 4.3 lower case
            ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),  // 5 IPv4-mapped
            ("::", "::"), ("::1", "::1"), ("fe80::1", "fe80::1"), ("1::", "1::"),
            ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"), ("0:0:0:0:0:0:0:0", "::"),
        ]
        for (text, canonical) in cases {
            XCTAssertEqual(IPv6Address(text)?.description, canonical, text)
        }
    }

    func testMalformedTextIsRefused() {
        for text in ["", ":", ":::", "1:::2", "1::2::3", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "12345::", "g::",
                     "1:2:3:4:5:6:7::8", "::1.2.3", "1.2.3.4", "::1.2.3.4:5", "fe80::1%eth0", " ::1"] {
            XCTAssertNil(IPv6Address(text), text)
        }
        XCTAssertEqual(IPv6Address("::1.2.3.4")?.groups, [0, 0, 0, 0, 0, 0, 0x0102, 0x0304])
    }

    func testPredicates() {
        XCTAssertTrue(IPv6Address("::")!.isUnspecified)
        XCTAssertTrue(IPv6Address("::1")!.isLoopback)
        XCTAssertTrue(IPv6Address("ff02::1")!.isMulticast)
        XCTAssertTrue(IPv6Address("ff02::1")!.isLinkScopeMulticast)
        XCTAssertFalse(IPv6Address("ff05::1")!.isLinkScopeMulticast)
        XCTAssertTrue(IPv6Address("fe80::1")!.isLinkLocal)
        XCTAssertTrue(IPv6Address("febf::1")!.isLinkLocal)
        XCTAssertFalse(IPv6Address("fec0::1")!.isLinkLocal)
        XCTAssertFalse(IPv6Address("fd00::4")!.isMulticast)
    }

    /// RFC 4291 2.7.1 and RFC 2464 section 7.
    func testSolicitedNodeAndMulticastMAC() {
        let a = IPv6Address("fd00::12:3456:789a")!
        XCTAssertEqual(a.solicitedNode.description, "ff02::1:ff56:789a")
        XCTAssertEqual(a.solicitedNode.multicastMAC.description, "33:33:ff:56:78:9a")
        XCTAssertEqual(IPv6Address.allNodes.multicastMAC.description, "33:33:00:00:00:01")
        XCTAssertTrue(a.solicitedNode.isSolicitedNode)
        XCTAssertFalse(IPv6Address.allNodes.isSolicitedNode)
    }

    /// RFC 4291 appendix A: 02:00:0a:00:00:04 gives the identifier 0000:0aff:fe00:0004 (the
    /// universal/local bit inverted), and an universal MAC gets it set.
    func testLinkLocalFromMAC() {
        XCTAssertEqual(IPv6Address(linkLocalFor: MACAddress("02:00:0a:00:00:04")!).description, "fe80::aff:fe00:4")
        XCTAssertEqual(IPv6Address(linkLocalFor: MACAddress("34:56:78:9a:bc:de")!).description, "fe80::3656:78ff:fe9a:bcde")
    }

    func testInterfaceParsing() {
        let i = IPv6Interface(cidr: "fd00::4/64")
        XCTAssertEqual(i?.description, "fd00::4/64")
        XCTAssertTrue(i!.contains(IPv6Address("fd00::ffff:1")!))
        XCTAssertFalse(i!.contains(IPv6Address("fd00:0:0:1::1")!))
        XCTAssertTrue(IPv6Interface(cidr: "2001:db8::1/128")!.contains(IPv6Address("2001:db8::1")!))
        XCTAssertFalse(IPv6Interface(cidr: "2001:db8::1/128")!.contains(IPv6Address("2001:db8::2")!))
        XCTAssertTrue(IPv6Interface(cidr: "2001:db8::1/1")!.contains(IPv6Address("::1")!))
        for bad in ["fd00::4", "fd00::4/0", "fd00::4/129", "fd00::4/", "fd00::4/64x", "ff02::1/64", "::/64", "::1/128",
                    "10.0.0.4/24", "fd00::4/0064"] {
            XCTAssertNil(IPv6Interface(cidr: bad), bad)
        }
    }
}
