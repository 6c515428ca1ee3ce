/// An IPv6 address (RFC 4291), held as two host-order 64-bit halves, first byte most
/// significant in `high`.
public struct IPv6Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Eight 16-bit groups, as written.
    public init(_ g: [UInt16]) {
        precondition(g.count == 8)
        high = g[0..<4].reduce(0) { $0 << 16 | UInt64($1) }
        low = g[4..<8].reduce(0) { $0 << 16 | UInt64($1) }
    }

    public init(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        high = UInt64(bytes.be32(offset)) << 32 | UInt64(bytes.be32(offset + 4))
        low = UInt64(bytes.be32(offset + 8)) << 32 | UInt64(bytes.be32(offset + 12))
    }

    func write(to buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
        buffer.setBE32(UInt32(truncatingIfNeeded: high >> 32), offset)
        buffer.setBE32(UInt32(truncatingIfNeeded: high), offset + 4)
        buffer.setBE32(UInt32(truncatingIfNeeded: low >> 32), offset + 8)
        buffer.setBE32(UInt32(truncatingIfNeeded: low), offset + 12)
    }

    public var groups: [UInt16] {
        (0..<8).map { i in UInt16(truncatingIfNeeded: (i < 4 ? high : low) >> UInt64(48 - 16 * (i % 4))) }
    }

    public static let unspecified = IPv6Address(high: 0, low: 0)
    public static let loopback = IPv6Address(high: 0, low: 1)
    /// ff02::1, every node on the link (RFC 4291 2.7.1).
    public static let allNodes = IPv6Address(high: 0xFF02 << 48, low: 1)

    public var isUnspecified: Bool { high == 0 && low == 0 }
    public var isLoopback: Bool { high == 0 && low == 1 }
    public var isMulticast: Bool { high >> 56 == 0xFF }
    /// fe80::/10 (RFC 4291 2.5.6).
    public var isLinkLocal: Bool { high >> 54 == 0xFE80 >> 6 }
    /// A multicast address of link-local scope, ff02::/16 and its flag variants (RFC 4291 2.7).
    public var isLinkScopeMulticast: Bool { isMulticast && high >> 48 & 0xF == 2 }
    /// ::ffff:0:0/96 (RFC 4291 2.5.5.2).
    public var isIPv4Mapped: Bool { high == 0 && low >> 32 == 0xFFFF }

    /// The solicited-node multicast address ff02::1:ffXX:XXXX of this address: its low 24 bits
    /// under ff02:0:0:0:0:1:ff00::/104 (RFC 4291 2.7.1).
    public var solicitedNode: IPv6Address {
        IPv6Address(high: 0xFF02 << 48, low: 0x1_FF00_0000 | low & 0xFF_FFFF)
    }

    /// Whether this is a solicited-node multicast address, ff02::1:ff00:0/104.
    public var isSolicitedNode: Bool { high == 0xFF02 << 48 && low >> 24 == 0x1FF }

    /// The Ethernet address a multicast IPv6 address maps to: 33:33 and its low 32 bits
    /// (RFC 2464 section 7).
    public var multicastMAC: MACAddress { MACAddress(0x3333_0000_0000 | low & 0xFFFF_FFFF) }

    /// The link-local address fe80::/64 with the modified EUI-64 interface identifier of
    /// `mac`: ff:fe inserted in the middle and the universal/local bit inverted (RFC 4291
    /// 2.5.1 and appendix A; RFC 4862 5.3).
    public init(linkLocalFor mac: MACAddress) {
        let m = mac.value
        let eui = (m >> 24) << 40 | 0xFF_FE00_0000 | m & 0xFF_FFFF
        self.init(high: 0xFE80 << 48, low: eui ^ 0x0200_0000_0000_0000)
    }

    /// Whether the first `length` bits equal `other`'s.
    public func hasPrefix(_ other: IPv6Address, length: Int) -> Bool {
        if length <= 0 { return true }
        if length <= 64 {
            let mask = length == 64 ? ~UInt64(0) : ~(~UInt64(0) >> UInt64(length))
            return high & mask == other.high & mask
        }
        guard high == other.high else { return false }
        let mask = length >= 128 ? ~UInt64(0) : ~(~UInt64(0) >> UInt64(length - 64))
        return low & mask == other.low & mask
    }

    public static func < (a: IPv6Address, b: IPv6Address) -> Bool { (a.high, a.low) < (b.high, b.low) }

    /// Parses the text forms of RFC 4291 2.2: eight hex groups of up to four digits, one "::"
    /// for a run of zero groups, and a dotted-quad IPv4 address in place of the last two.
    public init?(_ text: String) {
        guard !text.isEmpty, text.utf8.count <= 45 else { return nil }
        let halves = text.split(separator: "::", omittingEmptySubsequences: false).map(String.init)
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String, allowIPv4: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            let fields = part.split(separator: ":", omittingEmptySubsequences: false)
            var result: [UInt16] = []
            for (i, field) in fields.enumerated() {
                if allowIPv4 && i == fields.count - 1 && field.contains(".") {
                    guard let v4 = IPv4Address(String(field)) else { return nil }
                    result += [UInt16(v4.value >> 16), UInt16(v4.value & 0xFFFF)]
                } else {
                    guard (1...4).contains(field.count), field.allSatisfy(\.isHexDigit),
                          let v = UInt16(field, radix: 16) else { return nil }
                    result.append(v)
                }
            }
            return result
        }
        if halves.count == 1 {
            guard let all = groups(halves[0], allowIPv4: true), all.count == 8 else { return nil }
            self.init(all)
        } else {
            guard let head = groups(halves[0], allowIPv4: false), let tail = groups(halves[1], allowIPv4: true),
                  head.count + tail.count <= 7 else { return nil }
            self.init(head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail)
        }
    }

    /// The canonical text form of RFC 5952 section 4: lower-case hex without leading zeros,
    /// the longest run of two or more zero groups (the first if tied) as "::", and an
    /// IPv4-mapped address with its dotted quad (section 5).
    public var description: String {
        if isIPv4Mapped { return "::ffff:\(IPv4Address(UInt32(truncatingIfNeeded: low)))" }
        let g = groups
        var bestStart = -1, bestLength = 1
        var i = 0
        while i < 8 {
            guard g[i] == 0 else { i += 1; continue }
            var j = i
            while j < 8 && g[j] == 0 { j += 1 }
            if j - i > bestLength { (bestStart, bestLength) = (i, j - i) }
            i = j
        }
        func hex(_ range: Range<Int>) -> String { g[range].map { String($0, radix: 16) }.joined(separator: ":") }
        guard bestStart >= 0 else { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex(bestStart + bestLength..<8)
    }
}

/// An IPv6 interface address with its prefix, as written "fd00::4/64".
public struct IPv6Interface: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv6Address
    public var prefixLength: Int

    public init(address: IPv6Address, prefixLength: Int) {
        precondition((1...128).contains(prefixLength))
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses "address/n" with n in 1...128; refuses the unspecified, loopback and multicast
    /// addresses, which no interface may hold (RFC 4291 2.5.2, 2.5.3, 2.7).
    public init?(cidr: String) {
        let parts = cidr.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv6Address(String(parts[0])),
              (1...3).contains(parts[1].count), parts[1].allSatisfy({ $0.isASCII && $0.isNumber }),
              let prefix = Int(parts[1]), (1...128).contains(prefix)
        else { return nil }
        guard !address.isUnspecified, !address.isLoopback, !address.isMulticast else { return nil }
        self.init(address: address, prefixLength: prefix)
    }

    public func contains(_ other: IPv6Address) -> Bool { other.hasPrefix(address, length: prefixLength) }

    public var description: String { "\(address)/\(prefixLength)" }
}
