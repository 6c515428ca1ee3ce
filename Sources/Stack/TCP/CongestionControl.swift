/// What a congestion control algorithm decides: the congestion window and slow-start
/// threshold, in bytes. One implementation per file (NewReno.swift, Cubic.swift); selected per
/// socket with TCP_CONGESTION.
protocol CongestionControl: AnyObject {
    var name: String { get }
    var cwnd: Int { get }
    var ssthresh: Int { get }
    /// `acked` new bytes were cumulatively acknowledged outside loss recovery.
    func onAck(acked: Int, mss: Int, flight: Int, now: UInt64, rtt: UInt64)
    /// Loss detected by duplicate ACKs or SACK (RFC 5681 3.2 step 2 / RFC 6675): enter recovery.
    func onLoss(flight: Int, mss: Int, now: UInt64)
    /// Loss recovery ended (a full ACK, RFC 6582 3.2 step 3).
    func onRecoveryEnd(flight: Int, mss: Int)
    /// The retransmission timer expired (RFC 5681 3.1 eq. 4 and 5).
    func onTimeout(flight: Int, mss: Int)
    /// Recovery inflation or deflation by the sender (RFC 6582): set the window directly.
    func setWindow(_ cwnd: Int)
    /// Keeps what the reduction about to happen (onLoss, onTimeout) changes, for `undo`.
    func saveForUndo()
    /// The last reduction was spurious (RFC 3708: every retransmission it caused was
    /// D-SACKed): the state `saveForUndo` kept comes back, never a smaller window (RFC 4015
    /// 3.2, RFC 9438 4.9).
    func undo()
}

enum CongestionControlFactory {
    static let available = ["cubic", "reno"]

    static func make(_ name: String, mss: Int) -> CongestionControl? {
        switch name {
        case "reno", "newreno": NewReno(mss: mss)
        case "cubic": Cubic(mss: mss)
        default: nil
        }
    }

    /// RFC 5681 3.1 eq. 3 with Linux's choice of 10 segments (RFC 6928).
    static func initialWindow(mss: Int) -> Int { 10 * mss }
}

/// NewReno (RFC 5681 slow start and congestion avoidance; RFC 6582 recovery is driven by
/// the connection, which calls onLoss/onRecoveryEnd).
final class NewReno: CongestionControl {
    let name = "reno"
    private(set) var cwnd: Int
    private(set) var ssthresh = Int.max
    /// Bytes acked during congestion avoidance not yet turned into window (RFC 5681 3.1,
    /// appropriate byte counting per RFC 3465).
    private var avoidanceCredit = 0

    init(mss: Int) { cwnd = CongestionControlFactory.initialWindow(mss: mss) }

    func onAck(acked: Int, mss: Int, flight: Int, now: UInt64, rtt: UInt64) {
        if cwnd < ssthresh {
            // Slow start, limited to 2 MSS per ACK (RFC 3465 L = 2).
            cwnd += min(acked, 2 * mss)
        } else {
            avoidanceCredit += acked
            if avoidanceCredit >= cwnd {
                avoidanceCredit -= cwnd
                cwnd += mss
            }
        }
    }

    func onLoss(flight: Int, mss: Int, now: UInt64) {
        ssthresh = max(flight / 2, 2 * mss)
        cwnd = ssthresh
        avoidanceCredit = 0
    }

    func onRecoveryEnd(flight: Int, mss: Int) {
        cwnd = ssthresh
    }

    func onTimeout(flight: Int, mss: Int) {
        ssthresh = max(flight / 2, 2 * mss)
        cwnd = mss
        avoidanceCredit = 0
    }

    func setWindow(_ cwnd: Int) { self.cwnd = cwnd }

    private var saved: (cwnd: Int, ssthresh: Int)?

    func saveForUndo() { saved = (cwnd, ssthresh) }

    func undo() {
        guard let saved else { return }
        cwnd = max(cwnd, saved.cwnd)
        ssthresh = max(ssthresh, saved.ssthresh)
        avoidanceCredit = 0
        self.saved = nil
    }
}
