import Timing

/// UDP's input for both families: received datagrams demultiplexed to sockets (connected
/// ones first, the families kept apart as Linux keeps them: a dual-stack `::` socket takes
/// IPv4 datagrams, which it reads from ::ffff:a.b.c.d, a v6-only one does not), Port
/// Unreachable for a closed port, and ICMP and ICMPv6 errors about datagrams we sent, for
/// connected sockets and the IP_RECVERR error queue.
extension NetworkStack {
    func receiveUDP(_ datagram: IPv4Datagram, now: Instant) {
        let source = IPAddress(datagram.source)
        let destination = IPAddress(datagram.destination)
        guard let packet = parseUDP(datagram.payload, source: source, destination: destination,
                                    checksumVerified: datagram.checksumVerified) else { return }
        let sourcePort = packet.sourcePort
        let holders = udp.byPort[packet.destinationPort] ?? []
        let header = datagram.header
        let ttl = header.count > 8 ? header[8] : 0
        let tos = header.count > 1 ? header[1] : 0
        if datagram.broadcast {
            // Broadcasts go to every socket on the port bound to any or to the broadcast address.
            var delivered = false
            for s in holders where s.accepts(destination) {
                if let remote = s.remote, remote.address != source || remote.port != sourcePort { continue }
                enqueue(s, source: source, port: sourcePort, destination: destination, ttl: ttl, tos: tos,
                        payload: packet.payload)
                delivered = true
            }
            if !delivered { counters.udpNoPorts &+= 1 }
            return
        }
        guard let s = udpLookup(holders, source: source, sourcePort: sourcePort, destination: destination) else {
            counters.udpNoPorts &+= 1
            sendICMPError(type: .destinationUnreachable, code: UnreachableCode.port, about: datagram, now: now)
            return
        }
        enqueue(s, source: source, port: sourcePort, destination: destination, ttl: ttl, tos: tos, payload: packet.payload)
    }

    /// The datagram's header checked (a bad checksum or length counted in the family's
    /// counters); nil when it is dropped.
    @inline(__always)
    private func parseUDP(_ payload: UnsafeRawBufferPointer, source: IPAddress, destination: IPAddress,
                          checksumVerified: Bool) -> UDPPacket? {
        do {
            return try UDPPacket(payload, source: source, destination: destination, checksumVerified: checksumVerified)
        } catch {
            let badChecksum: Bool
            if case .badChecksum = error { badChecksum = true } else { badChecksum = false }
            if source.isIPv4 {
                if badChecksum { counters.udpInCsumErrors &+= 1 }
                counters.udpInErrors &+= 1
            } else {
                if badChecksum { counters.udp6InCsumErrors &+= 1 }
                counters.udp6InErrors &+= 1
            }
            return nil
        }
    }

    /// UDP over IPv6 (RFC 8200 8.1: the checksum over the IPv6 pseudo-header is mandatory).
    /// A closed port is answered with Port Unreachable (RFC 4443 3.1 code 4).
    func receiveUDP(_ datagram: IPv6Datagram, now: Instant) {
        let source = IPAddress(datagram.source)
        let destination = IPAddress(datagram.destination)
        guard let packet = parseUDP(datagram.payload, source: source, destination: destination,
                                    checksumVerified: datagram.checksumVerified) else { return }
        let holders = udp.byPort[packet.destinationPort] ?? []
        guard let s = udpLookup(holders, source: source, sourcePort: packet.sourcePort, destination: destination) else {
            counters.udp6NoPorts &+= 1
            sendICMPv6Error(type: .destinationUnreachable, code: ICMPv6Code.portUnreachable, parameter: 0,
                            about: datagram.packet, now: now)
            return
        }
        let bytes = datagram.packet
        let trafficClass = (bytes.u8(0) & 0x0F) << 4 | bytes.u8(1) >> 4
        enqueue(s, source: source, port: packet.sourcePort, destination: destination, ttl: datagram.hopLimit,
                tos: trafficClass, payload: packet.payload)
    }

    /// The socket a unicast datagram is for: a connected one matching the peer first, then one
    /// bound to our address, then one bound to any (an IPv4 socket before a dual-stack IPv6
    /// one); among equals the reuseport group hashes by peer, otherwise the most recently
    /// bound wins (as Linux's compute_score).
    private func udpLookup(_ holders: [UDPSocket], source: IPAddress, sourcePort: UInt16,
                           destination: IPAddress) -> UDPSocket? {
        var best: UDPSocket?
        var bestScore = -1
        var group: [UDPSocket] = []
        for s in holders where s.accepts(destination) {
            var score = s.family == .ipv4 ? 1 : 0
            if let remote = s.remote {
                guard remote.address == source, remote.port == sourcePort else { continue }
                score += 4
            }
            if !s.localAddress.isUnspecified { score += 2 }
            if score > bestScore || (score == bestScore && s.bindOrder > (best?.bindOrder ?? 0)) {
                if score > bestScore { group.removeAll() }
                best = s
                bestScore = score
            }
            if score == bestScore && s.reusePort { group.append(s) }
        }
        if group.count > 1, let chosen = best, chosen.reusePort {
            let h = secretHash(0x7270, sourcePort, source, 0)
            return group[Int(h % UInt64(group.count))]
        }
        return best
    }

    /// An IPv4 datagram for an ICMP socket (NetworkStack+ICMPSockets).
    func enqueue(_ s: UDPSocket, _ datagram: IPv4Datagram, port: UInt16, payload: UnsafeRawBufferPointer) {
        let header = datagram.header
        enqueue(s, source: IPAddress(datagram.source), port: port, destination: IPAddress(datagram.destination),
                ttl: header.count > 8 ? header[8] : 0, tos: header.count > 1 ? header[1] : 0, payload: payload)
    }

    private func enqueue(_ s: UDPSocket, source: IPAddress, port: UInt16, destination: IPAddress, ttl: UInt8, tos: UInt8,
                         payload: UnsafeRawBufferPointer) {
        let v4 = destination.isIPv4
        let cost = payload.count + Self.udpDatagramOverhead
        guard s.queuedBytes + cost <= s.receiveBuffer else {
            // A full receive buffer drops the datagram (Linux: RcvbufErrors and InErrors, of
            // the datagram's family).
            if v4 {
                counters.udpRcvbufErrors &+= 1
                counters.udpInErrors &+= 1
            } else {
                counters.udp6RcvbufErrors &+= 1
                counters.udp6InErrors &+= 1
            }
            return
        }
        s.queue.append(UDPDatagram(source: source, sourcePort: port, payload: Array(payload), destination: destination,
                                   ttl: ttl, tos: tos))
        s.queuedBytes += cost
        if s.kind == .udp {
            if v4 { counters.udpInDatagrams &+= 1 } else { counters.udp6InDatagrams &+= 1 }
        }
        markUDPReadiness(s)
    }

    // MARK: - ICMP errors

    /// An ICMP error about an IPv4 datagram we sent (NetworkStack+ICMP).
    func udpICMPError(_ message: ICMPMessage, offender: IPv4Address, destination: IPv4Address, sourcePort: UInt16,
                      destinationPort: UInt16, quoted: UnsafeRawBufferPointer) {
        let (error, fatal) = Self.icmpErrorConversion(type: message.type, code: message.code)
        udpICMPError(error, fatal: fatal, sourcePort: sourcePort,
                     Self.errorReport(message, error: error, offender: offender, destination: destination,
                                      port: destinationPort, quoted: quoted))
    }

    /// An ICMP or ICMPv6 error about a datagram we sent from `sourcePort` (`report` says to
    /// where): connected sockets learn the hard ones as their error (ECONNREFUSED for port
    /// unreachable), as Linux without IP_RECVERR; sockets with IP_RECVERR, connected or not,
    /// get a report of any for their error queue instead.
    func udpICMPError(_ error: SocketError, fatal: Bool, sourcePort: UInt16, _ report: UDPErrorReport) {
        guard let holders = udp.byPort[sourcePort] else { return }
        for s in holders where s.takes(ipv4: report.destination.isIPv4) {
            if let remote = s.remote, remote.address != report.destination || remote.port != report.destinationPort {
                continue
            }
            if s.receiveErrors {
                queueErrorReport(s, report)
            } else {
                // Without IP_RECVERR only hard errors reach a connected socket (Linux's
                // __udp4_lib_err, __udp6_lib_err): a host or network unreachable may be transient.
                guard s.remote != nil, fatal else { continue }
                s.pendingError = error
            }
            markUDPReadiness(s)
        }
    }

    /// The report of an ICMP (IPv4) error.
    static func errorReport(_ message: ICMPMessage, error: SocketError, offender: IPv4Address, destination: IPv4Address,
                            port: UInt16, quoted: UnsafeRawBufferPointer) -> UDPErrorReport {
        let info = message.type == .destinationUnreachable && message.code == UnreachableCode.fragmentationNeeded
            ? UInt32(message.bytes.be16(6)) : 0
        return UDPErrorReport(error: error, type: message.type.rawValue, code: message.code, info: info,
                              offender: IPAddress(offender), destination: IPAddress(destination), destinationPort: port,
                              payload: Array(quoted))
    }

    /// Puts a report on an IP_RECVERR socket's error queue, bounded as Linux bounds it by the
    /// receive buffer.
    func queueErrorReport(_ s: UDPSocket, _ report: UDPErrorReport) {
        if s.errorReports.count >= 64 { s.errorReports.removeFirst() }
        s.errorReports.append(report)
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
