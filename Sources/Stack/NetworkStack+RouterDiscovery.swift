import Timing

/// Router discovery for a host (RFC 4861 6.3): Router Solicitations at start, and Router
/// Advertisements that fill the default router list and the on-link prefixes and may lower
/// the link MTU. Addresses are not configured from prefixes (SLAAC, RFC 4862 5.5, is absent):
/// lvlipd's addresses are given with --addr. With a router given by the operator
/// (IPv6Configuration.gateway), advertisements are not acted on and no solicitation is sent.
extension NetworkStack {
    /// Router Advertisement fields (RFC 4861 4.2), from the ICMPv6 header on.
    enum RouterAdvertisement {
        static let routerLifetime = 6
        static let options = 16
        /// Option types and the offsets of their fields (4.6.2, 4.6.4).
        static let prefixInformation: UInt8 = 3
        static let mtuOption: UInt8 = 5
        static let prefixOnLinkFlag: UInt8 = 0x80
    }

    static let allRouters = IPv6Address(high: 0xFF02 << 48, low: 2)

    func receiveRouterAdvertisement(_ message: ICMPv6Message, _ datagram: IPv6Datagram, now: Instant) {
        let bytes = message.bytes
        // RFC 4861 6.1.2: from a link-local address, not forwarded (hop limit 255), code 0,
        // 16 bytes or more, every option of non-zero length inside the message.
        guard datagram.source.isLinkLocal, datagram.hopLimit == Self.ndpHopLimit, message.code == 0,
              bytes.count >= RouterAdvertisement.options, let options = Self.options(bytes, from: RouterAdvertisement.options)
        else {
            counters.ndp6RouterAdvertisementsInvalid &+= 1
            return
        }
        guard ip6!.configuration.gateway == nil else {
            counters.ndp6RouterAdvertisementsIgnored &+= 1
            return
        }
        ip6!.routerFound = true
        let router = datagram.source
        ip6!.routing.updateRouter(router, lifetimeSeconds: bytes.be16(RouterAdvertisement.routerLifetime), now: now)
        for (type, range) in options {
            switch type {
            case NeighborMessage.sourceLinkLayerOption where range.count == 8:
                learnLinkLayerAddress(router, mac: MACAddress(bytes, at: range.lowerBound + 2), now: now)
                ip6!.neighbors[router]?.isRouter = true
            case RouterAdvertisement.prefixInformation where range.count == 32:
                learnPrefix(bytes, at: range.lowerBound, now: now)
            case RouterAdvertisement.mtuOption where range.count == 8:
                // 6.3.4: adopted if at least the IPv6 minimum and at most the link's own.
                let mtu = Int(bytes.be32(range.lowerBound + 4))
                if mtu >= IPv6Packet.minimumMTU && mtu <= configuration.mtu { ip6!.routing.advertisedMTU = mtu }
            default:
                break
            }
        }
    }

    /// A Prefix Information option (4.6.2) with the on-link flag adds, refreshes or (valid
    /// lifetime 0) removes an on-link prefix (6.3.4); the link-local prefix is ignored.
    private func learnPrefix(_ bytes: UnsafeRawBufferPointer, at offset: Int, now: Instant) {
        let length = Int(bytes.u8(offset + 2))
        let prefix = IPv6Address(bytes, at: offset + 16)
        guard bytes.u8(offset + 3) & RouterAdvertisement.prefixOnLinkFlag != 0, (1...128).contains(length),
              !prefix.isLinkLocal, !prefix.isMulticast else { return }
        let high: UInt64 = length >= 64 ? .max : .max << (64 - length)
        let low: UInt64 = length <= 64 ? 0 : .max << (128 - length)
        let network = IPv6Address(high: prefix.high & high, low: prefix.low & low)
        ip6!.routing.updatePrefix(IPv6Interface(address: network, prefixLength: length),
                                  validLifetimeSeconds: bytes.be32(offset + 4), now: now)
    }

    /// The options from `offset` as (type, byte range); nil if one has length zero or runs
    /// past the end (RFC 4861 6.1.2).
    private static func options(_ bytes: UnsafeRawBufferPointer, from offset: Int) -> [(UInt8, Range<Int>)]? {
        var options: [(UInt8, Range<Int>)] = []
        var offset = offset
        while offset < bytes.count {
            guard offset + 2 <= bytes.count else { return nil }
            let length = Int(bytes.u8(offset + 1)) * 8
            guard length > 0, offset + length <= bytes.count else { return nil }
            options.append((bytes.u8(offset), offset..<offset + length))
            offset += length
        }
        return options
    }

    /// RFC 4861 6.3.7: up to MAX_RTR_SOLICITATIONS, RTR_SOLICITATION_INTERVAL apart, once the
    /// link-local address is ours (after DAD); the start-up delay against many hosts booting
    /// at once is left out, as for DAD: one daemon owns its TAP.
    func startRouterSolicitation(now: Instant) {
        guard let state = ip6, state.configuration.gateway == nil, !state.routerFound,
              state.addresses.contains(where: { $0.address.isLinkLocal && $0.isPreferred }) else { return }
        routerSolicitationTimerFired(remaining: state.configuration.routerSolicitations, now: now)
    }

    func routerSolicitationTimerFired(remaining: Int, now: Instant) {
        guard let state = ip6, !state.routerFound, remaining > 0,
              let source = state.addresses.first(where: { $0.address.isLinkLocal && $0.isPreferred })?.address
        else { return }
        // Type, code, checksum, 4 reserved bytes, then our link-layer address (4.1).
        withUnsafeTemporaryAllocation(byteCount: 16, alignment: 8) { buffer in
            buffer.setU8(ICMPv6Type.routerSolicitation.rawValue, ICMPv6Message.Field.type)
            buffer.setU8(0, ICMPv6Message.Field.code)
            buffer.setBE16(0, ICMPv6Message.Field.checksum)
            buffer.setBE32(0, ICMPv6Message.Field.body)
            buffer.setU8(NeighborMessage.sourceLinkLayerOption, 8)
            buffer.setU8(1, 9)
            mac.write(to: buffer, at: 10)
            ICMPv6Message.setChecksum(buffer, source: source, destination: Self.allRouters)
            counters.ip6OutRequests &+= 1
            emitIPv6(to: Self.allRouters.multicastMAC, source: source, destination: Self.allRouters, nextHeader: .icmpv6,
                     hopLimit: Self.ndpHopLimit, payload: UnsafeRawBufferPointer(buffer))
        }
        counters.icmp6OutMsgs &+= 1
        counters.icmp6OutRouterSolicits &+= 1
        if remaining > 1 {
            wheel.schedule(at: now.adding(milliseconds: state.configuration.routerSolicitationIntervalMilliseconds),
                           .routerSolicitation(remaining: remaining - 1))
        }
    }

    /// The default routers and on-link prefixes in use, for display: address or prefix,
    /// and seconds left (nil: given by the operator, or infinite).
    public var defaultRouter6Table: [(router: IPv6Address, secondsLeft: UInt64?)] {
        (ip6?.routing.routers ?? []).filter { $0.isAlive(at: clock) }.map { ($0.value, $0.secondsLeft(at: clock)) }
    }

    public var onLinkPrefix6Table: [(prefix: IPv6Interface, secondsLeft: UInt64?)] {
        (ip6?.routing.prefixes ?? []).filter { $0.isAlive(at: clock) }.map { ($0.value, $0.secondsLeft(at: clock)) }
    }

    /// The link MTU a router advertised, if one did.
    public var advertisedMTU6: Int? { ip6?.routing.advertisedMTU }
}
