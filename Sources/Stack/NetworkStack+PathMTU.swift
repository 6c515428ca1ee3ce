import Timing

/// Path MTU discovery (RFC 8201) from Packet Too Big messages, with RFC 5927's caution:
/// only a message about a packet we could have sent counts, and none raises an estimate.
extension NetworkStack {
    /// The largest packet to send toward `destination`: the MTU a Packet Too Big taught, or
    /// the link MTU (a router's advertised one if any, RFC 4861 6.3.4).
    public func pathMTU(toward destination: IPv6Address) -> Int {
        let link = ip6?.routing.advertisedMTU ?? configuration.mtu
        guard let learned = ip6?.pathMTUs.mtu(toward: destination, now: clock) else { return link }
        return min(learned, link)
    }

    /// RFC 4443 3.2: the MTU of the next-hop link, then as much of our packet as fitted.
    func receivePacketTooBig(_ message: ICMPv6Message, now: Instant) {
        let bytes = message.bytes
        guard bytes.count >= 8 + IPv6Packet.headerLength else {
            counters.pmtu6Ignored &+= 1
            return
        }
        let quoted = bytes.suffix(from: 8)
        let source = IPv6Address(quoted, at: IPv6Packet.Field.source)
        let destination = IPv6Address(quoted, at: IPv6Packet.Field.destination)
        // RFC 5927 section 4.1 (RFC 8201 section 4's validation): the quoted packet must be
        // one we could have sent, from an address of ours to a unicast destination. (Checks
        // against a connection's state belong to TCP, told through ipv6PathMTUDecreased.)
        guard ip6!.index(of: source) != nil, !destination.isMulticast, !destination.isUnspecified else {
            counters.pmtu6Ignored &+= 1
            return
        }
        // RFC 8201 section 4: below the IPv6 minimum the estimate is 1280, sent whole (RFC
        // 8021: no atomic fragments); a Packet Too Big never raises the estimate.
        let mtu = max(Int(bytes.be32(ICMPv6Message.Field.body)), IPv6Packet.minimumMTU)
        guard mtu < pathMTU(toward: destination) else {
            counters.pmtu6Ignored &+= 1
            return
        }
        ip6!.pathMTUs.learn(destination, mtu: mtu, now: now)
        counters.pmtu6Decreases &+= 1
        ipv6PathMTUDecreased(destination, mtu: mtu, now: now)
    }

    /// Called each time the path MTU toward `destination` decreases to `mtu`.
    /// TCP lowers the MSS of its connections to `destination` and resends what no longer
    /// fits (RFC 8201 section 5.4); UDP needs nothing: its next datagram is fragmented.
    func ipv6PathMTUDecreased(_ destination: IPv6Address, mtu: Int, now: Instant) {
        tcpPathMTUDecreased(IPAddress(destination), mtu: mtu, now: now)
    }

    /// The path MTUs learnt and still valid, for display: destination, MTU, seconds left.
    public var pathMTU6Table: [(destination: IPv6Address, mtu: Int, secondsLeft: UInt64)] {
        (ip6?.pathMTUs.entries ?? [:]).filter { clock < $0.value.expires }.sorted { $0.key < $1.key }
            .map { ($0.key, $0.value.mtu, ($0.value.expires.nanoseconds - clock.nanoseconds) / 1_000_000_000) }
    }
}
