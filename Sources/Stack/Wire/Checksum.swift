/// The Internet checksum (RFC 1071): the 16-bit one's complement of the one's complement
/// sum of the data as big-endian 16-bit words.
///
/// The sum is byte-order independent (RFC 1071 section 2(B)), so it is accumulated over
/// native 64-bit loads, each split into two 32-bit halves added to a 64-bit accumulator
/// (no carry is lost before 2^32 words), then folded and byte-swapped once at the end.
public enum InternetChecksum {
    /// The unfolded partial sum of `bytes`, in native byte order, to combine with `fold`.
    /// `bytes` must start at an even offset of the checksummed data.
    @inline(__always)
    public static func partialSum(_ bytes: UnsafeRawBufferPointer, _ initial: UInt64 = 0) -> UInt64 {
        var sum = initial
        guard var p = bytes.baseAddress else { return sum }
        var n = bytes.count
        while n >= 32 {
            let a = p.loadUnaligned(as: UInt64.self)
            let b = p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            let c = p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
            let d = p.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
            sum &+= (a & 0xFFFF_FFFF) &+ (a >> 32) &+ (b & 0xFFFF_FFFF) &+ (b >> 32)
            sum &+= (c & 0xFFFF_FFFF) &+ (c >> 32) &+ (d & 0xFFFF_FFFF) &+ (d >> 32)
            p += 32
            n -= 32
        }
        while n >= 8 {
            let a = p.loadUnaligned(as: UInt64.self)
            sum &+= (a & 0xFFFF_FFFF) &+ (a >> 32)
            p += 8
            n -= 8
        }
        if n >= 4 {
            sum &+= UInt64(p.loadUnaligned(as: UInt32.self))
            p += 4
            n -= 4
        }
        if n >= 2 {
            sum &+= UInt64(p.loadUnaligned(as: UInt16.self))
            p += 2
            n -= 2
        }
        if n == 1 {
            // An odd last byte is the high byte of a big-endian word padded with zero, which
            // in little-endian native order is the low byte.
            sum &+= UInt64(p.load(as: UInt8.self))
        }
        return sum
    }

    /// Adds a big-endian 16-bit value (a pseudo-header field) to a native partial sum.
    @inline(__always)
    public static func adding(_ value: UInt16, to sum: UInt64) -> UInt64 { sum &+ UInt64(value.bigEndian) }

    /// The partial sum of the IPv4 pseudo-header that TCP (RFC 9293 section 3.1) and UDP
    /// (RFC 768) checksums cover.
    @inline(__always)
    public static func pseudoHeaderSum(source: IPv4Address, destination: IPv4Address, proto: IPProtocol,
                                       length: Int) -> UInt64 {
        var sum: UInt64 = 0
        sum = adding(UInt16(source.value >> 16), to: sum)
        sum = adding(UInt16(source.value & 0xFFFF), to: sum)
        sum = adding(UInt16(destination.value >> 16), to: sum)
        sum = adding(UInt16(destination.value & 0xFFFF), to: sum)
        sum = adding(UInt16(proto.rawValue), to: sum)
        sum = adding(UInt16(length), to: sum)
        return sum
    }

    /// Folds a partial sum and returns the checksum to store as a big-endian field.
    @inline(__always)
    public static func finish(_ sum: UInt64) -> UInt16 {
        var s = sum
        s = (s & 0xFFFF_FFFF) &+ (s >> 32)
        s = (s & 0xFFFF_FFFF) &+ (s >> 32)
        s = (s & 0xFFFF) &+ (s >> 16)
        s = (s & 0xFFFF) &+ (s >> 16)
        return ~UInt16(truncatingIfNeeded: s).bigEndian
    }

    /// The checksum of `bytes`. Over data that includes a correct checksum field it is zero.
    @inline(__always)
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt16 { finish(partialSum(bytes)) }
}
