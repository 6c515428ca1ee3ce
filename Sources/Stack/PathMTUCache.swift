import Timing

/// Path MTUs learnt from Packet Too Big messages (RFC 8201), per destination: bounded in
/// entries, each forgotten after a lifetime so that a path whose MTU grew is used in full
/// again (5.3). A destination without an entry uses the link MTU.
struct PathMTUCache {
    struct Entry {
        var mtu: Int
        var expires: Instant
    }

    private(set) var entries: [IPv6Address: Entry] = [:]
    let capacity: Int
    let lifetimeMilliseconds: UInt64

    init(capacity: Int, lifetimeMilliseconds: UInt64) {
        self.capacity = capacity
        self.lifetimeMilliseconds = lifetimeMilliseconds
    }

    /// The MTU learnt toward `destination`, unless none is or it has aged out.
    func mtu(toward destination: IPv6Address, now: Instant) -> Int? {
        guard let entry = entries[destination], now < entry.expires else { return nil }
        return entry.mtu
    }

    /// Records `mtu` toward `destination`, making room by dropping aged entries, then the one
    /// nearest its end.
    mutating func learn(_ destination: IPv6Address, mtu: Int, now: Instant) {
        if entries[destination] == nil && entries.count >= capacity {
            entries = entries.filter { now < $0.value.expires }
            if entries.count >= capacity, let soonest = entries.min(by: { $0.value.expires < $1.value.expires }) {
                entries[soonest.key] = nil
            }
        }
        entries[destination] = Entry(mtu: mtu, expires: now.adding(milliseconds: lifetimeMilliseconds))
    }
}
