/// A TCP sequence number: arithmetic wraps modulo 2^32 and comparisons use the signed
/// difference (RFC 9293 section 3.4; RFC 1982 serial number arithmetic), so they are correct
/// across the wrap as long as the numbers compared are within 2^31 of each other.
///
/// Deliberately not `Comparable`: the order is not total, so it must not be used to sort.
public struct SeqNum: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32

    @inline(__always) public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// Bytes from `self` to `other` (negative if `other` is before `self`).
    @inline(__always) public func distance(to other: SeqNum) -> Int { Int(Int32(bitPattern: other.rawValue &- rawValue)) }

    @inline(__always) public static func + (a: SeqNum, n: Int) -> SeqNum { SeqNum(a.rawValue &+ UInt32(truncatingIfNeeded: n)) }
    @inline(__always) public static func - (a: SeqNum, n: Int) -> SeqNum { SeqNum(a.rawValue &- UInt32(truncatingIfNeeded: n)) }
    @inline(__always) public static func += (a: inout SeqNum, n: Int) { a = a + n }

    @inline(__always) public static func < (a: SeqNum, b: SeqNum) -> Bool { Int32(bitPattern: a.rawValue &- b.rawValue) < 0 }
    @inline(__always) public static func <= (a: SeqNum, b: SeqNum) -> Bool { Int32(bitPattern: a.rawValue &- b.rawValue) <= 0 }
    @inline(__always) public static func > (a: SeqNum, b: SeqNum) -> Bool { Int32(bitPattern: a.rawValue &- b.rawValue) > 0 }
    @inline(__always) public static func >= (a: SeqNum, b: SeqNum) -> Bool { Int32(bitPattern: a.rawValue &- b.rawValue) >= 0 }

    /// The later of two sequence numbers.
    @inline(__always) public static func max(_ a: SeqNum, _ b: SeqNum) -> SeqNum { a > b ? a : b }
    @inline(__always) public static func min(_ a: SeqNum, _ b: SeqNum) -> SeqNum { a < b ? a : b }

    /// Whether `self` lies in [start, end).
    @inline(__always) public func isIn(_ start: SeqNum, _ end: SeqNum) -> Bool { start <= self && self < end }

    public var description: String { String(rawValue) }
}
