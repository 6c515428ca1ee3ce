/// SipHash-2-4 (Aumasson and Bernstein), a keyed pseudo-random function: used where RFC 6528
/// (initial sequence numbers), RFC 6056 (ephemeral ports) and RFC 4987 (SYN cookies) ask for
/// a secret hash, so that an off-path attacker cannot predict the values.
public struct SipHash24 {
    private var v0: UInt64, v1: UInt64, v2: UInt64, v3: UInt64
    /// The bytes added since the last compression (`length % 8` of them), least significant
    /// first.
    private var tail: UInt64 = 0
    private var length = 0

    public init(key0: UInt64, key1: UInt64) {
        v0 = key0 ^ 0x736F_6D65_7073_6575
        v1 = key1 ^ 0x646F_7261_6E64_6F6D
        v2 = key0 ^ 0x6C79_6765_6E65_7261
        v3 = key1 ^ 0x7465_6462_7974_6573
    }

    @inline(__always) private static func rotl(_ x: UInt64, _ b: UInt64) -> UInt64 { (x << b) | (x >> (64 - b)) }

    @inline(__always) private mutating func round() {
        v0 &+= v1; v1 = Self.rotl(v1, 13); v1 ^= v0; v0 = Self.rotl(v0, 32)
        v2 &+= v3; v3 = Self.rotl(v3, 16); v3 ^= v2
        v0 &+= v3; v3 = Self.rotl(v3, 21); v3 ^= v0
        v2 &+= v1; v1 = Self.rotl(v1, 17); v1 ^= v2; v2 = Self.rotl(v2, 32)
    }

    private mutating func compress(_ m: UInt64) {
        v3 ^= m
        round(); round()
        v0 ^= m
    }

    /// Adds an integer's bytes, least significant first: the same message as adding them
    /// one by one, taken a word at a time (byte by byte, the keyed hashes of each new
    /// connection cost about 1,700 instructions).
    @inline(__always)
    public mutating func add<T: FixedWidthInteger>(_ value: T) {
        let size = MemoryLayout<T>.size
        if size <= 8 {
            add(bytes: UInt64(truncatingIfNeeded: value), count: size)
        } else {
            var v = value
            for _ in 0..<size / 8 {
                add(bytes: UInt64(truncatingIfNeeded: v), count: 8)
                v = v >> 64
            }
        }
    }

    /// Adds the `count` (1...8) low bytes of `value`, least significant first.
    @inline(__always)
    private mutating func add(bytes value: UInt64, count: Int) {
        let v = count == 8 ? value : value & ((1 << UInt64(8 * count)) &- 1)
        let held = length & 7
        tail |= v << UInt64(8 * held)
        length += count
        guard held + count >= 8 else { return }
        compress(tail)
        // The bytes that did not fit: `value` shifted by those that did (8 - held of them).
        let used = 8 - held
        tail = used == 8 ? 0 : v >> UInt64(8 * used)
    }

    public mutating func finalize() -> UInt64 {
        let b = UInt64(truncatingIfNeeded: length) << 56 | tail
        compress(b)
        v2 ^= 0xFF
        round(); round(); round(); round()
        return v0 ^ v1 ^ v2 ^ v3
    }
}
