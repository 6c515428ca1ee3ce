/// The retransmission timer computation of RFC 6298, in microseconds.
struct RTTEstimator {
    /// RFC 6298 2.4 says 1 s; Linux (and RFC 6298's note on it) use 200 ms.
    static let minimumRTO: UInt64 = 200_000
    static let maximumRTO: UInt64 = 120_000_000
    /// RFC 6298 2.1: before any measurement.
    static let initialRTO: UInt64 = 1_000_000

    private(set) var smoothed: UInt64 = 0
    private(set) var variance: UInt64 = 0
    private(set) var hasSample = false
    private(set) var rto: UInt64 = initialRTO
    let minimum: UInt64

    init(minimum: UInt64 = RTTEstimator.minimumRTO) { self.minimum = minimum }

    /// RFC 6298 2.2 and 2.3, with alpha = 1/8 and beta = 1/4; G is 1 µs here.
    mutating func sample(_ measured: UInt64) {
        let r = max(measured, 1)
        if !hasSample {
            smoothed = r
            variance = r / 2
            hasSample = true
        } else {
            let delta = smoothed > r ? smoothed - r : r - smoothed
            variance = (3 * variance + delta) / 4
            smoothed = (7 * smoothed + r) / 8
        }
        rto = min(max(smoothed + max(1, 4 * variance), minimum), Self.maximumRTO)
    }
}
