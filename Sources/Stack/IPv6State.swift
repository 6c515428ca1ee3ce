import Timing

/// One of our IPv6 addresses and where it stands in duplicate address detection (RFC 4862 5.4).
public struct OwnIPv6Address: Sendable {
    public enum State: Sendable {
        /// Being checked: NS probes still to send; it receives nothing but NDP meanwhile.
        case tentative(probesLeft: Int)
        case preferred
        /// Another node holds it: never used (RFC 4862 5.4.5).
        case duplicate
    }

    public var interface: IPv6Interface
    public var state: State
    public var address: IPv6Address { interface.address }
    public var isPreferred: Bool { if case .preferred = state { true } else { false } }
    public var isTentative: Bool { if case .tentative = state { true } else { false } }
}

/// Everything the stack holds for IPv6, in one stored property of NetworkStack.
struct IPv6State {
    let configuration: IPv6Configuration
    /// The link-local address first, then the configured ones.
    var addresses: [OwnIPv6Address]
    var neighbors: [IPv6Address: Neighbor6] = [:]
    /// ReachableTime (RFC 4861 6.3.2), drawn once at start.
    let reachableMilliseconds: UInt64
    var errorBucket: TokenBucket
    var reassembly: FragmentTable<Fragment6Key>
    var pathMTUs: PathMTUCache
    var routing: DefaultRouterList
    /// Router Solicitations stop once an advertisement is accepted (RFC 4861 6.3.7).
    var routerFound = false
    /// RFC 7739 5.3's table of counters for Fragment identifications, indexed by a keyed
    /// hash of the addresses; each starts at a random value.
    var fragmentCounters: [UInt32]
    static let fragmentCounterCount = 1024

    init(configuration: IPv6Configuration, mac: MACAddress, seed: UInt64, errorsPerSecond: UInt64, burst: UInt64,
         reassembly limits: ReassemblyConfiguration, now: Instant) {
        self.configuration = configuration
        var limits = limits
        limits.timeoutMilliseconds = configuration.reassemblyTimeoutMilliseconds
        reassembly = FragmentTable(limits: limits, remembersDiscarded: true, timer: StackTimer.reassembly6)
        pathMTUs = PathMTUCache(capacity: configuration.maxPathMTUEntries,
                                lifetimeMilliseconds: configuration.pathMTULifetimeMilliseconds)
        routing = DefaultRouterList(gateway: configuration.gateway, maxRouters: configuration.maxDefaultRouters,
                                    maxPrefixes: configuration.maxOnLinkPrefixes)
        let linkLocal = IPv6Interface(address: IPv6Address(linkLocalFor: mac), prefixLength: 64)
        let initial: OwnIPv6Address.State = configuration.dadTransmits > 0
            ? .tentative(probesLeft: configuration.dadTransmits) : .preferred
        addresses = ([linkLocal] + configuration.addresses.filter { $0.address != linkLocal.address })
            .map { OwnIPv6Address(interface: $0, state: initial) }
        var random = SplitMix64(state: seed ^ 0x6E64_7036)
        let base = configuration.baseReachableMilliseconds
        reachableMilliseconds = base / 2 + random.next() % max(base, 1)
        fragmentCounters = (0..<Self.fragmentCounterCount).map { _ in UInt32(truncatingIfNeeded: random.next()) }
        errorBucket = TokenBucket(ratePerSecond: errorsPerSecond, burst: burst, now: now)
    }

    /// The index of our address `address`, in any state.
    func index(of address: IPv6Address) -> Int? { addresses.firstIndex { $0.address == address } }

    func isPreferred(_ address: IPv6Address) -> Bool {
        addresses.contains { $0.address == address && $0.isPreferred }
    }

    /// Whether a packet to `destination` is for us: a preferred address of ours, all-nodes,
    /// or the solicited-node group of any address of ours, tentative ones included (RFC 4862
    /// 5.4.2 joins it before probing).
    func accepts(_ destination: IPv6Address) -> Bool {
        if destination.isMulticast {
            return destination == .allNodes
                || addresses.contains { $0.address.solicitedNode == destination && !isDuplicate($0) }
        }
        return isPreferred(destination)
    }

    /// Frames to these link addresses are ours besides our own MAC (RFC 2464 section 7).
    func acceptsLink(_ mac: MACAddress) -> Bool {
        mac == IPv6Address.allNodes.multicastMAC
            || addresses.contains { $0.address.solicitedNode.multicastMAC == mac && !isDuplicate($0) }
    }

    private func isDuplicate(_ a: OwnIPv6Address) -> Bool { if case .duplicate = a.state { true } else { false } }

    /// The source for a packet to `destination` (RFC 6724's rules reduced to one link): the
    /// link-local address for link-local and link-scope destinations, else a preferred
    /// address whose prefix holds the destination, else any preferred global one.
    func source(for destination: IPv6Address) -> IPv6Address? {
        let preferred = addresses.filter(\.isPreferred)
        let linkLocal = preferred.first { $0.address.isLinkLocal }?.address
        if destination.isLinkLocal || destination.isLinkScopeMulticast { return linkLocal }
        let global = preferred.filter { !$0.address.isLinkLocal }
        return global.first { $0.interface.contains(destination) }?.address ?? global.first?.address ?? linkLocal
    }

    /// Where a unicast packet to `destination` goes first (RFC 4861 5.2): itself when on the
    /// link, else the default router; nil without one.
    func nextHop(for destination: IPv6Address, now: Instant) -> IPv6Address? {
        if isOnLink(destination, now: now) { return destination }
        return routing.defaultRouter(now: now)
    }

    /// Whether `destination` is on the link (RFC 4861 5.2): link-local, inside one of our
    /// prefixes, or inside an on-link prefix a router advertised.
    func isOnLink(_ destination: IPv6Address, now: Instant) -> Bool {
        destination.isLinkLocal || addresses.contains { $0.interface.contains(destination) }
            || routing.isOnLink(destination, now: now)
    }
}
