import Timing

/// One neighbour table entry (RFC 826's translation table, with the reachability states of
/// RFC 1122 2.3.2.1 and Linux's neighbour code: confirmed entries age to stale and are
/// re-confirmed by a unicast probe while still in use, instead of stalling traffic).
struct Neighbor {
    enum State {
        /// Resolving: broadcast requests sent so far.
        case incomplete(requests: Int)
        case reachable
        /// Not confirmed recently; still used, probed on next use.
        case stale
        /// Used while unicast probes confirm it: probes sent so far.
        case probing(requests: Int)

        var name: String {
            switch self {
            case .incomplete: "INCOMPLETE"
            case .reachable: "REACHABLE"
            case .stale: "STALE"
            case .probing: "PROBE"
            }
        }
    }

    var mac: MACAddress?
    var state: State
    var timer: TimerHandle?

    /// Whether frames can be sent to `mac` now (resolved, possibly being re-confirmed).
    var isUsable: Bool {
        if case .incomplete = state { return false }
        return mac != nil
    }
    var pending: [PendingDatagram] = []
    var pendingBytes = 0
}

/// A datagram waiting for its next hop's link address.
struct PendingDatagram {
    var destination: IPv4Address
    var proto: IPProtocol
    var payload: [UInt8]
}

enum Resolution {
    case resolved(MACAddress)
    /// Resolution is under way: queue the datagram.
    case pending
    /// No entry could be made (table full).
    case unavailable
}

extension NetworkStack {
    func receiveARP(_ bytes: UnsafeRawBufferPointer, now: Instant) {
        counters.arpInPackets &+= 1
        let packet: ARPPacket
        do {
            packet = try ARPPacket(bytes)
        } catch .truncated {
            counters.arpInTruncated &+= 1
            return
        } catch {
            counters.arpInUnsupported &+= 1
            return
        }
        let senderIP = packet.senderIP
        let senderMAC = packet.senderMAC
        let targetIP = packet.targetIP
        let operation = packet.operation
        guard operation == .request || operation == .reply else {
            counters.arpInUnknownOperation &+= 1
            return
        }
        guard !senderMAC.isGroup, senderMAC != .zero else {
            counters.arpInBadAddress &+= 1
            return
        }
        if operation == .request { counters.arpInRequests &+= 1 } else { counters.arpInReplies &+= 1 }
        if senderIP == address {
            // RFC 5227 section 2.4: someone else uses our address. Do not learn it.
            if senderMAC != mac { counters.arpInConflicts &+= 1 }
            return
        }
        // RFC 826 "Packet Reception": update an existing entry first (merge), add the sender
        // only if the packet is for us. Probes (sender 0.0.0.0, RFC 5227) and addresses that
        // cannot be a neighbour are never learnt.
        let learnable = !senderIP.isUnspecified && !senderIP.isMulticast && !senderIP.isLimitedBroadcast
            && configuration.interface.contains(senderIP) && senderIP != configuration.interface.subnetBroadcast
        var merged = false
        if learnable, neighbors[senderIP] != nil {
            confirmNeighbor(senderIP, mac: senderMAC, now: now)
            merged = true
        }
        guard targetIP == address else { return }
        if learnable && !merged { addNeighbor(senderIP, mac: senderMAC, now: now) }
        if operation == .request {
            sendARP(.reply, to: senderMAC, targetMAC: senderMAC, targetIP: senderIP)
            counters.arpOutReplies &+= 1
        }
    }

    func sendAnnouncement() {
        // An ARP request with our address as both sender and target (RFC 5227 section 2.3).
        sendARP(.request, to: .broadcast, targetMAC: .zero, targetIP: address)
        counters.arpOutAnnouncements &+= 1
    }

    private func sendARP(_ operation: ARPPacket.Operation, to destination: MACAddress, targetMAC: MACAddress, targetIP: IPv4Address) {
        let queued = outbox.append { buffer in
            let offset = EthernetFrame.writeHeader(into: buffer, destination: destination, source: mac, etherType: .arp)
            let length = ARPPacket.write(into: buffer.suffix(from: offset), operation: operation, senderMAC: mac,
                                         senderIP: address, targetMAC: targetMAC, targetIP: targetIP)
            // Pad to the Ethernet minimum of 60 bytes without FCS (RFC 894).
            let end = offset + length
            let padded = max(end, 60)
            buffer.slice(end..<padded).initializeMemory(as: UInt8.self, repeating: 0)
            return padded
        }
        if queued { counters.linkOutFrames &+= 1 } else { counters.linkOutQueueFull &+= 1 }
    }

    /// The link address for `nextHop`, starting resolution if needed.
    func resolve(_ nextHop: IPv4Address, now: Instant) -> Resolution {
        if let neighbor = neighbors[nextHop] {
            switch neighbor.state {
            case .reachable, .probing:
                return .resolved(neighbor.mac!)
            case .stale:
                // Keep using the address while a unicast probe re-confirms it.
                neighbors[nextHop]!.state = .probing(requests: 1)
                sendARP(.request, to: neighbor.mac!, targetMAC: neighbor.mac!, targetIP: nextHop)
                counters.arpOutRequests &+= 1
                rearmNeighborTimer(nextHop, after: configuration.arp.retransmitMilliseconds, now: now)
                return .resolved(neighbor.mac!)
            case .incomplete:
                return .pending
            }
        }
        guard makeRoom() else { return .unavailable }
        neighbors[nextHop] = Neighbor(mac: nil, state: .incomplete(requests: 1))
        sendARP(.request, to: .broadcast, targetMAC: .zero, targetIP: nextHop)
        counters.arpOutRequests &+= 1
        rearmNeighborTimer(nextHop, after: configuration.arp.retransmitMilliseconds, now: now)
        return .pending
    }

    /// Queues a datagram for a neighbour being resolved, dropping the oldest past the byte
    /// limit (as Linux does with unres_qlen_bytes).
    func enqueuePending(_ datagram: PendingDatagram, for nextHop: IPv4Address) {
        guard neighbors[nextHop] != nil else {
            counters.arpPendingDrops &+= 1
            return
        }
        let limit = configuration.arp.pendingBytesPerNeighbor
        guard datagram.payload.count <= limit else {
            counters.arpPendingDrops &+= 1
            return
        }
        neighbors[nextHop]!.pending.append(datagram)
        neighbors[nextHop]!.pendingBytes += datagram.payload.count
        while neighbors[nextHop]!.pendingBytes > limit {
            let dropped = neighbors[nextHop]!.pending.removeFirst()
            neighbors[nextHop]!.pendingBytes -= dropped.payload.count
            counters.arpPendingDrops &+= 1
        }
    }

    func neighborTimerFired(_ ip: IPv4Address, now: Instant) {
        guard let neighbor = neighbors[ip] else { return }
        neighbors[ip]!.timer = nil
        switch neighbor.state {
        case .reachable:
            neighbors[ip]!.state = .stale
            rearmNeighborTimer(ip, after: configuration.arp.staleMilliseconds, now: now)
        case .stale:
            // Unused since it went stale: forget it (Linux: gc_stale_time).
            neighbors[ip] = nil
        case .incomplete(let requests):
            if requests >= configuration.arp.maxRequests {
                // RFC 1122 2.3.2.1: give up; queued datagrams are lost.
                counters.arpResolutionFailures &+= 1
                counters.arpPendingDrops &+= UInt64(neighbor.pending.count)
                neighbors[ip] = nil
                // Like an ICMP Host Unreachable from ourselves (RFC 1122 2.3.2.1): connections
                // still opening through this neighbour fail with EHOSTUNREACH.
                tcpNeighborUnreachable(IPAddress(ip), now: now)
                reportHostUnreachable(neighbor.pending, now: now)
                return
            }
            neighbors[ip]!.state = .incomplete(requests: requests + 1)
            sendARP(.request, to: .broadcast, targetMAC: .zero, targetIP: ip)
            counters.arpOutRequests &+= 1
            rearmNeighborTimer(ip, after: configuration.arp.retransmitMilliseconds, now: now)
        case .probing(let requests):
            if requests >= configuration.arp.maxRequests {
                counters.arpResolutionFailures &+= 1
                neighbors[ip] = nil
                return
            }
            neighbors[ip]!.state = .probing(requests: requests + 1)
            sendARP(.request, to: neighbor.mac!, targetMAC: neighbor.mac!, targetIP: ip)
            counters.arpOutRequests &+= 1
            rearmNeighborTimer(ip, after: configuration.arp.retransmitMilliseconds, now: now)
        }
    }

    private func addNeighbor(_ ip: IPv4Address, mac: MACAddress, now: Instant) {
        guard makeRoom() else { return }
        neighbors[ip] = Neighbor(mac: mac, state: .reachable)
        rearmNeighborTimer(ip, after: configuration.arp.reachableMilliseconds, now: now)
    }

    private func confirmNeighbor(_ ip: IPv4Address, mac: MACAddress, now: Instant) {
        neighbors[ip]!.mac = mac
        neighbors[ip]!.state = .reachable
        rearmNeighborTimer(ip, after: configuration.arp.reachableMilliseconds, now: now)
        let pending = neighbors[ip]!.pending
        guard !pending.isEmpty else { return }
        neighbors[ip]!.pending = []
        neighbors[ip]!.pendingBytes = 0
        for datagram in pending {
            datagram.payload.withUnsafeBytes { payload in
                emitIPv4(to: mac, destination: datagram.destination, proto: datagram.proto, payload: payload)
            }
        }
    }

    private func rearmNeighborTimer(_ ip: IPv4Address, after milliseconds: UInt64, now: Instant) {
        if let old = neighbors[ip]!.timer { wheel.cancel(old) }
        neighbors[ip]!.timer = wheel.schedule(at: now.adding(milliseconds: milliseconds), .neighbor(ip))
    }

    /// Makes room for one more entry, evicting a stale one if the table is full.
    private func makeRoom() -> Bool {
        guard neighbors.count >= configuration.arp.maxEntries else { return true }
        if let victim = neighbors.first(where: { if case .stale = $0.value.state { true } else { false } }) {
            if let timer = victim.value.timer { wheel.cancel(timer) }
            neighbors[victim.key] = nil
            return true
        }
        counters.arpCacheFull &+= 1
        return false
    }
}
