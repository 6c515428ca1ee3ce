import Timing

/// The questions TCP and UDP ask of the IP layer, answered for either family (`IPAddress`):
/// is an address ours, may a socket bind it, which source goes toward a destination, is there
/// a route, how large may a packet be, and sending a transport payload. IPv4 answers come
/// from the interface, the loopback network and the routes (NetworkStack+IPv4, +Loopback);
/// IPv6 ones from our addresses and their DAD states, ::1, and the on-link prefixes (IPv6State).
extension NetworkStack {
    /// Whether `destination` is this host: IPv4's loopback network or interface address, ::1,
    /// or one of our IPv6 addresses in any DAD state but duplicate (as Linux's local table).
    @inline(__always)
    public func isLocal(_ destination: IPAddress) -> Bool {
        if let v4 = destination.v4 { return isLocal(v4) }
        return destination.bits.isLoopback || isOwnIPv6(destination.bits)
    }

    /// Whether `candidate` can be a socket's local address (bind(2)): either family's any, or
    /// a local address; an IPv6 address still in DAD is refused as Linux refuses it
    /// (EADDRNOTAVAIL) until it is preferred.
    public func isBindable(_ candidate: IPAddress) -> Bool {
        if candidate.isUnspecified { return candidate.isIPv4 || ip6 != nil }
        if let v4 = candidate.v4 { return isLocal(v4) }
        return candidate.bits.isLoopback && ip6 != nil || ip6?.isPreferred(candidate.bits) == true
    }

    /// The source for datagrams to `destination` from a socket bound to its family's any:
    /// IPv4's route source; ::1 toward ::1, otherwise IPv6State's choice among our preferred
    /// addresses (RFC 6724 reduced to one link). Nil when IPv6 has no usable address.
    public func sourceAddress(toward destination: IPAddress) -> IPAddress? {
        if let v4 = destination.v4 { return IPAddress(sourceAddress(toward: v4)) }
        if destination.bits.isLoopback { return ip6 == nil ? nil : destination }
        if isOwnIPv6(destination.bits) { return destination }
        return ip6?.source(for: destination.bits).map(IPAddress.init)
    }

    /// Whether a socket with local address `source` (its family's any: unbound) may send to
    /// `destination`: the families must agree, and a loopback source reaches only local
    /// destinations (Linux refuses the route with EINVAL).
    func sourceUsable(_ source: IPAddress, toward destination: IPAddress) -> Bool {
        guard source.isIPv4 == destination.isIPv4 else { return false }
        if let s = source.v4, let d = destination.v4 { return sourceUsable(s, toward: d) }
        return !source.bits.isLoopback || isLocal(destination)
    }

    /// Whether a unicast packet to `destination` has somewhere to go: this host, the link or
    /// a router (IPv4's routes; IPv6's on-link prefixes and its default router).
    func isRoutable(_ destination: IPAddress, now: Instant) -> Bool {
        if let v4 = destination.v4 { return isLocal(v4) || route(v4) != nil }
        guard let state = ip6, !destination.bits.isMulticast, !destination.isUnspecified else { return false }
        return isLocal(destination) || state.nextHop(for: destination.bits, now: now) != nil
    }

    /// The largest packet toward `destination` in one piece: the loopback's, or the path's
    /// (IPv4: the link MTU; IPv6: what Packet Too Big taught, NetworkStack+PathMTU). IPv6's
    /// payload length is 16 bits, so the loopback's limit is the header plus 65535.
    @inline(__always)
    func pathMTU(toward destination: IPAddress) -> Int {
        if let v4 = destination.v4 { return pathMTU(toward: v4) }
        return isLocal(destination) ? min(Self.loopbackMTU, IPv6Packet.headerLength + 65535) : pathMTU(toward: destination.bits)
    }

    /// The largest TCP payload toward `destination` without IP or TCP options: the MSS to
    /// announce (RFC 9293 3.7.1; RFC 8200 8.3 for IPv6).
    @inline(__always)
    func maximumSegment(toward destination: IPAddress) -> Int {
        pathMTU(toward: destination) - destination.ipHeaderLength - TCPSegment.minimumHeaderLength
    }

    /// Sends a transport payload (complete, checksum included) from `source` to
    /// `destination`, both of one family, through the link or the loopback. False when it
    /// could be neither sent nor queued.
    @discardableResult
    func sendIP(to destination: IPAddress, from source: IPAddress, proto: IPProtocol, payload: UnsafeRawBufferPointer,
                now: Instant) -> Bool {
        if let d = destination.v4, let s = source.v4 {
            return sendIPv4(to: d, from: s, proto: proto, payload: payload, now: now)
        }
        if isLocal(destination) {
            return sendLoopback(source: source, destination: destination, proto: proto, payloadLength: payload.count,
                                now: now) { $0.copy(payload, to: 0) }
        }
        return sendIPv6(to: destination.bits, from: source.bits, nextHeader: IPv6NextHeader(rawValue: proto.rawValue),
                        payload: payload, now: now)
    }

    /// Whether two local names on one port overlap, for TCP's and UDP's bind rules (Linux's
    /// ipv6_rcv_saddr_equal): a dual-stack `::` overlaps everything; otherwise names of one
    /// family overlap when equal or when either is the family's any.
    static func localNamesOverlap(_ a: IPAddress, _ aDual: Bool, _ b: IPAddress, _ bDual: Bool) -> Bool {
        if aDual || bDual { return true }
        return a.isIPv4 == b.isIPv4 && (a == b || a.isUnspecified || b.isUnspecified)
    }

    /// One of our IPv6 addresses that is not a duplicate.
    private func isOwnIPv6(_ address: IPv6Address) -> Bool {
        guard let state = ip6, let index = state.index(of: address) else { return false }
        if case .duplicate = state.addresses[index].state { return false }
        return true
    }
}
