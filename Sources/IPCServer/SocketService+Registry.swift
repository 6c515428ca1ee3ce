import CLinux
import Glibc
import Reactor
import Stack

/// The registry: handles (slot, generation, token) to sockets, users and their quotas,
/// tombstones of finished connections, and the closing of the daemon's ends.
extension SocketService {
    func lookup(_ ref: lvlip_ref) -> Socket? {
        let i = Int(ref.index)
        guard i < slots.count, let s = slots[i], s.generation == ref.generation, s.token == ref.token else { return nil }
        return s
    }

    func user(_ uid: UInt32) -> User {
        if let u = users[uid] { return u }
        let u = User(uid: uid)
        users[uid] = u
        return u
    }

    /// A new pair and record for an accepted connection; the application's end is returned.
    func makeSocket(family: Int32, user: User, pid: Int32, stackID: SocketID) -> (Socket, Int32)? {
        var appFD: Int32 = -1
        var daemonFD: Int32 = -1
        guard lvlip_stream_pair(&appFD, &daemonFD) == 0 else {
            logger.warning("socketpair failed: \(String(cString: strerror(errno)))")
            stack.tcpAbort(stackID, now: reactor.now)
            return nil
        }
        _ = lvlip_set_int_option(appFD, K.SOL_SOCKET, K.SO_SNDBUFFORCE, Self.appBuffer)
        let kind = Socket.Kind.stream(Socket.Stream(phase: .connected, connectReported: true))
        guard let s = adopt(daemonFD: daemonFD, family: family, kind: kind, user: user, pid: pid, stackID: stackID) else {
            Syscall.close(appFD)
            Syscall.close(daemonFD)
            return nil
        }
        return (s, appFD)
    }

    /// The record for a stack socket whose daemon end is `daemonFD` (kept; on failure the
    /// caller's again, and the stack's socket is closed).
    func adopt(daemonFD: Int32, family: Int32, kind: Socket.Kind, user: User, pid: Int32, stackID: SocketID) -> Socket? {
        let index: Int32
        if let free = freeSlots.popLast() {
            index = free
        } else {
            index = Int32(slots.count)
            slots.append(nil)
            generations.append(0)
        }
        tokenCounter &+= 1
        var hash = SipHash24(key0: tokenKey.0, key1: tokenKey.1)
        hash.add(tokenCounter)
        let s = Socket(slot: index, generation: generations[Int(index)], token: hash.finalize(), family: family, kind: kind,
                       user: user, ownerPid: pid, fd: daemonFD)
        slots[Int(index)] = s
        s.stackID = stackID
        s.stackKey = stackID
        byStack[stackID] = s
        user.sockets += 1
        // The name marks the pair as a stack socket for a shim that meets it after exec, and
        // names the socket for IDENTIFY (abstract names are unique: while lvlipd's end
        // holds it, only that end's peer can present it).
        s.named = lvlip_bind_pair_name(daemonFD, daemonPid, UInt32(index), s.generation) == 0
        // A stream's end starts with the kernel's default send buffer (208 KB), enough for
        // most exchanges; the first push that fills it raises it (pushToApp), which saves a
        // system call per short connection. A datagram socket's is its receive queue: now.
        if case .stream = kind {} else { raisePushBuffer(s) }
        // Watched at once for what it waits for: one epoll_ctl per socket, not two (a new
        // stream for what a connected one waits for: streamInterest).
        let events = interest(s)
        do {
            try reactor.register(fd: daemonFD, events: events) { [unowned self, unowned s] events in
                pairEvent(s, events)
            }
            s.interest = events
        } catch {
            logger.warning("cannot watch a socket pair: \(error)")
            s.fd = -1  // still the caller's
            release(s)
            return nil
        }
        return s
    }

    func raisePushBuffer(_ s: Socket) {
        s.pushBufferRaised = true
        _ = lvlip_set_int_option(s.fd, K.SOL_SOCKET, K.SO_SNDBUFFORCE, Self.pushBuffer)
    }

    static func markerPrefix(_ pid: Int32) -> String { "\(LVLIP_PAIR_NAME_PREFIX)\(pid)-" }

    /// IDENTIFY: the socket whose pair `fd` belongs to, by the name of its peer (lvlipd's
    /// end). While lvlipd's end is open the name cannot be anyone else's. Once it is closed
    /// (a finished connection kept for SO_ERROR) the name is free to take, so the pair must
    /// also have been made by lvlipd or by the socket's own user.
    func identify(_ fd: Int32) -> Reply {
        var name = [CChar](repeating: 0, count: 108)
        guard lvlip_peer_abstract_name(fd, &name, name.count) == 0 else { return failedSocket(-ENOTSOCK) }
        let text = String(cString: name)
        let prefix = Self.markerPrefix(daemonPid)
        guard text.hasPrefix(prefix) else { return failedSocket(-ENOTSOCK) }
        let parts = text.dropFirst(prefix.count).split(separator: "-")
        guard parts.count == 2, let index = Int(parts[0]), let generation = UInt32(parts[1]), index < slots.count,
              let s = slots[index], s.generation == generation, s.named else {
            return failedSocket(-ENOTSOCK)
        }
        if s.fd < 0 {
            var pid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
            guard lvlip_peer_credentials(fd, &pid, &uid, &gid) == 0, uid == s.user.uid || uid == getuid() else {
                return failedSocket(-ENOTSOCK)
            }
        }
        return socketReply(s)
    }

    func setInterest(_ s: Socket, _ events: IOEvents) {
        guard s.fd >= 0, events != s.interest else { return }
        s.interest = events
        do {
            try reactor.modify(fd: s.fd, events: events)
        } catch {
            logger.warning("epoll_ctl on a socket pair: \(error)")
        }
    }

    // MARK: - Closing

    func closeDaemonEnd(_ s: Socket) {
        guard s.fd >= 0 else { return }
        reactor.unregister(fd: s.fd)
        closing.append(s.fd)
        s.fd = -1
        s.interest = []
    }

    /// Closes the daemon ends let go during this wake-up. Done last, after the requests that
    /// came meanwhile were read: closing an AF_UNIX socket while descriptors are in flight
    /// (a shim's SOCKET request not read yet) makes the kernel run its garbage collector.
    public func closeReleasedEnds() {
        for fd in closing { Syscall.close(fd) }
        closing.removeAll(keepingCapacity: true)
    }

    /// Forgets the record (its slot may be reused).
    func release(_ s: Socket) {
        closeDaemonEnd(s)
        if let id = s.stackID {
            if s.isDatagram { stack.udpClose(id) } else { stack.tcpClose(id, now: reactor.now) }
            s.stackID = nil
        }
        if case .datagram(let datagram) = s.kind, datagram.waitingForOutput,
           let i = waitingForOutput.firstIndex(where: { $0 === s }) {
            waitingForOutput.remove(at: i)
        }
        guard slots[Int(s.slot)] === s else { return }
        slots[Int(s.slot)] = nil
        generations[Int(s.slot)] &+= 1
        freeSlots.append(s.slot)
        if let key = s.stackKey, byStack[key] === s { byStack[key] = nil }
        charge(s, 0)
        if s.paused, let i = s.user.paused.firstIndex(where: { $0 === s }) { s.user.paused.remove(at: i) }
        s.user.sockets -= 1
        if s.user.sockets == 0 && s.user.buffered == 0 { users[s.user.uid] = nil }
    }

    // MARK: - Tombstones

    /// The connection is over and its data delivered: close the daemon's end so that the
    /// application sees EOF (or ECONNRESET) and EPIPE, and remember the error for a while.
    func terminate(_ s: Socket, _ stream: Socket.Stream, error: Int32) {
        if let id = s.stackID {
            s.finalState = stack.tcpState(id) ?? .closed
            if let e = stack.tcpTakeError(id) { s.pendingError = e.errno }
            if error != 0 { s.pendingError = error }
            byStack[id] = nil
            stack.tcpClose(id, now: reactor.now)
            s.stackID = nil
        } else if error != 0 {
            s.pendingError = error
        }
        stream.phase = .closed
        closeDaemonEnd(s)
        charge(s, 0)
        s.closedAt = reactor.now
        tombstones.append(s)
        expireTombstones()
    }

    func expireTombstones() {
        let now = reactor.now
        var drop = 0
        while drop < tombstones.count {
            let t = tombstones[drop]
            let old = t.closedAt.map { now.nanoseconds(since: $0) > Self.tombstoneSeconds * 1_000_000_000 } ?? true
            guard old || tombstones.count - drop > Self.maxTombstones else { break }
            drop += 1
            release(t)
        }
        if drop > 0 { tombstones.removeFirst(drop) }
    }

    // MARK: - Quotas

    /// Keeps the user's count of buffered bytes in step with the socket's.
    func charge(_ s: Socket, _ bytes: Int) {
        let user = s.user
        user.buffered += bytes - s.buffered
        s.buffered = bytes
        if user.buffered < limits.bufferedBytesPerUser && !user.paused.isEmpty {
            let waiting = user.paused
            user.paused.removeAll()
            for p in waiting {
                p.paused = false
                refreshInterest(p)
            }
        }
    }

    /// Charges a TCP socket for its send and receive queues and what waits to enter them
    /// (`overflow`: a stream's bytes read after its application closed).
    func chargeBuffers(_ s: Socket, overflow: Int = 0) {
        guard let id = s.stackID else { return charge(s, overflow) }
        charge(s, stack.tcpSendQueued(id) + stack.tcpReadable(id) + overflow)
    }
}
