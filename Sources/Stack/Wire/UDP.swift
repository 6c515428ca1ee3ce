/// A validated view of a UDP datagram (RFC 768).
///
/// The initializer checks what a receiver must before trusting a field: the length field
/// against the buffer (the IP payload may be longer, padding, but never shorter) and the
/// checksum, unless the link vouched for it or, over IPv4 only, the sender computed none
/// (zero). Over IPv6 the checksum is mandatory and zero is an error (RFC 8200 8.1). Bytes
/// past the length are excluded.
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

    public init(_ buffer: UnsafeRawBufferPointer, source: IPAddress, destination: IPAddress,
                checksumVerified: Bool = false) throws(ParseError) {
        guard buffer.count >= Self.headerLength else { throw .badLength }
        let length = Int(buffer.be16(Field.length))
        guard length >= Self.headerLength, length <= buffer.count else { throw .badLength }
        let datagram = buffer.slice(0..<length)
        if !checksumVerified {
            if buffer.be16(Field.checksum) == 0 {
                guard source.isIPv4 else { throw .badChecksum }
            } else {
                let pseudo = IPAddress.pseudoHeaderSum(source: source, destination: destination, proto: .udp,
                                                       length: length)
                guard InternetChecksum.finish(InternetChecksum.partialSum(datagram, pseudo)) == 0 else {
                    throw .badChecksum
                }
            }
        }
        bytes = datagram
    }

    public var sourcePort: UInt16 { bytes.be16(Field.sourcePort) }
    public var destinationPort: UInt16 { bytes.be16(Field.destinationPort) }
    public var payload: UnsafeRawBufferPointer { bytes.suffix(from: Self.headerLength) }

    /// Writes the header in front of the payload already in `datagram` (header and payload,
    /// its whole length) and the checksum over both and the pseudo-header of the addresses'
    /// family (both of one family).
    public static func writeHeader(into datagram: UnsafeMutableRawBufferPointer, sourcePort: UInt16,
                                   destinationPort: UInt16, source: IPAddress, destination: IPAddress) {
        datagram.setBE16(sourcePort, Field.sourcePort)
        datagram.setBE16(destinationPort, Field.destinationPort)
        datagram.setBE16(UInt16(datagram.count), Field.length)
        datagram.setBE16(0, Field.checksum)
        let pseudo = IPAddress.pseudoHeaderSum(source: source, destination: destination, proto: .udp,
                                               length: datagram.count)
        let checksum = InternetChecksum.finish(InternetChecksum.partialSum(UnsafeRawBufferPointer(datagram), pseudo))
        // RFC 768, RFC 8200 8.1: a computed checksum of zero is sent as all ones (zero means
        // "none" over IPv4, and is invalid over IPv6).
        datagram.setBE16(checksum == 0 ? 0xFFFF : checksum, Field.checksum)
    }
}
