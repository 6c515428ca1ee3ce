/// An EtherType: a wire value that may be one we do not know, so not a closed enum.
public struct EtherType: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let ipv4 = EtherType(rawValue: 0x0800)
    public static let arp = EtherType(rawValue: 0x0806)
    public static let vlan = EtherType(rawValue: 0x8100)
    public static let ipv6 = EtherType(rawValue: 0x86DD)
}

/// A view of an Ethernet II frame (no FCS: the TAP neither passes nor wants one).
public struct EthernetFrame {
    public enum Field {
        static let destination = 0
        static let source = 6
        static let etherType = 12
    }

    public static let headerLength = 14

    public let bytes: UnsafeRawBufferPointer

    /// Fails when the buffer cannot hold the header.
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Self.headerLength else { return nil }
        self.bytes = bytes
    }

    public var destination: MACAddress { MACAddress(bytes, at: Field.destination) }
    public var source: MACAddress { MACAddress(bytes, at: Field.source) }
    public var etherType: EtherType { EtherType(rawValue: bytes.be16(Field.etherType)) }
    public var payload: UnsafeRawBufferPointer { bytes.suffix(from: Self.headerLength) }

    /// Writes a header; returns its length.
    @discardableResult
    public static func writeHeader(
        into buffer: UnsafeMutableRawBufferPointer, destination: MACAddress, source: MACAddress, etherType: EtherType
    ) -> Int {
        destination.write(to: buffer, at: Field.destination)
        source.write(to: buffer, at: Field.source)
        buffer.setBE16(etherType.rawValue, Field.etherType)
        return headerLength
    }
}
