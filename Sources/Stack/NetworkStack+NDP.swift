import Timing

/// One IPv6 neighbour cache entry (RFC 4861 5.1) with the reachability states of 7.3.2.
struct Neighbor6 {
    enum State {
        /// Resolving: multicast solicitations sent so far.
        case incomplete(solicitations: Int)
        case reachable
        /// Not confirmed recently; used, and moved to DELAY by that use.
        case stale
        /// Used while stale: a unicast probe follows DELAY_FIRST_PROBE_TIME unless confirmed.
        case delay
        /// Unicast solicitations sent so far.
        case probe(solicitations: Int)

        var name: String {
            switch self {
            case .incomplete: "INCOMPLETE"
            case .reachable: "REACHABLE"
            case .stale: "STALE"
            case .delay: "DELAY"
            case .probe: "PROBE"
            }
        }
    }

    var mac: MACAddress?
    var state: State
    var isRouter = false
    var timer: TimerHandle?
    var pending: [PendingPacket6] = []
    var pendingBytes = 0
}

/// A packet waiting for its next hop's link address.
struct PendingPacket6 {
    var source: IPv6Address
    var destination: IPv6Address
    var nextHeader: IPv6NextHeader
    var hopLimit: UInt8
    var payload: [UInt8]
}

/// Neighbour discovery (RFC 4861): answering and sending solicitations, learning from
/// advertisements, the neighbour cache's state machine (7.3), and duplicate address detection
/// of our own addresses (RFC 4862 5.4). Router discovery is NetworkStack+RouterDiscovery;
/// redirects are not acted on; MLD reports (RFC 2710) are not sent: a TAP has no snooping
/// switch that would need them.
extension NetworkStack {
    /// NDP messages carry hop limit 255, which no router can have forwarded (RFC 4861 7.1).
    static let ndpHopLimit: UInt8 = 255

    func receiveNeighborSolicitation(_ message: ICMPv6Message, _ datagram: IPv6Datagram, now: Instant) {
        // RFC 4861 7.1.1 validation.
        guard datagram.hopLimit == Self.ndpHopLimit, message.code == 0, let ns = NeighborMessage(message.bytes),
              !ns.target.isMulticast,
              !datagram.source.isUnspecified || (datagram.destination.isSolicitedNode && ns.sourceLinkLayer == nil)
        else {
            counters.ndp6InInvalid &+= 1
            return
        }
        let target = ns.target
        guard let index = ip6!.index(of: target) else { return }
        switch ip6!.addresses[index].state {
        case .duplicate:
            return
        case .tentative:
            // RFC 4862 5.4.3: another node's DAD probe for the address we are checking means it
            // is a duplicate; a solicitation from an assigned address is not for us yet.
            if datagram.source.isUnspecified { duplicateAddressDetected(index) }
            return
        case .preferred:
            break
        }
        if datagram.source.isUnspecified {
            // Someone checks our address: the answer goes to all nodes, unsolicited (7.2.4).
            sendNeighborAdvertisement(to: .allNodes, target: target, solicited: false, now: now)
            return
        }
        if let mac = ns.sourceLinkLayer { learnLinkLayerAddress(datagram.source, mac: mac, now: now) }
        sendNeighborAdvertisement(to: datagram.source, target: target, solicited: true, now: now)
    }

    /// RFC 4861 7.2.3: a solicitation's source link-layer address creates a STALE entry, or
    /// moves an entry whose address differs to STALE (so does a router advertisement's, 6.3.4).
    func learnLinkLayerAddress(_ ip: IPv6Address, mac: MACAddress, now: Instant) {
        guard let entry = ip6!.neighbors[ip] else {
            guard makeRoom6() else { return }
            ip6!.neighbors[ip] = Neighbor6(mac: mac, state: .stale)
            rearmNeighbor6Timer(ip, after: ip6!.configuration.staleMilliseconds, now: now)
            return
        }
        if case .incomplete = entry.state {
            confirmNeighbor6(ip, mac: mac, state: .stale, now: now)
        } else if entry.mac != mac {
            ip6!.neighbors[ip]!.mac = mac
            ip6!.neighbors[ip]!.state = .stale
            rearmNeighbor6Timer(ip, after: ip6!.configuration.staleMilliseconds, now: now)
        }
    }

    func receiveNeighborAdvertisement(_ message: ICMPv6Message, _ datagram: IPv6Datagram, now: Instant) {
        // RFC 4861 7.1.2 validation.
        guard datagram.hopLimit == Self.ndpHopLimit, message.code == 0, let na = NeighborMessage(message.bytes),
              !na.target.isMulticast, !(datagram.destination.isMulticast && na.isSolicited)
        else {
            counters.ndp6InInvalid &+= 1
            return
        }
        let target = na.target
        if let index = ip6!.index(of: target) {
            // RFC 4862 5.4.4: an advertisement for a tentative address makes it a duplicate;
            // for an assigned one it is a conflict, logged by the counter.
            if ip6!.addresses[index].isTentative { duplicateAddressDetected(index) } else { counters.ndp6AddressConflicts &+= 1 }
            return
        }
        // RFC 4861 7.2.5: advertisements never create entries.
        guard let entry = ip6!.neighbors[target] else { return }
        if case .incomplete = entry.state {
            guard let mac = na.targetLinkLayer else { return }
            ip6!.neighbors[target]!.isRouter = na.isRouter
            confirmNeighbor6(target, mac: mac, state: na.isSolicited ? .reachable : .stale, now: now)
            return
        }
        let changed = na.targetLinkLayer != nil && na.targetLinkLayer != entry.mac
        if !na.isOverride && changed {
            // Keep the cached address, but doubt it.
            if case .reachable = entry.state {
                ip6!.neighbors[target]!.state = .stale
                rearmNeighbor6Timer(target, after: ip6!.configuration.staleMilliseconds, now: now)
            }
            return
        }
        // 7.2.5: a router that says it no longer is one leaves the default router list.
        if entry.isRouter && !na.isRouter && target != ip6!.configuration.gateway { ip6!.routing.removeRouter(target) }
        ip6!.neighbors[target]!.isRouter = na.isRouter
        if let mac = na.targetLinkLayer { ip6!.neighbors[target]!.mac = mac }
        if na.isSolicited {
            ip6!.neighbors[target]!.state = .reachable
            rearmNeighbor6Timer(target, after: ip6!.reachableMilliseconds, now: now)
        } else if changed {
            ip6!.neighbors[target]!.state = .stale
            rearmNeighbor6Timer(target, after: ip6!.configuration.staleMilliseconds, now: now)
        }
    }

    /// The link address for `nextHop`, starting resolution if needed (RFC 4861 7.2.2, 7.3.3).
    func resolve6(_ nextHop: IPv6Address, from source: IPv6Address, now: Instant) -> Resolution {
        if let mac = knownMAC6(nextHop, now: now) { return .resolved(mac) }
        if ip6!.neighbors[nextHop] != nil { return .pending }  // INCOMPLETE
        guard makeRoom6() else { return .unavailable }
        ip6!.neighbors[nextHop] = Neighbor6(mac: nil, state: .incomplete(solicitations: 1))
        sendNeighborSolicitation(target: nextHop, unicastTo: nil, from: source, now: now)
        rearmNeighbor6Timer(nextHop, after: ip6!.configuration.retransmitMilliseconds, now: now)
        return .pending
    }

    /// A neighbour's MAC when the cache has it (REACHABLE, DELAY or PROBE; a STALE entry is
    /// used and moves to DELAY, 7.3.3), without queueing or soliciting; nil when it is
    /// unknown or INCOMPLETE.
    @inline(__always)
    private func knownMAC6(_ ip: IPv6Address, now: Instant) -> MACAddress? {
        guard let entry = ip6!.neighbors[ip] else { return nil }
        switch entry.state {
        case .reachable, .delay, .probe:
            return entry.mac
        case .stale:
            ip6!.neighbors[ip]!.state = .delay
            rearmNeighbor6Timer(ip, after: ip6!.configuration.delayFirstProbeMilliseconds, now: now)
            return entry.mac
        case .incomplete:
            return nil
        }
    }

    /// The next hop's MAC for `destination` when NDP already knows it (knownMAC6), as
    /// knownNextHopMAC(toward:cache:now:) is for IPv4. Nil: the caller takes sendIPv6's
    /// path, which resolves and queues.
    @inline(__always)
    func knownNextHopMAC(toward destination: IPv6Address, now: Instant) -> MACAddress? {
        guard let nextHop = ip6?.nextHop(for: destination, now: now) else { return nil }
        return knownMAC6(nextHop, now: now)
    }

    /// Queues a packet for the neighbour `ip` (its destination or the router toward it) being
    /// resolved, dropping the oldest past the byte limit.
    func enqueuePending6(_ packet: PendingPacket6, nextHop ip: IPv6Address) {
        let limit = ip6!.configuration.pendingBytesPerNeighbor
        guard ip6!.neighbors[ip] != nil, packet.payload.count <= limit else {
            counters.ndp6PendingDrops &+= 1
            return
        }
        ip6!.neighbors[ip]!.pending.append(packet)
        ip6!.neighbors[ip]!.pendingBytes += packet.payload.count
        while ip6!.neighbors[ip]!.pendingBytes > limit {
            let dropped = ip6!.neighbors[ip]!.pending.removeFirst()
            ip6!.neighbors[ip]!.pendingBytes -= dropped.payload.count
            counters.ndp6PendingDrops &+= 1
        }
    }

    func neighbor6TimerFired(_ ip: IPv6Address, now: Instant) {
        guard let entry = ip6?.neighbors[ip] else { return }
        let configuration = ip6!.configuration
        ip6!.neighbors[ip]!.timer = nil
        switch entry.state {
        case .reachable:
            ip6!.neighbors[ip]!.state = .stale
            rearmNeighbor6Timer(ip, after: configuration.staleMilliseconds, now: now)
        case .stale:
            // Unused since it went stale: forget it (Linux: gc_stale_time).
            ip6!.neighbors[ip] = nil
        case .delay:
            ip6!.neighbors[ip]!.state = .probe(solicitations: 1)
            sendNeighborSolicitation(target: ip, unicastTo: entry.mac!, from: nil, now: now)
            rearmNeighbor6Timer(ip, after: configuration.retransmitMilliseconds, now: now)
        case .incomplete(let sent):
            guard sent < configuration.maxMulticastSolicit else {
                // RFC 4861 7.2.2: resolution failed; the queued packets are lost.
                counters.ndp6ResolutionFailures &+= 1
                counters.ndp6PendingDrops &+= UInt64(entry.pending.count)
                ip6!.neighbors[ip] = nil
                tcpNeighborUnreachable(IPAddress(ip), now: now)
                return
            }
            ip6!.neighbors[ip]!.state = .incomplete(solicitations: sent + 1)
            sendNeighborSolicitation(target: ip, unicastTo: nil, from: entry.pending.first?.source, now: now)
            rearmNeighbor6Timer(ip, after: configuration.retransmitMilliseconds, now: now)
        case .probe(let sent):
            guard sent < configuration.maxUnicastSolicit else {
                counters.ndp6ResolutionFailures &+= 1
                ip6!.neighbors[ip] = nil
                return
            }
            ip6!.neighbors[ip]!.state = .probe(solicitations: sent + 1)
            sendNeighborSolicitation(target: ip, unicastTo: entry.mac!, from: nil, now: now)
            rearmNeighbor6Timer(ip, after: configuration.retransmitMilliseconds, now: now)
        }
    }

    private func confirmNeighbor6(_ ip: IPv6Address, mac: MACAddress, state: Neighbor6.State, now: Instant) {
        ip6!.neighbors[ip]!.mac = mac
        ip6!.neighbors[ip]!.state = state
        if case .reachable = state {
            rearmNeighbor6Timer(ip, after: ip6!.reachableMilliseconds, now: now)
        } else {
            rearmNeighbor6Timer(ip, after: ip6!.configuration.staleMilliseconds, now: now)
        }
        let pending = ip6!.neighbors[ip]!.pending
        guard !pending.isEmpty else { return }
        ip6!.neighbors[ip]!.pending = []
        ip6!.neighbors[ip]!.pendingBytes = 0
        // Sending to a STALE entry moves it to DELAY (7.3.3), as any later use would.
        if case .stale = state {
            ip6!.neighbors[ip]!.state = .delay
            rearmNeighbor6Timer(ip, after: ip6!.configuration.delayFirstProbeMilliseconds, now: now)
        }
        for p in pending {
            p.payload.withUnsafeBytes { payload in
                emitIPv6(to: mac, source: p.source, destination: p.destination, nextHeader: p.nextHeader,
                         hopLimit: p.hopLimit, payload: payload)
            }
        }
    }

    private func rearmNeighbor6Timer(_ ip: IPv6Address, after milliseconds: UInt64, now: Instant) {
        if let old = ip6!.neighbors[ip]!.timer { wheel.cancel(old) }
        ip6!.neighbors[ip]!.timer = wheel.schedule(at: now.adding(milliseconds: milliseconds), .neighbor6(ip))
    }

    /// Makes room for one more entry, evicting a stale one if the cache is full.
    private func makeRoom6() -> Bool {
        guard ip6!.neighbors.count >= ip6!.configuration.maxNeighbors else { return true }
        if let victim = ip6!.neighbors.first(where: { if case .stale = $0.value.state { true } else { false } }) {
            if let timer = victim.value.timer { wheel.cancel(timer) }
            ip6!.neighbors[victim.key] = nil
            return true
        }
        counters.ndp6CacheFull &+= 1
        return false
    }

    /// Sends a Neighbor Solicitation (RFC 4861 7.2.2): multicast to the target's
    /// solicited-node address while resolving, unicast to its cached address when probing;
    /// from `source` if given (the address of the packet that prompted it) with our link
    /// address in a source link-layer option.
    private func sendNeighborSolicitation(target: IPv6Address, unicastTo mac: MACAddress?, from source: IPv6Address?,
                                          now: Instant) {
        guard let from = source ?? ip6!.source(for: target) else { return }
        emitNeighborSolicitation(target: target, from: from, to: mac == nil ? target.solicitedNode : target,
                                 mac: mac, sourceLinkLayer: true)
    }

    /// Builds the solicitation in its own buffer, not `scratch`: resolution starts while the
    /// packet that needs it still lies there.
    private func emitNeighborSolicitation(target: IPv6Address, from: IPv6Address, to destination: IPv6Address,
                                          mac: MACAddress?, sourceLinkLayer: Bool) {
        withUnsafeTemporaryAllocation(byteCount: NeighborMessage.length + 8, alignment: 8) { buffer in
            let length = NeighborMessage.write(into: buffer, type: .neighborSolicitation, flags: 0, target: target,
                                               option: sourceLinkLayer ? (NeighborMessage.sourceLinkLayerOption, self.mac) : nil)
            let message = buffer.slice(0..<length)
            ICMPv6Message.setChecksum(message, source: from, destination: destination)
            counters.ip6OutRequests &+= 1
            emitIPv6(to: mac ?? destination.multicastMAC, source: from, destination: destination, nextHeader: .icmpv6,
                     hopLimit: Self.ndpHopLimit, payload: UnsafeRawBufferPointer(message))
        }
        counters.icmp6OutMsgs &+= 1
        counters.icmp6OutNeighborSolicits &+= 1
    }

    /// Sends a Neighbor Advertisement for our `target` with our link address (RFC 4861
    /// 7.2.4): Override set, as for any address that is not anycast.
    private func sendNeighborAdvertisement(to destination: IPv6Address, target: IPv6Address, solicited: Bool,
                                           now: Instant) {
        let flags = NeighborMessage.flagOverride | (solicited ? NeighborMessage.flagSolicited : 0)
        let length = NeighborMessage.write(into: scratch, type: .neighborAdvertisement, flags: flags, target: target,
                                           option: (NeighborMessage.targetLinkLayerOption, mac))
        let message = scratch.slice(0..<length)
        ICMPv6Message.setChecksum(message, source: target, destination: destination)
        if sendIPv6(to: destination, from: target, nextHeader: .icmpv6, payload: UnsafeRawBufferPointer(message),
                    hopLimit: Self.ndpHopLimit, now: now) {
            counters.icmp6OutMsgs &+= 1
            counters.icmp6OutNeighborAdvertisements &+= 1
        }
    }

    // MARK: Duplicate address detection (RFC 4862 5.4)

    /// Probes every tentative address. The random delay before the first probe (5.4.2,
    /// against many hosts starting at once after a power cut) is left out: one daemon owns
    /// its TAP.
    func startDuplicateAddressDetection(now: Instant) {
        guard let state = ip6 else { return }
        for own in state.addresses where own.isTentative {
            duplicateAddressDetectionTimerFired(own.address, now: now)
        }
    }

    /// Sends the next probe for a tentative address, or makes it preferred once RetransTimer
    /// has passed after the last with no answer.
    func duplicateAddressDetectionTimerFired(_ address: IPv6Address, now: Instant) {
        guard let index = ip6?.index(of: address), case .tentative(let left) = ip6!.addresses[index].state else { return }
        guard left > 0 else {
            ip6!.addresses[index].state = .preferred
            if address.isLinkLocal { startRouterSolicitation(now: now) }
            return
        }
        ip6!.addresses[index].state = .tentative(probesLeft: left - 1)
        // From the unspecified address, without a source link-layer option (5.4.2).
        emitNeighborSolicitation(target: address, from: .unspecified, to: address.solicitedNode, mac: nil,
                                 sourceLinkLayer: false)
        wheel.schedule(at: now.adding(milliseconds: ip6!.configuration.retransmitMilliseconds),
                       .duplicateAddressDetection(address))
    }

    private func duplicateAddressDetected(_ index: Int) {
        ip6!.addresses[index].state = .duplicate
        counters.ndp6DADFailures &+= 1
    }

    /// A snapshot of the IPv6 neighbour cache, for display.
    public var neighbor6Table: [(address: IPv6Address, mac: MACAddress?, state: String, router: Bool)] {
        (ip6?.neighbors ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, $0.value.mac, $0.value.state.name, $0.value.isRouter) }
    }
}
