import Timing

/// Kinds of per-connection timers. Each is a deadline value; the stack's wheel holds at
/// most one entry per kind and re-files it lazily when the deadline moves later.
/// At most 8 kinds: `TCPConnection.timers` holds a slot per kind, indexed by `rawValue`.
enum TCPTimerKind: Int, CaseIterable {
    /// RFC 6298 retransmission timer (also SYN and SYN-ACK retransmission).
    case retransmit
    /// Zero-window probes (RFC 9293 3.8.6.1).
    case persist
    /// Delayed ACK (RFC 1122 4.2.3.2, RFC 5681 4.2).
    case delayedAck
    /// Keep-alive probes (RFC 1122 4.2.3.6).
    case keepalive
    /// TIME-WAIT (2 MSL) and the orphaned FIN-WAIT-2 limit.
    case lifetime
    /// RACK reordering window: re-run loss detection (RFC 8985 6.2 step 5).
    case reorder
    /// Tail loss probe (RFC 8985 section 7).
    case lossProbe
    /// TCP_CORK's 200 ms ceiling on holding a partial segment.
    case cork
}

/// One TCP socket: a listener or a connection, with its transmission control block
/// (RFC 9293 section 3.3.1). Owned by the stack's socket table. It keeps no reference to the
/// stack: a call that sends, arms a timer or counts is given it (`in stack:`), and hands its
/// segments to the stack's IPv4 layer (`NetworkStack.emitTCP`).
final class TCPConnection {
    let id: SocketID
    var state = TCPState.closed
    var options: TCPSocketOptions

    /// The next hop's MAC as last resolved (`NetworkStack.knownNextHopMAC`).
    var neighborCache = NeighborCache()
    /// The local address: unspecified while bound to any (a listener may stay so); set by
    /// connect or by the segment that made the connection.
    var localAddress = IPAddress.anyIPv4
    var localPort: UInt16 = 0
    /// The address the local port is held under in the bind table (NetworkStack+TCPBind),
    /// and whether that name is a dual-stack `::`.
    var heldAddress = IPAddress.anyIPv4
    var heldDual = false
    /// The socket's family (socket(2)'s domain): an IPv6 socket may name IPv4 peers as
    /// v4-mapped addresses unless IPV6_V6ONLY.
    var family = AddressFamily.ipv4
    var remoteAddress = IPAddress.anyIPv4
    var remotePort: UInt16 = 0
    /// The peer is this host (127/8 or our address): segments go through the loopback.
    var viaLoopback = false
    var boundExplicitly = false
    /// The local port has been given back to the table (the connection is closed).
    var portReleased = false

    // Send sequence variables (RFC 9293 3.3.1).
    var iss = SeqNum(0)
    var sndUna = SeqNum(0)
    var sndNxt = SeqNum(0)
    /// One past the highest sequence number sent; SND.NXT moves back to SND.UNA when the
    /// retransmission timer goes back to the first unacknowledged byte.
    var sndMax = SeqNum(0)
    var sndWnd = 0
    var maxSndWnd = 0
    var sndWl1 = SeqNum(0)
    var sndWl2 = SeqNum(0)
    /// Shift the peer applies to the windows it sends (RFC 7323 2.2).
    var sndScale: UInt8 = 0

    // Receive sequence variables.
    var irs = SeqNum(0)
    var rcvNxt = SeqNum(0)
    /// Right edge of the window last advertised; never moved left (RFC 9293 3.8.6.2.2).
    var rcvAdv = SeqNum(0)
    /// Shift we apply to the windows we send.
    var rcvScale: UInt8 = 0

    var sendBuffer: ByteRing
    /// Sequence number of the first byte held in `sendBuffer`.
    var sendBufferSeq = SeqNum(0)
    var receive: ReceiveQueue

    /// MSS for data we send, after options that every segment carries (timestamps).
    var mss = 536
    /// The MSS we announced (bounded by our MTU).
    var advertisedMSS = 536
    var peerMSS = 536

    var windowScaling = false
    var sackPermitted = false
    var timestamps = false
    /// TS.Recent and when it was set (RFC 7323 4.3 and 5.5).
    var tsRecent: UInt32 = 0
    var tsRecentTime = Instant.zero
    /// Offset added to our timestamp clock, random per connection (RFC 7323 5.4).
    var tsOffset: UInt32 = 0

    /// The application has shut down writing; a FIN follows the data.
    var finQueued = false
    /// Our FIN's sequence number, once the FIN has been sent.
    var finSeq: SeqNum?
    /// The peer's FIN has been received in sequence (RCV.NXT is past it).
    var peerFinished = false
    /// The sequence number of a FIN that arrived ahead of missing data.
    var pendingPeerFin: SeqNum?
    var readShutdown = false
    /// The application closed the socket; the stack finishes the connection on its own.
    var orphaned = false
    /// An error waiting for the application (SO_ERROR), and the error that ended the connection.
    var pendingError: SocketError?
    var terminalError: SocketError?
    /// An ICMP or ARP error seen while the connection lives on (RFC 1122 4.2.3.9): reported
    /// instead of ETIMEDOUT if the connection later times out.
    var softError: SocketError?
    /// Set when the connection was opened actively (connect), for error choice on RST.
    var activeOpen = false

    var rtt = RTTEstimator()
    var backoff = 0
    /// Retransmissions of the same data in a row (for the R2 limit, RFC 1122 4.2.3.5).
    var consecutiveRetransmits = 0
    /// When the first unanswered retransmission of the current data happened (user timeout).
    var firstRetransmitTime: Instant?
    /// Karn's timing of one segment when timestamps are off: its end and send time.
    var timedSeq: SeqNum?
    var timedAt = Instant.zero
    /// Set when the segment being timed was retransmitted (Karn's rule, RFC 6298 3).
    var cc: CongestionControl
    var duplicateAcks = 0
    var inRecovery = false
    /// RFC 6582 "recover" / RFC 6675 RecoveryPoint: SND.MAX when recovery started.
    var recover = SeqNum(0)
    /// What the peer has SACKed, and RFC 6675's HighRxt.
    var scoreboard = SACKScoreboard()
    var highRxt = SeqNum(0)
    /// Send times and loss marks per segment (with SACK), and RACK's state (RFC 8985 6.1).
    var log = TransmitLog()
    var rackValid = false
    var rackXmitTime = Instant.zero
    var rackEndSeq = SeqNum(0)
    var rackRTT: UInt64 = 0
    var minRTT = UInt64.max
    /// RACK.fack (highest delivered end) and RACK.reordering_seen (RFC 8985 6.1).
    var rackFack = SeqNum(0)
    var rackFackValid = false
    var reorderingSeen = false
    /// RACK.reo_wnd_mult and RACK.reo_wnd_persist (RFC 8985 6.2 step 4): D-SACKs widen the
    /// reordering window, for 16 recoveries; one step per round trip (until SND.MAX then).
    var reoWndMult: UInt64 = 1
    var reoWndPersist = 0
    var dsackRoundEnd: SeqNum?
    /// The congestion event that may yet prove spurious (RFC 3708 section 3): where it began
    /// (SND.UNA then) and how many of its retransmissions no D-SACK has yet reported.
    var undoMarker: SeqNum?
    var undoRetransmits = 0
    /// For TCP_INFO: D-SACK blocks received (tcpi_dsack_dups), times reordering was seen
    /// (tcpi_reord_seen), bytes retransmitted (tcpi_bytes_retrans).
    var dsackBlocks: UInt64 = 0
    var reorderingEvents: UInt64 = 0
    var bytesRetransmitted: UInt64 = 0
    /// A duplicate we received, to report as the first SACK block of the next ACK (RFC 2883):
    /// the sender learns its retransmission was spurious and can undo its window cut.
    var dsackToSend: (start: SeqNum, end: SeqNum)?

    /// An ACK must go out with the next output (RFC 9293: segment needs acknowledging now).
    var ackNow = false
    /// SACK compression (`duplicateAck`): RCV.NXT of the current run of duplicate ACKs, how
    /// many of them went out at once, and the out-of-order segments whose ACK is owed to the
    /// stack's next `flushDeferredAcks` (on its list while any are).
    var dupAckRcvNxt = SeqNum(0)
    var dupAcksSent = 0
    var deferredAckSegments = 0
    /// Bytes received since the last ACK we sent.
    var unackedReceived = 0
    /// When we last answered an unacceptable segment without data (rate limit).
    var lastInvalidAckTime = Instant.zero
    var keepaliveProbes = 0
    /// Listed in the stack's readiness changes, not yet taken by the owner.
    var readinessQueued = false
    /// TCP_CORK is holding a partial segment; its 200 ms ceiling has passed.
    var corkHeld = false
    var corkExpired = false
    /// Receive autotuning: bytes the application read since `tuneStart`.
    var tuneRead = 0
    var tuneStart = Instant.zero
    var persistProbes = 0

    // Listener state.
    var backlog = 0
    var acceptQueue: [SocketID] = []
    var synQueue = 0
    /// When this listener last answered with a SYN cookie (cookies are checked for a while after).
    var lastSynCookie: Instant?
    /// For a connection created by a listener: that listener, until accepted.
    var listener: SocketID?

    // Statistics (TCP_INFO).
    var retransmits: UInt64 = 0
    var bytesAcked: UInt64 = 0
    var bytesReceived: UInt64 = 0
    var segmentsIn: UInt64 = 0
    var segmentsOut: UInt64 = 0

    /// One timer: its deadline, and the wheel entry that will look at it (filed for
    /// `armedAt`, which may be earlier: a later deadline is found when the entry fires).
    struct TimerSlot {
        var deadline: Instant?
        var handle: TimerHandle?
        var armedAt: Instant?
    }
    /// A slot per TCPTimerKind, inside the connection (no allocation of their own).
    var timers = InlineArray<8, TimerSlot>(repeating: TimerSlot())

    init(id: SocketID, options: TCPSocketOptions, configuration: TCPConfiguration, pool: RingStoragePool? = nil) {
        self.id = id
        self.options = options
        sendBuffer = ByteRing(capacity: configuration.sendRing(options), pool: pool)
        receive = ReceiveQueue(capacity: configuration.receiveRing(options), pool: pool)
        cc = CongestionControlFactory.make(options.congestionControl, mss: 536) ?? Cubic(mss: 536)
        rtt = RTTEstimator(minimum: configuration.minimumRTOMicroseconds)
    }

    var isListener: Bool { state == .listen }

    /// Bytes sent and not yet acknowledged.
    var flight: Int { sndUna.distance(to: sndNxt) }

    /// Bytes the application has queued and the stack has not yet acknowledged.
    var sendQueued: Int { sendBuffer.count }

    /// Whether the application can write more.
    var canSend: Bool {
        switch state {
        case .established, .closeWait: !finQueued && sendBuffer.free > 0
        default: false
        }
    }

    /// Readiness as poll(2) would report it for this socket.
    var readiness: SocketReadiness {
        if isListener { return acceptQueue.isEmpty ? [] : .readable }
        var r: SocketReadiness = []
        if receive.readable > 0 || peerFinished || readShutdown { r.insert(.readable) }
        if peerFinished { r.insert(.readHangup) }
        if pendingError != nil { r.insert(.error) }
        switch state {
        case .established, .closeWait:
            // As Linux's sk_stream_is_writeable: free space of at least half what is queued.
            if !finQueued && sendBuffer.free > 0 && sendBuffer.free * 2 >= sendBuffer.count {
                r.insert(.writable)
            }
            if finQueued && peerFinished { r.insert(.hangup) }
        case .closed:
            // A connection that ended (reset, refused, timed out) is readable, writable and
            // hung up, so that every waiter wakes and sees the error or EOF.
            if activeOpen || terminalError != nil || remotePort != 0 {
                r.formUnion([.readable, .writable, .hangup])
            }
        case .synSent, .synReceived, .listen:
            break
        default:
            if finQueued && peerFinished { r.insert(.hangup) }
        }
        return r
    }

    // MARK: - Timers

    func setTimer(_ kind: TCPTimerKind, at deadline: Instant, in stack: NetworkStack) {
        timers[kind.rawValue].deadline = deadline
        // Re-file in the wheel only if the entry there would fire too late (or is missing);
        // a later deadline is found when the earlier entry fires.
        if let armed = timers[kind.rawValue].armedAt, let handle = timers[kind.rawValue].handle,
           stack.wheel.isArmed(handle), armed <= deadline {
            return
        }
        if let handle = timers[kind.rawValue].handle { stack.wheel.cancel(handle) }
        timers[kind.rawValue].handle = stack.wheel.schedule(at: deadline, .tcp(id, kind))
        timers[kind.rawValue].armedAt = deadline
    }

    func clearTimer(_ kind: TCPTimerKind) {
        timers[kind.rawValue].deadline = nil
    }

    func clearAllTimers(in stack: NetworkStack) {
        for kind in TCPTimerKind.allCases { cancelTimer(kind, in: stack) }
    }

    /// Clears every timer but `kept` and takes their entries out of the wheel, for a
    /// connection that will not set them again (TIME-WAIT). `clearTimer` leaves the entry
    /// (a timer cleared by one ACK is usually set again by the next send); left behind by a
    /// connection that is done, each would wake the stack once for nothing.
    func clearTimers(except kept: TCPTimerKind, in stack: NetworkStack) {
        for kind in TCPTimerKind.allCases where kind != kept { cancelTimer(kind, in: stack) }
    }

    private func cancelTimer(_ kind: TCPTimerKind, in stack: NetworkStack) {
        timers[kind.rawValue].deadline = nil
        if let handle = timers[kind.rawValue].handle { stack.wheel.cancel(handle) }
        timers[kind.rawValue].handle = nil
        timers[kind.rawValue].armedAt = nil
    }

    func isTimerSet(_ kind: TCPTimerKind) -> Bool { timers[kind.rawValue].deadline != nil }

    /// The wheel entry for `kind` fired: returns true if its deadline has truly passed.
    func timerEntryFired(_ kind: TCPTimerKind, now: Instant, in stack: NetworkStack) -> Bool {
        timers[kind.rawValue].handle = nil
        timers[kind.rawValue].armedAt = nil
        guard let deadline = timers[kind.rawValue].deadline else { return false }
        if deadline > now {
            setTimer(kind, at: deadline, in: stack)
            return false
        }
        timers[kind.rawValue].deadline = nil
        return true
    }

    // MARK: - Buffer autotuning

    /// Dynamic right-sizing of the receive buffer (as Linux's tcp_rcv_space_adjust): if the
    /// application read more than half the buffer within one round trip, the window may be
    /// what limits the sender, so the buffer doubles, up to the configured maximum.
    func tuneReceiveBuffer(read: Int, now: Instant, in stack: NetworkStack) {
        guard options.receiveBuffer == nil else { return }
        tuneRead += read
        let roundTrip = max(rtt.hasSample ? rtt.smoothed : 0, minRTT == .max ? 0 : minRTT, 1000)
        guard now.nanoseconds(since: tuneStart) >= roundTrip * 1000 else { return }
        let capacity = receive.ring.capacity
        // (A ring given back at TIME-WAIT has capacity 0 and stays so.)
        if tuneRead * 2 > capacity && capacity > 0 && capacity < stack.configuration.tcp.maximumBuffer {
            receive.grow(to: capacity * 2, rcvNxt: rcvNxt)
            stack.counters.tcpReceiveBufferGrowths &+= 1
        }
        tuneRead = 0
        tuneStart = now
    }

    /// The send buffer grows while the congestion window could use more than half of it
    /// (as Linux's tcp_sndbuf_expand), so that a large window is not starved by the buffer.
    func tuneSendBuffer(in stack: NetworkStack) {
        guard options.sendBuffer == nil else { return }
        let capacity = sendBuffer.capacity
        // (A ring given back at TIME-WAIT has capacity 0 and stays so.)
        guard capacity > 0, capacity < stack.configuration.tcp.maximumBuffer, min(cc.cwnd, sndWnd) * 2 > capacity else { return }
        sendBuffer = sendBuffer.grown(to: capacity * 2, extra: 0)
        stack.counters.tcpSendBufferGrowths &+= 1
    }

    // MARK: - Helpers

    /// Our timestamp clock: milliseconds (RFC 7323 5.4 allows 1 ms to 1 s per tick).
    func timestampNow(_ now: Instant) -> UInt32 { UInt32(truncatingIfNeeded: now.milliseconds) &+ tsOffset }

    var info: TCPInfo {
        TCPInfo(
            state: state, family: family, localAddress: localAddress, localPort: localPort, remoteAddress: remoteAddress,
            remotePort: remotePort, rtt: UInt32(clamping: rtt.smoothed), rttVariance: UInt32(clamping: rtt.variance),
            rto: UInt32(clamping: currentRTO), sendMSS: mss, receiveMSS: advertisedMSS, congestionWindow: cc.cwnd,
            slowStartThreshold: cc.ssthresh, sendWindow: sndWnd, receiveWindow: rcvNxt.distance(to: rcvAdv),
            unacked: flight, retransmits: retransmits, bytesRetransmitted: bytesRetransmitted, dsackBlocks: dsackBlocks,
            reorderingEvents: reorderingEvents, lostSegments: lostSegments, retransmittedInFlight: retransmittedInFlight,
            congestionState: congestionState, backoff: backoff, bytesAcked: bytesAcked,
            bytesReceived: bytesReceived, segmentsIn: segmentsIn, segmentsOut: segmentsOut,
            sendQueue: sendBuffer.count, receiveQueue: receive.readable, congestionControl: cc.name,
            acceptQueue: acceptQueue.count, backlog: backlog, sack: sackPermitted, timestamps: timestamps,
            windowScale: windowScaling ? (sndScale, rcvScale) : nil)
    }

    private var lostSegments: Int {
        var n = 0
        for i in log.indices where log[i].lost && !log[i].sacked { n += 1 }
        return n
    }

    private var retransmittedInFlight: Int {
        var n = 0
        for i in log.indices where log[i].retransmitted && !log[i].sacked && !log[i].lost { n += 1 }
        return n
    }

    private var congestionState: TCPCongestionState {
        if backoff > 0 && sndUna < sndMax { return .loss }
        if inRecovery { return .recovery }
        if duplicateAcks > 0 || scoreboard.sackedBytes > 0 { return .disorder }
        return .open
    }

    /// The RTO with exponential backoff (RFC 6298 5.5), microseconds.
    var currentRTO: UInt64 {
        min(rtt.rto << UInt64(min(backoff, 16)), RTTEstimator.maximumRTO)
    }
}
