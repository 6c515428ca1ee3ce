import Glibc

/// CUBIC congestion control (RFC 9438), the default as in Linux. Window arithmetic is in
/// segments as Double (RFC 9438 section 4); the connection sees bytes.
final class Cubic: CongestionControl {
    let name = "cubic"
    /// RFC 9438 4.1: C = 0.4, beta_cubic = 0.7.
    static let c = 0.4
    static let beta = 0.7
    /// RFC 9438 4.3: alpha_cubic = 3 (1 - beta) / (1 + beta), for the Reno-friendly estimate.
    static let alpha = 3 * (1 - beta) / (1 + beta)

    private(set) var cwnd: Int
    private(set) var ssthresh = Int.max
    private var wMax = 0.0
    /// W_max before the last reduction, for fast convergence (RFC 9438 4.7).
    private var wLastMax = 0.0
    private var k = 0.0
    /// Start of the current congestion avoidance epoch (µs); nil when none.
    private var epochStart: UInt64?
    private var cwndEpoch = 0.0
    private var wEst = 0.0
    /// Fractional segments of growth carried between ACKs.
    private var pending = 0.0

    init(mss: Int) { cwnd = CongestionControlFactory.initialWindow(mss: mss) }

    func onAck(acked: Int, mss: Int, flight: Int, now: UInt64, rtt: UInt64) {
        if cwnd < ssthresh {
            // Slow start as in RFC 5681 (RFC 9438 4.10), limited to 2 MSS per ACK.
            cwnd += min(acked, 2 * mss)
            return
        }
        let segments = Double(cwnd) / Double(mss)
        if epochStart == nil {
            // RFC 9438 4.2: a new epoch starts at the first ACK of congestion avoidance.
            epochStart = now
            cwndEpoch = segments
            wEst = segments
            if wMax > segments {
                k = cbrt((wMax - segments) / Self.c)
            } else {
                k = 0
                wMax = segments
            }
        }
        let t = Double(now &- epochStart!) / 1_000_000
        let rttSeconds = Double(max(rtt, 1)) / 1_000_000
        // RFC 9438 4.2, eq. 1, evaluated one RTT ahead; target clamped to [cwnd, 1.5 cwnd].
        let wCubic = { (time: Double) -> Double in Self.c * pow(time - self.k, 3) + self.wMax }
        let target = min(max(wCubic(t + rttSeconds), segments), 1.5 * segments)
        // RFC 9438 4.3: the Reno-friendly estimate grows by alpha per window of ACKed data.
        wEst += Self.alpha * Double(acked) / Double(cwnd)
        var growth: Double
        if wCubic(t) < wEst {
            growth = wEst - segments
        } else {
            // RFC 9438 4.4/4.5: (target - cwnd) / cwnd per ACKed segment.
            growth = (target - segments) / segments * (Double(acked) / Double(mss))
        }
        growth = max(growth, 0)
        pending += growth
        if pending >= 1 / Double(mss) {
            let bytes = Int(pending * Double(mss))
            cwnd += bytes
            pending -= Double(bytes) / Double(mss)
        }
    }

    private func reduce(mss: Int) {
        let segments = Double(cwnd) / Double(mss)
        // RFC 9438 4.7: fast convergence.
        if segments < wLastMax {
            wLastMax = segments
            wMax = segments * (1 + Self.beta) / 2
        } else {
            wLastMax = segments
            wMax = segments
        }
        ssthresh = max(Int(Double(cwnd) * Self.beta), 2 * mss)
        epochStart = nil
        pending = 0
    }

    func onLoss(flight: Int, mss: Int, now: UInt64) {
        reduce(mss: mss)
        cwnd = ssthresh
    }

    func onRecoveryEnd(flight: Int, mss: Int) {
        cwnd = ssthresh
    }

    func onTimeout(flight: Int, mss: Int) {
        // RFC 9438 4.8: as on loss, then a window of one segment.
        reduce(mss: mss)
        cwnd = mss
    }

    func setWindow(_ cwnd: Int) { self.cwnd = cwnd }

    private var saved: (cwnd: Int, ssthresh: Int, wMax: Double, wLastMax: Double)?

    func saveForUndo() { saved = (cwnd, ssthresh, wMax, wLastMax) }

    /// RFC 9438 4.9: cwnd, ssthresh and W_max as before the reduction; a new epoch starts
    /// at the next ACK in congestion avoidance, so K follows from the restored W_max.
    func undo() {
        guard let saved else { return }
        cwnd = max(cwnd, saved.cwnd)
        ssthresh = max(ssthresh, saved.ssthresh)
        wMax = saved.wMax
        wLastMax = saved.wLastMax
        epochStart = nil
        pending = 0
        self.saved = nil
    }
}
