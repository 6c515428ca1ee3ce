import Timing

/// A token bucket for rate limits (ICMP errors, RFC 1812 4.3.2.8 and RFC 1122 3.2.2).
struct TokenBucket {
    let ratePerSecond: UInt64
    let burst: UInt64
    private var tokens: UInt64
    private var last: Instant

    init(ratePerSecond: UInt64, burst: UInt64, now: Instant = .zero) {
        self.ratePerSecond = ratePerSecond
        self.burst = burst
        tokens = burst
        last = now
    }

    /// Takes a token if one is available.
    mutating func take(now: Instant) -> Bool {
        let elapsed = min(now.nanoseconds(since: last), 60_000_000_000)
        let refill = elapsed * ratePerSecond / 1_000_000_000
        if refill > 0 {
            tokens = min(burst, tokens + refill)
            // Keep the remainder of a partial token by advancing only the time spent.
            last = last.adding(nanoseconds: refill * 1_000_000_000 / ratePerSecond)
            if tokens == burst { last = now }
        }
        guard tokens > 0 else { return false }
        tokens -= 1
        return true
    }
}
