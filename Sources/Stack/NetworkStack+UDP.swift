import Timing

/// A received datagram waiting for its application.
public struct UDPDatagram: Sendable {
    public var source: IPv4Address
    public var sourcePort: UInt16
    public var payload: [UInt8]
    /// Where it was sent (one of our addresses, or a broadcast address), and its IP header's
    /// TTL and TOS: what IP_PKTINFO, IP_RECVTTL and IP_RECVTOS tell the application.
    public var destination = IPv4Address(0)
    public var ttl: UInt8 = 0
    public var tos: UInt8 = 0
}

/// An ICMP error about a datagram a socket with IP_RECVERR sent: what Linux queues on the
/// socket's error queue (struct sock_extended_err with SO_EE_ORIGIN_ICMP, the offender, the
/// original destination and the quoted payload).
public struct UDPErrorReport: Sendable, Equatable {
    public var error: SocketError
    public var type: UInt8
    public var code: UInt8
    /// The next-hop MTU of "fragmentation needed", else 0.
    public var info: UInt32
    /// Who sent the ICMP error.
    public var offender: IPv4Address
    /// Where the datagram in error was going.
    public var destination: IPv4Address
    public var destinationPort: UInt16
    /// The start of its payload, as far as the ICMP message quoted it.
    public var payload: [UInt8]
}

/// One UDP socket (RFC 768; host requirements RFC 1122 4.1).
final class UDPSocket {
    let id: SocketID
    var localPort: UInt16 = 0
    /// The local address bound, nil for any.
    var boundAddress: IPv4Address?
    var remote: (address: IPv4Address, port: UInt16)?
    /// The source address chosen at connect (getsockname's address when bound to any).
    var connectedSource: IPv4Address?
    var reuseAddress = false
    var reusePort = false
    var broadcast = false
    /// Bytes of payload plus a per-datagram overhead, bounded by `receiveBuffer` (SO_RCVBUF).
    var queue: [UDPDatagram] = []
    var queueHead = 0
    var queuedBytes = 0
    var receiveBuffer: Int
    var pendingError: SocketError?
    var readinessQueued = false
    /// When the socket was bound, for choosing among sockets sharing a port (SO_REUSEADDR).
    var bindOrder: UInt64 = 0
    /// UDP, or one of the ICMP kinds (NetworkStack+ICMPSockets.swift).
    var kind = DatagramKind.udp
    /// Raw ICMP: ICMP_FILTER, a bit per type (below 32) not to deliver.
    var icmpFilter: UInt32 = 0
    /// IP_RECVERR (ip(7)): ICMP errors about any datagram the socket sent are reported, in
    /// detail, whether it is connected or not.
    var receiveErrors = false
    var errorReports: [UDPErrorReport] = []

    init(id: SocketID, receiveBuffer: Int) {
        self.id = id
        self.receiveBuffer = receiveBuffer
    }

    var queuedCount: Int { queue.count - queueHead }
}

/// The stack's UDP state.
struct UDPTables {
    var sockets: [UDPSocket?] = []
    var generations: [UInt32] = []
    var freeSlots: [Int32] = []
    /// Sockets by local port.
    var byPort: [UInt16: [UDPSocket]] = [:]
    var nextEphemeral: UInt32 = 0
    var bindCounter: UInt64 = 0
    /// Ping sockets by echo identifier (their "port").
    var pingByIdentifier: [UInt16: UDPSocket] = [:]
    var nextIdentifier: UInt16 = 0
    /// Raw ICMP sockets, each given a copy of every ICMP message.
    var rawICMP: [UDPSocket] = []
}

/// UDP (RFC 768, RFC 1122 4.1) and the datagram sockets over it: bind with Linux's reuse
/// rules, send through the IPv4 layer, demultiplex received datagrams (connected sockets
/// first), queue ICMP errors for IP_RECVERR. The header is `UDPPacket` (Wire/UDP.swift);
/// ICMP's datagram sockets share this table (NetworkStack+ICMPSockets).
extension NetworkStack {
    /// UDP socket IDs carry this bit in their index, so one readiness list serves TCP and UDP.
    public static let udpIndexBit: Int32 = 0x4000_0000
    /// The largest UDP payload over IPv4 (65535 - 20 - 8).
    public static let udpMaximumPayload = 65507
    /// Bytes charged per queued datagram beyond its payload (as Linux charges skb truesize).
    static let udpDatagramOverhead = 256

    public static func isUDP(_ id: SocketID) -> Bool { id.index & udpIndexBit != 0 }

    func udpSocket(_ id: SocketID) -> UDPSocket? {
        guard Self.isUDP(id) else { return nil }
        let i = Int(id.index & ~Self.udpIndexBit)
        guard i < udp.sockets.count, udp.generations[i] == id.generation else { return nil }
        return udp.sockets[i]
    }

    func markUDPReadiness(_ s: UDPSocket) {
        guard !s.readinessQueued else { return }
        s.readinessQueued = true
        tcp.readinessChanged.append(s.id)
    }

    // MARK: - Socket API

    /// socket(AF_INET, SOCK_DGRAM).
    public func udpOpen() -> SocketID {
        let index: Int32
        if let free = udp.freeSlots.popLast() {
            index = free
        } else {
            index = Int32(udp.sockets.count)
            udp.sockets.append(nil)
            udp.generations.append(0)
        }
        let id = SocketID(index: index | Self.udpIndexBit, generation: udp.generations[Int(index)])
        udp.sockets[Int(index)] = UDPSocket(id: id, receiveBuffer: configuration.udp.receiveBuffer)
        return id
    }

    /// bind(2). A port is shared only when every holder set SO_REUSEADDR, or every holder set
    /// SO_REUSEPORT (Linux's rules, without the per-user check).
    public func udpBind(_ id: SocketID, address: IPv4Address?, port: UInt16) throws(SocketError) {
        guard let s = udpSocket(id) else { throw .badSocket }
        if s.kind != .udp { return try icmpBind(s, address: address, identifier: port) }
        guard s.localPort == 0 else { throw .invalidArgument }
        // Ours, loopback (as Linux, any of 127.0.0.0/8), or a broadcast address to hear it.
        if let address, !isBindable(address), address != configuration.interface.subnetBroadcast,
           !address.isLimitedBroadcast {
            throw .addressNotAvailable
        }
        let bound = address.flatMap { $0.isUnspecified ? nil : $0 }
        var chosen = port
        if chosen == 0 {
            guard let p = udpEphemeralPort() else { throw .addressInUse }
            chosen = p
        } else if let holders = udp.byPort[chosen] {
            for other in holders where other.boundAddress == nil || bound == nil || other.boundAddress == bound {
                let shared = (s.reuseAddress && other.reuseAddress) || (s.reusePort && other.reusePort)
                guard shared else { throw .addressInUse }
            }
        }
        s.localPort = chosen
        s.boundAddress = bound
        udp.bindCounter &+= 1
        s.bindOrder = udp.bindCounter
        udp.byPort[chosen, default: []].append(s)
    }

    private func udpEphemeralPort() -> UInt16? {
        let range = configuration.udp.ephemeralPorts
        let count = UInt32(range.upperBound - range.lowerBound) + 1
        let offset = UInt32(truncatingIfNeeded: secretHash(0x7564, 0, nil, 0))
        for i in 0..<count {
            let port = UInt16(UInt32(range.lowerBound) + (offset &+ udp.nextEphemeral &+ i) % count)
            if udp.byPort[port] == nil {
                udp.nextEphemeral &+= i + 1
                return port
            }
        }
        return nil
    }

    /// connect(2): fixes the peer (and binds an ephemeral port if needed). `nil` dissolves
    /// the association (connect with AF_UNSPEC).
    public func udpConnect(_ id: SocketID, to peer: (address: IPv4Address, port: UInt16)?) throws(SocketError) {
        guard let s = udpSocket(id) else { throw .badSocket }
        guard let peer else {
            s.remote = nil
            s.connectedSource = nil
            return
        }
        if s.kind != .udp { return try icmpConnect(s, to: peer.address) }
        guard peer.port != 0 else { throw .connectionRefused }
        guard isLocal(peer.address) || route(peer.address) != nil, !peer.address.isUnspecified else {
            throw .networkUnreachable
        }
        if peer.address.isLimitedBroadcast || peer.address == configuration.interface.subnetBroadcast {
            guard s.broadcast else { throw .permissionDenied }
        }
        let source = try udpSource(s, toward: peer.address)
        if s.localPort == 0 { try udpBind(id, address: nil, port: 0) }
        s.remote = peer
        s.connectedSource = source
        s.pendingError = nil
    }

    /// sendto(2): one datagram to `destination`, or to the connected peer. Returns the payload
    /// length. Datagrams larger than the MTU are fragmented.
    @discardableResult
    public func udpSend(_ id: SocketID, to destination: (address: IPv4Address, port: UInt16)?,
                        _ payload: UnsafeRawBufferPointer, now: Instant) throws(SocketError) -> Int {
        guard let s = udpSocket(id) else { throw .badSocket }
        if s.kind != .udp { return try icmpSend(s, to: destination?.address, payload, now: now) }
        if let error = s.pendingError, s.remote != nil {
            s.pendingError = nil
            throw error
        }
        guard let to = destination ?? s.remote else { throw .destinationRequired }
        guard payload.count <= Self.udpMaximumPayload else { throw .messageTooLong }
        guard to.port != 0 else { throw .invalidArgument }
        let broadcast = to.address.isLimitedBroadcast || to.address == configuration.interface.subnetBroadcast
        if broadcast && !s.broadcast { throw .permissionDenied }
        guard !to.address.isUnspecified, !to.address.isMulticast, isLocal(to.address) || route(to.address) != nil else {
            throw .networkUnreachable
        }
        let source = try udpSource(s, toward: to.address)
        if s.localPort == 0 { try udpBind(id, address: nil, port: 0) }
        let datagram = scratch.slice(0..<UDPPacket.headerLength + payload.count)
        datagram.copy(payload, to: UDPPacket.headerLength)
        UDPPacket.writeHeader(into: datagram, sourcePort: s.localPort, destinationPort: to.port, source: source,
                              destination: to.address)
        guard sendIPv4(to: to.address, from: source, proto: .udp, payload: UnsafeRawBufferPointer(datagram), now: now) else {
            counters.udpSndbufErrors &+= 1
            throw .networkUnreachable
        }
        counters.udpOutDatagrams &+= 1
        return payload.count
    }

    /// The source address of a datagram from `s` to `destination`: the address it is bound to
    /// (unless a broadcast address), else as the route picks it. A loopback-bound socket
    /// cannot reach the link (EINVAL, as Linux's route lookup refuses it).
    private func udpSource(_ s: UDPSocket, toward destination: IPv4Address) throws(SocketError) -> IPv4Address {
        if let bound = s.boundAddress, isLocal(bound) {
            guard sourceUsable(bound, toward: destination) else { throw .invalidArgument }
            return bound
        }
        if let remote = s.remote, remote.address == destination, let source = s.connectedSource { return source }
        return sourceAddress(toward: destination)
    }

    /// The next datagram, removed from the queue (or only looked at, when peeking).
    public func udpReceive(_ id: SocketID, peek: Bool = false) -> UDPDatagram? {
        guard let s = udpSocket(id), s.queueHead < s.queue.count else { return nil }
        let datagram = s.queue[s.queueHead]
        guard !peek else { return datagram }
        s.queueHead += 1
        s.queuedBytes -= datagram.payload.count + Self.udpDatagramOverhead
        if s.queueHead == s.queue.count {
            s.queue.removeAll(keepingCapacity: true)
            s.queueHead = 0
        } else if s.queueHead > 64 && s.queueHead * 2 > s.queue.count {
            s.queue.removeFirst(s.queueHead)
            s.queueHead = 0
        }
        return datagram
    }

    public func udpQueued(_ id: SocketID) -> Int { udpSocket(id)?.queuedCount ?? 0 }

    /// SO_ERROR: the pending error (an ICMP error about a datagram of a connected socket).
    public func udpTakeError(_ id: SocketID) -> SocketError? {
        guard let s = udpSocket(id) else { return nil }
        defer { s.pendingError = nil }
        return s.pendingError
    }

    public func udpHasError(_ id: SocketID) -> Bool {
        guard let s = udpSocket(id) else { return false }
        return s.pendingError != nil || !s.errorReports.isEmpty
    }

    /// The socket's names: local address (nil: any) and port, and the peer if connected.
    public func udpNames(_ id: SocketID) -> (local: IPv4Address?, localPort: UInt16, remote: (address: IPv4Address, port: UInt16)?)? {
        guard let s = udpSocket(id) else { return nil }
        return (s.boundAddress ?? s.connectedSource, s.localPort, s.remote)
    }

    /// SO_REUSEADDR, SO_REUSEPORT, SO_BROADCAST, SO_RCVBUF.
    public func udpSetOptions(_ id: SocketID, reuseAddress: Bool? = nil, reusePort: Bool? = nil, broadcast: Bool? = nil,
                              receiveBuffer: Int? = nil) {
        guard let s = udpSocket(id) else { return }
        if let reuseAddress { s.reuseAddress = reuseAddress }
        if let reusePort { s.reusePort = reusePort }
        if let broadcast { s.broadcast = broadcast }
        if let receiveBuffer { s.receiveBuffer = receiveBuffer }
    }

    public func udpOptions(_ id: SocketID) -> (reuseAddress: Bool, reusePort: Bool, broadcast: Bool, receiveBuffer: Int)? {
        guard let s = udpSocket(id) else { return nil }
        return (s.reuseAddress, s.reusePort, s.broadcast, s.receiveBuffer)
    }

    /// close(2).
    public func udpClose(_ id: SocketID) {
        guard let s = udpSocket(id) else { return }
        if s.kind != .udp { icmpForget(s) }
        if s.localPort != 0, var holders = udp.byPort[s.localPort] {
            holders.removeAll { $0 === s }
            udp.byPort[s.localPort] = holders.isEmpty ? nil : holders
        }
        let i = Int(id.index & ~Self.udpIndexBit)
        udp.sockets[i] = nil
        udp.generations[i] &+= 1
        udp.freeSlots.append(Int32(i))
    }

    /// Every live UDP socket, for display.
    public var udpSocketIDs: [SocketID] { udp.sockets.compactMap { $0?.id } }

    // MARK: - Input

    func receiveUDP(_ datagram: IPv4Datagram, now: Instant) {
        let packet: UDPPacket
        do {
            packet = try UDPPacket(datagram.payload, source: datagram.source, destination: datagram.destination,
                                   checksumVerified: datagram.checksumVerified)
        } catch {
            if case .badChecksum = error { counters.udpInCsumErrors &+= 1 }
            counters.udpInErrors &+= 1
            return
        }
        let sourcePort = packet.sourcePort
        let destinationPort = packet.destinationPort
        let payload = packet.payload
        let holders = udp.byPort[destinationPort] ?? []
        if datagram.broadcast {
            // Broadcasts go to every socket on the port bound to any or to the broadcast address.
            var delivered = false
            for s in holders where s.boundAddress == nil || s.boundAddress == datagram.destination {
                if let remote = s.remote, remote.address != datagram.source || remote.port != sourcePort { continue }
                enqueue(s, datagram, port: sourcePort, payload: payload)
                delivered = true
            }
            if !delivered { counters.udpNoPorts &+= 1 }
            return
        }
        guard let s = udpLookup(holders, datagram: datagram, sourcePort: sourcePort) else {
            counters.udpNoPorts &+= 1
            sendICMPError(type: .destinationUnreachable, code: UnreachableCode.port, about: datagram, now: now)
            return
        }
        enqueue(s, datagram, port: sourcePort, payload: payload)
    }

    /// The socket a unicast datagram is for: a connected one matching the peer first, then one
    /// bound to our address, then one bound to any; among equals the reuseport group hashes
    /// by peer, otherwise the most recently bound wins (as Linux).
    private func udpLookup(_ holders: [UDPSocket], datagram: IPv4Datagram, sourcePort: UInt16) -> UDPSocket? {
        var best: UDPSocket?
        var bestScore = -1
        var group: [UDPSocket] = []
        for s in holders {
            var score = 0
            if let remote = s.remote {
                guard remote.address == datagram.source, remote.port == sourcePort else { continue }
                score += 4
            }
            if let bound = s.boundAddress {
                guard bound == datagram.destination else { continue }
                score += 2
            }
            if score > bestScore || (score == bestScore && s.bindOrder > (best?.bindOrder ?? 0)) {
                if score > bestScore { group.removeAll() }
                best = s
                bestScore = score
            }
            if score == bestScore && s.reusePort { group.append(s) }
        }
        if group.count > 1, let chosen = best, chosen.reusePort {
            let h = secretHash(0x7270, sourcePort, IPAddress(datagram.source), 0)
            return group[Int(h % UInt64(group.count))]
        }
        return best
    }

    func enqueue(_ s: UDPSocket, _ datagram: IPv4Datagram, port: UInt16, payload: UnsafeRawBufferPointer) {
        let cost = payload.count + Self.udpDatagramOverhead
        guard s.queuedBytes + cost <= s.receiveBuffer else {
            // A full receive buffer drops the datagram (Linux: RcvbufErrors and InErrors).
            counters.udpRcvbufErrors &+= 1
            counters.udpInErrors &+= 1
            return
        }
        let header = datagram.header
        s.queue.append(UDPDatagram(source: datagram.source, sourcePort: port, payload: Array(payload),
                                   destination: datagram.destination, ttl: header.count > 8 ? header[8] : 0,
                                   tos: header.count > 1 ? header[1] : 0))
        s.queuedBytes += cost
        if s.kind == .udp { counters.udpInDatagrams &+= 1 }
        markUDPReadiness(s)
    }

    /// An ICMP error about a datagram we sent: connected sockets learn the hard ones as their
    /// error (ECONNREFUSED for port unreachable), as Linux without IP_RECVERR; sockets with
    /// IP_RECVERR, connected or not, get a report of any for their error queue instead.
    func udpICMPError(_ message: ICMPMessage, offender: IPv4Address, destination: IPv4Address, sourcePort: UInt16,
                      destinationPort: UInt16, quoted: UnsafeRawBufferPointer) {
        guard let holders = udp.byPort[sourcePort] else { return }
        let (error, fatal) = Self.icmpErrorConversion(type: message.type, code: message.code)
        for s in holders {
            if let remote = s.remote, remote.address != destination || remote.port != destinationPort { continue }
            if s.receiveErrors {
                queueErrorReport(s, message, error: error, offender: offender, destination: destination,
                                 port: destinationPort, quoted: quoted)
            } else {
                // Without IP_RECVERR only hard errors reach a connected socket (Linux's
                // __udp4_lib_err): a host or network unreachable may be transient.
                guard s.remote != nil, fatal else { continue }
                s.pendingError = error
            }
            markUDPReadiness(s)
        }
    }

    /// Puts a report on an IP_RECVERR socket's error queue, bounded as Linux bounds it by the
    /// receive buffer.
    func queueErrorReport(_ s: UDPSocket, _ message: ICMPMessage, error: SocketError, offender: IPv4Address,
                          destination: IPv4Address, port: UInt16, quoted: UnsafeRawBufferPointer) {
        if s.errorReports.count >= 64 { s.errorReports.removeFirst() }
        let info = message.type == .destinationUnreachable && message.code == UnreachableCode.fragmentationNeeded
            ? UInt32(message.bytes.be16(6)) : 0
        s.errorReports.append(UDPErrorReport(error: error, type: message.type.rawValue, code: message.code, info: info,
                                             offender: offender, destination: destination, destinationPort: port,
                                             payload: Array(quoted)))
        markUDPReadiness(s)
    }

    /// IP_RECVERR.
    public func udpSetReceiveErrors(_ id: SocketID, _ on: Bool) {
        guard let s = udpSocket(id) else { return }
        s.receiveErrors = on
        if !on { s.errorReports.removeAll() }
    }

    /// The oldest report on an IP_RECVERR socket's error queue, removed.
    public func udpTakeErrorReport(_ id: SocketID) -> UDPErrorReport? {
        guard let s = udpSocket(id), !s.errorReports.isEmpty else { return nil }
        return s.errorReports.removeFirst()
    }

    /// Clears the readiness flag of a UDP socket taken from the readiness list.
    func clearUDPReadiness(_ id: SocketID) { udpSocket(id)?.readinessQueued = false }
}
