/// A point on a monotonic clock, in nanoseconds from an arbitrary origin.
///
/// The protocol code never reads a clock: the daemon passes the reactor's monotonic time in,
/// tests pass a virtual time they advance by hand.
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64

    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    public static let zero = Instant(nanoseconds: 0)

    public static func milliseconds(_ ms: UInt64) -> Instant { Instant(nanoseconds: ms &* 1_000_000) }
    public static func seconds(_ s: UInt64) -> Instant { Instant(nanoseconds: s &* 1_000_000_000) }

    /// Whole milliseconds, rounded down.
    public var milliseconds: UInt64 { nanoseconds / 1_000_000 }

    /// Milliseconds, rounded up: the tick of the timing wheel at which a deadline is due.
    public var millisecondsRoundedUp: UInt64 { nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 == 0 ? 0 : 1) }

    public func adding(milliseconds ms: UInt64) -> Instant {
        Instant(nanoseconds: nanoseconds.addingReportingOverflow(ms.multipliedReportingOverflow(by: 1_000_000).partialValue).partialValue)
    }

    public func adding(nanoseconds ns: UInt64) -> Instant { Instant(nanoseconds: nanoseconds &+ ns) }

    /// Nanoseconds from `earlier` to `self`, zero if `earlier` is later.
    public func nanoseconds(since earlier: Instant) -> UInt64 {
        nanoseconds > earlier.nanoseconds ? nanoseconds - earlier.nanoseconds : 0
    }

    public static func < (a: Instant, b: Instant) -> Bool { a.nanoseconds < b.nanoseconds }

    public var description: String {
        let ms = nanoseconds / 1_000_000
        let frac = (nanoseconds % 1_000_000) / 1000
        return "\(ms).\(String(frac + 1000).dropFirst())ms"
    }
}
