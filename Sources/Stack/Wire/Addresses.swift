/// An IPv4 address, held as a host-order integer.
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses strict dotted-quad notation ("10.0.0.4"): four decimal parts 0–255, no
    /// leading zeros (which other parsers read as octal), nothing else.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  !(part.count > 1 && part.first == "0"), let n = UInt32(part), n <= 255
            else { return nil }
            v = v << 8 | n
        }
        value = v
    }

    public static let any = IPv4Address(0)
    public static let broadcast = IPv4Address(0xFFFF_FFFF)

    public var isUnspecified: Bool { value == 0 }
    public var isLimitedBroadcast: Bool { value == 0xFFFF_FFFF }
    public var isMulticast: Bool { value >> 28 == 0xE }
    public var isLoopback: Bool { value >> 24 == 127 }

    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
    }
}

/// An interface address with its prefix, as written "10.0.0.4/24".
public struct IPv4Interface: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var prefixLength: Int

    public init(address: IPv4Address, prefixLength: Int) {
        precondition((0...32).contains(prefixLength))
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses "a.b.c.d/n" with n in 1...32. A host part of all zeros or all ones (the network
    /// or broadcast address itself) is refused for prefixes up to /30.
    public init?(cidr: String) {
        let parts = cidr.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv4Address(String(parts[0])),
              parts[1].allSatisfy({ $0.isASCII && $0.isNumber }), parts[1].count <= 2,
              let prefix = Int(parts[1]), (1...32).contains(prefix)
        else { return nil }
        self.init(address: address, prefixLength: prefix)
        if prefix <= 30 && (address == network || address == subnetBroadcast) { return nil }
        if address.isUnspecified || address.isMulticast || address.isLimitedBroadcast || address.isLoopback { return nil }
    }

    public var mask: UInt32 { prefixLength == 0 ? 0 : ~UInt32(0) << UInt32(32 - prefixLength) }
    public var network: IPv4Address { IPv4Address(address.value & mask) }
    public var subnetBroadcast: IPv4Address { IPv4Address(address.value | ~mask) }

    public func contains(_ other: IPv4Address) -> Bool { other.value & mask == address.value & mask }

    public var description: String { "\(address)/\(prefixLength)" }
}

/// An Ethernet MAC address in its 48 low bits, first octet most significant.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public var value: UInt64

    public init(_ value: UInt64) { self.value = value & 0xFFFF_FFFF_FFFF }

    public init(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        value = UInt64(bytes.be16(offset)) << 32 | UInt64(bytes.be32(offset + 2))
    }

    /// Parses "aa:bb:cc:dd:ee:ff" (hex, case-insensitive, ':' or '-').
    public init?(_ text: String) {
        let parts = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6 else { return nil }
        var v: UInt64 = 0
        for part in parts {
            guard (1...2).contains(part.count), let byte = UInt8(part, radix: 16) else { return nil }
            v = v << 8 | UInt64(byte)
        }
        value = v
    }

    public static let broadcast = MACAddress(0xFFFF_FFFF_FFFF)
    public static let zero = MACAddress(0)

    /// The group bit (I/G) of the first octet: broadcast and multicast addresses.
    public var isGroup: Bool { value >> 40 & 1 == 1 }
    public var isBroadcast: Bool { value == 0xFFFF_FFFF_FFFF }

    /// A locally administered unicast address derived from an IPv4 address:
    /// 02:00:a:b:c:d. Stable across restarts, so peers' ARP caches stay valid.
    public init(derivedFrom address: IPv4Address) { self.init(0x0200_0000_0000 | UInt64(address.value)) }

    func write(to buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
        buffer.setBE16(UInt16(truncatingIfNeeded: value >> 32), offset)
        buffer.setBE32(UInt32(truncatingIfNeeded: value), offset + 2)
    }

    public var description: String {
        (0..<6).map { i -> String in
            let byte = UInt8(truncatingIfNeeded: value >> UInt64(40 - 8 * i))
            return (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }.joined(separator: ":")
    }
}
