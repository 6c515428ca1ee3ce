import CLinux
import Glibc
import Reactor
import Stack

/// Listeners: listen() and the handoff of accepted connections. Each connection gets its own
/// pair; the application's end travels to the application through the listener's pair, one
/// `lvlip_accept_record` per connection with the descriptor attached (SCM_RIGHTS), so accept
/// readiness is POLLIN of the listener's descriptor and concurrent acceptors each get whole
/// records.
extension SocketService {
    /// listen(2): an unconnected stream becomes a listener (again: a new backlog).
    func listen(_ s: Socket, backlog: Int) -> Int32 {
        guard let id = s.stackID, s.isUnconnected || s.isListening else { return -EINVAL }
        do {
            try stack.tcpListen(id, backlog: backlog < 0 ? 4096 : backlog)
        } catch {
            return -error.errno
        }
        becomeListener(s)
        s.localName = (s.boundAddress, stack.tcpNames(id)?.localPort ?? 0)
        update(s)
        return 0
    }

    private func becomeListener(_ s: Socket) {
        if case .stream = s.kind { s.kind = .listener(Socket.Listener()) }
    }

    func listenerEvent(_ s: Socket, _ listener: Socket.Listener, _ events: IOEvents) {
        if events.contains(.error) {
            closeListener(s, listener, reset: true)
            return
        }
        if events.contains(.writable) { handOff(s, listener) }
        // Otherwise the pair is watched only for its hang-up: the application closed its last
        // descriptor.
        if events.contains(.readHangup) || events.contains(.hangup) { closeListener(s, listener, reset: false) }
        if s.fd >= 0 { refreshInterest(s) }
    }

    func updateListener(_ s: Socket, _ listener: Socket.Listener) {
        handOff(s, listener)
        if s.fd >= 0 {
            chargeBuffers(s)
            refreshInterest(s)
        }
    }

    func listenerInterest(_ listener: Socket.Listener) -> IOEvents {
        listener.handoff.isEmpty ? .readHangup : [.readHangup, .writable]
    }

    /// Hands accepted connections to the application through the listener's pair.
    private func handOff(_ s: Socket, _ listener: Socket.Listener) {
        guard let listenID = s.stackID else { return }
        while s.fd >= 0 {
            if listener.handoff.isEmpty {
                guard let child = try? stack.tcpAccept(listenID) else { break }
                guard s.user.sockets < limits.socketsPerUser else {
                    counters.limitRefusals &+= 1
                    stack.tcpAbort(child, now: reactor.now)
                    continue
                }
                guard let (accepted, appFD) = makeSocket(family: s.family, user: s.user, pid: s.ownerPid, stackID: child) else {
                    break
                }
                counters.socketsAccepted &+= 1
                // The kernel clones the listener: options set on it hold for its connections.
                accepted.options = s.options.inherited
                accepted.reuseAddress = s.reuseAddress
                if let names = stack.tcpNames(child) {
                    accepted.localName = (names.local, names.localPort)
                    accepted.peerName = (names.remote, names.remotePort)
                }
                listener.handoff.append((accepted, appFD))
                refreshInterest(accepted)
                update(accepted)
            }
            let (accepted, appFD) = listener.handoff[0]
            var record = lvlip_accept_record()
            record.magic = LVLIP_ACCEPT_MAGIC
            record.size = UInt32(MemoryLayout<lvlip_accept_record>.size)
            record.ref = accepted.ref
            record.local = wireName(accepted.localName.address, accepted.localName.port)
            record.peer = wireName(accepted.peerName.address, accepted.peerName.port)
            let sent = withUnsafeBytes(of: &record) { PairIO.send(s.fd, $0, attaching: appFD) }
            guard case .done = sent else {
                if case .wouldBlock = sent { counters.handoffWaits &+= 1 }
                break
            }
            Syscall.close(appFD)
            listener.handoff.removeFirst()
        }
    }

    /// The application closed its last descriptor of the listener (`reset`: the pair
    /// reported an error): its connections not yet handed over go with it.
    private func closeListener(_ s: Socket, _ listener: Socket.Listener, reset: Bool) {
        counters.socketsClosedByApp &+= 1
        closeDaemonEnd(s)
        for pending in listener.handoff { Syscall.close(pending.appFD) }
        listener.handoff.removeAll()
        if let id = s.stackID {
            if reset || (stack.tcpOptions(id)?.lingerZero ?? false) {
                stack.tcpAbort(id, now: reactor.now)
            } else {
                stack.tcpClose(id, now: reactor.now)
            }
            s.stackID = nil
        }
        release(s)
    }
}
