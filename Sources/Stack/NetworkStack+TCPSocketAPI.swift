import Timing

/// Where a connection's in-order data can go without waiting in the receive ring: lvlipd's
/// socket service, which writes it into the application's socket pair straight from the
/// frame it arrived in (one copy fewer per byte than the ring's way in and out).
public protocol TCPDirectReceiver: AnyObject {
    /// Offers `bytes`, the next in-order data of `id`, received while nothing of it waits in
    /// the ring; returns how many were taken (0 when it cannot take them now: the rest goes
    /// to the ring as usual). Called while a segment is processed: it must not call the stack.
    func tcpTakeDirectly(_ id: SocketID, _ bytes: UnsafeRawBufferPointer) -> Int
}

/// TCP's socket calls, as the socket service makes them: socket, connect, send, recv,
/// shutdown, close and the options (RFC 9293 section 3.10's user calls). Each takes the
/// socket's ID and `now`; what they make the connection send goes to the outbox.
extension NetworkStack {
    /// A new, unconnected TCP socket (socket(2)).
    public func tcpOpen(family: AddressFamily = .ipv4, options: TCPSocketOptions = TCPSocketOptions()) -> SocketID {
        let s = allocateSocket(options: options)
        s.family = family
        s.localAddress = family.any
        s.heldAddress = family.any
        return s.id
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
    public func tcpConnect(_ id: SocketID, to address: IPAddress, port: UInt16, now: Instant) throws(SocketError) {
        let now = advanceClock(now)
        guard let s = tcpSocket(id), !s.orphaned else { throw .badSocket }
        switch s.state {
        case .synSent, .synReceived: throw .alreadyInProgress
        case .closed: break
        case .listen: throw .invalidArgument
        default: throw .alreadyConnected
        }
        guard s.remotePort == 0, s.terminalError == nil else { throw .invalidArgument }
        guard port != 0, !address.isUnspecified, !address.isMulticast else { throw .networkUnreachable }
        if let v4 = address.v4 {
            guard !v4.isLimitedBroadcast, v4 != configuration.interface.subnetBroadcast else { throw .networkUnreachable }
            // An IPv6 socket reaches IPv4 peers as v4-mapped addresses, unless IPV6_V6ONLY.
            guard s.family == .ipv4 || !s.options.v6Only else { throw .networkUnreachable }
        } else {
            guard s.family == .ipv6 else { throw .invalidArgument }
        }
        let local = isLocal(address)
        guard local || isRoutable(address, now: now) else { throw .networkUnreachable }
        // An IPv6 socket still bound to `::` takes its source from the peer's family.
        let bound = s.localAddress == .anyIPv6 && address.isIPv4 ? IPAddress.anyIPv4 : s.localAddress
        guard sourceUsable(bound, toward: address) else {
            throw bound.isIPv4 == address.isIPv4 ? .invalidArgument : .networkUnreachable
        }
        guard let source = bound.isUnspecified ? sourceAddress(toward: address) : bound else { throw .networkUnreachable }
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
            existing.close(reason: nil, now: now, in: self)
        }
        s.remoteAddress = address
        s.remotePort = port
        s.activeOpen = true
        tcp.connections[tuple] = s
        counters.tcpActiveOpens &+= 1
        startHandshake(s, now: now)
        s.state = .synSent
        s.output(now: now, in: self)
    }

    func startHandshake(_ s: TCPConnection, now: Instant) {
        s.iss = initialSequenceNumber(localPort: s.localPort, remote: s.remoteAddress, remotePort: s.remotePort, now: now)
        s.sndUna = s.iss
        s.sndNxt = s.iss
        s.sndMax = s.iss
        s.sendBufferSeq = s.iss + 1
        s.recover = s.iss
        s.advertisedMSS = min(maximumSegment(toward: s.remoteAddress), s.options.maxSegment ?? Int.max)
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
        let now = advanceClock(now)
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
        s.output(now: now, in: self)
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
            s.tuneReceiveBuffer(read: n, now: now, in: self)
            s.windowUpdateIfUseful(now: now)
            s.output(now: now, in: self)
        }
        return n
    }

    /// Where the next bytes to send would go in the send ring (one or two regions, at most
    /// `limit` bytes; empty when `tcpSend` would take nothing): a caller reads the
    /// application's bytes straight into them, then `tcpCommitSend` sends them. One copy
    /// less than `tcpSend` of a buffer.
    public func tcpSendRegions(_ id: SocketID, limit: Int)
        -> (UnsafeMutableRawBufferPointer, UnsafeMutableRawBufferPointer) {
        guard let s = sendableSocket(id) else {
            return (UnsafeMutableRawBufferPointer(start: nil, count: 0), UnsafeMutableRawBufferPointer(start: nil, count: 0))
        }
        return s.sendBuffer.freeRegions(limit: limit)
    }

    /// Takes `count` bytes the caller wrote at the start of `tcpSendRegions` (called just
    /// before, with nothing in between) as `tcpSend` would take them.
    public func tcpCommitSend(_ id: SocketID, _ count: Int, now: Instant) {
        let now = advanceClock(now)
        guard count > 0, let s = tcpSocket(id) else { return }
        s.sendBuffer.commit(count)
        s.output(now: now, in: self)
    }

    /// Bytes send(2) would take now: 0 unless the connection can carry more data.
    public func tcpSendSpace(_ id: SocketID) -> Int { sendableSocket(id)?.sendBuffer.free ?? 0 }

    /// The connection if `tcpSend` would take bytes now (it has room and no error to report).
    private func sendableSocket(_ id: SocketID) -> TCPConnection? {
        guard let s = tcpSocket(id), !s.orphaned, s.canSend, s.pendingError == nil else { return nil }
        return s
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
        let now = advanceClock(now)
        guard count > 0, let s = tcpSocket(id), !s.orphaned else { return }
        s.receive.consume(count)
        s.tuneReceiveBuffer(read: count, now: now, in: self)
        s.windowUpdateIfUseful(now: now)
        s.output(now: now, in: self)
    }

    /// Whether the peer's FIN has arrived (reads end once the readable bytes are taken).
    public func tcpPeerFinished(_ id: SocketID) -> Bool { tcpSocket(id)?.peerFinished ?? false }

    /// The error that ended the connection (reset, refused, timed out), if it ended so.
    public func tcpTerminalError(_ id: SocketID) -> SocketError? { tcpSocket(id)?.terminalError }

    /// Bytes waiting to be read (FIONREAD).
    public func tcpReadable(_ id: SocketID) -> Int { tcpSocket(id)?.receive.readable ?? 0 }

    /// shutdown(2).
    public func tcpShutdown(_ id: SocketID, _ how: ShutdownHow, now: Instant) throws(SocketError) {
        let now = advanceClock(now)
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
            s.leaveEstablishedCount(in: self)
            s.state = .finWait1
        case .closeWait:
            s.leaveEstablishedCount(in: self)
            s.state = .lastAck
        case .synSent:
            s.close(reason: nil, now: now, in: self)
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
        s.output(now: now, in: self)
    }

    /// close(2): the application gives the socket up. Unread data (or SO_LINGER 0) aborts
    /// with RST (RFC 9293 3.10.4, RFC 2525 2.17); otherwise a FIN ends the connection
    /// gracefully while the stack keeps the orphan until the close completes.
    public func tcpClose(_ id: SocketID, now: Instant) {
        let now = advanceClock(now)
        guard let s = tcpSocket(id), !s.orphaned else { return }
        s.orphaned = true
        switch s.state {
        case .listen:
            for child in s.acceptQueue { tcpSocket(child)?.orphanAndAbort(now: now, in: self) }
            s.acceptQueue.removeAll()
            // Embryonic children die with the listener.
            for c in tcp.connections.values where c.listener == id { c.orphanAndAbort(now: now, in: self) }
            s.close(reason: nil, now: now, in: self)
        case .closed:
            tcpConnectionClosed(s, free: true)
        case .synSent:
            s.close(reason: nil, now: now, in: self)
        default:
            if s.receive.readable > 0 || s.options.lingerZero {
                counters.tcpAbortOnClose &+= 1
                s.abort(error: nil, sendReset: true, now: now, in: self)
            } else {
                queueFin(s, now: now)
                if s.state == .finWait2 {
                    s.setTimer(.lifetime, at: now.adding(milliseconds: configuration.tcp.finWait2Milliseconds), in: self)
                }
            }
        }
    }

    /// Aborts a connection with RST at once.
    public func tcpAbort(_ id: SocketID, now: Instant) {
        let now = advanceClock(now)
        guard let s = tcpSocket(id), !s.orphaned else { return }
        s.orphaned = true
        if s.state == .closed {
            tcpConnectionClosed(s, free: true)
        } else {
            s.abort(error: nil, sendReset: true, now: now, in: self)
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
        let now = advanceClock(now)
        guard let s = tcpSocket(id), !s.orphaned else { throw .badSocket }
        var o = s.options
        change(&o)
        // IPV6_V6ONLY is fixed once the socket has a port (Linux: EINVAL), and means nothing
        // on an IPv4 socket (the service answers ENOPROTOOPT there).
        if o.v6Only != s.options.v6Only && (s.localPort != 0 || s.family == .ipv4) { throw .invalidArgument }
        if o.congestionControl != s.options.congestionControl {
            guard let cc = CongestionControlFactory.make(o.congestionControl, mss: s.mss) else { throw .invalidArgument }
            cc.setWindow(s.cc.cwnd)
            s.cc = cc
        }
        if (o.receiveBuffer != s.options.receiveBuffer || o.sendBuffer != s.options.sendBuffer) && s.state == .closed
            && s.remotePort == 0 {
            // SO_RCVBUF/SO_SNDBUF before connect or listen size the rings (and the window
            // scale chosen at the SYN); later they only stop autotuning, as the rings keep data.
            s.receive = ReceiveQueue(capacity: configuration.tcp.receiveRing(o), pool: ringPool)
            s.sendBuffer = ByteRing(capacity: configuration.tcp.sendRing(o), pool: ringPool)
        }
        let uncork = s.options.cork && !o.cork
        let nodelay = !s.options.noDelay && o.noDelay
        let keepalive = s.options.keepAlive != o.keepAlive || s.options.keepIdle != o.keepIdle
        s.options = o
        if keepalive { s.armKeepalive(now: now, in: self) }
        if uncork {
            // Uncorking pushes what waits, past Nagle too (as Linux's TCP_NAGLE_PUSH).
            s.corkExpired = true
            s.output(now: now, in: self)
            s.corkExpired = false
        } else if nodelay {
            s.output(now: now, in: self)
        }
    }

    /// Names of the socket: local address (unspecified while bound to any) and port, and the
    /// peer once connected.
    public func tcpNames(_ id: SocketID) -> (local: IPAddress, localPort: UInt16, remote: IPAddress, remotePort: UInt16)? {
        guard let s = tcpSocket(id) else { return nil }
        return (s.localAddress, s.localPort, s.remoteAddress, s.remotePort)
    }
}

extension TCPConnection {
    /// Used when a listener closes with connections it had not handed out.
    func orphanAndAbort(now: Instant, in stack: NetworkStack) {
        orphaned = true
        listener = nil
        abort(error: nil, sendReset: true, now: now, in: stack)
    }
}
