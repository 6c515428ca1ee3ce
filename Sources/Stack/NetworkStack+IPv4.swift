import Timing

/// A datagram handed to a transport or ICMP: from one frame, or reassembled.
struct IPv4Datagram {
    var source: IPv4Address
    var destination: IPv4Address
    var proto: IPProtocol
    /// The (first fragment's) header, for ICMP errors about this datagram.
    var header: UnsafeRawBufferPointer
    var payload: UnsafeRawBufferPointer
    /// Sent to a broadcast address (link or IP): no ICMP error may answer it.
    var broadcast: Bool
    /// The link vouched for the transport checksum (a TAP with offload); never for a
    /// reassembled datagram, whose checksum is checked whole.
    var checksumVerified = false
}

/// IPv4 (RFC 791, host rules of RFC 1122 3.2.1): receive checks and hands datagrams to ICMP,
/// UDP or TCP (fragments to NetworkStack+Reassembly); every datagram we send is framed here
/// or, toward a local address, in NetworkStack+Loopback.
extension NetworkStack {
    func receiveIPv4(_ bytes: UnsafeRawBufferPointer, linkBroadcast: Bool, checksumVerified: Bool = false, now: Instant) {
        counters.ipInReceives &+= 1
        let packet: IPv4Packet
        do {
            packet = try IPv4Packet(bytes)
        } catch {
            switch error {
            case .truncated: counters.ipInTruncatedPkts &+= 1
            case .badChecksum:
                counters.ipInCsumErrors &+= 1
                counters.ipInHdrErrors &+= 1
            case .truncatedHeader, .badVersion, .badHeaderLength, .badTotalLength:
                counters.ipInHdrErrors &+= 1
            }
            return
        }
        let source = packet.source
        // A source that cannot be a single host on the link is a martian (RFC 1122 3.2.1.3,
        // RFC 1812 5.3.7): loopback addresses never arrive from outside (our own loopback
        // traffic never reaches the link), nor does our own address.
        if source.isMulticast || source.isLimitedBroadcast || source.isLoopback
            || source == configuration.interface.subnetBroadcast || source == address {
            counters.ipInMartianSources &+= 1
            return
        }
        let destination = packet.destination
        let ipBroadcast = destination.isLimitedBroadcast || destination == configuration.interface.subnetBroadcast
        // We are a host, not a router: anything else is not ours (RFC 1122 3.3.4.2, and
        // InAddrErrors per RFC 4293 when not forwarding). A loopback destination from the
        // link is not ours either (RFC 1122 3.2.1.3 (g)): it is only reached from inside.
        guard destination == address || ipBroadcast else {
            counters.ipInAddrErrors &+= 1
            return
        }
        // RFC 1122 3.2.1.7: a host must not discard a datagram for a TTL below 2, so TTL is
        // not checked on receive (we never forward).
        if packet.isFragment {
            reassemble(packet, broadcast: linkBroadcast || ipBroadcast, now: now)
            return
        }
        deliver(IPv4Datagram(source: source, destination: destination, proto: packet.proto, header: packet.header,
                             payload: packet.payload, broadcast: linkBroadcast || ipBroadcast,
                             checksumVerified: checksumVerified), now: now)
    }

    func deliver(_ datagram: IPv4Datagram, now: Instant) {
        switch datagram.proto {
        case .icmp:
            counters.ipInDelivers &+= 1
            receiveICMP(datagram, now: now)
        case .tcp:
            counters.ipInDelivers &+= 1
            receiveTCP(datagram, now: now)
        case .udp:
            counters.ipInDelivers &+= 1
            receiveUDP(datagram, now: now)
        default:
            // No transport bound to this protocol: RFC 1122 3.2.2.1 asks for Protocol Unreachable.
            counters.ipInUnknownProtos &+= 1
            sendICMPError(type: .destinationUnreachable, code: UnreachableCode.proto, about: datagram, now: now)
        }
    }

    // MARK: - Output

    /// The link-layer destination for an IP destination: the address itself on the local
    /// subnet, the gateway otherwise (RFC 1122 3.3.1).
    enum Route {
        case broadcast
        case via(IPv4Address)
    }

    func route(_ destination: IPv4Address) -> Route? {
        let interface = configuration.interface
        if destination.isLimitedBroadcast || destination == interface.subnetBroadcast { return .broadcast }
        if interface.contains(destination) { return .via(destination) }
        if let gateway = configuration.gateway { return .via(gateway) }
        return nil
    }

    /// Sends a datagram we originate, fragmenting it to the MTU; to a local destination it
    /// goes to the loopback (NetworkStack+Loopback). `source` nil: chosen by destination
    /// (`sourceAddress(toward:)`). The payload is copied.
    @discardableResult
    func sendIPv4(to destination: IPv4Address, from source: IPv4Address? = nil, proto: IPProtocol,
                  payload: UnsafeRawBufferPointer, now: Instant) -> Bool {
        if isLocal(destination) {
            return sendLoopback(source: source ?? sourceAddress(toward: destination), destination: destination,
                                proto: proto, payloadLength: payload.count, now: now) { $0.copy(payload, to: 0) }
        }
        counters.ipOutRequests &+= 1
        // Only the interface address may leave on the link (a loopback source must not:
        // RFC 1122 3.2.1.3 (g)).
        guard source == nil || source == address, !destination.isUnspecified, !destination.isMulticast,
              let route = route(destination)
        else {
            counters.ipOutNoRoutes &+= 1
            return false
        }
        switch route {
        case .broadcast:
            emitIPv4(to: .broadcast, destination: destination, proto: proto, payload: payload)
        case .via(let nextHop):
            switch resolve(nextHop, now: now) {
            case .resolved(let mac):
                emitIPv4(to: mac, destination: destination, proto: proto, payload: payload)
            case .pending:
                enqueuePending(PendingDatagram(destination: destination, proto: proto, payload: Array(payload)), for: nextHop)
            case .unavailable:
                counters.ipOutDiscards &+= 1
                return false
            }
        }
        return true
    }

    /// Writes a datagram into the outbox as one frame or as fragments (RFC 791 section 3.2,
    /// "An Example Fragmentation Procedure"): every fragment but the last carries a multiple
    /// of 8 payload bytes.
    func emitIPv4(to mac: MACAddress, destination: IPv4Address, proto: IPProtocol, payload: UnsafeRawBufferPointer) {
        let header = IPv4Packet.minimumHeaderLength
        let maxPayload = configuration.mtu - header
        let identification = takeIdentification()
        guard header + payload.count <= IPv4Packet.maximumLength else {
            counters.ipFragFails &+= 1
            return
        }
        let fragmentSize = payload.count <= maxPayload ? payload.count : maxPayload & ~7
        var offset = 0
        repeat {
            let length = min(fragmentSize, payload.count - offset)
            let more = offset + length < payload.count
            let chunk = payload.slice(offset..<offset + length)
            guard frameIPv4(to: mac, source: address, destination: destination, proto: proto, payloadLength: length,
                            identification: identification, moreFragments: more, fragmentOffset: offset,
                            { $0.copy(chunk, to: 0) })
            else { return }
            if fragmentSize < payload.count { counters.ipFragCreates &+= 1 }
            offset += length
        } while offset < payload.count
        if fragmentSize < payload.count { counters.ipFragOKs &+= 1 }
    }

    /// Frames one datagram (or fragment) in place in the outbox: the Ethernet and IPv4
    /// headers, then `writePayload` fills the payload where it lies, so a transport writes its
    /// segment straight into the frame. The one place where what leaves on the link gets its
    /// IPv4 header. False when the outbox is full (counted as a discard).
    @inline(__always)
    func frameIPv4(to mac: MACAddress, source: IPv4Address, destination: IPv4Address, proto: IPProtocol,
                   payloadLength: Int, identification: UInt16, dontFragment: Bool = false, moreFragments: Bool = false,
                   fragmentOffset: Int = 0, offload: FrameOffload = .none,
                   _ writePayload: (UnsafeMutableRawBufferPointer) -> Void) -> Bool {
        let frameLength = EthernetFrame.headerLength + IPv4Packet.minimumHeaderLength + payloadLength
        let queued = outbox.append(reserving: max(frameLength, outbox.frameSize), offload: offload) { buffer in
            var at = EthernetFrame.writeHeader(into: buffer, destination: mac, source: self.mac, etherType: .ipv4)
            at += IPv4Packet.writeHeader(into: buffer.suffix(from: at), source: source, destination: destination,
                                         proto: proto, payloadLength: payloadLength, identification: identification,
                                         ttl: configuration.defaultTTL, dontFragment: dontFragment,
                                         moreFragments: moreFragments, fragmentOffset: fragmentOffset)
            writePayload(buffer.slice(at..<at + payloadLength))
            return at + payloadLength
        }
        guard queued else {
            counters.linkOutQueueFull &+= 1
            counters.ipOutDiscards &+= 1
            return false
        }
        counters.linkOutFrames &+= 1
        return true
    }

    /// The next hop's MAC for `destination` when it is known now, without queueing anything:
    /// the sender's `cache` while the neighbour table has not changed, else the table (a
    /// stale entry is used and probed, and not cached). Nil: the caller takes the slow path
    /// (`sendIPv4`), which resolves and queues.
    @inline(__always)
    func knownNextHopMAC(toward destination: IPv4Address, cache: inout NeighborCache, now: Instant) -> MACAddress? {
        if cache.generation == neighborGeneration, let mac = cache.mac { return mac }
        guard case .via(let nextHop)? = route(destination), let neighbor = neighbors[nextHop], let mac = neighbor.mac,
              neighbor.isUsable
        else { return nil }
        if case .stale = neighbor.state {
            _ = resolve(nextHop, now: now)
        } else {
            cache = NeighborCache(mac: mac, generation: neighborGeneration)
        }
        return mac
    }

    /// The next identification field (RFC 791; RFC 6864 allows any sequence for atomic
    /// datagrams).
    @inline(__always)
    func takeIdentification(count: Int = 1) -> UInt16 {
        defer { nextIdentification &+= UInt16(truncatingIfNeeded: count) }
        return nextIdentification
    }
}

/// A next hop's MAC as a sender last resolved it, valid while the stack's neighbour
/// generation is unchanged (a connection keeps one, to skip the table per segment).
struct NeighborCache {
    var mac: MACAddress?
    var generation: UInt64 = 0
}
