import Timing

/// A parsed segment as the state machine sees it.
struct IncomingSegment {
    var seq: SeqNum
    var ack: SeqNum
    var flags: TCPFlags
    var window: UInt16
    var options: TCPOptions
    var payload: UnsafeRawBufferPointer

    /// SEG.LEN: data plus SYN and FIN.
    var length: Int { payload.count + (flags.contains(.syn) ? 1 : 0) + (flags.contains(.fin) ? 1 : 0) }
}

extension TCPConnection {
    /// RFC 9293 3.10.7.3: SYN-SENT.
    func synSentArrives(_ seg: IncomingSegment, now: Instant, in stack: NetworkStack) {
        if seg.flags.contains(.ack) {
            // First: an ACK must acknowledge our SYN and nothing beyond it.
            if seg.ack <= iss || seg.ack > sndMax {
                if !seg.flags.contains(.rst) { stack.sendReset(seq: seg.ack, ack: nil, to: self, now: now) }
                return
            }
        }
        if seg.flags.contains(.rst) {
            // Second: a RST with an acceptable ACK refuses the connection (RFC 5961 3.2 also
            // requires the ACK check, done above); without ACK it is ignored.
            if seg.flags.contains(.ack) { abort(error: .connectionRefused, sendReset: false, now: now, in: stack) }
            return
        }
        guard seg.flags.contains(.syn) else { return }
        // Fourth: the SYN.
        irs = seg.seq
        rcvNxt = seg.seq + 1
        rcvAdv = rcvNxt
        negotiateOptions(seg.options, synAck: seg.flags.contains(.ack), in: stack)
        if timestamps, let ts = seg.options.timestamp {
            tsRecent = ts.value
            tsRecentTime = now
        }
        if seg.flags.contains(.ack) {
            acknowledge(upTo: seg.ack, now: now, in: stack)
            sndWnd = Int(seg.window) // RFC 7323 2.2: the window in a SYN is never scaled.
            maxSndWnd = max(maxSndWnd, sndWnd)
            sndWl1 = seg.seq
            sndWl2 = seg.ack
            becomeEstablished(now: now, in: stack)
            ackNow = true
            // Data or FIN may ride on the SYN-ACK.
            if !seg.payload.isEmpty || seg.flags.contains(.fin) {
                var rest = seg
                rest.seq = seg.seq + 1
                rest.flags.remove(.syn)
                processText(rest, now: now, in: stack)
            }
        } else {
            // Simultaneous open (RFC 9293 Figure 8): answer with SYN-ACK.
            state = .synReceived
            sndWnd = Int(seg.window)
            sndWl1 = seg.seq
            sndWl2 = seg.ack
            sndNxt = iss
            setTimer(.retransmit, at: now.adding(nanoseconds: currentRTO * 1000), in: stack)
        }
    }

    /// RFC 9293 3.10.7.4: every state after SYN-SENT.
    func synchronizedArrives(_ seg: IncomingSegment, now: Instant, in stack: NetworkStack) {
        var seg = seg
        // RFC 7323 5.3: PAWS. A segment whose timestamp is older than TS.Recent is a
        // duplicate from an earlier incarnation; ACK it and drop it (not for RST).
        if timestamps, let ts = seg.options.timestamp, !seg.flags.contains(.rst),
           Int32(bitPattern: ts.value &- tsRecent) < 0,
           now.nanoseconds(since: tsRecentTime) < 24 * 24 * 3600 * 1_000_000_000 {
            stack.counters.tcpPAWSDrops &+= 1
            ackNow = true
            return
        }

        // First: sequence number check (RFC 9293 3.10.7.4, the four cases).
        let window = max(rcvNxt.distance(to: rcvAdv), 0)
        if !isAcceptable(seg, window: window) {
            if !seg.flags.contains(.rst) {
                // An unacceptable segment is answered with an ACK; a SYN here gets a
                // challenge ACK (RFC 5961 4.2), rate limited like every challenge. Answers to
                // segments without data are limited to one per 500 ms, as Linux's
                // tcp_invalid_ratelimit, so that two confused ends cannot ACK each other forever.
                if seg.flags.contains(.syn) {
                    sendChallengeAck(now: now, in: stack)
                } else if !seg.payload.isEmpty || now.nanoseconds(since: lastInvalidAckTime) >= 500_000_000 {
                    lastInvalidAckTime = now
                    ackNow = true
                    if sackPermitted && !seg.payload.isEmpty && seg.seq + seg.payload.count <= rcvNxt {
                        noteDuplicate(seg.seq, seg.seq + seg.payload.count, in: stack)
                    }
                } else {
                    stack.counters.tcpInvalidAcksLimited &+= 1
                }
            }
            return
        }

        // Second: RST (RFC 5961 3.2): only an exact RCV.NXT match resets; others in the
        // window get a challenge ACK.
        if seg.flags.contains(.rst) {
            if seg.seq == rcvNxt {
                stack.counters.tcpEstabResets &+= (state == .established || state == .closeWait) ? 1 : 0
                switch state {
                case .synReceived:
                    abort(error: activeOpen ? .connectionRefused : .connectionReset, sendReset: false, now: now, in: stack)
                case .closing, .lastAck, .timeWait:
                    close(reason: nil, now: now, in: stack)
                default:
                    abort(error: .connectionReset, sendReset: false, now: now, in: stack)
                }
            } else {
                sendChallengeAck(now: now, in: stack)
            }
            return
        }

        // Fourth: SYN in a synchronized state (RFC 5961 4.2): challenge ACK. In SYN-RECEIVED
        // a retransmitted SYN (same ISN) is answered by retransmitting our SYN-ACK.
        if seg.flags.contains(.syn) {
            if state == .synReceived && seg.seq == irs {
                // Echo the retransmitted SYN's timestamp, not the first one's.
                if timestamps, let ts = seg.options.timestamp {
                    tsRecent = ts.value
                    tsRecentTime = now
                }
                sndNxt = iss
                return
            }
            sendChallengeAck(now: now, in: stack)
            return
        }

        // Fifth: the ACK field.
        guard seg.flags.contains(.ack) else { return }
        if timestamps, let ts = seg.options.timestamp, seg.seq <= rcvNxt {
            // RFC 7323 4.3: TS.Recent follows the segment that covers RCV.NXT.
            tsRecent = ts.value
            tsRecentTime = now
        }
        if state == .synReceived {
            guard seg.ack > sndUna && seg.ack <= sndMax else {
                stack.sendReset(seq: seg.ack, ack: nil, to: self, now: now)
                return
            }
            if let listenerID = listener, let parent = stack.tcpSocket(listenerID), parent.isListener {
                guard parent.acceptQueue.count < max(parent.backlog, 1) else {
                    // Accept queue full: drop the ACK, keep the embryonic connection (the
                    // peer retransmits, as with Linux when tcp_abort_on_overflow is 0).
                    stack.counters.tcpListenOverflows &+= 1
                    return
                }
                parent.synQueue -= 1
                parent.acceptQueue.append(id)
                stack.markReadinessChanged(parent.id)
            }
            sndWnd = Int(seg.window) << sndScale
            maxSndWnd = max(maxSndWnd, sndWnd)
            sndWl1 = seg.seq
            sndWl2 = seg.ack
            becomeEstablished(now: now, in: stack)
        }
        // RFC 5961 5.2: an ACK too far behind is a blind injection attempt.
        if seg.ack < sndUna - maxSndWnd {
            sendChallengeAck(now: now, in: stack)
            return
        }
        if seg.ack > sndMax {
            // Acknowledges something never sent: ACK and drop (RFC 9293 3.10.7.4).
            ackNow = true
            return
        }
        processAck(seg, now: now, in: stack)
        if state == .closed { return }

        // Sixth (URG) is not supported: urgent data is delivered inline (as SO_OOBINLINE).
        // Seventh and eighth: text and FIN.
        seg.flags.remove(.syn)
        processText(seg, now: now, in: stack)
    }

    /// RFC 9293 3.10.7.4's acceptability test.
    private func isAcceptable(_ seg: IncomingSegment, window: Int) -> Bool {
        let length = seg.length
        if length == 0 {
            if window == 0 { return seg.seq == rcvNxt }
            return seg.seq.isIn(rcvNxt, rcvNxt + window)
        }
        if window == 0 { return false }
        let last = seg.seq + (length - 1)
        return seg.seq.isIn(rcvNxt, rcvNxt + window) || last.isIn(rcvNxt, rcvNxt + window)
            || (seg.seq < rcvNxt && last >= rcvNxt + window)
    }

    private func processAck(_ seg: IncomingSegment, now: Instant, in stack: NetworkStack) {
        let ack = seg.ack
        let advertised = Int(seg.window) << sndScale
        var windowChanged = false
        // RFC 9293 3.10.7.4: update the send window only from newer segments.
        if sndWl1 < seg.seq || (sndWl1 == seg.seq && sndWl2 <= ack) {
            windowChanged = advertised != sndWnd
            sndWnd = advertised
            maxSndWnd = max(maxSndWnd, sndWnd)
            sndWl1 = seg.seq
            sndWl2 = ack
            if sndWnd > 0 {
                clearTimer(.persist)
                persistProbes = 0
            }
        }
        var newSACK = false
        if sackPermitted && !seg.options.sack.isEmpty {
            if isDSACK(seg.options.sack, ack: ack) { dsackReceived(seg.options.sack[0], in: stack) }
            newSACK = scoreboard.update(seg.options.sack, una: sndUna, max: sndMax)
        }
        if sackPermitted {
            let echo = timestamps ? seg.options.timestamp?.echo : nil
            rackOnAck(ack: ack > sndUna ? ack : sndUna, newSACK: newSACK, echo: echo, now: now)
        }
        if ack > sndUna {
            let acked = sndUna.distance(to: ack)
            acknowledge(upTo: ack, now: now, in: stack)
            newAckCongestion(acked: acked, ack: ack, now: now, in: stack)
            tuneSendBuffer(in: stack)
        } else if ack == sndUna && seg.payload.isEmpty && (!windowChanged || newSACK) && flight > 0
                    && !seg.flags.contains(.fin) {
            // RFC 5681 section 2 (and RFC 6675 section 2 with SACK): a duplicate ACK.
            duplicateAck(now: now, in: stack)
        }
        if sackPermitted {
            // RACK (RFC 8985): time-based loss detection on every ACK.
            rackDetectLoss(now: now, in: stack)
            // With SACK the loss is known, not guessed from duplicates: RFC 6582's guard
            // against a second reduction per window (ACK beyond "recover") is not needed, and
            // an ACK ending exactly at the last recovery point must not leave marked losses
            // to the RTO. Recovery itself lasts a window, so cwnd falls once per window.
            if !inRecovery && rackHasLost { enterRecovery(now: now, in: stack) }
            armLossProbe(now: now, in: stack)
        }

        switch state {
        case .finWait1:
            if let fin = finSeq, sndUna > fin {
                state = .finWait2
                if orphaned {
                    setTimer(.lifetime, at: now.adding(milliseconds: stack.configuration.tcp.finWait2Milliseconds),
                             in: stack)
                }
            }
        case .closing:
            if let fin = finSeq, sndUna > fin { enterTimeWait(now: now, in: stack) }
        case .lastAck:
            if let fin = finSeq, sndUna > fin { close(reason: nil, now: now, in: stack) }
        case .timeWait:
            // A retransmitted FIN: acknowledge and restart 2 MSL.
            if seg.flags.contains(.fin) {
                ackNow = true
                setTimer(.lifetime, at: timeWaitEnd(now: now, in: stack), in: stack)
            }
        default:
            break
        }
    }

    /// SND.UNA moves to `ack`: release acknowledged bytes, measure RTT, restart the timer.
    func acknowledge(upTo ack: SeqNum, now: Instant, in stack: NetworkStack) {
        let acked = sndUna.distance(to: ack)
        guard acked > 0 else { return }
        // Data bytes acknowledged: exclude our SYN and FIN.
        let dataAcked = max(0, min(sendBufferSeq.distance(to: ack), sendBuffer.count))
        if dataAcked > 0 {
            sendBuffer.consume(dataAcked)
            sendBufferSeq += dataAcked
            bytesAcked &+= UInt64(dataAcked)
            stack.markReadinessChanged(id)
        }
        sndUna = ack
        if sndNxt < sndUna { sndNxt = sndUna }
        scoreboard.advance(una: ack)
        if highRxt < sndUna { highRxt = sndUna }
        // RTT: Karn's algorithm (RFC 6298 section 3) on one timed segment at a time, never a
        // retransmitted one. The timestamp echo is not used for RTT: during loss recovery the
        // peer echoes the timestamp of the segment before a hole (RFC 7323 4.3), which would
        // inflate the estimate by the hole's lifetime; Linux prefers send times for the same
        // reason. Timestamps still serve PAWS.
        if let timed = timedSeq, ack >= timed {
            rtt.sample(now.nanoseconds(since: timedAt) / 1000)
            timedSeq = nil
        }
        backoff = 0
        consecutiveRetransmits = 0
        firstRetransmitTime = nil
        // RFC 6298 5.2 and 5.3: stop the timer when all is acknowledged, else restart it.
        if sndUna == sndMax {
            clearTimer(.retransmit)
            clearTimer(.lossProbe)
        } else {
            setTimer(.retransmit, at: now.adding(nanoseconds: currentRTO * 1000), in: stack)
        }
    }

    /// Congestion control for an ACK that advanced SND.UNA (RFC 5681, RFC 6582).
    private func newAckCongestion(acked: Int, ack: SeqNum, now: Instant, in stack: NetworkStack) {
        let micros = now.nanoseconds / 1000
        if inRecovery {
            if ack >= recover {
                // RFC 6582 3.2 step 3: full acknowledgment ends recovery.
                inRecovery = false
                duplicateAcks = 0
                cc.onRecoveryEnd(flight: flight, mss: mss)
            } else if !sackPermitted {
                // Step 4: partial acknowledgment: retransmit the next hole, deflate the window
                // by the amount acknowledged and add back one MSS.
                retransmitFirstUnacked(now: now, in: stack)
                cc.setWindow(max(cc.cwnd - acked + mss, mss))
            }
            // With SACK, output() sends what RFC 6675's NextSeg picks within cwnd - pipe.
            return
        }
        duplicateAcks = 0
        cc.onAck(acked: acked, mss: mss, flight: flight, now: micros, rtt: rtt.smoothed)
    }

    private func duplicateAck(now: Instant, in stack: NetworkStack) {
        duplicateAcks += 1
        if inRecovery {
            // RFC 6582 3.2 step 4 / RFC 5681 3.2 step 4: inflate by one MSS per duplicate.
            // With SACK the pipe estimate replaces inflation (RFC 6675).
            if !sackPermitted { cc.setWindow(cc.cwnd + mss) }
            return
        }
        guard duplicateAcks >= 3 else { return }
        // RFC 6582 3.2 step 2: only when the ACK covers more than "recover", so that one loss
        // event does not cause several reductions.
        guard sndUna > recover || recover == iss else { return }
        // DupThresh still starts recovery when RACK's reordering window has not yet passed.
        if sackPermitted { markFirstUnackedLost() }
        enterRecovery(now: now, in: stack)
    }

    /// Fast retransmit and the start of loss recovery (RFC 5681 3.2, RFC 6582, RFC 6675 5).
    func enterRecovery(now: Instant, in stack: NetworkStack) {
        stack.counters.tcpFastRetransmits &+= 1
        if reoWndPersist > 0 {
            reoWndPersist -= 1
            if reoWndPersist == 0 { reoWndMult = 1 }
        }
        inRecovery = true
        recover = sndMax
        highRxt = sndUna
        beginUndoableEvent()
        if sackPermitted {
            stack.counters.tcpSACKRecoveries &+= 1
            clearTimer(.lossProbe)
            cc.onLoss(flight: rackPipe, mss: mss, now: now.nanoseconds / 1000)
            // RFC 6675 5 (4.2): the first retransmission goes regardless of cwnd - pipe.
            if let (seq, length) = rackNextLost() { retransmit(seq: seq, length: length, now: now, in: stack) }
        } else {
            cc.onLoss(flight: flight, mss: mss, now: now.nanoseconds / 1000)
            retransmitFirstUnacked(now: now, in: stack)
            cc.setWindow(cc.ssthresh + 3 * mss)
        }
    }

    /// An out-of-order segment arrived (with SACK in use). RFC 5681 4.2 asks for an immediate
    /// duplicate ACK; the first three for one RCV.NXT go at once, which is what a sender
    /// needs to start fast retransmit. Later ones are coalesced, as Linux does (SACK
    /// compression, tcp_comp_sack_nr): the ACK is owed until the driver has handled the
    /// frames already at hand (`NetworkStack.flushDeferredAcks`, at most every 8 frames:
    /// `StackDriver.dispatchFrames`) or until 8 segments are owed, and then one ACK carries the
    /// latest SACK blocks. During a recovery with a hundred segments in flight this spares
    /// the sender most of a hundred ACKs, each of which it must walk its SACK scoreboard for.
    func duplicateAck(in stack: NetworkStack) {
        if dupAckRcvNxt != rcvNxt {
            dupAckRcvNxt = rcvNxt
            dupAcksSent = 0
        }
        if dupAcksSent < 3 || ackNow {
            dupAcksSent += 1
            ackNow = true
            return
        }
        deferredAckSegments += 1
        if deferredAckSegments == 1 { stack.deferAck(id) }
        if deferredAckSegments >= 8 { ackNow = true }
    }

    /// Data we already had arrived again: report it with a D-SACK (RFC 2883 section 4).
    func noteDuplicate(_ start: SeqNum, _ end: SeqNum, in stack: NetworkStack) {
        dsackToSend = (start, end)
        stack.counters.tcpDSACKSent &+= 1
    }

    /// Processes data and FIN of an acceptable segment (RFC 9293 3.10.7.4 seventh, eighth).
    func processText(_ segment: IncomingSegment, now: Instant, in stack: NetworkStack) {
        var seg = segment
        switch state {
        case .established, .finWait1, .finWait2, .synReceived:
            break
        default:
            // CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: the peer already sent FIN; text is
            // ignored (a FIN retransmission is handled with the ACK).
            if seg.flags.contains(.fin) && state != .timeWait { ackNow = true }
            return
        }
        if !seg.payload.isEmpty {
            if orphaned || readShutdown {
                // Data for a socket the application closed: RFC 9293 3.10.4 / RFC 2525
                // "data after close": reset.
                stack.counters.tcpDataAfterClose &+= 1
                abort(error: .connectionReset, sendReset: true, now: now, in: stack)
                return
            }
            // Trim to the window's right edge.
            let room = seg.seq.distance(to: rcvNxt + receive.space)
            if seg.payload.count > room {
                seg.payload = seg.payload.slice(0..<max(room, 0))
                seg.flags.remove(.fin)
            }
            if sackPermitted && seg.seq < rcvNxt {
                let end = seg.seq + seg.payload.count
                noteDuplicate(seg.seq, end < rcvNxt ? end : rcvNxt, in: stack)
                ackNow = true
            }
            if seg.seq == rcvNxt, seg.payload.count >= stack.configuration.tcp.directDeliveryMinimum,
               receive.readable == 0, !receive.hasOutOfOrder, let receiver = stack.directReceiver {
                let taken = receiver.tcpTakeDirectly(id, seg.payload)
                if taken > 0 {
                    // As if inserted and read at once: acknowledged as received, counted as
                    // read by autotuning; the ring (and the window it offers) untouched.
                    rcvNxt += taken
                    bytesReceived &+= UInt64(taken)
                    unackedReceived += taken
                    stack.counters.tcpDirectBytes &+= UInt64(taken)
                    seg.seq = seg.seq + taken
                    seg.payload = UnsafeRawBufferPointer(rebasing: seg.payload[taken...])
                    tuneReceiveBuffer(read: taken, now: now, in: stack)
                }
            }
            let result = receive.insert(seq: seg.seq, data: seg.payload, rcvNxt: rcvNxt)
            if result.advanced > 0 {
                rcvNxt += result.advanced
                bytesReceived &+= UInt64(result.advanced)
                unackedReceived += result.advanced
                stack.markReadinessChanged(id)
            }
            if result.outOfOrder && result.advanced == 0 && sackPermitted {
                duplicateAck(in: stack)
            } else if result.outOfOrder {
                // RFC 5681 4.2: data filling a hole (or out of order without SACK): ACK at once.
                ackNow = true
            } else if unackedReceived >= 2 * advertisedMSS {
                // At least every second full-sized segment (RFC 5681 4.2).
                ackNow = true
            } else if !ackNow {
                setTimer(.delayedAck, at: now.adding(milliseconds: stack.configuration.tcp.delayedAckMilliseconds),
                         in: stack)
            }
        }
        if seg.flags.contains(.fin) {
            let finAt = seg.seq + seg.payload.count
            if finAt == rcvNxt {
                peerFinReceived(now: now, in: stack)
            } else if finAt > rcvNxt {
                pendingPeerFin = finAt
                ackNow = true
            }
        } else if let fin = pendingPeerFin, fin == rcvNxt {
            peerFinReceived(now: now, in: stack)
        }
    }

    private func peerFinReceived(now: Instant, in stack: NetworkStack) {
        guard !peerFinished else { return }
        pendingPeerFin = nil
        peerFinished = true
        rcvNxt += 1
        ackNow = true
        stack.markReadinessChanged(id)
        switch state {
        case .synReceived, .established:
            state = .closeWait
        case .finWait1:
            if let fin = finSeq, sndUna > fin { enterTimeWait(now: now, in: stack) } else { state = .closing }
        case .finWait2:
            enterTimeWait(now: now, in: stack)
        default:
            break
        }
    }

    /// Applies the peer's SYN options (RFC 9293 3.7.1, RFC 7323, RFC 2018).
    func negotiateOptions(_ options: TCPOptions, synAck: Bool, in stack: NetworkStack) {
        // RFC 9293 3.7.1: 536 when absent; IPv6's minimum MTU less 60 (RFC 8200 8.3).
        peerMSS = Int(options.mss ?? (remoteAddress.isIPv4 ? 536 : 1220))
        if let ws = options.windowScale, windowScaling || !synAck {
            windowScaling = true
            sndScale = min(ws, 14)  // RFC 7323 2.3: larger shifts are treated as 14.
        } else {
            windowScaling = false
            sndScale = 0
            rcvScale = 0
        }
        sackPermitted = options.sackPermitted && (sackPermitted || !synAck)
        if options.timestamp != nil && (timestamps || !synAck) {
            timestamps = true
        } else {
            timestamps = false
        }
        updateMSS(in: stack)
    }

    /// The MSS for data we send: the peer's MSS, our MTU, TCP_MAXSEG, less the option bytes
    /// every segment carries (RFC 9293 3.7.1: the MSS counts data only, excluding options).
    func updateMSS(in stack: NetworkStack, pathMTU: Int? = nil) {
        var m = min(peerMSS, stack.maximumSegment(toward: remoteAddress))
        if let pathMTU { m = min(m, pathMTU - remoteAddress.ipHeaderLength - TCPSegment.minimumHeaderLength) }
        if let cap = options.maxSegment { m = min(m, cap) }
        if timestamps { m -= 12 }
        mss = max(m, TCPConfiguration.minimumMSS)
    }

    func becomeEstablished(now: Instant, in stack: NetworkStack) {
        state = .established
        stack.counters.tcpCurrEstab &+= 1
        clearTimer(.retransmit)
        backoff = 0
        consecutiveRetransmits = 0
        firstRetransmitTime = nil
        cc = CongestionControlFactory.make(cc.name, mss: mss) ?? Cubic(mss: mss)
        armKeepalive(now: now, in: stack)
        stack.markReadinessChanged(id)
    }

    func enterTimeWait(now: Instant, in stack: NetworkStack) {
        leaveEstablishedCount(in: stack)
        state = .timeWait
        stack.tcp.timeWaitCount += 1
        if stack.tcp.timeWaitCount > stack.configuration.tcp.maximumTimeWait { stack.counters.tcpTimeWaitOverflow &+= 1 }
        // Nothing is sent or waited for in TIME-WAIT but its own end.
        clearTimers(except: .lifetime, in: stack)
        setTimer(.lifetime, at: timeWaitEnd(now: now, in: stack), in: stack)
        // TIME-WAIT lasts 2 MSL with nothing to send and (once read) nothing to keep: give the
        // rings' storage back, so that thousands of connections waiting out TIME-WAIT cost little.
        if sendBuffer.count == 0 { sendBuffer.releaseStorage() }
        if receive.readable == 0 && !receive.hasOutOfOrder { receive.releaseStorage() }
        stack.markReadinessChanged(id)
    }

    /// 2 MSL from now; with more than maximumTimeWait connections in TIME-WAIT (this one
    /// among them), now: the timer ends it at the next tick, after the ACK it owes has gone.
    private func timeWaitEnd(now: Instant, in stack: NetworkStack) -> Instant {
        stack.tcp.timeWaitCount > stack.configuration.tcp.maximumTimeWait
            ? now : now.adding(milliseconds: stack.configuration.tcp.timeWaitMilliseconds)
    }

    /// CurrEstab counts ESTABLISHED and CLOSE-WAIT (RFC 4022).
    func leaveEstablishedCount(in stack: NetworkStack) {
        if state == .established || state == .closeWait { stack.counters.tcpCurrEstab &-= 1 }
    }

    private func sendChallengeAck(now: Instant, in stack: NetworkStack) {
        stack.counters.tcpChallengeAcks &+= 1
        if stack.takeChallengeAckToken(now: now) { ackNow = true }
    }
}
