import Timing

/// What a host learns about routing on its link (RFC 4861 5.1, 6.3.4): the default router
/// list and the on-link prefixes, each with an expiry (nil: for ever, as a router given by
/// the operator), and the link MTU a router advertised. Expired entries are skipped when
/// read and replaced when room is needed.
struct DefaultRouterList {
    struct Router {
        var address: IPv6Address
        var expires: Instant?
    }

    struct Prefix {
        var prefix: IPv6Interface
        var expires: Instant?
    }

    private(set) var routers: [Router] = []
    private(set) var prefixes: [Prefix] = []
    /// The MTU option of the last advertisement that carried an acceptable one.
    var advertisedMTU: Int?
    let maxRouters: Int
    let maxPrefixes: Int

    init(gateway: IPv6Address?, maxRouters: Int, maxPrefixes: Int) {
        self.maxRouters = maxRouters
        self.maxPrefixes = maxPrefixes
        if let gateway { routers = [Router(address: gateway, expires: nil)] }
    }

    private static func alive(_ expires: Instant?, _ now: Instant) -> Bool { expires.map { now < $0 } ?? true }

    /// The router for off-link destinations: the first one still valid (RFC 4861 6.3.6 also
    /// prefers routers known reachable; with the few routers a TAP link has, the first in
    /// the list is the one that answered first).
    func defaultRouter(now: Instant) -> IPv6Address? {
        routers.first { Self.alive($0.expires, now) }?.address
    }

    func isOnLink(_ destination: IPv6Address, now: Instant) -> Bool {
        prefixes.contains { Self.alive($0.expires, now) && $0.prefix.contains(destination) }
    }

    /// A router's advertised lifetime: 0 removes it (6.3.4); a new router is taken while
    /// there is room.
    mutating func updateRouter(_ address: IPv6Address, lifetimeSeconds: UInt16, now: Instant) {
        routers.removeAll { !Self.alive($0.expires, now) }
        let index = routers.firstIndex { $0.address == address }
        guard lifetimeSeconds > 0 else {
            if let index { routers.remove(at: index) }
            return
        }
        let expires = now.adding(milliseconds: UInt64(lifetimeSeconds) * 1000)
        if let index {
            routers[index].expires = expires
        } else if routers.count < maxRouters {
            routers.append(Router(address: address, expires: expires))
        }
    }

    mutating func removeRouter(_ address: IPv6Address) { routers.removeAll { $0.address == address } }

    /// An on-link prefix's valid lifetime (6.3.4): 0 removes it, all ones is infinity.
    mutating func updatePrefix(_ prefix: IPv6Interface, validLifetimeSeconds: UInt32, now: Instant) {
        prefixes.removeAll { !Self.alive($0.expires, now) }
        let index = prefixes.firstIndex { $0.prefix == prefix }
        guard validLifetimeSeconds > 0 else {
            if let index { prefixes.remove(at: index) }
            return
        }
        let expires = validLifetimeSeconds == .max ? nil : now.adding(milliseconds: UInt64(validLifetimeSeconds) * 1000)
        if let index {
            prefixes[index].expires = expires
        } else if prefixes.count < maxPrefixes {
            prefixes.append(Prefix(prefix: prefix, expires: expires))
        }
    }
}
