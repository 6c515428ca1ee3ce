/// Reads a script; past the end every read is 0.
public struct Reader {
    private let bytes: UnsafeRawBufferPointer
    private var offset = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var atEnd: Bool { offset >= bytes.count }

    public mutating func u8() -> UInt8 {
        guard offset < bytes.count else { return 0 }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func u16() -> UInt16 { UInt16(u8()) << 8 | UInt16(u8()) }
    public mutating func u32() -> UInt32 { UInt32(u16()) << 16 | UInt32(u16()) }

    public mutating func bytes(_ count: Int) -> [UInt8] {
        let n = min(count, bytes.count - offset)
        defer { offset += n }
        return n > 0 ? Array(bytes[offset..<offset + n]) : []
    }
}
