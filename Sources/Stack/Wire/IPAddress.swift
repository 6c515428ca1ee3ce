/// An address of either family, as TCP and UDP name their endpoints: an IPv6 address, or an
/// IPv4 address held as the IPv4-mapped IPv6 address ::ffff:a.b.c.d (RFC 4291 2.5.5.2), the
/// form Linux's dual-stack sockets use (RFC 3493 3.7). One representation lets one TCP and
/// one UDP serve both families, and a socket bound to `::` meet IPv4 peers as ::ffff:a.b.c.d.
///
/// An IPv4-mapped address never appears on the wire in an IPv6 header (the IPv6 layer drops
/// such packets), so the family of an `IPAddress` is unambiguous: `v4` is non-nil exactly
/// for IPv4 endpoints.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// The 128 bits, IPv4 ones in mapped form.
    public let bits: IPv6Address

    @inline(__always)
    public init(_ v4: IPv4Address) { bits = IPv6Address(high: 0, low: 0xFFFF_0000_0000 | UInt64(v4.value)) }

    /// An IPv6 address; an IPv4-mapped one names the IPv4 address it maps.
    @inline(__always)
    public init(_ v6: IPv6Address) { bits = v6 }

    /// IPv4's any (0.0.0.0) and IPv6's any (::): different names, as on Linux, where an
    /// IPv6 socket bound to `::` is dual-stack and an IPv4 one bound to 0.0.0.0 is not.
    public static let anyIPv4 = IPAddress(IPv4Address.any)
    public static let anyIPv6 = IPAddress(IPv6Address.unspecified)

    /// The IPv4 address, if this is one.
    @inline(__always)
    public var v4: IPv4Address? { isIPv4 ? IPv4Address(UInt32(truncatingIfNeeded: bits.low)) : nil }

    @inline(__always)
    public var isIPv4: Bool { bits.isIPv4Mapped }

    /// 0.0.0.0 or ::.
    public var isUnspecified: Bool { bits.isUnspecified || (isIPv4 && UInt32(truncatingIfNeeded: bits.low) == 0) }

    /// 127.0.0.0/8 or ::1.
    public var isLoopback: Bool { v4?.isLoopback ?? bits.isLoopback }

    public var isMulticast: Bool { v4?.isMulticast ?? bits.isMulticast }

    /// The unspecified address of this address's family.
    public var familyAny: IPAddress { isIPv4 ? .anyIPv4 : .anyIPv6 }

    /// Parses either family's text form; a dotted quad is IPv4.
    public init?(_ text: String) {
        if let v4 = IPv4Address(text) {
            self.init(v4)
        } else if let v6 = IPv6Address(text) {
            self.init(v6)
        } else {
            return nil
        }
    }

    /// Dotted quad for IPv4, RFC 5952's form for IPv6.
    public var description: String { v4?.description ?? bits.description }

    /// The sum of the transport pseudo-header of either family (RFC 9293 3.1 and RFC 768 for
    /// IPv4, RFC 8200 8.1 for IPv6); both addresses must be of one family.
    @inline(__always)
    public static func pseudoHeaderSum(source: IPAddress, destination: IPAddress, proto: IPProtocol,
                                       length: Int) -> UInt64 {
        if let s = source.v4, let d = destination.v4 {
            return InternetChecksum.pseudoHeaderSum(source: s, destination: d, proto: proto, length: length)
        }
        return IPv6Packet.pseudoHeaderSum(source: source.bits, destination: destination.bits,
                                          nextHeader: IPv6NextHeader(rawValue: proto.rawValue), length: length)
    }

    /// The IP header's length in front of a transport header: TCP's MSS is the MTU less this
    /// and the TCP header (RFC 9293 3.7.1, RFC 8200 8.3).
    @inline(__always)
    public var ipHeaderLength: Int { isIPv4 ? IPv4Packet.minimumHeaderLength : IPv6Packet.headerLength }
}

/// A socket's family, socket(2)'s domain: AF_INET or AF_INET6.
public enum AddressFamily: Sendable {
    case ipv4, ipv6

    /// The unspecified address an unbound socket of this family has (getsockname).
    public var any: IPAddress { self == .ipv4 ? .anyIPv4 : .anyIPv6 }
}
