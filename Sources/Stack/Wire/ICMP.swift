/// An ICMP message type (RFC 792); unknown values are representable.
public struct ICMPType: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let echoReply = ICMPType(rawValue: 0)
    public static let destinationUnreachable = ICMPType(rawValue: 3)
    public static let sourceQuench = ICMPType(rawValue: 4)
    public static let redirect = ICMPType(rawValue: 5)
    public static let echoRequest = ICMPType(rawValue: 8)
    public static let timeExceeded = ICMPType(rawValue: 11)
    public static let parameterProblem = ICMPType(rawValue: 12)
    public static let timestamp = ICMPType(rawValue: 13)
    public static let timestampReply = ICMPType(rawValue: 14)

    /// Error messages, to which no ICMP error may be sent (RFC 1122 3.2.2).
    public var isError: Bool {
        self == .destinationUnreachable || self == .sourceQuench || self == .redirect
            || self == .timeExceeded || self == .parameterProblem
    }
}

/// Codes of Destination Unreachable (RFC 792, RFC 1122 3.2.2.1).
public enum UnreachableCode {
    public static let network: UInt8 = 0
    public static let host: UInt8 = 1
    public static let proto: UInt8 = 2
    public static let port: UInt8 = 3
    public static let fragmentationNeeded: UInt8 = 4
}

/// A validated view of an ICMP message: at least the 8-byte header, checksum correct.
public struct ICMPMessage {
    public enum Field {
        static let type = 0
        static let code = 1
        static let checksum = 2
        static let identifier = 4
        static let sequence = 6
    }

    public static let headerLength = 8

    public enum ParseError: Error {
        case truncated
        case badChecksum
    }

    public let bytes: UnsafeRawBufferPointer

    public init(_ bytes: UnsafeRawBufferPointer) throws(ParseError) {
        guard bytes.count >= Self.headerLength else { throw .truncated }
        guard InternetChecksum.checksum(bytes) == 0 else { throw .badChecksum }
        self.bytes = bytes
    }

    public var type: ICMPType { ICMPType(rawValue: bytes.u8(Field.type)) }
    public var code: UInt8 { bytes.u8(Field.code) }
    public var identifier: UInt16 { bytes.be16(Field.identifier) }
    public var sequence: UInt16 { bytes.be16(Field.sequence) }
    /// For echo: the data; for errors: the offending datagram's header and leading bytes.
    public var body: UnsafeRawBufferPointer { bytes.suffix(from: Self.headerLength) }
}
