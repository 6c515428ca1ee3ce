import Timing

/// A connection's key in the demultiplexing table.
struct TCPFourTuple: Hashable {
    var remoteAddress: IPAddress
    var remotePort: UInt16
    var localAddress: IPAddress
    var localPort: UInt16

    /// Every bit of the names, in as few words as they fit: an IPv4 pair of addresses in one
    /// (the segment demultiplexer hashes a tuple per segment and per new connection; the
    /// synthesized hash fed six values). Both shapes feed the whole tuple, so equal hashes
    /// come only from Hasher's seeded mixing, never from the layout.
    func hash(into hasher: inout Hasher) {
        let ports = UInt32(remotePort) << 16 | UInt32(localPort)
        if let remote = remoteAddress.v4, let local = localAddress.v4 {
            hasher.combine(UInt64(remote.value) << 32 | UInt64(local.value))
            hasher.combine(ports)
        } else {
            hasher.combine(remoteAddress.bits.high)
            hasher.combine(remoteAddress.bits.low)
            hasher.combine(localAddress.bits.high)
            hasher.combine(localAddress.bits.low)
            hasher.combine(ports)
        }
    }
}

/// The stack's TCP state: the socket slab, the demultiplexing tables and the lists of
/// connections waiting on the owner (readiness, output room, owed ACKs).
struct TCPTables {
    var sockets: [TCPConnection?] = []
    var generations: [UInt32] = []
    var freeSlots: [Int32] = []
    var connections: [TCPFourTuple: TCPConnection] = [:]
    /// Connections in TIME-WAIT (TCPConfiguration.maximumTimeWait).
    var timeWaitCount = 0
    /// Listeners by local name; the address is unspecified for one bound to any.
    var listeners: [TCPLocalName: TCPConnection] = [:]
    /// Listeners per port, whatever their address.
    var listenersOnPort: [UInt16: Int] = [:]
    /// Local ports in use, with the number of sockets using each, whatever their address;
    /// the same per family, and the dual-stack `::` names among them (NetworkStack+TCPBind).
    var portUsers: [UInt16: Int] = [:]
    var familyUsers: [TCPPortFamily: Int] = [:]
    var dualUsers: [UInt16: Int] = [:]
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

/// The connection slab: sockets by `SocketID` (an index and a generation, so a stale ID finds
/// nothing), and the lists the owner of the stack works through after each batch.
extension NetworkStack {

    func tcpSocket(_ id: SocketID) -> TCPConnection? {
        let i = Int(id.index)
        guard i >= 0, i < tcp.sockets.count, tcp.generations[i] == id.generation else { return nil }
        return tcp.sockets[i]
    }

    func allocateSocket(options: TCPSocketOptions) -> TCPConnection {
        let index: Int32
        if let free = tcp.freeSlots.popLast() {
            index = free
        } else {
            index = Int32(tcp.sockets.count)
            tcp.sockets.append(nil)
            tcp.generations.append(0)
        }
        let id = SocketID(index: index, generation: tcp.generations[Int(index)])
        let socket = TCPConnection(id: id, options: options, configuration: configuration.tcp, pool: ringPool)
        tcp.sockets[Int(index)] = socket
        return socket
    }

    func freeSocket(_ socket: TCPConnection) {
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
        let now = advanceClock(now)
        guard !tcp.blockedOnOutbox.isEmpty else { return }
        tcp.takeBlockedOnOutbox()
        for id in tcp.blockedResuming {
            guard let c = tcpSocket(id) else { continue }
            guard !outputFull(c) else {
                tcp.blockedOnOutbox.append(id)
                continue
            }
            c.output(now: now, in: self)
        }
        tcp.blockedResuming.removeAll(keepingCapacity: true)
    }

    func deferAck(_ id: SocketID) { tcp.deferredAcks.append(id) }

    /// Sends the duplicate ACKs that out-of-order segments left owing (SACK compression).
    /// The owner calls this when it has handled the frames at hand, before waiting for more;
    /// `poll(now:)` calls it too.
    public func flushDeferredAcks(now: Instant) {
        let now = advanceClock(now)
        guard !tcp.deferredAcks.isEmpty else { return }
        tcp.takeDeferredAcks()
        for id in tcp.deferredAcksFlushing {
            guard let c = tcpSocket(id), c.deferredAckSegments > 0 else { continue }
            c.ackNow = true
            c.output(now: now, in: self)
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

    /// A connection born of a listener, registered under its names, handshake variables set.
    func makeChild(of listener: TCPConnection, tuple: TCPFourTuple, now: Instant) -> TCPConnection {
        let child = allocateSocket(options: listener.options)
        child.family = listener.family
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

    /// Every live socket, for display (lvlipctl ss).
    public var tcpSocketIDs: [SocketID] { tcp.sockets.compactMap { $0?.id } }
}
