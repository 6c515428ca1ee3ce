import Timing

/// A received datagram waiting for its application. Addresses are of the datagram's family:
/// an IPv4 datagram read by a dual-stack IPv6 socket shows ::ffff:a.b.c.d.
public struct UDPDatagram: Sendable {
    public var source: IPAddress
    public var sourcePort: UInt16
    public var payload: [UInt8]
    /// Where it was sent (one of our addresses, or a broadcast address), and its IP header's
    /// TTL and TOS (IPv6: hop limit and traffic class): what IP_PKTINFO, IP_RECVTTL and
    /// IP_RECVTOS (IPV6_RECVPKTINFO, IPV6_RECVHOPLIMIT, IPV6_RECVTCLASS) tell the application.
    public var destination = IPAddress.anyIPv4
    public var ttl: UInt8 = 0
    public var tos: UInt8 = 0
}

/// An ICMP or ICMPv6 error about a datagram a socket with IP_RECVERR (IPV6_RECVERR) sent:
/// what Linux queues on the socket's error queue (struct sock_extended_err, the offender, the
/// original destination and the quoted payload).
public struct UDPErrorReport: Sendable, Equatable {
    public var error: SocketError
    /// The ICMP type and code, ICMPv6's for an IPv6 datagram.
    public var type: UInt8
    public var code: UInt8
    /// IPv4: the next-hop MTU of "fragmentation needed", else 0. IPv6: the message's 32-bit
    /// parameter (the MTU, the Parameter Problem's pointer), as Linux's ee_info.
    public var info: UInt32
    /// Who sent the ICMP error.
    public var offender: IPAddress
    /// Where the datagram in error was going.
    public var destination: IPAddress
    public var destinationPort: UInt16
    /// The start of its payload, as far as the ICMP message quoted it.
    public var payload: [UInt8]

    /// sock_extended_err's ee_origin: SO_EE_ORIGIN_ICMP (2) or SO_EE_ORIGIN_ICMP6 (3).
    public var origin: UInt8 { offender.isIPv4 ? 2 : 3 }
}

/// One UDP socket (RFC 768; host requirements RFC 1122 4.1) of either family.
final class UDPSocket {
    let id: SocketID
    /// socket(2)'s domain. An IPv6 socket names IPv4 endpoints as v4-mapped addresses.
    let family: AddressFamily
    /// IPV6_V6ONLY: an IPv6 socket bound to `::` without it is dual-stack and also receives
    /// IPv4 datagrams (RFC 3493 5.3). Fixed once the socket has a port.
    var v6Only = false
    var localPort: UInt16 = 0
    /// The local address bound: its family's any (0.0.0.0 or ::) until bound to an address.
    /// An IPv6 socket bound to ::ffff:0.0.0.0 is IPv4's any, as on Linux.
    var localAddress: IPAddress
    var remote: (address: IPAddress, port: UInt16)?
    /// The source address chosen at connect (getsockname's address when bound to any).
    var connectedSource: IPAddress?
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

    init(id: SocketID, family: AddressFamily, receiveBuffer: Int) {
        self.id = id
        self.family = family
        self.localAddress = family.any
        self.receiveBuffer = receiveBuffer
    }

    var queuedCount: Int { queue.count - queueHead }

    /// Bound to `::` without IPV6_V6ONLY: the socket's name covers both families.
    var isDualStack: Bool { localAddress == .anyIPv6 && !v6Only }

    /// Whether the socket's local name takes datagrams of a family (ipv4: IPv4 ones).
    func takes(ipv4: Bool) -> Bool { localAddress.isIPv4 == ipv4 || ipv4 && isDualStack }

    /// Whether a datagram sent to `destination` is for the socket's local name: its address,
    /// or any address of the datagram's family (Linux's compute_score for UDP).
    func accepts(_ destination: IPAddress) -> Bool {
        localAddress.isUnspecified ? takes(ipv4: destination.isIPv4) : localAddress == destination
    }
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

/// UDP (RFC 768, RFC 1122 4.1; over IPv6 RFC 8200 8) and the datagram sockets over it, one
/// UDP for both families: bind with Linux's reuse rules and its rules across families, send
/// through the IPv4 or IPv6 layer. Receiving and ICMP errors are in NetworkStack+UDPInput.
/// The header is `UDPPacket` (Wire/UDP.swift); ICMP's datagram sockets share this table
/// (NetworkStack+ICMPSockets).
extension NetworkStack {
    /// UDP socket IDs carry this bit in their index, so one readiness list serves TCP and UDP.
    public static let udpIndexBit: Int32 = 0x4000_0000
    /// The largest UDP payload over IPv4 (65535 - 20 - 8).
    public static let udpMaximumPayload = 65507
    /// The largest over IPv6, whose payload length excludes its header (65535 - 8).
    public static let udp6MaximumPayload = 65527
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

    /// socket(AF_INET, SOCK_DGRAM), or AF_INET6 with `.ipv6`.
    public func udpOpen(family: AddressFamily = .ipv4) -> SocketID {
        let index: Int32
        if let free = udp.freeSlots.popLast() {
            index = free
        } else {
            index = Int32(udp.sockets.count)
            udp.sockets.append(nil)
            udp.generations.append(0)
        }
        let id = SocketID(index: index | Self.udpIndexBit, generation: udp.generations[Int(index)])
        udp.sockets[Int(index)] = UDPSocket(id: id, family: family, receiveBuffer: configuration.udp.receiveBuffer)
        return id
    }

    /// bind(2) to `address` (nil: the socket's family's any) and `port` (0: an ephemeral one).
    /// The address must be of the socket's family: IPv4 for an IPv6 socket only as v4-mapped
    /// (the service's part) and not with IPV6_V6ONLY. Names overlap as TCP's do (Linux's
    /// ipv6_rcv_saddr_equal: a dual-stack `::` overlaps every name of both families); an
    /// overlapping port is shared only when every holder set SO_REUSEADDR, or every holder
    /// set SO_REUSEPORT (Linux's rules, without the per-user check).
    public func udpBind(_ id: SocketID, address: IPAddress? = nil, port: UInt16) throws(SocketError) {
        guard let s = udpSocket(id) else { throw .badSocket }
        if s.kind != .udp {
            guard let v4 = (address ?? .anyIPv4).v4 else { throw .invalidArgument }
            return try icmpBind(s, address: v4, identifier: port)
        }
        guard s.localPort == 0 else { throw .invalidArgument }
        let address = address ?? s.family.any
        guard s.family == .ipv6 || address.isIPv4, !(address.isIPv4 && s.family == .ipv6 && s.v6Only) else {
            throw .invalidArgument
        }
        // Ours, loopback (as Linux, any of 127.0.0.0/8 or ::1), or an IPv4 broadcast address
        // to hear it.
        if !isBindable(address) {
            guard let v4 = address.v4, v4 == configuration.interface.subnetBroadcast || v4.isLimitedBroadcast else {
                throw .addressNotAvailable
            }
        }
        let dual = address == .anyIPv6 && !s.v6Only
        var chosen = port
        if chosen == 0 {
            guard let p = udpEphemeralPort() else { throw .addressInUse }
            chosen = p
        } else if let holders = udp.byPort[chosen] {
            for other in holders where Self.localNamesOverlap(address, dual, other.localAddress, other.isDualStack) {
                let shared = (s.reuseAddress && other.reuseAddress) || (s.reusePort && other.reusePort)
                guard shared else { throw .addressInUse }
            }
        }
        s.localPort = chosen
        s.localAddress = address
        udp.bindCounter &+= 1
        s.bindOrder = udp.bindCounter
        udp.byPort[chosen, default: []].append(s)
    }

    /// IPV6_V6ONLY: only an IPv6 socket has it, and only before it has a port (Linux: EINVAL).
    public func udpSetV6Only(_ id: SocketID, _ on: Bool) throws(SocketError) {
        guard let s = udpSocket(id) else { throw .badSocket }
        guard s.family == .ipv6, s.kind == .udp, s.localPort == 0 else { throw .invalidArgument }
        s.v6Only = on
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
    public func udpConnect(_ id: SocketID, to peer: (address: IPAddress, port: UInt16)?) throws(SocketError) {
        guard let s = udpSocket(id) else { throw .badSocket }
        guard let peer else {
            s.remote = nil
            s.connectedSource = nil
            return
        }
        if s.kind != .udp {
            guard let v4 = peer.address.v4 else { throw .invalidArgument }
            return try icmpConnect(s, to: v4)
        }
        guard peer.port != 0 else { throw .connectionRefused }
        try udpCheckFamily(s, peer.address)
        guard !peer.address.isUnspecified, isRoutable(peer.address, now: clock) else { throw .networkUnreachable }
        if isBroadcast(peer.address) {
            guard s.broadcast else { throw .permissionDenied }
        }
        let source = try udpSource(s, toward: peer.address)
        if s.localPort == 0 { try udpBind(id, address: nil, port: 0) }
        s.remote = peer
        s.connectedSource = source
        s.pendingError = nil
    }

    /// sendto(2): one datagram to `destination`, or to the connected peer. Returns the payload
    /// length. Datagrams larger than the path MTU are fragmented, IPv4's and IPv6's.
    @discardableResult
    public func udpSend(_ id: SocketID, to destination: (address: IPAddress, port: UInt16)?,
                        _ payload: UnsafeRawBufferPointer, now: Instant) throws(SocketError) -> Int {
        guard let s = udpSocket(id) else { throw .badSocket }
        if s.kind != .udp {
            guard destination.map({ $0.address.isIPv4 }) ?? true else { throw .invalidArgument }
            return try icmpSend(s, to: destination?.address.v4, payload, now: now)
        }
        if let error = s.pendingError, s.remote != nil {
            s.pendingError = nil
            throw error
        }
        guard let to = destination ?? s.remote else { throw .destinationRequired }
        let v4 = to.address.isIPv4
        guard payload.count <= (v4 ? Self.udpMaximumPayload : Self.udp6MaximumPayload) else { throw .messageTooLong }
        guard to.port != 0 else { throw .invalidArgument }
        try udpCheckFamily(s, to.address)
        if isBroadcast(to.address) && !s.broadcast { throw .permissionDenied }
        guard !to.address.isUnspecified, !to.address.isMulticast, isRoutable(to.address, now: now) else {
            throw .networkUnreachable
        }
        let source = try udpSource(s, toward: to.address)
        if s.localPort == 0 { try udpBind(id, address: nil, port: 0) }
        let datagram = UnsafeRawBufferPointer(scratch.slice(0..<UDPPacket.headerLength + payload.count))
        scratch.copy(payload, to: UDPPacket.headerLength)
        UDPPacket.writeHeader(into: scratch.slice(0..<datagram.count), sourcePort: s.localPort, destinationPort: to.port,
                              source: source, destination: to.address)
        guard sendIP(to: to.address, from: source, proto: .udp, payload: datagram, now: now) else {
            if v4 { counters.udpSndbufErrors &+= 1 } else { counters.udp6SndbufErrors &+= 1 }
            throw .networkUnreachable
        }
        if v4 { counters.udpOutDatagrams &+= 1 } else { counters.udp6OutDatagrams &+= 1 }
        return payload.count
    }

    /// Whether `s` may address `peer`: an IPv4 socket only IPv4 ones (the service refuses the
    /// other family before), an IPv6 socket IPv4 ones (v4-mapped) unless IPV6_V6ONLY, as
    /// Linux's udpv6_sendmsg and ip6_datagram_connect answer (ENETUNREACH).
    private func udpCheckFamily(_ s: UDPSocket, _ peer: IPAddress) throws(SocketError) {
        if peer.isIPv4 {
            guard s.family == .ipv4 || !s.v6Only else { throw .networkUnreachable }
        } else {
            guard s.family == .ipv6 else { throw .invalidArgument }
        }
    }

    /// IPv4's limited broadcast or the interface's subnet broadcast.
    private func isBroadcast(_ address: IPAddress) -> Bool {
        guard let v4 = address.v4 else { return false }
        return v4.isLimitedBroadcast || v4 == configuration.interface.subnetBroadcast
    }

    /// The source address of a datagram from `s` to `destination`: the address it is bound to
    /// (unless a broadcast address), else as the route picks it. A loopback-bound socket
    /// cannot reach the link (EINVAL, as Linux's route lookup refuses it), nor a socket bound
    /// to an address of the other family (ENETUNREACH).
    private func udpSource(_ s: UDPSocket, toward destination: IPAddress) throws(SocketError) -> IPAddress {
        let bound = s.localAddress
        if !bound.isUnspecified {
            guard bound.isIPv4 == destination.isIPv4 else { throw .networkUnreachable }
            if isLocal(bound) {
                guard sourceUsable(bound, toward: destination) else { throw .invalidArgument }
                return bound
            }
        }
        if let remote = s.remote, remote.address == destination, let source = s.connectedSource { return source }
        guard let source = sourceAddress(toward: destination) else { throw .networkUnreachable }
        return source
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

    /// The socket's names: local address (its family's any while unbound and unconnected)
    /// and port, and the peer if connected.
    public func udpNames(_ id: SocketID) -> (local: IPAddress, localPort: UInt16, remote: (address: IPAddress, port: UInt16)?)? {
        guard let s = udpSocket(id) else { return nil }
        let local = s.localAddress.isUnspecified ? s.connectedSource ?? s.localAddress : s.localAddress
        return (local, s.localPort, s.remote)
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

    public func udpOptions(_ id: SocketID) -> (reuseAddress: Bool, reusePort: Bool, broadcast: Bool, receiveBuffer: Int,
                                               v6Only: Bool)? {
        guard let s = udpSocket(id) else { return nil }
        return (s.reuseAddress, s.reusePort, s.broadcast, s.receiveBuffer, s.v6Only)
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
}
