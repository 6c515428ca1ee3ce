/// An ICMPv6 message type (RFC 4443, RFC 4861); unknown values are representable.
public struct ICMPv6Type: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let destinationUnreachable = ICMPv6Type(rawValue: 1)
    public static let packetTooBig = ICMPv6Type(rawValue: 2)
    public static let timeExceeded = ICMPv6Type(rawValue: 3)
    public static let parameterProblem = ICMPv6Type(rawValue: 4)
    public static let echoRequest = ICMPv6Type(rawValue: 128)
    public static let echoReply = ICMPv6Type(rawValue: 129)
    public static let routerSolicitation = ICMPv6Type(rawValue: 133)
    public static let routerAdvertisement = ICMPv6Type(rawValue: 134)
    public static let neighborSolicitation = ICMPv6Type(rawValue: 135)
    public static let neighborAdvertisement = ICMPv6Type(rawValue: 136)
    public static let redirect = ICMPv6Type(rawValue: 137)

    /// Error messages have types 0-127 (RFC 4443 2.1); no error may answer one (2.4 (e.1)).
    public var isError: Bool { rawValue < 128 }
}

/// Codes of the ICMPv6 errors this stack sends (RFC 4443 3.1, 3.3, 3.4; RFC 7112).
public enum ICMPv6Code {
    public static let portUnreachable: UInt8 = 4
    public static let reassemblyTimeExceeded: UInt8 = 1
    public static let erroneousHeaderField: UInt8 = 0
    public static let unrecognizedNextHeader: UInt8 = 1
    public static let unrecognizedOption: UInt8 = 2
    public static let incompleteHeaderChain: UInt8 = 3
}

/// A validated view of an ICMPv6 message: at least the 4-byte header, checksum correct over
/// the IPv6 pseudo-header (RFC 4443 2.3).
public struct ICMPv6Message {
    public enum Field {
        static let type = 0
        static let code = 1
        static let checksum = 2
        /// Identifier and sequence (echo), pointer (parameter problem), flags (NA).
        static let body = 4
    }

    public static let headerLength = 4

    public enum ParseError: Error {
        case truncated
        case badChecksum
    }

    public let bytes: UnsafeRawBufferPointer

    public init(_ bytes: UnsafeRawBufferPointer, source: IPv6Address, destination: IPv6Address) throws(ParseError) {
        guard bytes.count >= Self.headerLength else { throw .truncated }
        let sum = IPv6Packet.pseudoHeaderSum(source: source, destination: destination, nextHeader: .icmpv6,
                                             length: bytes.count)
        guard InternetChecksum.finish(InternetChecksum.partialSum(bytes, sum)) == 0 else { throw .badChecksum }
        self.bytes = bytes
    }

    public var type: ICMPv6Type { ICMPv6Type(rawValue: bytes.u8(Field.type)) }
    public var code: UInt8 { bytes.u8(Field.code) }

    /// Stores the checksum of a message written in `buffer` with its checksum field zero.
    public static func setChecksum(_ buffer: UnsafeMutableRawBufferPointer, source: IPv6Address,
                                   destination: IPv6Address) {
        let sum = IPv6Packet.pseudoHeaderSum(source: source, destination: destination, nextHeader: .icmpv6,
                                             length: buffer.count)
        buffer.setBE16(InternetChecksum.finish(InternetChecksum.partialSum(UnsafeRawBufferPointer(buffer), sum)),
                       Field.checksum)
    }
}

/// Neighbor Solicitation and Advertisement (RFC 4861 4.3, 4.4): a 4-byte field (reserved, or
/// the R/S/O flags), the target address, then options.
public struct NeighborMessage {
    public static let length = 24
    static let target = 8
    static let options = 24
    static let flagRouter: UInt32 = 0x8000_0000
    static let flagSolicited: UInt32 = 0x4000_0000
    static let flagOverride: UInt32 = 0x2000_0000

    /// Option types (RFC 4861 4.6).
    static let sourceLinkLayerOption: UInt8 = 1
    static let targetLinkLayerOption: UInt8 = 2

    public let bytes: UnsafeRawBufferPointer
    /// The link-layer address options found, if any.
    public let sourceLinkLayer: MACAddress?
    public let targetLinkLayer: MACAddress?

    /// Fails when the message is short or an option has length zero or runs past the end
    /// (RFC 4861 7.1.1, 7.1.2).
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Self.length else { return nil }
        var source: MACAddress?, target: MACAddress?
        var offset = Self.options
        while offset < bytes.count {
            guard offset + 2 <= bytes.count else { return nil }
            let length = Int(bytes.u8(offset + 1)) * 8
            guard length > 0, offset + length <= bytes.count else { return nil }
            // An Ethernet link-layer address option is 8 bytes (RFC 2464 section 8).
            if length == 8 && bytes.u8(offset) == Self.sourceLinkLayerOption { source = MACAddress(bytes, at: offset + 2) }
            if length == 8 && bytes.u8(offset) == Self.targetLinkLayerOption { target = MACAddress(bytes, at: offset + 2) }
            offset += length
        }
        self.bytes = bytes
        sourceLinkLayer = source
        targetLinkLayer = target
    }

    public var target: IPv6Address { IPv6Address(bytes, at: Self.target) }
    var flags: UInt32 { bytes.be32(ICMPv6Message.Field.body) }
    public var isRouter: Bool { flags & Self.flagRouter != 0 }
    public var isSolicited: Bool { flags & Self.flagSolicited != 0 }
    public var isOverride: Bool { flags & Self.flagOverride != 0 }

    /// Writes an NS or NA with an optional link-layer address option; returns its length
    /// (the checksum is left zero).
    static func write(into buffer: UnsafeMutableRawBufferPointer, type: ICMPv6Type, flags: UInt32,
                      target: IPv6Address, option: (type: UInt8, mac: MACAddress)?) -> Int {
        buffer.setU8(type.rawValue, ICMPv6Message.Field.type)
        buffer.setU8(0, ICMPv6Message.Field.code)
        buffer.setBE16(0, ICMPv6Message.Field.checksum)
        buffer.setBE32(flags, ICMPv6Message.Field.body)
        target.write(to: buffer, at: Self.target)
        guard let option else { return Self.length }
        buffer.setU8(option.type, Self.options)
        buffer.setU8(1, Self.options + 1)
        option.mac.write(to: buffer, at: Self.options + 2)
        return Self.length + 8
    }
}
