/// A view of an ARP packet for IPv4 over Ethernet (RFC 826).
public struct ARPPacket {
    public enum Field {
        static let hardwareType = 0
        static let protocolType = 2
        static let hardwareLength = 4
        static let protocolLength = 5
        static let operation = 6
        static let senderMAC = 8
        static let senderIP = 14
        static let targetMAC = 18
        static let targetIP = 24
    }

    public static let length = 28

    public struct Operation: RawRepresentable, Hashable, Sendable {
        public var rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        public static let request = Operation(rawValue: 1)
        public static let reply = Operation(rawValue: 2)
    }

    public enum ParseError: Error {
        case truncated
        /// Hardware type, protocol type or their lengths are not Ethernet/IPv4.
        case unsupportedFormat
    }

    public let bytes: UnsafeRawBufferPointer

    public init(_ bytes: UnsafeRawBufferPointer) throws(ParseError) {
        guard bytes.count >= Self.length else { throw .truncated }
        guard bytes.be16(Field.hardwareType) == 1, bytes.be16(Field.protocolType) == EtherType.ipv4.rawValue,
              bytes.u8(Field.hardwareLength) == 6, bytes.u8(Field.protocolLength) == 4
        else { throw .unsupportedFormat }
        self.bytes = bytes
    }

    public var operation: Operation { Operation(rawValue: bytes.be16(Field.operation)) }
    public var senderMAC: MACAddress { MACAddress(bytes, at: Field.senderMAC) }
    public var senderIP: IPv4Address { IPv4Address(bytes.be32(Field.senderIP)) }
    public var targetMAC: MACAddress { MACAddress(bytes, at: Field.targetMAC) }
    public var targetIP: IPv4Address { IPv4Address(bytes.be32(Field.targetIP)) }

    @discardableResult
    public static func write(
        into buffer: UnsafeMutableRawBufferPointer, operation: Operation,
        senderMAC: MACAddress, senderIP: IPv4Address, targetMAC: MACAddress, targetIP: IPv4Address
    ) -> Int {
        buffer.setBE16(1, Field.hardwareType)
        buffer.setBE16(EtherType.ipv4.rawValue, Field.protocolType)
        buffer.setU8(6, Field.hardwareLength)
        buffer.setU8(4, Field.protocolLength)
        buffer.setBE16(operation.rawValue, Field.operation)
        senderMAC.write(to: buffer, at: Field.senderMAC)
        buffer.setBE32(senderIP.value, Field.senderIP)
        targetMAC.write(to: buffer, at: Field.targetMAC)
        buffer.setBE32(targetIP.value, Field.targetIP)
        return length
    }
}
