import Timing

extension TCPConnection {
    /// Sends whatever the state, the windows and the send-side rules allow now: SYN or
    /// SYN-ACK, data, FIN, and a pending ACK.
    func output(now: Instant, in stack: NetworkStack) {
        switch state {
        case .closed, .listen:
            return
        case .synSent, .synReceived:
            if sndNxt == iss { sendSYN(now: now, in: stack) }
            ackNow = false
            return
        case .timeWait:
            if ackNow { sendAck(now: now, in: stack) }
            return
        default:
            break
        }
        if inRecovery && sackPermitted { sackRecoveryOutput(now: now, in: stack) }
        var sentData = false
        while let (length, fin, segmentSize) = nextSegment(in: stack) {
            // The link's queue for this wake-up (or the loopback's) is full: resume once drained.
            guard !(viaLoopback ? stack.loopback.isFull : stack.outbox.isFull) else {
                stack.outputBlocked(self)
                break
            }
            let seq = sndNxt
            var flags: TCPFlags = .ack
            if fin { flags.insert(.fin) }
            let dataOffset = sendBufferSeq.distance(to: seq)
            if length > 0 && dataOffset + length == sendBuffer.count { flags.insert(.psh) }
            if seq < sndMax {
                countRetransmission(length: length, in: stack)
                if let timed = timedSeq, timed > seq { timedSeq = nil }
            } else if timedSeq == nil && length > 0 {
                timedSeq = seq + length
                timedAt = now
            }
            transmit(seq: seq, dataOffset: dataOffset, length: length, segmentSize: segmentSize, flags: flags, now: now,
                     in: stack)
            sndNxt = seq + length + (fin ? 1 : 0)
            if sackPermitted { logSent(start: seq, end: sndNxt, length: length, segmentSize: segmentSize, at: now) }
            if fin && finSeq == nil { finSeq = seq + length }
            if sndNxt > sndMax { sndMax = sndNxt }
            if !isTimerSet(.retransmit) { setTimer(.retransmit, at: now.adding(nanoseconds: currentRTO * 1000), in: stack) }
            sentData = true
        }
        if sentData { armLossProbe(now: now, in: stack) }
        if corkHeld && !sentData && !isTimerSet(.cork) {
            setTimer(.cork, at: now.adding(milliseconds: 200), in: stack)
        } else if sentData {
            corkExpired = false
            corkHeld = false
            clearTimer(.cork)
        }
        let unsent = sendBuffer.count - sendBufferSeq.distance(to: sndNxt)
        if unsent > 0 && sndWnd == 0 && flight == 0 && !isTimerSet(.persist) {
            // RFC 9293 3.8.6.1: probe a zero window.
            setTimer(.persist, at: now.adding(nanoseconds: currentRTO * 1000), in: stack)
        }
        if ackNow { sendAck(now: now, in: stack) }
    }

    /// Logs a transmission for RACK, one entry per segment a super-segment becomes, so that
    /// SACK and loss marks fall on what the wire carries.
    private func logSent(start: SeqNum, end: SeqNum, length: Int, segmentSize: Int, at now: Instant) {
        var from = start
        if segmentSize > 0 {
            let lastStart = start + (length - 1) / segmentSize * segmentSize
            while from < lastStart {
                log.sent(start: from, end: from + segmentSize, at: now)
                from = from + segmentSize
            }
        }
        log.sent(start: from, end: end, at: now)
    }

    /// The next segment to send from SND.NXT: its data length and whether it carries FIN;
    /// nil when nothing may be sent (RFC 9293 3.8.6.2.1 and RFC 1122 4.2.3.4: the usable
    /// window, Nagle, TCP_CORK and sender-side silly window avoidance). On a link with
    /// segmentation offload, new data beyond one segment goes as one super-segment: then the
    /// third value is the size to cut it at (0 for one segment).
    private func nextSegment(in stack: NetworkStack) -> (Int, Bool, Int)? {
        // Going back after a timeout, SACKed data is not sent again (RFC 6675 5.1).
        if sndNxt < sndMax {
            while let end = scoreboard.sackedEnd(containing: sndNxt) { sndNxt = end }
        }
        if inRecovery && sackPermitted {
            // In SACK recovery new data goes out only through sackRecoveryOutput.
            return nil
        }
        let dataOffset = sendBufferSeq.distance(to: sndNxt)
        let unsent = sendBuffer.count - dataOffset
        let finPosition = sendBufferSeq + sendBuffer.count
        if unsent <= 0 {
            // Only FIN may remain, sent once all data is out (again after a go-back).
            if finQueued && sndNxt == finPosition && (finSeq == nil || sndNxt == finSeq!) {
                return (0, true, 0)
            }
            return nil
        }
        let window = min(sndWnd, cc.cwnd)
        let usable = window - flight
        guard usable > 0 else { return nil }
        let segmentSize = currentSegmentSize
        var length = min(unsent, segmentSize, usable)
        if sndNxt < sndMax, let next = scoreboard.nextSackedStart(after: sndNxt) {
            length = min(length, sndNxt.distance(to: next))
        }
        let isLast = length == unsent
        // Nagle, cork and SWS avoidance hold back new data only, never a retransmission.
        if length < segmentSize && sndNxt >= sndMax {
            // TCP_CORK holds a partial segment, for at most 200 ms (as Linux).
            if options.cork && !finQueued && !corkExpired {
                corkHeld = true
                return nil
            }
            // Nagle: a small segment waits while data is unacknowledged, unless TCP_NODELAY.
            if !options.noDelay && flight > 0 && !(isLast && finQueued) && !corkExpired { return nil }
            // Sender SWS avoidance: a partial segment goes only if it is the last of the data
            // or at least half the largest window the peer offered.
            if !isLast && length < maxSndWnd / 2 { return nil }
        }
        if length == segmentSize && sndNxt >= sndMax && !isLast && stack.configuration.offload.tcpSegmentation,
           let limit = superSegmentLimit(in: stack), limit >= 2 * segmentSize {
            length = superSegmentLength(unsent: unsent, usable: usable, limit: limit, segmentSize: segmentSize)
            return (length, length == unsent && finQueued, length > segmentSize ? segmentSize : 0)
        }
        return (length, isLast && finQueued, 0)
    }

    /// The most data one super-segment may carry now, or nil when segments go one by one:
    /// within the link's largest packet (with the longest TCP header) and the room left in
    /// the outbox.
    private func superSegmentLimit(in stack: NetworkStack) -> Int? {
        guard !viaLoopback else { return nil }
        let overhead = remoteAddress.ipHeaderLength + TCPSegment.maximumHeaderLength
        return min(stack.configuration.offload.maximumPacket, stack.outbox.room - EthernetFrame.headerLength) - overhead
    }

    /// Whole segments up to the windows and `limit`, and a partial last one only where it
    /// could go alone: the end of the data, past Nagle and TCP_CORK (as Linux's
    /// tcp_mss_split_point keeps a small tail out of a TSO burst).
    private func superSegmentLength(unsent: Int, usable: Int, limit: Int, segmentSize: Int) -> Int {
        let total = min(unsent, usable, limit)
        let tail = total % segmentSize
        guard tail != 0 else { return total }
        let tailMayGo = total == unsent && !(options.cork && !finQueued && !corkExpired)
            && (options.noDelay || finQueued || corkExpired)
        return tailMayGo ? total : total - tail
    }

    /// Data bytes that fit in the next segment: the MSS less the SACK blocks it will carry
    /// (the timestamp option is already accounted for in `mss`).
    var currentSegmentSize: Int {
        guard sackPermitted && (receive.hasOutOfOrder || dsackToSend != nil) else { return mss }
        let blocks = min(receive.outOfOrder.count + (dsackToSend != nil ? 1 : 0), timestamps ? 3 : 4)
        return mss - (4 + 8 * blocks)
    }

    /// Options every non-SYN segment carries: timestamps and SACK blocks.
    private func segmentOptions(now: Instant) -> TCPOptions? {
        guard timestamps || (sackPermitted && (receive.hasOutOfOrder || dsackToSend != nil)) else { return nil }
        var o = TCPOptions()
        if timestamps { o.timestamp = (timestampNow(now), tsRecent) }
        let limit = timestamps ? 3 : 4
        if sackPermitted, let dup = dsackToSend {
            // RFC 2883: the duplicate first, then the usual blocks; sent once.
            dsackToSend = nil
            var blocks = SACKBlocks()
            blocks.append(start: dup.start, end: dup.end)
            let rest = receive.sackBlocks(limit: limit - 1)
            for i in 0..<rest.count { blocks.append(start: rest[i].start, end: rest[i].end) }
            o.sack = blocks
        } else if sackPermitted && receive.hasOutOfOrder {
            o.sack = receive.sackBlocks(limit: limit)
        }
        return o
    }

    /// Sends one segment, or with `segmentSize` a super-segment the link cuts into segments
    /// of that size.
    func transmit(seq: SeqNum, dataOffset: Int, length: Int, segmentSize: Int = 0, flags: TCPFlags, now: Instant,
                  in stack: NetworkStack) {
        let window = windowToAdvertise()
        let segments = stack.emitTCP(self, seq: seq, ack: flags.contains(.ack) ? rcvNxt : SeqNum(0), flags: flags,
                                     window: window, options: segmentOptions(now: now), dataOffset: dataOffset,
                                     length: length, segmentSize: segmentSize, now: now)
        segmentsOut &+= UInt64(segments)
        if flags.contains(.ack) {
            ackNow = false
            unackedReceived = 0
            clearTimer(.delayedAck)
            // This segment carries any owed ACK and the latest SACK blocks.
            stack.counters.tcpAckCompressed &+= UInt64(deferredAckSegments)
            deferredAckSegments = 0
        }
    }

    /// A pure ACK carries SND.MAX, not a rewound SND.NXT: the peer may already hold data up
    /// to SND.MAX, and a sequence number below its RCV.NXT would make the ACK unacceptable.
    func sendAck(now: Instant, in stack: NetworkStack) {
        transmit(seq: sndMax, dataOffset: 0, length: 0, flags: .ack, now: now, in: stack)
    }

    /// SYN (active open) or SYN-ACK (passive or simultaneous open) with our options.
    func sendSYN(now: Instant, in stack: NetworkStack) {
        var o = TCPOptions()
        o.mss = UInt16(clamping: advertisedMSS)
        if windowScaling { o.windowScale = rcvScale }
        o.sackPermitted = sackPermitted
        if timestamps { o.timestamp = (timestampNow(now), tsRecent) }
        let synAck = state == .synReceived
        let flags: TCPFlags = synAck ? [.syn, .ack] : .syn
        // RFC 7323 2.2: the window field of a SYN is never scaled.
        let window = UInt16(clamping: receive.space)
        rcvAdv = rcvNxt + Int(window)
        stack.emitTCP(self, seq: iss, ack: synAck ? rcvNxt : SeqNum(0), flags: flags, window: window, options: o,
                      dataOffset: 0, length: 0, now: now)
        segmentsOut &+= 1
        if sndMax != iss + 1 {
            sndMax = iss + 1
            timedSeq = iss + 1
            timedAt = now
        } else {
            countRetransmission(length: 0, in: stack)
            timedSeq = nil
        }
        sndNxt = iss + 1
        if !isTimerSet(.retransmit) { setTimer(.retransmit, at: now.adding(nanoseconds: currentRTO * 1000), in: stack) }
    }

    /// The window field for the next segment. The right edge never moves left, and moves
    /// right only by at least min(buffer/2, MSS) (receiver SWS avoidance, RFC 1122 4.2.3.3).
    func windowToAdvertise() -> UInt16 {
        let current = max(rcvNxt.distance(to: rcvAdv), 0)
        var offer = receive.space
        let threshold = min(receive.ring.capacity / 2, advertisedMSS)
        if offer < current + threshold { offer = current }
        offer = min(offer, 65535 << Int(rcvScale))
        let scaled = offer >> Int(rcvScale)
        let edge = rcvNxt + (scaled << Int(rcvScale))
        if edge > rcvAdv { rcvAdv = edge }
        return UInt16(scaled)
    }

    /// After the application read: offer the freed space if it is worth a segment.
    func windowUpdateIfUseful(now: Instant) {
        guard state == .established || state == .finWait1 || state == .finWait2 else { return }
        let current = max(rcvNxt.distance(to: rcvAdv), 0)
        let threshold = min(receive.ring.capacity / 2, advertisedMSS)
        let offer = min(receive.space, 65535 << Int(rcvScale))
        // Only when the window has really opened: from below half the buffer, by SWS steps.
        if offer >= current + threshold && current < receive.ring.capacity / 2 {
            ackNow = true
        }
    }

    /// Retransmits one MSS from SND.UNA (fast retransmit, partial ACKs).
    func retransmitFirstUnacked(now: Instant, in stack: NetworkStack) {
        let outstanding = sndUna.distance(to: sndMax)
        guard outstanding > 0 else { return }
        let dataLeft = sendBuffer.count - sendBufferSeq.distance(to: sndUna)
        let length = min(currentSegmentSize, max(dataLeft, 0), outstanding)
        if length == 0 && finSeq != sndUna { return }
        retransmit(seq: sndUna, length: length, now: now, in: stack)
        if sndNxt < highRxt { sndNxt = highRxt }
        // RFC 6582 3.2 step 4: the retransmission restarts the timer.
        setTimer(.retransmit, at: now.adding(nanoseconds: currentRTO * 1000), in: stack)
    }

    // MARK: - SACK loss recovery (RFC 6675)

    /// Sends while cwnd - pipe allows: lost segments first, then new data (RFC 6675 5 (C)).
    private func sackRecoveryOutput(now: Instant, in stack: NetworkStack) {
        while cc.cwnd - rackPipe >= currentSegmentSize {
            guard !(viaLoopback ? stack.loopback.isFull : stack.outbox.isFull) else {
                stack.outputBlocked(self)
                return
            }
            if let (seq, length) = rackNextLost() {
                retransmit(seq: seq, length: length, now: now, in: stack)
                continue
            }
            // New data, within the peer's window.
            guard sendNewSegment(window: sndWnd - sndUna.distance(to: sndMax), now: now, in: stack) else { return }
        }
    }

    /// Sends one segment of unsent data at SND.MAX, at most `window` bytes (recovery and
    /// loss probes, which bypass the normal output rules). False when nothing could go.
    @discardableResult
    func sendNewSegment(window: Int, now: Instant, in stack: NetworkStack) -> Bool {
        let dataOffset = sendBufferSeq.distance(to: sndMax)
        let length = min(sendBuffer.count - dataOffset, currentSegmentSize, window)
        guard length > 0 else { return false }
        var flags: TCPFlags = .ack
        if dataOffset + length == sendBuffer.count { flags.insert(.psh) }
        transmit(seq: sndMax, dataOffset: dataOffset, length: length, flags: flags, now: now, in: stack)
        log.sent(start: sndMax, end: sndMax + length, at: now)
        sndMax = sndMax + length
        sndNxt = sndMax
        if !isTimerSet(.retransmit) { setTimer(.retransmit, at: now.adding(nanoseconds: currentRTO * 1000), in: stack) }
        return true
    }

    /// Retransmits `length` bytes at `seq` (with FIN if they end at it) and moves HighRxt.
    func retransmit(seq: SeqNum, length: Int, now: Instant, in stack: NetworkStack) {
        var flags: TCPFlags = .ack
        let dataOffset = sendBufferSeq.distance(to: seq)
        var sequenceLength = length
        if let fin = finSeq, seq + length == fin, sndMax > fin {
            flags.insert(.fin)
            sequenceLength += 1
        }
        transmit(seq: seq, dataOffset: dataOffset, length: length, flags: flags, now: now, in: stack)
        if sackPermitted { log.sent(start: seq, end: seq + sequenceLength, at: now) }
        countRetransmission(length: length, in: stack)
        if let timed = timedSeq, timed > seq { timedSeq = nil }
        let end = seq + sequenceLength
        if highRxt < end { highRxt = end }
        if !isTimerSet(.retransmit) { setTimer(.retransmit, at: now.adding(nanoseconds: currentRTO * 1000), in: stack) }
    }

    /// One segment sent again: counted for the statistics, and against the congestion event
    /// that may yet prove spurious (RFC 3708).
    func countRetransmission(length: Int, in stack: NetworkStack) {
        retransmits &+= 1
        bytesRetransmitted &+= UInt64(length)
        stack.counters.tcpRetransSegs &+= 1
        if undoMarker != nil { undoRetransmits += 1 }
    }

    /// A congestion event begins (fast retransmit or RTO): what its window cut changes is
    /// kept, for as long as its retransmissions may all turn out spurious.
    func beginUndoableEvent() {
        cc.saveForUndo()
        undoMarker = sndUna
        undoRetransmits = 0
    }

    // MARK: - Timers

    func timerFired(_ kind: TCPTimerKind, now: Instant, in stack: NetworkStack) {
        switch kind {
        case .retransmit: retransmissionTimeout(now: now, in: stack)
        case .persist: persistTimeout(now: now, in: stack)
        case .delayedAck:
            ackNow = true
            stack.counters.tcpDelayedAcks &+= 1
        case .keepalive: keepaliveTimeout(now: now, in: stack)
        case .lifetime: close(reason: nil, now: now, in: stack)
        case .reorder:
            rackDetectLoss(now: now, in: stack)
            if !inRecovery && rackHasLost { enterRecovery(now: now, in: stack) }
        case .lossProbe: lossProbeTimeout(now: now, in: stack)
        case .cork: corkExpired = true
        }
        if state != .closed { output(now: now, in: stack) }
    }

    private func retransmissionTimeout(now: Instant, in stack: NetworkStack) {
        switch state {
        case .synSent, .synReceived:
            let limit = state == .synSent ? stack.configuration.tcp.synRetries : stack.configuration.tcp.synAckRetries
            if consecutiveRetransmits >= limit || userTimeoutExpired(now: now) {
                if state == .synSent {
                    abort(error: softError ?? .timedOut, sendReset: false, now: now, in: stack)
                } else {
                    abort(error: .timedOut, sendReset: false, now: now, in: stack)
                }
                return
            }
            consecutiveRetransmits += 1
            firstRetransmitTime = firstRetransmitTime ?? now
            backoff += 1
            sndNxt = iss
            return
        case .closed, .listen, .timeWait:
            return
        default:
            break
        }
        guard sndUna != sndMax else { return }
        if consecutiveRetransmits >= stack.configuration.tcp.maxRetransmits || userTimeoutExpired(now: now) {
            stack.counters.tcpTimeouts &+= 1
            abort(error: softError ?? .timedOut, sendReset: false, now: now, in: stack)
            return
        }
        stack.counters.tcpRTOs &+= 1
        // RFC 5681 3.1 (eq. 4) and RFC 6298 5.5-5.7: back off, shrink the window, go back.
        if backoff == 0 { beginUndoableEvent() }
        cc.onTimeout(flight: flight, mss: mss)
        inRecovery = false
        duplicateAcks = 0
        recover = sndMax
        backoff += 1
        consecutiveRetransmits += 1
        firstRetransmitTime = firstRetransmitTime ?? now
        goBackToUnacknowledged(now: now, in: stack)
    }

    /// Sends again from SND.UNA, forgetting the RTT sample and the probes under way: after a
    /// timeout (with the window cut), or when what is in flight was sent in segments the path
    /// cannot carry (tcpPathMTUDecreased, the window kept).
    func goBackToUnacknowledged(now: Instant, in stack: NetworkStack) {
        timedSeq = nil
        sndNxt = sndUna
        highRxt = sndUna
        clearTimer(.lossProbe)
        clearTimer(.reorder)
        setTimer(.retransmit, at: now.adding(nanoseconds: currentRTO * 1000), in: stack)
    }

    private func userTimeoutExpired(now: Instant) -> Bool {
        guard options.userTimeout > 0, let first = firstRetransmitTime else { return false }
        return now.nanoseconds(since: first) >= options.userTimeout * 1_000_000
    }

    private func persistTimeout(now: Instant, in stack: NetworkStack) {
        let unsent = sendBuffer.count - sendBufferSeq.distance(to: sndNxt)
        guard sndWnd == 0, unsent > 0, state.isSynchronized else {
            persistProbes = 0
            return
        }
        if options.userTimeout > 0 {
            firstRetransmitTime = firstRetransmitTime ?? now
            if userTimeoutExpired(now: now) {
                abort(error: .timedOut, sendReset: false, now: now, in: stack)
                return
            }
        }
        // A probe with an old sequence number and no data (as Linux): the receiver must
        // answer with an ACK carrying its window, and an unanswered probe costs nothing.
        stack.counters.tcpWindowProbes &+= 1
        transmit(seq: sndUna - 1, dataOffset: 0, length: 0, flags: .ack, now: now, in: stack)
        persistProbes += 1
        let interval = min(currentRTO << UInt64(min(persistProbes, 10)), RTTEstimator.maximumRTO)
        setTimer(.persist, at: now.adding(nanoseconds: interval * 1000), in: stack)
    }

    func armKeepalive(now: Instant, in stack: NetworkStack) {
        guard options.keepAlive, state == .established || state == .closeWait else {
            clearTimer(.keepalive)
            return
        }
        keepaliveProbes = 0
        setTimer(.keepalive, at: now.adding(milliseconds: options.keepIdle * 1000), in: stack)
    }

    private func keepaliveTimeout(now: Instant, in stack: NetworkStack) {
        guard options.keepAlive, state == .established || state == .closeWait else { return }
        if keepaliveProbes >= options.keepCount {
            abort(error: .timedOut, sendReset: true, now: now, in: stack)
            return
        }
        // RFC 1122 4.2.3.6: a segment with SEG.SEQ = SND.NXT - 1 and no data.
        stack.counters.tcpKeepAliveProbes &+= 1
        transmit(seq: sndUna - 1, dataOffset: 0, length: 0, flags: .ack, now: now, in: stack)
        keepaliveProbes += 1
        setTimer(.keepalive, at: now.adding(milliseconds: options.keepInterval * 1000), in: stack)
    }

    // MARK: - Ending

    /// Ends the connection at once (RFC 9293 3.10.4 ABORT): RST if synchronized and asked,
    /// then CLOSED. `error` is reported to the application.
    func abort(error: SocketError?, sendReset: Bool, now: Instant, in stack: NetworkStack) {
        if sendReset && (state.isSynchronized || state == .synReceived) && state != .timeWait {
            stack.sendReset(seq: sndNxt, ack: nil, to: self, now: now)
        }
        if let error {
            terminalError = error
            pendingError = error
        }
        close(reason: error, now: now, in: stack)
    }

    /// Enters CLOSED and releases the connection's resources.
    func close(reason: SocketError?, now: Instant, in stack: NetworkStack) {
        leaveEstablishedCount(in: stack)
        if state == .synSent || state == .synReceived { stack.counters.tcpAttemptFails &+= 1 }
        let unaccepted = listener != nil
        if let listenerID = listener, let parent = stack.tcpSocket(listenerID), parent.isListener {
            // Not yet accepted: leave the listener's queues.
            if let i = parent.acceptQueue.firstIndex(of: id) {
                parent.acceptQueue.remove(at: i)
            } else if state == .synReceived {
                parent.synQueue -= 1
            }
            listener = nil
        }
        if state == .timeWait { stack.tcp.timeWaitCount -= 1 }
        state = .closed
        clearAllTimers(in: stack)
        stack.tcpConnectionClosed(self, free: orphaned || unaccepted)
        stack.markReadinessChanged(id)
    }
}
