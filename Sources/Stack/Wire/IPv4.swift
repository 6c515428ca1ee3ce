/// An IP protocol number; unknown values are representable.
public struct IPProtocol: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let icmp = IPProtocol(rawValue: 1)
    public static let tcp = IPProtocol(rawValue: 6)
    public static let udp = IPProtocol(rawValue: 17)
}

/// A validated view of an IPv4 datagram (RFC 791 section 3.1).
///
/// The initializer checks everything a receiver must before trusting a field: version, header
/// length, total length against the buffer and the header, and the header checksum. Bytes past
/// the total length (Ethernet padding) are excluded from `payload`.
public struct IPv4Packet {
    public enum Field {
        static let versionIHL = 0
        static let tos = 1
        static let totalLength = 2
        static let identification = 4
        static let flagsFragment = 6
        static let ttl = 8
        static let proto = 9
        static let checksum = 10
        static let source = 12
        static let destination = 16
    }

    public static let minimumHeaderLength = 20
    public static let maximumLength = 65535
    static let flagDF: UInt16 = 0x4000
    static let flagMF: UInt16 = 0x2000
    static let flagReserved: UInt16 = 0x8000

    public enum ParseError: Error {
        case truncatedHeader
        case badVersion
        case badHeaderLength
        /// Total length smaller than the header.
        case badTotalLength
        /// Total length larger than what arrived.
        case truncated
        case badChecksum
    }

    /// The datagram's bytes: header and payload, without link-layer padding.
    public let bytes: UnsafeRawBufferPointer
    public let headerLength: Int

    public init(_ buffer: UnsafeRawBufferPointer) throws(ParseError) {
        guard buffer.count >= Self.minimumHeaderLength else { throw .truncatedHeader }
        let versionIHL = buffer.u8(Field.versionIHL)
        guard versionIHL >> 4 == 4 else { throw .badVersion }
        let ihl = Int(versionIHL & 0x0F) * 4
        guard ihl >= Self.minimumHeaderLength, ihl <= buffer.count else { throw .badHeaderLength }
        let total = Int(buffer.be16(Field.totalLength))
        guard total >= ihl else { throw .badTotalLength }
        guard total <= buffer.count else { throw .truncated }
        let header = buffer.slice(0..<ihl)
        guard InternetChecksum.checksum(header) == 0 else { throw .badChecksum }
        bytes = buffer.slice(0..<total)
        headerLength = ihl
    }

    public var totalLength: Int { bytes.count }
    public var identification: UInt16 { bytes.be16(Field.identification) }
    public var dontFragment: Bool { bytes.be16(Field.flagsFragment) & Self.flagDF != 0 }
    public var moreFragments: Bool { bytes.be16(Field.flagsFragment) & Self.flagMF != 0 }
    /// Fragment offset in bytes.
    public var fragmentOffset: Int { Int(bytes.be16(Field.flagsFragment) & 0x1FFF) * 8 }
    public var isFragment: Bool { moreFragments || fragmentOffset != 0 }
    public var ttl: UInt8 { bytes.u8(Field.ttl) }
    public var proto: IPProtocol { IPProtocol(rawValue: bytes.u8(Field.proto)) }
    public var source: IPv4Address { IPv4Address(bytes.be32(Field.source)) }
    public var destination: IPv4Address { IPv4Address(bytes.be32(Field.destination)) }
    public var header: UnsafeRawBufferPointer { bytes.slice(0..<headerLength) }
    /// Options are skipped: lvlip acts on none (RFC 1122 3.2.1.8 lets a host ignore
    /// options it does not implement); their length is covered by the IHL check.
    public var payload: UnsafeRawBufferPointer { bytes.suffix(from: headerLength) }

    /// Writes a 20-byte header with its checksum; returns its length.
    @discardableResult
    public static func writeHeader(
        into buffer: UnsafeMutableRawBufferPointer, source: IPv4Address, destination: IPv4Address,
        proto: IPProtocol, payloadLength: Int, identification: UInt16, ttl: UInt8,
        dontFragment: Bool = false, moreFragments: Bool = false, fragmentOffset: Int = 0, tos: UInt8 = 0
    ) -> Int {
        buffer.setU8(0x45, Field.versionIHL)
        buffer.setU8(tos, Field.tos)
        buffer.setBE16(UInt16(minimumHeaderLength + payloadLength), Field.totalLength)
        buffer.setBE16(identification, Field.identification)
        var flags = UInt16(fragmentOffset / 8) & 0x1FFF
        if dontFragment { flags |= flagDF }
        if moreFragments { flags |= flagMF }
        buffer.setBE16(flags, Field.flagsFragment)
        buffer.setU8(ttl, Field.ttl)
        buffer.setU8(proto.rawValue, Field.proto)
        buffer.setBE16(0, Field.checksum)
        buffer.setBE32(source.value, Field.source)
        buffer.setBE32(destination.value, Field.destination)
        let checksum = InternetChecksum.checksum(UnsafeRawBufferPointer(buffer.slice(0..<minimumHeaderLength)))
        buffer.setBE16(checksum, Field.checksum)
        return minimumHeaderLength
    }
}
