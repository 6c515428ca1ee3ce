/// A validated view of a UDP datagram (RFC 768).
///
/// The initializer checks what a receiver must before trusting a field: the length field
/// against the buffer (the IP payload may be longer, padding, but never shorter) and the
/// checksum, unless the sender computed none (zero, which IPv4 allows) or the link vouched
/// for it. Bytes past the length are excluded.
public struct UDPPacket {
    public enum Field {
        static let sourcePort = 0
        static let destinationPort = 2
        static let length = 4
        static let checksum = 6
    }

    public static let headerLength = 8

    public enum ParseError: Error {
        /// Shorter than a header, or than its length field says.
        case badLength
        case badChecksum
    }

    /// Header and payload, as long as the length field says.
    public let bytes: UnsafeRawBufferPointer

    public init(_ buffer: UnsafeRawBufferPointer, source: IPv4Address, destination: IPv4Address,
                checksumVerified: Bool = false) throws(ParseError) {
        guard buffer.count >= Self.headerLength else { throw .badLength }
        let length = Int(buffer.be16(Field.length))
        guard length >= Self.headerLength, length <= buffer.count else { throw .badLength }
        let datagram = buffer.slice(0..<length)
        if buffer.be16(Field.checksum) != 0 && !checksumVerified {
            let sum = InternetChecksum.partialSum(
                datagram, InternetChecksum.pseudoHeaderSum(source: source, destination: destination, proto: .udp,
                                                           length: length))
            guard InternetChecksum.finish(sum) == 0 else { throw .badChecksum }
        }
        bytes = datagram
    }

    public var sourcePort: UInt16 { bytes.be16(Field.sourcePort) }
    public var destinationPort: UInt16 { bytes.be16(Field.destinationPort) }
    public var payload: UnsafeRawBufferPointer { bytes.suffix(from: Self.headerLength) }

    /// Writes the header in front of the payload already in `datagram` (header and payload,
    /// its whole length) and the checksum over both.
    public static func writeHeader(into datagram: UnsafeMutableRawBufferPointer, sourcePort: UInt16,
                                   destinationPort: UInt16, source: IPv4Address, destination: IPv4Address) {
        datagram.setBE16(sourcePort, Field.sourcePort)
        datagram.setBE16(destinationPort, Field.destinationPort)
        datagram.setBE16(UInt16(datagram.count), Field.length)
        datagram.setBE16(0, Field.checksum)
        let pseudo = InternetChecksum.pseudoHeaderSum(source: source, destination: destination, proto: .udp,
                                                      length: datagram.count)
        let checksum = InternetChecksum.finish(InternetChecksum.partialSum(UnsafeRawBufferPointer(datagram), pseudo))
        // RFC 768: a computed checksum of zero is sent as all ones (zero means "none").
        datagram.setBE16(checksum == 0 ? 0xFFFF : checksum, Field.checksum)
    }
}
