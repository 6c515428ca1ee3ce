/// A validated view of an IPv6 packet's fixed header (RFC 8200 section 3).
///
/// The initializer checks the version and the payload length against what arrived; bytes
/// past the payload (Ethernet padding) are excluded. Extension headers are walked by the
/// receive path (NetworkStack+IPv6), which knows which it processes.
public struct IPv6Packet {
    public enum Field {
        static let versionClassFlow = 0
        static let payloadLength = 4
        static let nextHeader = 6
        static let hopLimit = 7
        static let source = 8
        static let destination = 24
    }

    public static let headerLength = 40
    /// The smallest MTU of an IPv6 link (RFC 8200 section 5).
    public static let minimumMTU = 1280
    /// The largest Payload Length (jumbograms aside, RFC 2675).
    public static let maximumPayloadLength = 65535

    public enum ParseError: Error {
        case truncatedHeader
        case badVersion
        /// Payload length larger than what arrived.
        case truncated
        /// Payload length zero: a jumbogram (RFC 2675), which an Ethernet link cannot carry.
        case jumbogram
    }

    /// The packet's bytes: header and payload, without link-layer padding.
    public let bytes: UnsafeRawBufferPointer

    public init(_ buffer: UnsafeRawBufferPointer) throws(ParseError) {
        guard buffer.count >= Self.headerLength else { throw .truncatedHeader }
        guard buffer.u8(Field.versionClassFlow) >> 4 == 6 else { throw .badVersion }
        let length = Int(buffer.be16(Field.payloadLength))
        guard length > 0 || buffer.u8(Field.nextHeader) != IPv6NextHeader.hopByHop.rawValue else { throw .jumbogram }
        guard Self.headerLength + length <= buffer.count else { throw .truncated }
        bytes = buffer.slice(0..<Self.headerLength + length)
    }

    public var nextHeader: IPv6NextHeader { IPv6NextHeader(rawValue: bytes.u8(Field.nextHeader)) }
    public var hopLimit: UInt8 { bytes.u8(Field.hopLimit) }
    public var source: IPv6Address { IPv6Address(bytes, at: Field.source) }
    public var destination: IPv6Address { IPv6Address(bytes, at: Field.destination) }

    /// Writes a 40-byte header (traffic class and flow label zero); returns its length.
    @discardableResult
    public static func writeHeader(
        into buffer: UnsafeMutableRawBufferPointer, source: IPv6Address, destination: IPv6Address,
        nextHeader: IPv6NextHeader, payloadLength: Int, hopLimit: UInt8
    ) -> Int {
        buffer.setBE32(0x6000_0000, Field.versionClassFlow)
        buffer.setBE16(UInt16(payloadLength), Field.payloadLength)
        buffer.setU8(nextHeader.rawValue, Field.nextHeader)
        buffer.setU8(hopLimit, Field.hopLimit)
        source.write(to: buffer, at: Field.source)
        destination.write(to: buffer, at: Field.destination)
        return headerLength
    }

    /// The partial sum of the IPv6 pseudo-header that upper-layer checksums cover (RFC 8200
    /// section 8.1): both addresses, the upper-layer length and the next header value.
    public static func pseudoHeaderSum(source: IPv6Address, destination: IPv6Address, nextHeader: IPv6NextHeader,
                                       length: Int) -> UInt64 {
        // Each 64-bit half is four big-endian 16-bit words; summing them in one piece per
        // half keeps this allocation-free on the per-segment path.
        @inline(__always) func words(_ half: UInt64) -> UInt64 {
            (half >> 48) + (half >> 32 & 0xFFFF) + (half >> 16 & 0xFFFF) + (half & 0xFFFF)
        }
        let hostOrder = words(source.high) + words(source.low) + words(destination.high) + words(destination.low)
        // `adding` takes host-order words and sums them byte-swapped, as partialSum reads memory.
        var sum = InternetChecksum.adding(UInt16(truncatingIfNeeded: hostOrder), to: 0)
        sum = InternetChecksum.adding(UInt16(truncatingIfNeeded: hostOrder >> 16), to: sum)
        sum = InternetChecksum.adding(UInt16(truncatingIfNeeded: hostOrder >> 32), to: sum)
        sum = InternetChecksum.adding(UInt16(truncatingIfNeeded: length >> 16), to: sum)
        sum = InternetChecksum.adding(UInt16(truncatingIfNeeded: length), to: sum)
        return InternetChecksum.adding(UInt16(nextHeader.rawValue), to: sum)
    }
}

/// An IPv6 Next Header value: an extension header or an upper-layer protocol (the IPv4
/// protocol numbers); unknown values are representable.
public struct IPv6NextHeader: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let hopByHop = IPv6NextHeader(rawValue: 0)
    public static let tcp = IPv6NextHeader(rawValue: 6)
    public static let udp = IPv6NextHeader(rawValue: 17)
    public static let routing = IPv6NextHeader(rawValue: 43)
    public static let fragment = IPv6NextHeader(rawValue: 44)
    public static let icmpv6 = IPv6NextHeader(rawValue: 58)
    public static let noNextHeader = IPv6NextHeader(rawValue: 59)
    public static let destinationOptions = IPv6NextHeader(rawValue: 60)
}
