import Timing

/// RACK-TLP loss detection (RFC 8985), used when the peer does SACK: a segment is lost when
/// one sent after it has been delivered and a reordering window has passed; a tail loss
/// probe turns a silent tail into SACK feedback instead of waiting for the RTO.
extension TCPConnection {
    /// Updates the log and RACK from an ACK: newly SACKed and newly acknowledged segments
    /// are deliveries (RFC 8985 6.2 steps 1-2). `echo` is the ACK's timestamp echo, when
    /// timestamps are in use. Call before SND.UNA moves.
    func rackOnAck(ack: SeqNum, newSACK: Bool, echo: UInt32? = nil, now: Instant) {
        guard sackPermitted else { return }
        var reordered = false
        for i in log.indices {
            let s = log[i]
            var delivered = false
            if s.end <= ack {
                delivered = !s.sacked
            } else if s.start >= ack {
                break
            }
            if !delivered, newSACK, !s.sacked, scoreboard.covers(s.start, s.end) {
                log[i].sacked = true
                log[i].lost = false
                delivered = true
            }
            if delivered { reordered = rackDelivered(s, echo: echo, now: now) || reordered }
        }
        if newSACK {
            // Entries past the cumulative ACK may be SACKed too.
            for i in log.indices where log[i].start >= ack && !log[i].sacked && scoreboard.covers(log[i].start, log[i].end) {
                log[i].sacked = true
                log[i].lost = false
                reordered = rackDelivered(log[i], echo: echo, now: now) || reordered
            }
        }
        if reordered { reorderingEvents &+= 1 }
        log.acknowledge(upTo: ack)
    }

    /// Returns whether the delivery shows the path reordering.
    private func rackDelivered(_ s: SentSegment, echo: UInt32?, now: Instant) -> Bool {
        let rtt = now.nanoseconds(since: s.sentAt) / 1000
        if s.retransmitted {
            // RFC 8985 6.2 step 2: an ACK whose timestamp echo is older than the
            // retransmission was sent for an earlier copy; without timestamps, an ACK faster
            // than the minimum RTT after the retransmission most likely was. Either way it
            // says nothing of when the retransmission arrived: taking it as such would make
            // everything sent before the retransmission look overdue, and be resent.
            if let echo, Int32(bitPattern: echo &- timestampNow(s.sentAt)) < 0 { return false }
            if rtt < minRTT { return false }
        }
        minRTT = min(minRTT, max(rtt, 1))
        // RFC 8985 6.2 step 3: an original transmission delivered below the highest delivered
        // sequence number means the path reorders.
        let reordered = rackFackValid && s.end < rackFack && !s.retransmitted
        if reordered { reorderingSeen = true }
        if !rackFackValid || s.end > rackFack {
            rackFack = s.end
            rackFackValid = true
        }
        if !rackValid || s.sentAt > rackXmitTime || (s.sentAt == rackXmitTime && s.end > rackEndSeq) {
            rackValid = true
            rackXmitTime = s.sentAt
            rackEndSeq = s.end
            rackRTT = rtt
        }
        return reordered
    }

    /// RFC 8985 6.2 step 5: marks lost every segment sent before the most recently
    /// delivered one whose reordering window has expired; arms the reorder timer for the
    /// rest. Returns whether anything new was marked lost.
    @discardableResult
    func rackDetectLoss(now: Instant, in stack: NetworkStack) -> Bool {
        guard sackPermitted, rackValid else { return false }
        // RFC 8985 6.2 step 4: no window while no reordering has been seen and the loss is
        // already evident (recovery, DupThresh duplicates, or more than DupThresh segments
        // SACKed); otherwise a quarter of the minimum RTT, at most SRTT. (A window shorter
        // than the wheel's 1 ms tick would otherwise stall every detection for a tick.)
        let evident = inRecovery || duplicateAcks >= 3 || scoreboard.sackedBytes > 3 * mss
        let reorderWindow = !reorderingSeen && evident ? 0
            : min(minRTT == .max ? 0 : minRTT / 4 * reoWndMult, rtt.hasSample ? rtt.smoothed : UInt64.max)
        var marked = false
        var wait: UInt64 = 0
        let timeOrdered = log.retransmittedCount == 0
        for i in log.indices {
            let s = log[i]
            // Without retransmissions in the log, sequence order is send order: nothing
            // past the delivered segment was sent before it.
            if timeOrdered && s.start >= rackEndSeq { break }
            if s.sacked || s.lost { continue }
            let sentBefore = s.sentAt < rackXmitTime || (s.sentAt == rackXmitTime && s.end <= rackEndSeq)
            guard sentBefore && s.end != rackEndSeq else { continue }
            let deadline = s.sentAt.adding(nanoseconds: (rackRTT + reorderWindow) * 1000)
            if deadline <= now {
                log[i].lost = true
                marked = true
            } else {
                wait = max(wait, deadline.nanoseconds(since: now))
            }
        }
        if wait > 0 { setTimer(.reorder, at: now.adding(nanoseconds: wait), in: stack) } else { clearTimer(.reorder) }
        if marked { stack.counters.tcpRACKLost &+= 1 }
        return marked
    }

    /// RFC 2883 section 4: the first SACK block reports a duplicate when it lies below the
    /// cumulative ACK, or inside the second block.
    func isDSACK(_ blocks: SACKBlocks, ack: SeqNum) -> Bool {
        let first = blocks[0]
        if first.end <= ack { return true }
        if blocks.count > 1 {
            let second = blocks[1]
            return first.start >= second.start && first.end <= second.end
        }
        return false
    }

    /// A D-SACK: a retransmission was spurious, so the path reorders more than the window
    /// allowed. Widens the window one step per round trip (RFC 8985 6.2 step 4), and once
    /// every retransmission of the current congestion event has been reported so, undoes
    /// its window cut (RFC 3708 section 3, as Linux's tcp_try_undo_dsack).
    func dsackReceived(_ block: (start: SeqNum, end: SeqNum), in stack: NetworkStack) {
        stack.counters.tcpDSACKReceived &+= 1
        dsackBlocks &+= 1
        reorderingSeen = true
        if undoMarker != nil {
            // Only duplicates of what was sent again count (a duplicated original does not).
            var resent = 0
            for i in log.indices {
                let s = log[i]
                if s.start >= block.end { break }
                if s.end > block.start && s.retransmitted { resent += 1 }
            }
            undoRetransmits -= resent
            if resent > 0 && undoRetransmits <= 0 { undoCongestionEvent(in: stack) }
        }
        if let end = dsackRoundEnd, sndUna < end { return }
        reoWndMult = min(reoWndMult + 1, 256)
        reoWndPersist = 16
        dsackRoundEnd = sndMax
    }

    /// Every retransmission of the congestion event was a duplicate: nothing was lost, and
    /// the window comes back. A recovery still under way ends, since it has nothing to repair.
    private func undoCongestionEvent(in stack: NetworkStack) {
        cc.undo()
        stack.counters.tcpDSACKUndo &+= 1
        undoMarker = nil
        if inRecovery {
            inRecovery = false
            duplicateAcks = 0
        }
    }

    /// Bytes in flight per RFC 6675's pipe, from the log's marks: neither SACKed nor
    /// deemed lost (a resent segment counts again).
    var rackPipe: Int {
        var bytes = 0
        for i in log.indices where !log[i].sacked && !log[i].lost { bytes += log[i].length }
        return bytes
    }

    /// Whether some segment is marked lost and not yet resent.
    var rackHasLost: Bool {
        guard sackPermitted else { return false }
        for i in log.indices where log[i].lost && !log[i].sacked { return true }
        return false
    }

    /// The first lost segment to resend (data, or the FIN alone).
    func rackNextLost() -> (SeqNum, Int)? {
        let dataEnd = sendBufferSeq + sendBuffer.count
        for i in log.indices where log[i].lost && !log[i].sacked {
            let s = log[i]
            if s.start >= dataEnd { return finSeq == s.start ? (s.start, 0) : nil }
            return (s.start, min(s.length, currentSegmentSize, s.start.distance(to: dataEnd)))
        }
        return nil
    }

    /// Marks the first unacknowledged segment lost (three duplicate ACKs before RACK's window).
    func markFirstUnackedLost() {
        guard let i = log.indices.first, !log[i].sacked else { return }
        log[i].lost = true
    }

    // MARK: - Tail loss probe (RFC 8985 section 7)

    /// PTO = 2 SRTT (at least 2 ms), plus a delayed-ACK allowance when one segment is out,
    /// never later than the RTO would fire.
    func armLossProbe(now: Instant, in stack: NetworkStack) {
        guard sackPermitted, !inRecovery, flight > 0, rtt.hasSample, state.isSynchronized else {
            clearTimer(.lossProbe)
            return
        }
        var pto = max(2 * rtt.smoothed, 2000)
        if flight <= mss { pto += 200_000 }
        pto = min(pto, currentRTO)
        setTimer(.lossProbe, at: now.adding(nanoseconds: pto * 1000), in: stack)
    }

    func lossProbeTimeout(now: Instant, in stack: NetworkStack) {
        guard sackPermitted, !inRecovery, flight > 0, state.isSynchronized, state != .timeWait else { return }
        stack.counters.tcpLossProbes &+= 1
        // New data if the windows allow one segment, else the last segment again.
        if sndNxt == sndMax && sendNewSegment(window: sndWnd - flight, now: now, in: stack) {
            // New data went out as the probe.
        } else if let lastIndex = log.indices.last {
            // The last segment sent: its data (never past SND.MAX), or the FIN alone.
            let last = log[lastIndex]
            let dataEnd = SeqNum.min(sendBufferSeq + sendBuffer.count, sndMax)
            if last.start >= dataEnd {
                retransmit(seq: last.start, length: 0, now: now, in: stack)
            } else {
                let start = SeqNum.max(last.start, dataEnd - currentSegmentSize)
                retransmit(seq: start, length: start.distance(to: dataEnd), now: now, in: stack)
            }
        }
        if !isTimerSet(.retransmit) { setTimer(.retransmit, at: now.adding(nanoseconds: currentRTO * 1000), in: stack) }
    }
}
