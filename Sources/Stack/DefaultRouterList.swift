import Timing

/// What a host learns about routing on its link (RFC 4861 5.1, 6.3.4): the default router
/// list and the on-link prefixes, each with an expiry (nil: for ever, as a router given by
/// the operator), and the link MTU a router advertised. Expired entries are skipped when
/// read and replaced when room is needed.
struct DefaultRouterList {
    /// A router's address or an on-link prefix, with its expiry (nil: for ever).
    struct Entry<Value: Equatable> {
        var value: Value
        var expires: Instant?

        func isAlive(at now: Instant) -> Bool { expires.map { now < $0 } ?? true }

        /// Whole seconds left at `now`, for display; nil: for ever.
        func secondsLeft(at now: Instant) -> UInt64? {
            expires.map { ($0.nanoseconds - now.nanoseconds) / 1_000_000_000 }
        }
    }

    private(set) var routers: [Entry<IPv6Address>] = []
    private(set) var prefixes: [Entry<IPv6Interface>] = []
    /// The MTU option of the last advertisement that carried an acceptable one.
    var advertisedMTU: Int?
    let maxRouters: Int
    let maxPrefixes: Int

    init(gateway: IPv6Address?, maxRouters: Int, maxPrefixes: Int) {
        self.maxRouters = maxRouters
        self.maxPrefixes = maxPrefixes
        if let gateway { routers = [Entry(value: gateway, expires: nil)] }
    }

    /// The router for off-link destinations: the first one still valid (RFC 4861 6.3.6 also
    /// prefers routers known reachable; with the few routers a TAP link has, the first in
    /// the list is the one that answered first).
    func defaultRouter(now: Instant) -> IPv6Address? {
        routers.first { $0.isAlive(at: now) }?.value
    }

    func isOnLink(_ destination: IPv6Address, now: Instant) -> Bool {
        prefixes.contains { $0.isAlive(at: now) && $0.value.contains(destination) }
    }

    /// A router's advertised lifetime: 0 removes it (6.3.4); a new router is taken while
    /// there is room.
    mutating func updateRouter(_ address: IPv6Address, lifetimeSeconds: UInt16, now: Instant) {
        Self.update(&routers, address, expires: now.adding(milliseconds: UInt64(lifetimeSeconds) * 1000),
                    removing: lifetimeSeconds == 0, capacity: maxRouters, now: now)
    }

    mutating func removeRouter(_ address: IPv6Address) { routers.removeAll { $0.value == address } }

    /// An on-link prefix's valid lifetime (6.3.4): 0 removes it, all ones is infinity.
    mutating func updatePrefix(_ prefix: IPv6Interface, validLifetimeSeconds: UInt32, now: Instant) {
        let expires = validLifetimeSeconds == .max ? nil : now.adding(milliseconds: UInt64(validLifetimeSeconds) * 1000)
        Self.update(&prefixes, prefix, expires: expires, removing: validLifetimeSeconds == 0, capacity: maxPrefixes,
                    now: now)
    }

    /// Drops expired entries, then removes `value`'s entry, renews it, or adds it while the
    /// list has room.
    private static func update<Value>(_ list: inout [Entry<Value>], _ value: Value, expires: Instant?, removing: Bool,
                                      capacity: Int, now: Instant) {
        list.removeAll { !$0.isAlive(at: now) }
        let index = list.firstIndex { $0.value == value }
        if removing {
            if let index { list.remove(at: index) }
        } else if let index {
            list[index].expires = expires
        } else if list.count < capacity {
            list.append(Entry(value: value, expires: expires))
        }
    }
}
