import CLinux
import Glibc
import Reactor
import Stack

/// Stream sockets: TCP from socket() to the end of the connection (a listening socket is a
/// listener, SocketService+Listener.swift). The data path moves what the application wrote
/// into the connection as far as its send buffer has room, and what the connection received
/// into the pair as far as the application's end has room.
extension SocketService {
    // MARK: - Requests

    func bind(_ s: Socket, _ stream: Socket.Stream, _ addr: lvlip_addr, sender: (pid: Int32, uid: UInt32)) -> Int32 {
        guard let id = s.stackID, stream.phase == .unconnected, stack.tcpNames(id)?.localPort == 0 else { return -EINVAL }
        let address: IPAddress
        switch bindTarget(s, addr, sender: sender) {
        case .error(let code): return code
        case .address(let a): address = a
        }
        // Either family's any, ours, ::1 or any of 127.0.0.0/8 (the stack's loopback, as
        // Linux's lo).
        guard stack.isBindable(address) else { return -EADDRNOTAVAIL }
        do {
            try stack.tcpBind(id, address: address, port: addr.port, reuseAddress: s.reuseAddress)
        } catch {
            return -error.errno
        }
        s.boundAddress = address
        s.localName = (address, stack.tcpNames(id)?.localPort ?? addr.port)
        return 0
    }

    /// connect(2). The shim wrote `filler` bytes into its end first (docs/ipc.md): they stay
    /// unread until the handshake completes, unless the connect does not start.
    func connect(_ s: Socket, _ stream: Socket.Stream, _ addr: lvlip_addr, filler: Int) -> Int32 {
        if stream.phase != .unconnected {
            // The shim thought the socket unconnected: take its filler back.
            discardFiller(s, filler)
        }
        switch stream.phase {
        case .connecting:
            return -EALREADY
        case .connected:
            if !stream.connectReported {
                stream.connectReported = true
                return 0
            }
            return -EISCONN
        case .closed:
            let e = s.pendingError
            s.pendingError = 0
            return e != 0 ? -e : -ECONNABORTED
        case .unconnected:
            break
        }
        let code = startConnect(s, addr)
        guard code == -EINPROGRESS else {
            // Failed at once: take the filler back so the end is writable again.
            discardFiller(s, filler)
            return code
        }
        stream.phase = .connecting
        stream.filler = filler
        return code
    }

    /// LVLIP_CONNECT_FILLER: the filler of a waiting connect answered -EINPROGRESS, written
    /// since. Kept for the handshake's end if it is still under way; otherwise the answer is
    /// a connect's (which takes the filler back: 0 once connected, the pair read from then
    /// on, or the connection's error). On a socket that never connected: EINVAL.
    func lateFiller(_ s: Socket, _ stream: Socket.Stream, _ addr: lvlip_addr, _ filler: Int) -> Int32 {
        if stream.phase == .unconnected {
            discardFiller(s, filler)
            return -EINVAL
        }
        let awaited = stream.fillerAwaited
        stream.fillerAwaited = false
        if awaited && stream.phase == .connecting {
            stream.filler = filler
            return -EINPROGRESS
        }
        let code = connect(s, stream, addr, filler: filler)
        if awaited { update(s) }  // reads what the application wrote after it, and watches for more
        return code
    }

    private func startConnect(_ s: Socket, _ addr: lvlip_addr) -> Int32 {
        guard let id = s.stackID else { return -ENETUNREACH }
        // tcp_v4_connect, tcp_v6_connect: the caller's family must be the socket's.
        guard Int32(addr.family) == s.family else { return -EAFNOSUPPORT }
        let address = addr.ipAddress
        if let code = scopeError(address, addr.scope_id) { return code }
        if addr.port == 0 { return -ECONNREFUSED }
        do {
            // A v4-mapped peer of an IPV6_V6ONLY socket is ENETUNREACH (the stack's answer).
            try stack.tcpConnect(id, to: address, port: addr.port, now: reactor.now)
        } catch {
            return -error.errno
        }
        if let names = stack.tcpNames(id) { s.localName = (names.local, names.localPort) }
        s.peerName = (address, addr.port)
        return -EINPROGRESS
    }

    func discardFiller(_ s: Socket, _ count: Int) {
        var left = count
        while left > 0, s.fd >= 0 {
            guard case .done(let n) = PairIO.receive(s.fd, into: scratch, count: left), n > 0 else { break }
            left -= n
        }
    }

    /// shutdown(2) of a stream (`how` checked): SHUT_RD stops delivery, SHUT_WR sends FIN
    /// after what the application wrote before it.
    func shutdown(_ s: Socket, _ stream: Socket.Stream, how: Int32) -> Int32 {
        guard stream.phase == .connected, let id = s.stackID else {
            return stream.phase == .closed && s.peerName.port != 0 ? 0 : -ENOTCONN
        }
        if how == 0 || how == 2 {
            stream.readShut = true
            try? stack.tcpShutdown(id, .read, now: reactor.now)
        }
        if (how == 1 || how == 2) && !stream.writeShut {
            stream.finPending = true
            readFromApp(s, stream)
        }
        update(s)
        return 0
    }

    // MARK: - Events

    func streamEvent(_ s: Socket, _ stream: Socket.Stream, _ events: IOEvents) {
        if events.contains(.error) {
            // The application closed with data we gave it unread: as close(2) with unread
            // data, the connection is reset.
            applicationClosed(s, stream, reset: true)
            return
        }
        if stream.phase == .connected {
            if events.contains(.hangup) {
                // Both directions of the daemon's end shut: only the application's last close
                // does that (the daemon shuts only its writing side).
                applicationClosed(s, stream, reset: false)
                return
            }
            if events.contains(.writable) { pushToApp(s, stream) }
            if stream.fillerAwaited {
                // Not read until the shim says how much of it is filler: only its close
                // shuts the application's end meanwhile.
                if events.contains(.readHangup) {
                    applicationClosed(s, stream, reset: false)
                    return
                }
            } else if s.fd >= 0 && (events.contains(.readable) || events.contains(.readHangup)) {
                readFromApp(s, stream)
            }
        } else if events.contains(.readHangup) || events.contains(.hangup) {
            // Not connected, the pair is watched for its hang-up (nothing else shuts the
            // application's end: it closed its last descriptor).
            applicationClosed(s, stream, reset: false)
        } else if events.contains(.readable) {
            // The shim's filler: left unread, and no longer watched for, until connected.
            stream.readableBeforeConnected = true
        }
        if s.fd >= 0 { setInterest(s, streamInterest(s, stream)) }
    }

    func updateStream(_ s: Socket, _ stream: Socket.Stream, _ id: SocketID) {
        if stream.appClosed {
            // Orphan draining what the application wrote before it closed.
            if !stream.overflow.isEmpty {
                let taken = stream.overflow.withUnsafeBytes { (try? stack.tcpSend(id, $0, now: reactor.now)) ?? 0 }
                stream.overflow.removeFirst(taken)
                if stack.tcpTerminalError(id) != nil { stream.overflow.removeAll() }
            }
            if stream.overflow.isEmpty {
                byStack[id] = nil
                stack.tcpClose(id, now: reactor.now)
                s.stackID = nil
                release(s)
            }
            return
        }
        switch stream.phase {
        case .connecting:
            if let error = stack.tcpTerminalError(id) {
                terminate(s, stream, error: error.errno)
                return
            }
            switch stack.tcpState(id) {
            case .established?, .closeWait?, .finWait1?, .finWait2?, .closing?, .lastAck?, .timeWait?:
                established(s, stream)
            case .closed?:
                terminate(s, stream, error: stack.tcpTakeError(id)?.errno ?? ECONNREFUSED)
                return
            default:
                break
            }
        case .connected:
            pushToApp(s, stream)
            if s.fd >= 0 && s.interest.contains(.readable) == false && !stream.fillerAwaited { readFromApp(s, stream) }
        case .unconnected, .closed:
            break
        }
        if s.fd >= 0 {
            chargeBuffers(s, overflow: stream.overflow.count)
            setInterest(s, streamInterest(s, stream))
        }
    }

    private func established(_ s: Socket, _ stream: Socket.Stream) {
        discardFiller(s, stream.filler)
        stream.filler = 0
        stream.phase = .connected
        if let id = s.stackID, let names = stack.tcpNames(id) {
            s.localName = (names.local, names.localPort)
        }
        pushToApp(s, stream)
    }

    /// What the daemon's end of an open stream waits for (the caller checked `s.fd`).
    func streamInterest(_ s: Socket, _ stream: Socket.Stream) -> IOEvents {
        switch stream.phase {
        case .unconnected, .connecting:
            // The shim's connect writes its filler before the CONNECT request arrives, and it
            // must stay unread until the handshake completes. Watched for reading as well
            // until it is seen (what a connected stream waits for: a connect that completes
            // within the wake-up then needs no epoll_ctl), for the hang-up only after.
            return stream.readableBeforeConnected ? .readHangup : [.readable, .readHangup]
        case .connected:
            guard let id = s.stackID else { return [] }
            var events: IOEvents = []
            let space = stack.tcpSendSpace(id) > 0
            let overLimit = s.user.buffered >= limits.bufferedBytesPerUser
            if space && overLimit && !s.paused && !stream.writeShut {
                s.paused = true
                s.user.paused.append(s)
            }
            let room = stream.writeShut || (space && !overLimit)
            // Without room, the end's hang-up (level-triggered) would fire on and on.
            if stream.fillerAwaited { events.insert(.readHangup) }
            else if room { events.formUnion([.readable, .readHangup]) }
            if stack.tcpReadable(id) > 0 && !stream.readShut { events.insert(.writable) }
            return events
        case .closed:
            return []
        }
    }

    // MARK: - Data

    /// Moves what the application wrote into the connection, as far as its send buffer allows.
    private func readFromApp(_ s: Socket, _ stream: Socket.Stream) {
        reading: while s.fd >= 0 {
            // Bytes to send are read straight into the free space of the connection's send
            // ring; after a shutdown, into scratch to be discarded.
            let direct = stream.writeShut ? nil : s.stackID
            var room = scratch.count
            var regions = (UnsafeMutableRawBufferPointer(start: nil, count: 0), UnsafeMutableRawBufferPointer(start: nil, count: 0))
            if !stream.writeShut {
                guard let id = direct else { break }
                if s.user.buffered < limits.bufferedBytesPerUser { regions = stack.tcpSendRegions(id, limit: room) }
                room = regions.0.count + regions.1.count
                if room == 0 {
                    // Without room, a FIN can still go once nothing more waits in the pair.
                    if stream.finPending && (PairIO.unread(s.fd) ?? 1) == 0 { sendFin(s, stream) }
                    break
                }
            }
            let result = direct != nil ? PairIO.receive(s.fd, into: regions.0, regions.1)
                : PairIO.receive(s.fd, into: scratch, count: room)
            let n: Int
            switch result {
            case .done(0):
                applicationClosed(s, stream, reset: false)
                return
            case .done(let count):
                n = count
            case .wouldBlock:
                if stream.finPending { sendFin(s, stream) }
                break reading
            case .failed(let error):
                applicationClosed(s, stream, reset: error == ECONNRESET)
                return
            }
            counters.appBytesIn &+= UInt64(n)
            guard let id = direct else {
                counters.appBytesDiscarded &+= UInt64(n)
                continue
            }
            stack.tcpCommitSend(id, n, now: reactor.now)
            // Less than asked: the pair is empty now (the FIN waits for the next event).
            if n < room && !stream.finPending { break }
        }
        chargeBuffers(s, overflow: stream.overflow.count)
    }

    private func sendFin(_ s: Socket, _ stream: Socket.Stream) {
        stream.finPending = false
        stream.writeShut = true
        if let id = s.stackID { try? stack.tcpShutdown(id, .write, now: reactor.now) }
    }

    /// Writes received data into the application's end as far as it has room; then EOF or
    /// the end of the connection.
    private func pushToApp(_ s: Socket, _ stream: Socket.Stream) {
        guard let id = s.stackID else { return }
        writing: while s.fd >= 0 && !stream.readShut {
            let (a, b) = stack.tcpReadableRegions(id, limit: Int(Self.pushBuffer))
            if a.isEmpty { break }
            switch writeToApp(s, a, b) {
            case .done(let n):
                stack.tcpConsume(id, n, now: reactor.now)
            case .wouldBlock:
                break writing
            case .failed:
                // EPIPE: the application is gone; its hang-up event follows.
                return
            }
        }
        let drained = stack.tcpReadable(id) == 0 || stream.readShut
        if drained && !stream.eofSent && (stack.tcpPeerFinished(id) || stream.readShut) {
            stream.eofSent = true
            PairIO.shutdownWrite(s.fd)
        }
        // A connection that ended in error closes the daemon's end; one that finished both
        // ways keeps its pair (names, TCP_INFO) until the application closes.
        if drained, let error = stack.tcpTerminalError(id) { terminate(s, stream, error: error.errno) }
    }

    /// Writes `a` then `b` into the application's end, counted; when it is full, raises its
    /// send buffer to `pushBuffer` once and tries again.
    private func writeToApp(_ s: Socket, _ a: UnsafeRawBufferPointer,
                            _ b: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) -> PairIO.Result {
        while true {
            let result = PairIO.write(s.fd, a, b)
            switch result {
            case .done(let n):
                counters.appBytesOut &+= UInt64(n)
            case .wouldBlock where !s.pushBufferRaised:
                raisePushBuffer(s)
                continue
            default:
                break
            }
            return result
        }
    }

    // MARK: - Closing

    /// The application closed its last descriptor of the socket (`reset`: with data unread).
    private func applicationClosed(_ s: Socket, _ stream: Socket.Stream, reset: Bool) {
        counters.socketsClosedByApp &+= 1
        stream.appClosed = true
        if !reset && stream.phase == .connected && !stream.writeShut {
            // What it wrote before closing is still sent, then FIN.
            drainAfterClose(s, stream)
        }
        closeDaemonEnd(s)
        if let id = s.stackID {
            if reset || (stack.tcpOptions(id)?.lingerZero ?? false) {
                stack.tcpAbort(id, now: reactor.now)
                s.stackID = nil
            } else if stream.overflow.isEmpty {
                stack.tcpClose(id, now: reactor.now)
                s.stackID = nil
            }
        }
        if s.stackID == nil { release(s) }
    }

    /// Reads what the application wrote before it closed: into the stack while it has room,
    /// the rest (at most the application's send buffer) into `overflow`.
    private func drainAfterClose(_ s: Socket, _ stream: Socket.Stream) {
        while s.fd >= 0 {
            guard case .done(let n) = PairIO.receive(s.fd, into: scratch, count: scratch.count), n > 0 else { break }
            counters.appBytesIn &+= UInt64(n)
            var data = UnsafeRawBufferPointer(scratch.slice(0..<n))
            if stream.overflow.isEmpty, let id = s.stackID {
                let taken = (try? stack.tcpSend(id, data, now: reactor.now)) ?? 0
                data = UnsafeRawBufferPointer(rebasing: data[taken...])
            }
            stream.overflow.append(contentsOf: data)
        }
    }
}

extension SocketService: TCPDirectReceiver {
    /// A large in-order segment of a connected stream whose ring is empty: written into the
    /// pair from the frame it came in (`pushToApp` would copy it into the ring, then out).
    /// Whatever the pair does not take now goes to the ring, and `pushToApp` follows.
    public func tcpTakeDirectly(_ id: SocketID, _ bytes: UnsafeRawBufferPointer) -> Int {
        guard let s = byStack[id], s.fd >= 0, case .stream(let stream) = s.kind,
              stream.phase == .connected, !stream.readShut, !stream.appClosed,
              case .done(let n) = writeToApp(s, bytes) else { return 0 }
        return n
    }
}
