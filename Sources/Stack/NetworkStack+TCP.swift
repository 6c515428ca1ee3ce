import Timing

/// A connection's key in the demultiplexing table.
struct TCPFourTuple: Hashable {
    var remoteAddress: IPv4Address
    var remotePort: UInt16
    var localAddress: IPv4Address
    var localPort: UInt16
}

/// The stack's TCP state: the socket slab, the demux tables and the secrets.
struct TCPTables {
    var sockets: [TCPConnection?] = []
    var generations: [UInt32] = []
    var freeSlots: [Int32] = []
    var connections: [TCPFourTuple: TCPConnection] = [:]
    /// Listeners by local name; the address is unspecified for one bound to any.
    var listeners: [TCPLocalName: TCPConnection] = [:]
    /// Listeners per port, whatever their address.
    var listenersOnPort: [UInt16: Int] = [:]
    /// Local ports in use, with the number of sockets using each, whatever their address.
    var portUsers: [UInt16: Int] = [:]
    /// Sockets using each local name (address as bound: unspecified for any).
    var nameUsers: [TCPLocalName: Int] = [:]
    /// Ports taken by an explicit bind(2), which ephemeral selection must not share.
    var explicitBinds: [UInt16: Int] = [:]
    var nextEphemeral: UInt32 = 0
    /// Sockets whose readiness may have changed since the owner last looked.
    var readinessChanged: [SocketID] = []
    /// The connection found by the last demultiplexing lookup.
    var lastLookup: (tuple: TCPFourTuple, connection: TCPConnection)?
    /// Connections that stopped sending because the outbox was full; `blockedResuming`
    /// holds them while they are given the chance to send again (the two alternate, so
    /// resuming allocates nothing).
    var blockedOnOutbox: [SocketID] = []
    var blockedResuming: [SocketID] = []
    /// Connections owing a coalesced duplicate ACK (`TCPConnection.duplicateAck`).
    var deferredAcks: [SocketID] = []
    var deferredAcksFlushing: [SocketID] = []
    var challengeAckBucket = TokenBucket(ratePerSecond: 1000, burst: 1000)

    /// Moves the owed ACKs to `deferredAcksFlushing`. (A method: swapping two properties of
    /// `tcp` from outside is two overlapping accesses to it, which debug builds trap.)
    mutating func takeDeferredAcks() { swap(&deferredAcks, &deferredAcksFlushing) }

    /// Moves the blocked connections to `blockedResuming` (a method for the same reason).
    mutating func takeBlockedOnOutbox() { swap(&blockedOnOutbox, &blockedResuming) }
}

extension NetworkStack {
    // MARK: - Socket table

    func tcpSocket(_ id: SocketID) -> TCPConnection? {
        let i = Int(id.index)
        guard i >= 0, i < tcp.sockets.count, tcp.generations[i] == id.generation else { return nil }
        return tcp.sockets[i]
    }

    private func allocateSocket(options: TCPSocketOptions) -> TCPConnection {
        let index: Int32
        if let free = tcp.freeSlots.popLast() {
            index = free
        } else {
            index = Int32(tcp.sockets.count)
            tcp.sockets.append(nil)
            tcp.generations.append(0)
        }
        let id = SocketID(index: index, generation: tcp.generations[Int(index)])
        let socket = TCPConnection(stack: self, id: id, options: options)
        tcp.sockets[Int(index)] = socket
        return socket
    }

    private func freeSocket(_ socket: TCPConnection) {
        let i = Int(socket.id.index)
        guard tcp.sockets[i] === socket else { return }
        tcp.sockets[i] = nil
        tcp.generations[i] &+= 1
        tcp.freeSlots.append(socket.id.index)
    }

    func markReadinessChanged(_ id: SocketID) {
        // A flag on the socket, not a set: this runs for every segment that changes readiness.
        guard let s = tcpSocket(id), !s.readinessQueued else { return }
        s.readinessQueued = true
        tcp.readinessChanged.append(id)
    }

    /// Sockets whose readiness may have changed since the last call (for the IPC server), in
    /// `changed`: it is emptied (keeping its capacity) and swapped with the stack's list, so
    /// the two buffers alternate and nothing is allocated. This runs after every wake-up.
    public func takeReadinessChanges(into changed: inout [SocketID]) {
        if !changed.isEmpty { changed.removeAll(keepingCapacity: true) }
        if tcp.readinessChanged.isEmpty { return }
        swap(&changed, &tcp.readinessChanged)
        for id in changed {
            if Self.isUDP(id) { clearUDPReadiness(id) } else { tcpSocket(id)?.readinessQueued = false }
        }
    }

    func takeChallengeAckToken(now: Instant) -> Bool { tcp.challengeAckBucket.take(now: now) }

    /// Whether the queue `c` sends into (the outbox, or the loopback's) has no room.
    @inline(__always)
    func outputFull(_ c: TCPConnection) -> Bool { c.viaLoopback ? loopback.isFull : outbox.isFull }

    func outputBlocked(_ c: TCPConnection) {
        if !tcp.blockedOnOutbox.contains(c.id) { tcp.blockedOnOutbox.append(c.id) }
    }

    /// Whether some connection is waiting for room in the outbox.
    public var hasBlockedOutput: Bool { !tcp.blockedOnOutbox.isEmpty }

    /// Call after draining the outbox: connections that stopped for lack of room send on.
    public func resumeOutput(now: Instant) {
        guard !tcp.blockedOnOutbox.isEmpty else { return }
        tcp.takeBlockedOnOutbox()
        for id in tcp.blockedResuming {
            guard let c = tcpSocket(id) else { continue }
            guard !outputFull(c) else {
                tcp.blockedOnOutbox.append(id)
                continue
            }
            c.output(now: now)
        }
        tcp.blockedResuming.removeAll(keepingCapacity: true)
    }

    func deferAck(_ id: SocketID) { tcp.deferredAcks.append(id) }

    /// Sends the duplicate ACKs that out-of-order segments left owing (SACK compression).
    /// The owner calls this when it has handled the frames at hand, before waiting for more;
    /// `poll(now:)` calls it too.
    public func flushDeferredAcks(now: Instant) {
        guard !tcp.deferredAcks.isEmpty else { return }
        tcp.takeDeferredAcks()
        for id in tcp.deferredAcksFlushing {
            guard let c = tcpSocket(id), c.deferredAckSegments > 0 else { continue }
            c.ackNow = true
            c.output(now: now)
            // Sent with that output, or not sendable in this state (then nothing is owed).
            c.deferredAckSegments = 0
        }
        tcp.deferredAcksFlushing.removeAll(keepingCapacity: true)
    }

    /// Called by a connection entering CLOSED; `free` when nobody holds its ID any more.
    func tcpConnectionClosed(_ c: TCPConnection, free: Bool) {
        if tcp.lastLookup?.connection === c { tcp.lastLookup = nil }
        removeListener(c)
        let tuple = TCPFourTuple(remoteAddress: c.remoteAddress, remotePort: c.remotePort, localAddress: c.localAddress,
                                 localPort: c.localPort)
        if tcp.connections[tuple] === c { tcp.connections[tuple] = nil }
        releasePort(of: c)
        if free { freeSocket(c) }
    }

    // MARK: - Socket API

    /// A new, unconnected TCP socket (socket(2)).
    public func tcpOpen(options: TCPSocketOptions = TCPSocketOptions()) -> SocketID {
        allocateSocket(options: options).id
    }

    /// accept(2): the next established connection, or `.wouldBlock`.
    public func tcpAccept(_ id: SocketID) throws(SocketError) -> SocketID {
        guard let s = tcpSocket(id), !s.orphaned else { throw .badSocket }
        guard s.isListener else { throw .invalidArgument }
        guard !s.acceptQueue.isEmpty else { throw .wouldBlock }
        let child = s.acceptQueue.removeFirst()
        tcpSocket(child)?.listener = nil  // now the application's
        markReadinessChanged(id)
        return child
    }

    /// connect(2): starts the three-way handshake; completion shows as writability (or an
    /// error) in the socket's readiness.
    public func tcpConnect(_ id: SocketID, to address: IPv4Address, port: UInt16, now: Instant) throws(SocketError) {
        guard let s = tcpSocket(id), !s.orphaned else { throw .badSocket }
        switch s.state {
        case .synSent, .synReceived: throw .alreadyInProgress
        case .closed: break
        case .listen: throw .invalidArgument
        default: throw .alreadyConnected
        }
        guard s.remotePort == 0, s.terminalError == nil else { throw .invalidArgument }
        guard port != 0, !address.isUnspecified, !address.isMulticast, !address.isLimitedBroadcast,
              address != configuration.interface.subnetBroadcast
        else { throw .networkUnreachable }
        let local = isLocal(address)
        guard local || route(address) != nil else { throw .networkUnreachable }
        guard sourceUsable(s.localAddress, toward: address) else { throw .invalidArgument }
        let source = s.localAddress.isUnspecified ? sourceAddress(toward: address) : s.localAddress
        if s.localPort == 0 {
            guard let p = ephemeralPort(remote: address, remotePort: port, local: source) else { throw .addressNotAvailable }
            s.localPort = p
            usePort(p, address: source, by: s)
        }
        s.localAddress = source
        s.viaLoopback = local
        let tuple = TCPFourTuple(remoteAddress: address, remotePort: port, localAddress: source, localPort: s.localPort)
        if let existing = tcp.connections[tuple] {
            // A TIME-WAIT with the same names is recycled (as Linux with timestamps); a live one
            // makes the names unavailable.
            guard existing.state == .timeWait else { throw .addressNotAvailable }
            existing.close(reason: nil, now: now)
        }
        s.remoteAddress = address
        s.remotePort = port
        s.activeOpen = true
        tcp.connections[tuple] = s
        counters.tcpActiveOpens &+= 1
        startHandshake(s, now: now)
        s.state = .synSent
        s.output(now: now)
    }

    private func startHandshake(_ s: TCPConnection, now: Instant) {
        s.iss = initialSequenceNumber(localPort: s.localPort, remote: s.remoteAddress, remotePort: s.remotePort, now: now)
        s.sndUna = s.iss
        s.sndNxt = s.iss
        s.sndMax = s.iss
        s.sendBufferSeq = s.iss + 1
        s.recover = s.iss
        s.advertisedMSS = min(pathMTU(toward: s.remoteAddress) - 40, s.options.maxSegment ?? Int.max)
        s.windowScaling = true
        // The shift must cover the largest window autotuning may offer (RFC 7323 2.2: it is
        // fixed at the SYN).
        s.rcvScale = Self.windowShift(for: s.options.receiveBuffer == nil
                                        ? max(configuration.tcp.maximumBuffer, s.receive.ring.capacity) : s.receive.ring.capacity)
        s.sackPermitted = true
        s.timestamps = true
        s.tsOffset = UInt32(truncatingIfNeeded: secretHash(0x7473, s.localPort, s.remoteAddress, s.remotePort))
    }

    /// The smallest shift that lets the window field cover `capacity` (RFC 7323 2.3).
    static func windowShift(for capacity: Int) -> UInt8 {
        var shift: UInt8 = 0
        while (65535 << Int(shift)) < capacity && shift < 14 { shift += 1 }
        return shift
    }

    /// send(2): queues bytes; returns how many were taken, `.wouldBlock` when none fit.
    public func tcpSend(_ id: SocketID, _ bytes: UnsafeRawBufferPointer, now: Instant) throws(SocketError) -> Int {
        guard let s = tcpSocket(id), !s.orphaned else { throw .badSocket }
        if let error = s.pendingError {
            s.pendingError = nil
            throw error
        }
        switch s.state {
        case .established, .closeWait:
            break
        case .synSent, .synReceived:
            throw .wouldBlock
        case .closed where s.terminalError != nil:
            throw .brokenPipe
        default:
            throw s.finQueued ? .brokenPipe : .notConnected
        }
        guard !s.finQueued else { throw .brokenPipe }
        guard !bytes.isEmpty else { return 0 }
        let n = s.sendBuffer.append(bytes)
        guard n > 0 else { throw .wouldBlock }
        s.output(now: now)
        return n
    }

    /// recv(2): copies received bytes; 0 means end of stream; `.wouldBlock` when none yet.
    public func tcpReceive(_ id: SocketID, into buffer: UnsafeMutableRawBufferPointer, peek: Bool = false,
                           now: Instant) throws(SocketError) -> Int {
        guard let s = tcpSocket(id), !s.orphaned else { throw .badSocket }
        if s.receive.readable == 0 {
            if let error = s.pendingError {
                s.pendingError = nil
                throw error
            }
            if s.peerFinished || s.readShutdown { return 0 }
            switch s.state {
            case .closed:
                if s.terminalError != nil { return 0 }
                throw .notConnected
            case .listen:
                throw .notConnected
            default:
                throw .wouldBlock
            }
        }
        guard !buffer.isEmpty else { return 0 }
        let n = s.receive.read(into: buffer, peek: peek)
        if !peek {
            s.tuneReceiveBuffer(read: n, now: now)
            s.windowUpdateIfUseful(now: now)
            s.output(now: now)
        }
        return n
    }

    /// Bytes send(2) would take now: 0 unless the connection can carry more data.
    public func tcpSendSpace(_ id: SocketID) -> Int {
        guard let s = tcpSocket(id), !s.orphaned, s.canSend, s.pendingError == nil else { return 0 }
        return s.sendBuffer.free
    }

    /// Bytes queued for sending and not yet acknowledged (SIOCOUTQ).
    public func tcpSendQueued(_ id: SocketID) -> Int { tcpSocket(id)?.sendQueued ?? 0 }

    /// Up to `limit` readable bytes where they lie (one or two regions), so that a caller can
    /// write them out without copying them first; `tcpConsume` then drops what was taken.
    public func tcpReadableRegions(_ id: SocketID, limit: Int) -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer) {
        guard let s = tcpSocket(id), !s.orphaned else { return (UnsafeRawBufferPointer(start: nil, count: 0), UnsafeRawBufferPointer(start: nil, count: 0)) }
        return s.receive.ring.regions(from: 0, length: min(limit, s.receive.readable))
    }

    /// Drops `count` readable bytes as a read of them would (window updates included).
    public func tcpConsume(_ id: SocketID, _ count: Int, now: Instant) {
        guard count > 0, let s = tcpSocket(id), !s.orphaned else { return }
        s.receive.consume(count)
        s.tuneReceiveBuffer(read: count, now: now)
        s.windowUpdateIfUseful(now: now)
        s.output(now: now)
    }

    /// Whether the peer's FIN has arrived (reads end once the readable bytes are taken).
    public func tcpPeerFinished(_ id: SocketID) -> Bool { tcpSocket(id)?.peerFinished ?? false }

    /// The error that ended the connection (reset, refused, timed out), if it ended so.
    public func tcpTerminalError(_ id: SocketID) -> SocketError? { tcpSocket(id)?.terminalError }

    /// Bytes waiting to be read (FIONREAD).
    public func tcpReadable(_ id: SocketID) -> Int { tcpSocket(id)?.receive.readable ?? 0 }

    /// shutdown(2).
    public func tcpShutdown(_ id: SocketID, _ how: ShutdownHow, now: Instant) throws(SocketError) {
        guard let s = tcpSocket(id), !s.orphaned else { throw .badSocket }
        guard s.state != .listen, s.state != .closed || s.terminalError != nil else { throw .notConnected }
        if how == .read || how == .both {
            s.readShutdown = true
            markReadinessChanged(id)
        }
        if how == .write || how == .both { queueFin(s, now: now) }
    }

    private func queueFin(_ s: TCPConnection, now: Instant) {
        switch s.state {
        case .established:
            s.leaveEstablishedCount()
            s.state = .finWait1
        case .closeWait:
            s.leaveEstablishedCount()
            s.state = .lastAck
        case .synSent:
            s.close(reason: nil, now: now)
            return
        case .synReceived:
            // RFC 9293 3.10.4: queue the FIN until ESTABLISHED; with no data to send first,
            // the FIN follows the handshake.
            s.finQueued = true
            return
        default:
            return
        }
        s.finQueued = true
        markReadinessChanged(s.id)
        s.output(now: now)
    }

    /// close(2): the application gives the socket up. Unread data (or SO_LINGER 0) aborts
    /// with RST (RFC 9293 3.10.4, RFC 2525 2.17); otherwise a FIN ends the connection
    /// gracefully while the stack keeps the orphan until the close completes.
    public func tcpClose(_ id: SocketID, now: Instant) {
        guard let s = tcpSocket(id), !s.orphaned else { return }
        s.orphaned = true
        switch s.state {
        case .listen:
            for child in s.acceptQueue { tcpSocket(child)?.orphanAndAbort(now: now) }
            s.acceptQueue.removeAll()
            // Embryonic children die with the listener.
            for c in tcp.connections.values where c.listener == id { c.orphanAndAbort(now: now) }
            s.close(reason: nil, now: now)
        case .closed:
            tcpConnectionClosed(s, free: true)
        case .synSent:
            s.close(reason: nil, now: now)
        default:
            if s.receive.readable > 0 || s.options.lingerZero {
                counters.tcpAbortOnClose &+= 1
                s.abort(error: nil, sendReset: true, now: now)
            } else {
                queueFin(s, now: now)
                if s.state == .finWait2 {
                    s.setTimer(.lifetime, at: now.adding(milliseconds: configuration.tcp.finWait2Milliseconds))
                }
            }
        }
    }

    /// Aborts a connection with RST at once.
    public func tcpAbort(_ id: SocketID, now: Instant) {
        guard let s = tcpSocket(id), !s.orphaned else { return }
        s.orphaned = true
        if s.state == .closed {
            tcpConnectionClosed(s, free: true)
        } else {
            s.abort(error: nil, sendReset: true, now: now)
        }
    }

    public func tcpReadiness(_ id: SocketID) -> SocketReadiness? { tcpSocket(id)?.readiness }

    public func tcpState(_ id: SocketID) -> TCPState? { tcpSocket(id)?.state }

    public func tcpInfo(_ id: SocketID) -> TCPInfo? { tcpSocket(id)?.info }

    /// SO_ERROR: the pending error, cleared by reading it.
    public func tcpTakeError(_ id: SocketID) -> SocketError? {
        guard let s = tcpSocket(id) else { return nil }
        let e = s.pendingError
        s.pendingError = nil
        return e
    }

    public func tcpOptions(_ id: SocketID) -> TCPSocketOptions? { tcpSocket(id)?.options }

    /// Changes socket options; effects that need output happen at once.
    public func tcpSetOptions(_ id: SocketID, now: Instant, _ change: (inout TCPSocketOptions) -> Void) throws(SocketError) {
        guard let s = tcpSocket(id), !s.orphaned else { throw .badSocket }
        var o = s.options
        change(&o)
        if o.congestionControl != s.options.congestionControl {
            guard let cc = CongestionControlFactory.make(o.congestionControl, mss: s.mss) else { throw .invalidArgument }
            cc.setWindow(s.cc.cwnd)
            s.cc = cc
        }
        if (o.receiveBuffer != s.options.receiveBuffer || o.sendBuffer != s.options.sendBuffer) && s.state == .closed
            && s.remotePort == 0 {
            // SO_RCVBUF/SO_SNDBUF before connect or listen size the rings (and the window
            // scale chosen at the SYN); later they only stop autotuning, as the rings keep data.
            s.receive = ReceiveQueue(capacity: o.receiveBuffer ?? configuration.tcp.receiveBuffer)
            s.sendBuffer = ByteRing(capacity: o.sendBuffer ?? configuration.tcp.sendBuffer)
        }
        let uncork = s.options.cork && !o.cork
        let nodelay = !s.options.noDelay && o.noDelay
        let keepalive = s.options.keepAlive != o.keepAlive || s.options.keepIdle != o.keepIdle
        s.options = o
        if keepalive { s.armKeepalive(now: now) }
        if uncork {
            // Uncorking pushes what waits, past Nagle too (as Linux's TCP_NAGLE_PUSH).
            s.corkExpired = true
            s.output(now: now)
            s.corkExpired = false
        } else if nodelay {
            s.output(now: now)
        }
    }

    /// Names of the socket: local address (unspecified while bound to any) and port, and the
    /// peer once connected.
    public func tcpNames(_ id: SocketID) -> (local: IPv4Address, localPort: UInt16, remote: IPv4Address, remotePort: UInt16)? {
        guard let s = tcpSocket(id) else { return nil }
        return (s.localAddress, s.localPort, s.remoteAddress, s.remotePort)
    }

    /// Every live socket, for display (lvlipctl ss).
    public var tcpSocketIDs: [SocketID] { tcp.sockets.compactMap { $0?.id } }

    // MARK: - Input

    func receiveTCP(_ datagram: IPv4Datagram, now: Instant) {
        let segment: TCPSegment
        do {
            segment = try TCPSegment(datagram.payload, source: datagram.source, destination: datagram.destination,
                                     checksumVerified: datagram.checksumVerified)
        } catch {
            counters.tcpInErrs &+= 1
            if case .badChecksum = error { counters.tcpInCsumErrors &+= 1 }
            return
        }
        counters.tcpInSegs &+= 1
        // RFC 9293 3.9.2 / RFC 1122 4.2.3.10: no segment to or from a broadcast is accepted.
        guard !datagram.broadcast else {
            counters.tcpInErrs &+= 1
            return
        }
        let flags = segment.flags
        let seg = IncomingSegment(seq: segment.seq, ack: segment.ack, flags: flags, window: segment.window,
                                  options: segment.options, payload: segment.payload)
        let tuple = TCPFourTuple(remoteAddress: datagram.source, remotePort: segment.sourcePort,
                                 localAddress: datagram.destination, localPort: segment.destinationPort)
        // A one-entry cache in front of the table: bulk traffic hits the same connection.
        let cached: TCPConnection?
        if let last = tcp.lastLookup, last.tuple == tuple, last.connection.state != .closed {
            cached = last.connection
        } else {
            cached = tcp.connections[tuple]
            if let c = cached { tcp.lastLookup = (tuple, c) }
        }
        if let c = cached {
            if c.state == .timeWait && flags.contains(.syn) && !flags.contains(.ack) && !flags.contains(.rst),
               seg.seq > c.rcvNxt, let listener = listener(for: tuple) {
                // RFC 9293 3.10.7.4 note / RFC 6191: a new SYN beyond the old connection's
                // sequence space may reopen the names.
                c.close(reason: nil, now: now)
                listenerArrives(listener, seg, tuple: tuple, now: now)
                return
            }
            c.segmentsIn &+= 1
            if c.state == .synSent {
                c.synSentArrives(seg, now: now)
            } else {
                c.synchronizedArrives(seg, now: now)
            }
            if c.state != .closed {
                if c.state == .established || c.state == .closeWait { c.armKeepalive(now: now) }
                c.output(now: now)
            }
            return
        }
        if let listener = listener(for: tuple) {
            listenerArrives(listener, seg, tuple: tuple, now: now)
            return
        }
        // RFC 9293 3.10.7.1: CLOSED. Everything but a RST is answered with a RST.
        counters.tcpNoSocket &+= 1
        guard !flags.contains(.rst) else { return }
        if flags.contains(.ack) {
            sendReset(to: tuple, seq: seg.ack, ack: nil, now: now)
        } else {
            sendReset(to: tuple, seq: SeqNum(0), ack: seg.seq + seg.length, now: now)
        }
    }

    /// RFC 9293 3.10.7.2: LISTEN.
    private func listenerArrives(_ listener: TCPConnection, _ seg: IncomingSegment, tuple: TCPFourTuple, now: Instant) {
        if seg.flags.contains(.rst) { return }
        if seg.flags.contains(.ack) {
            // The ACK completing a handshake answered with a SYN cookie (RFC 4987 3.6).
            if !seg.flags.contains(.syn), let sentAt = listener.lastSynCookie,
               now.nanoseconds(since: sentAt) < 2 * SynCookie.period * 1_000_000_000,
               acceptSynCookie(listener, seg, tuple: tuple, now: now) {
                return
            }
            sendReset(to: tuple, seq: seg.ack, ack: nil, now: now)
            return
        }
        guard seg.flags.contains(.syn) else { return }
        let queueLimit = max(listener.backlog, 1)
        guard listener.acceptQueue.count < queueLimit else {
            counters.tcpListenOverflows &+= 1
            counters.tcpListenDrops &+= 1
            return
        }
        guard listener.synQueue < max(configuration.tcp.maxSynBacklog, queueLimit) else {
            // The SYN queue is full (a flood, or a slow handshake storm): answer without
            // keeping state, with a SYN cookie as the ISN (RFC 4987 3.6).
            sendSynCookie(listener, seg, tuple: tuple, now: now)
            return
        }
        let child = makeChild(of: listener, tuple: tuple, now: now)
        listener.synQueue += 1
        child.irs = seg.seq
        child.rcvNxt = seg.seq + 1
        child.negotiateOptions(seg.options, synAck: false)
        if !child.windowScaling { child.rcvScale = 0 }
        if child.timestamps, let ts = seg.options.timestamp {
            child.tsRecent = ts.value
            child.tsRecentTime = now
        }
        child.sndWnd = Int(seg.window)
        child.sndWl1 = seg.seq
        child.state = .synReceived
        child.segmentsIn = 1
        child.output(now: now)
    }

    // MARK: - Errors from below

    /// An ICMP error about a segment we sent (RFC 1122 4.2.3.9, RFC 5927). The quoted
    /// sequence number must lie in [SND.UNA, SND.MAX) or the message is ignored (blind
    /// attacks). While opening, the error ends the connect (as Linux does); later it is a
    /// soft error, reported if the connection then times out.
    func tcpICMPError(type: ICMPType, code: UInt8, source: IPv4Address, destination: IPv4Address, sourcePort: UInt16,
                      destinationPort: UInt16, seq: SeqNum, now: Instant) {
        let tuple = TCPFourTuple(remoteAddress: destination, remotePort: destinationPort, localAddress: source,
                                 localPort: sourcePort)
        guard let c = tcp.connections[tuple], seq >= c.sndUna, seq < c.sndMax || (c.sndMax == c.sndUna && seq == c.sndUna)
        else {
            counters.tcpICMPIgnored &+= 1
            return
        }
        let error: SocketError
        switch (type, code) {
        case (.destinationUnreachable, UnreachableCode.network): error = .networkUnreachable
        case (.destinationUnreachable, UnreachableCode.proto), (.destinationUnreachable, UnreachableCode.port):
            error = .connectionRefused
        case (.destinationUnreachable, UnreachableCode.fragmentationNeeded):
            // Path MTU discovery is not implemented: segments are sized to the link MTU.
            return
        case (.destinationUnreachable, _): error = .hostUnreachable
        default: error = .hostUnreachable  // Time Exceeded
        }
        counters.tcpICMPErrors &+= 1
        if c.state == .synSent || c.state == .synReceived {
            c.abort(error: error, sendReset: false, now: now)
        } else {
            c.softError = error
        }
    }

    /// Address resolution for `nextHop` failed: connections opening through it end with
    /// EHOSTUNREACH; established ones keep it as a soft error.
    func tcpNeighborUnreachable(_ nextHop: IPv4Address, now: Instant) {
        let affected = tcp.connections.values.filter { c in
            if !c.viaLoopback, case .via(let hop)? = route(c.remoteAddress) { return hop == nextHop }
            return false
        }
        for c in affected {
            if c.state == .synSent {
                c.abort(error: .hostUnreachable, sendReset: false, now: now)
            } else {
                c.softError = .hostUnreachable
            }
        }
    }

    /// A connection born of a listener, registered under its names, handshake variables set.
    func makeChild(of listener: TCPConnection, tuple: TCPFourTuple, now: Instant) -> TCPConnection {
        let child = allocateSocket(options: listener.options)
        child.localAddress = tuple.localAddress
        child.localPort = tuple.localPort
        child.remoteAddress = tuple.remoteAddress
        child.remotePort = tuple.remotePort
        child.viaLoopback = isLocal(tuple.remoteAddress)
        child.listener = listener.id
        usePort(tuple.localPort, address: tuple.localAddress, by: child)
        tcp.connections[tuple] = child
        counters.tcpPassiveOpens &+= 1
        startHandshake(child, now: now)
        return child
    }

    // MARK: - Output

    /// Writes one TCP segment of connection `c`; data comes from its send buffer.
    func emitTCP(_ c: TCPConnection, seq: SeqNum, ack: SeqNum, flags: TCPFlags, window: UInt16, options: TCPOptions?,
                 dataOffset: Int, length: Int, now: Instant) {
        counters.tcpOutSegs &+= 1
        if flags.contains(.rst) { counters.tcpOutRsts &+= 1 }
        if c.viaLoopback {
            emitLoopbackTCP(c, seq: seq, ack: ack, flags: flags, window: window, options: options, dataOffset: dataOffset,
                            length: length, now: now)
            return
        }
        let headerLength = TCPSegment.minimumHeaderLength + (options?.encodedLength ?? 0)
        let segmentLength = headerLength + length
        let destination = c.remoteAddress
        let source = c.localAddress
        // A local function, not a closure value: nothing is allocated per segment.
        func writeSegment(_ buffer: UnsafeMutableRawBufferPointer) {
            Self.writeSegment(of: c, into: buffer, seq: seq, ack: ack, flags: flags, window: window, options: options,
                              headerLength: headerLength, dataOffset: dataOffset, length: length)
        }
        // Fast path: the neighbour is known; build the frame in place in the outbox. The
        // connection caches the neighbour's MAC until the neighbour table changes.
        var knownMAC: MACAddress?
        if c.neighborGeneration == neighborGeneration, let mac = c.neighborMAC {
            knownMAC = mac
        } else if case .via(let nextHop)? = route(destination), let neighbor = neighbors[nextHop], let mac = neighbor.mac,
                  neighbor.isUsable {
            if case .stale = neighbor.state {
                _ = resolve(nextHop, now: now)
            } else {
                c.neighborMAC = mac
                c.neighborGeneration = neighborGeneration
            }
            knownMAC = mac
        }
        if let mac = knownMAC {
            counters.ipOutRequests &+= 1
            let identification = nextIdentification
            nextIdentification &+= 1
            let queued = outbox.append { buffer in
                var at = EthernetFrame.writeHeader(into: buffer, destination: mac, source: self.mac, etherType: .ipv4)
                at += IPv4Packet.writeHeader(into: buffer.suffix(from: at), source: source, destination: destination,
                                             proto: .tcp, payloadLength: segmentLength, identification: identification,
                                             ttl: configuration.defaultTTL, dontFragment: true)
                writeSegment(buffer.slice(at..<at + segmentLength))
                return at + segmentLength
            }
            if queued { counters.linkOutFrames &+= 1 } else {
                counters.linkOutQueueFull &+= 1
                counters.ipOutDiscards &+= 1
            }
            return
        }
        writeSegment(scratch.slice(0..<segmentLength))
        sendIPv4(to: destination, from: source, proto: .tcp, payload: UnsafeRawBufferPointer(scratch.slice(0..<segmentLength)),
                 now: now)
    }

    /// One segment of `c` into `buffer` (its whole length): header, data from the send
    /// buffer, checksum. Shared by the link's path and the loopback's.
    @inline(__always)
    static func writeSegment(of c: TCPConnection, into buffer: UnsafeMutableRawBufferPointer, seq: SeqNum, ack: SeqNum,
                             flags: TCPFlags, window: UInt16, options: TCPOptions?, headerLength: Int, dataOffset: Int,
                             length: Int) {
        TCPSegment.writeHeader(into: buffer, sourcePort: c.localPort, destinationPort: c.remotePort, seq: seq,
                               ack: ack, flags: flags, window: window, options: options)
        if length > 0 {
            let (a, b) = c.sendBuffer.regions(from: dataOffset, length: length)
            buffer.copy(a, to: headerLength)
            buffer.copy(b, to: headerLength + a.count)
        }
        TCPSegment.finishChecksum(buffer.slice(0..<headerLength + length), source: c.localAddress, destination: c.remoteAddress)
    }

    /// A RST for connection `c` (abort, or an unacceptable ACK in SYN states).
    func sendReset(seq: SeqNum, ack: SeqNum?, to c: TCPConnection, now: Instant) {
        sendReset(to: TCPFourTuple(remoteAddress: c.remoteAddress, remotePort: c.remotePort, localAddress: c.localAddress,
                                   localPort: c.localPort),
                  seq: seq, ack: ack, now: now)
    }

    /// A RST without a connection (RFC 9293 3.10.7.1).
    func sendReset(to tuple: TCPFourTuple, seq: SeqNum, ack: SeqNum?, now: Instant) {
        counters.tcpOutSegs &+= 1
        counters.tcpOutRsts &+= 1
        let length = TCPSegment.minimumHeaderLength
        let buffer = scratch.slice(0..<length)
        var flags: TCPFlags = .rst
        if ack != nil { flags.insert(.ack) }
        TCPSegment.writeHeader(into: buffer, sourcePort: tuple.localPort, destinationPort: tuple.remotePort, seq: seq,
                               ack: ack ?? SeqNum(0), flags: flags, window: 0, options: nil)
        TCPSegment.finishChecksum(buffer, source: tuple.localAddress, destination: tuple.remoteAddress)
        sendIPv4(to: tuple.remoteAddress, from: tuple.localAddress, proto: .tcp, payload: UnsafeRawBufferPointer(buffer), now: now)
    }

    // MARK: - Names and numbers

    /// A keyed hash of a connection's names (RFC 6528's F, RFC 6056's F).
    func secretHash(_ purpose: UInt16, _ localPort: UInt16, _ remote: IPv4Address?, _ remotePort: UInt16) -> UInt64 {
        var h = SipHash24(key0: configuration.seed, key1: configuration.seed ^ 0x6C76_6C69_7000_0000)
        h.add(purpose)
        h.add(address.value)
        h.add(localPort)
        h.add(remote?.value ?? 0)
        h.add(remotePort)
        return h.finalize()
    }

    /// RFC 6528: ISN = M + F(names, secret), M a 4 µs clock.
    func initialSequenceNumber(localPort: UInt16, remote: IPv4Address, remotePort: UInt16, now: Instant) -> SeqNum {
        let m = UInt32(truncatingIfNeeded: now.nanoseconds / 4000)
        return SeqNum(m &+ UInt32(truncatingIfNeeded: secretHash(0x6973, localPort, remote, remotePort)))
    }
}

extension TCPConnection {
    /// Used when a listener closes with connections it had not handed out.
    func orphanAndAbort(now: Instant) {
        orphaned = true
        listener = nil
        abort(error: nil, sendReset: true, now: now)
    }
}
