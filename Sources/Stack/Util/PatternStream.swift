/// A reproducible byte stream for end-to-end verification: the little-endian bytes of
/// successive SplitMix64 outputs from a seed. The simulation tests produce and check it on
/// both ends of a connection without storing the data (Tests/integration/pattern.py is the
/// same stream for the integration tests).
public struct PatternStream {
    private var rng: SplitMix64
    private var word: UInt64 = 0
    /// Bytes of `word` not yet used.
    private var left = 0
    public private(set) var position: UInt64 = 0

    public init(seed: UInt64) { rng = SplitMix64(state: seed) }

    /// Writes the next `buffer.count` bytes of the stream into `buffer`.
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        var i = 0
        let n = buffer.count
        while i < n && left > 0 {
            buffer[i] = UInt8(truncatingIfNeeded: word)
            word >>= 8
            left -= 1
            i += 1
        }
        while n - i >= 8 {
            buffer.baseAddress!.storeBytes(of: rng.next().littleEndian, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        if i < n {
            word = rng.next()
            left = 8
            while i < n {
                buffer[i] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                left -= 1
                i += 1
            }
        }
        position += UInt64(n)
    }

    /// Compares `data` with the next bytes of the stream; returns the offset (in the
    /// stream) of the first difference, or nil when they match. The stream advances.
    public mutating func verify(_ data: UnsafeRawBufferPointer, scratch: UnsafeMutableRawBufferPointer) -> UInt64? {
        var offset = 0
        while offset < data.count {
            let n = min(scratch.count, data.count - offset)
            let start = position
            fill(UnsafeMutableRawBufferPointer(rebasing: scratch[0..<n]))
            let expected = UnsafeRawBufferPointer(rebasing: scratch[0..<n])
            let actual = UnsafeRawBufferPointer(rebasing: data[offset..<offset + n])
            var j = 0
            while j + 8 <= n {
                if expected.loadUnaligned(fromByteOffset: j, as: UInt64.self) != actual.loadUnaligned(fromByteOffset: j, as: UInt64.self) {
                    break
                }
                j += 8
            }
            while j < n {
                if expected[j] != actual[j] { return start + UInt64(j) }
                j += 1
            }
            offset += n
        }
        return nil
    }
}
