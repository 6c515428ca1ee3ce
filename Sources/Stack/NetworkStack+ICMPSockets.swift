import Timing

/// What a datagram socket carries. Besides UDP, the two ICMP sockets Linux offers
/// applications (so that `ping` run through lvlip measures lvlip):
/// - `ping`: socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP), Linux's ping sockets (icmp(7)): the
///   application writes ICMP echo requests (header and data); the stack owns the identifier,
///   which plays the port's part (bind/getsockname), fills it in and computes the checksum;
///   echo replies carrying that identifier come back, header and data, without IP header.
/// - `rawICMP`: socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) (raw(7)): written messages are sent as
///   they are (the application computes the checksum); every ICMP message the stack receives
///   is delivered to every raw socket whose ICMP_FILTER lets its type through, with its IP
///   header, after the stack's own handling (echo requests are still answered by the stack).
public enum DatagramKind: Sendable {
    case udp, ping, rawICMP
}

extension NetworkStack {
    /// The largest ICMP message over IPv4 (65535 - 20).
    public static let icmpMaximumMessage = 65515

    /// socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP), or SOCK_RAW with `raw`.
    public func icmpOpen(raw: Bool) -> SocketID {
        let id = udpOpen()
        let s = udpSocket(id)!
        s.kind = raw ? .rawICMP : .ping
        if raw { udp.rawICMP.append(s) }
        return id
    }

    public func datagramKind(_ id: SocketID) -> DatagramKind? { udpSocket(id)?.kind }

    /// ICMP_FILTER of a raw ICMP socket: a bit per type (0-31) that is not delivered.
    public func icmpSetFilter(_ id: SocketID, _ filter: UInt32) throws(SocketError) {
        guard let s = udpSocket(id), s.kind == .rawICMP else { throw .protocolOption }
        s.icmpFilter = filter
    }

    public func icmpFilter(_ id: SocketID) -> UInt32? {
        guard let s = udpSocket(id), s.kind == .rawICMP else { return nil }
        return s.icmpFilter
    }

    /// bind(2): a local address (any, ours or loopback) and, for a ping socket, its identifier (0: one
    /// the stack picks), unique among ping sockets.
    func icmpBind(_ s: UDPSocket, address: IPv4Address, identifier: UInt16) throws(SocketError) {
        guard isBindable(address) else { throw .addressNotAvailable }
        guard s.kind == .ping else {
            s.localAddress = IPAddress(address)
            return
        }
        guard s.localPort == 0 else { throw .invalidArgument }
        var chosen = identifier
        if chosen == 0 {
            guard let free = freeIdentifier() else { throw .addressInUse }
            chosen = free
        } else if udp.pingByIdentifier[chosen] != nil {
            throw .addressInUse
        }
        s.localAddress = IPAddress(address)
        s.localPort = chosen
        udp.pingByIdentifier[chosen] = s
    }

    private func freeIdentifier() -> UInt16? {
        let start = UInt16(truncatingIfNeeded: secretHash(0x6963, 0, nil, 0)) &+ udp.nextIdentifier
        for i in 0..<UInt16.max {
            let candidate = start &+ i
            if candidate != 0 && udp.pingByIdentifier[candidate] == nil {
                udp.nextIdentifier &+= i &+ 1
                return candidate
            }
        }
        return nil
    }

    /// connect(2): only messages from `peer` are delivered; writes without an address go there.
    func icmpConnect(_ s: UDPSocket, to peer: IPv4Address) throws(SocketError) {
        guard isLocal(peer) || route(peer) != nil, !peer.isUnspecified else { throw .networkUnreachable }
        if let bound = s.localAddress.v4, !sourceUsable(bound, toward: peer) { throw .invalidArgument }
        if peer.isLimitedBroadcast || peer == configuration.interface.subnetBroadcast {
            guard s.broadcast else { throw .permissionDenied }
        }
        if s.kind == .ping && s.localPort == 0 { try icmpBind(s, address: .any, identifier: 0) }
        s.remote = (IPAddress(peer), 0)
    }

    /// sendto(2) of one ICMP message. A ping socket sends only echo requests (code 0) and
    /// stamps them with its identifier and checksum, as Linux's ping_v4_sendmsg does.
    func icmpSend(_ s: UDPSocket, to destination: IPv4Address?, _ message: UnsafeRawBufferPointer,
                  now: Instant) throws(SocketError) -> Int {
        guard let to = destination ?? s.remote?.address.v4 else { throw .destinationRequired }
        guard message.count <= Self.icmpMaximumMessage else { throw .messageTooLong }
        let broadcast = to.isLimitedBroadcast || to == configuration.interface.subnetBroadcast
        if broadcast && !s.broadcast { throw .permissionDenied }
        guard !to.isUnspecified, !to.isMulticast, isLocal(to) || route(to) != nil else { throw .networkUnreachable }
        // From the bound address, or as the route picks it (127.0.0.1 toward loopback); a
        // loopback-bound socket cannot reach the link (EINVAL, as Linux).
        var source = sourceAddress(toward: to)
        if let bound = s.localAddress.v4 {
            guard sourceUsable(bound, toward: to) else { throw .invalidArgument }
            if isLocal(bound) { source = bound }
        }
        var bytes = message
        if s.kind == .ping {
            guard message.count >= ICMPMessage.headerLength,
                  message.u8(ICMPMessage.Field.type) == ICMPType.echoRequest.rawValue,
                  message.u8(ICMPMessage.Field.code) == 0 else { throw .invalidArgument }
            if s.localPort == 0 { try icmpBind(s, address: .any, identifier: 0) }
            scratch.copy(message, to: 0)
            scratch.setBE16(s.localPort, ICMPMessage.Field.identifier)
            scratch.setBE16(0, ICMPMessage.Field.checksum)
            bytes = UnsafeRawBufferPointer(scratch.slice(0..<message.count))
            scratch.setBE16(InternetChecksum.checksum(bytes), ICMPMessage.Field.checksum)
        }
        guard sendIPv4(to: to, from: source, proto: .icmp, payload: bytes, now: now) else { throw .networkUnreachable }
        counters.icmpOutMsgs &+= 1
        if bytes.count >= 1 {
            switch ICMPType(rawValue: bytes.u8(ICMPMessage.Field.type)) {
            case .echoRequest: counters.icmpOutEchos &+= 1
            case .echoReply: counters.icmpOutEchoReps &+= 1
            case .destinationUnreachable: counters.icmpOutDestUnreachs &+= 1
            case .timeExceeded: counters.icmpOutTimeExcds &+= 1
            default: break
            }
        }
        return message.count
    }

    /// An ICMP error about an ICMP message we sent (an echo request that met Host
    /// Unreachable): to the error queue of the raw ICMP sockets with IP_RECVERR, and of the
    /// ping socket owning the quoted echo's identifier if it asked (Linux's raw_icmp_error and
    /// ping_err). ping reads its "Destination Host Unreachable" lines there.
    func icmpSocketError(_ message: ICMPMessage, offender: IPv4Address, destination: IPv4Address,
                         quoted: UnsafeRawBufferPointer) {
        let error = Self.icmpErrorConversion(type: message.type, code: message.code).0
        let report = Self.errorReport(message, error: error, offender: offender, destination: destination, port: 0,
                                      quoted: quoted)
        for s in udp.rawICMP where s.receiveErrors {
            if !s.localAddress.isUnspecified && !isLocal(s.localAddress) { continue }
            queueErrorReport(s, report)
        }
        guard quoted.count >= ICMPMessage.headerLength, quoted.u8(ICMPMessage.Field.type) == ICMPType.echoRequest.rawValue,
              let s = udp.pingByIdentifier[quoted.be16(ICMPMessage.Field.identifier)], s.receiveErrors else { return }
        queueErrorReport(s, report)
    }

    func icmpForget(_ s: UDPSocket) {
        if s.kind == .ping, s.localPort != 0, udp.pingByIdentifier[s.localPort] === s {
            udp.pingByIdentifier[s.localPort] = nil
        }
        if s.kind == .rawICMP { udp.rawICMP.removeAll { $0 === s } }
    }

    /// A received ICMP message (checksum verified) for the application sockets that want it:
    /// an echo reply for the ping socket owning its identifier, and a copy of anything for
    /// each raw socket.
    func deliverToICMPSockets(_ datagram: IPv4Datagram, _ message: ICMPMessage) {
        func wants(_ s: UDPSocket) -> Bool {
            if !s.accepts(IPAddress(datagram.destination)) { return false }
            if let remote = s.remote, remote.address != IPAddress(datagram.source) { return false }
            return true
        }
        if message.type == .echoReply, let s = udp.pingByIdentifier[message.identifier], wants(s) {
            enqueue(s, datagram, port: 0, payload: message.bytes)
        }
        guard !udp.rawICMP.isEmpty else { return }
        let type = message.type.rawValue
        let raw = rawCopy(datagram)
        raw.withUnsafeBytes { bytes in
            for s in udp.rawICMP where wants(s) {
                if type < 32 && s.icmpFilter & (1 << UInt32(type)) != 0 { continue }
                enqueue(s, datagram, port: 0, payload: bytes)
            }
        }
    }

    /// The datagram as a raw socket reads it: its IP header (total length and fragment
    /// fields as for the whole datagram once reassembled, checksum recomputed), then the message.
    private func rawCopy(_ datagram: IPv4Datagram) -> [UInt8] {
        var bytes = [UInt8](datagram.header)
        bytes.append(contentsOf: datagram.payload)
        let total = min(bytes.count, 0xFFFF)
        bytes[2] = UInt8(total >> 8)
        bytes[3] = UInt8(total & 0xFF)
        bytes[6] &= 0x40  // keep DF; no more fragments, offset 0
        bytes[7] = 0
        bytes[10] = 0
        bytes[11] = 0
        let sum = bytes.withUnsafeBytes { InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<datagram.header.count])) }
        bytes[10] = UInt8(sum >> 8)
        bytes[11] = UInt8(sum & 0xFF)
        return bytes
    }
}
