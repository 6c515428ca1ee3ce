/// Identifies one armed timer. A handle whose timer fired or was cancelled is stale:
/// `cancel` ignores it, because the generation no longer matches.
public struct TimerHandle: Hashable, Sendable {
    fileprivate let index: Int32
    fileprivate let generation: UInt32
}

/// A hierarchical timing wheel with 1 ms ticks: 6 levels of 64 slots cover 2^36 ms
/// (about 795 days); later deadlines are parked in the top level and re-filed when it comes
/// round. Arm and cancel are O(1) (intrusive lists over a slab, a 64-bit occupancy map per
/// level); finding the next expiry is a count-trailing-zeros per level.
///
/// A timer is filed at the level of the highest bit in which its deadline differs from the
/// wheel's current tick, so lower levels only ever hold timers inside the current slot of the
/// level above. When the wheel reaches a slot of a higher level its timers are re-filed lower
/// (cascade). This is the scheme of Varghese & Lauck's hierarchical wheels as used by
/// Linux's timer wheel and tokio.
///
/// The wheel never reads a clock: `popExpired(now:)` advances it to the time it is given.
public struct TimingWheel<Value> {
    private static var levels: Int { 6 }
    private static var slotBits: UInt64 { 6 }
    private static var slotsPerLevel: Int { 64 }
    /// Deadlines further than this from the current tick are filed at the top level.
    private static var maxSpan: UInt64 { (1 << 36) - 1 }

    private struct Node {
        var tick: UInt64
        var next: Int32
        var prev: Int32
        /// The list holding the node; -1 when the node is free.
        var list: Int32
        var generation: UInt32
        var value: Value?
    }

    /// The last tick the wheel has been advanced to; every timer due at or before it has
    /// been moved to the expired list.
    private var elapsed: UInt64
    private var nodes: [Node] = []
    private var freeHead: Int32 = -1
    /// List heads and tails: one per slot, then the expired list.
    private var heads: [Int32]
    private var tails: [Int32]
    private var occupied: [UInt64]
    public private(set) var count = 0
    /// No filed timer's slot comes before this tick (a lower bound on `nextExpiration()`,
    /// exact after a scan, lowered by `file`, left alone by `cancel`): `popExpired` returns
    /// at once while `now` is before it, without the scan of every level. Most wake-ups of
    /// a busy stack find no timer due.
    private var earliestBound: UInt64 = 0

    private var expiredList: Int32 { Int32(Self.levels * Self.slotsPerLevel) }

    public init(start: Instant = .zero) {
        elapsed = start.milliseconds
        let lists = Self.levels * Self.slotsPerLevel + 1
        heads = Array(repeating: -1, count: lists)
        tails = Array(repeating: -1, count: lists)
        occupied = Array(repeating: 0, count: Self.levels)
    }

    public var isEmpty: Bool { count == 0 }

    /// Arms a timer. It fires at the first `popExpired(now:)` with `now >= deadline`
    /// (deadlines are rounded up to the next millisecond, so a timer never fires early).
    @discardableResult
    public mutating func schedule(at deadline: Instant, _ value: Value) -> TimerHandle {
        let tick = deadline.millisecondsRoundedUp
        let index: Int32
        if freeHead >= 0 {
            index = freeHead
            freeHead = nodes[Int(index)].next
            nodes[Int(index)].tick = tick
            nodes[Int(index)].value = value
        } else {
            index = Int32(nodes.count)
            nodes.append(Node(tick: tick, next: -1, prev: -1, list: -1, generation: 0, value: value))
        }
        file(index)
        count += 1
        return TimerHandle(index: index, generation: nodes[Int(index)].generation)
    }

    /// Disarms a timer and returns its value; nil if it already fired or was cancelled.
    @discardableResult
    public mutating func cancel(_ handle: TimerHandle) -> Value? {
        let i = Int(handle.index)
        guard i < nodes.count, nodes[i].generation == handle.generation, nodes[i].list >= 0 else {
            return nil
        }
        unlink(handle.index)
        count -= 1
        return release(handle.index)
    }

    /// Whether the handle's timer is still armed.
    public func isArmed(_ handle: TimerHandle) -> Bool {
        let i = Int(handle.index)
        return i < nodes.count && nodes[i].generation == handle.generation && nodes[i].list >= 0
    }

    /// The earliest time at which the wheel has work: a timer's deadline, or the start of a
    /// higher-level slot whose timers must be re-filed. Never later than the earliest deadline.
    public var nextDeadline: Instant? {
        if heads[Int(expiredList)] >= 0 { return .milliseconds(elapsed) }
        return nextExpiration().map { .milliseconds($0.tick) }
    }

    /// Removes and returns one timer due at or before `now`, in deadline order (timers due in
    /// the same millisecond in the order they were armed). Returns nil when none is due.
    /// Safe to interleave with `schedule` and `cancel` between calls.
    public mutating func popExpired(now: Instant) -> (handle: TimerHandle, value: Value)? {
        let nowTick = now.milliseconds
        while true {
            let head = heads[Int(expiredList)]
            if head >= 0 {
                unlink(head)
                count -= 1
                let generation = nodes[Int(head)].generation
                let value = release(head)!
                return (TimerHandle(index: head, generation: generation), value)
            }
            // Before the bound, no slot is due: no scan.
            guard nowTick >= earliestBound else { break }
            let earliest = nextExpiration()
            guard let next = earliest, next.tick <= nowTick else {
                earliestBound = earliest?.tick ?? .max
                break
            }
            elapsed = next.tick
            // The slot's timers are re-filed below: the bound is known again at the next scan.
            earliestBound = elapsed
            // Re-file every timer of the slot relative to the new current tick: due ones go to
            // the expired list, the others cascade to lower levels.
            let list = next.list
            var cursor = heads[Int(list)]
            heads[Int(list)] = -1
            tails[Int(list)] = -1
            occupied[next.level] &= ~(1 << UInt64(next.slot))
            while cursor >= 0 {
                let following = nodes[Int(cursor)].next
                file(cursor)
                cursor = following
            }
        }
        if nowTick > elapsed { elapsed = nowTick }
        return nil
    }

    // MARK: - Internals

    private mutating func file(_ index: Int32) {
        let tick = nodes[Int(index)].tick
        let list: Int32
        if tick <= elapsed {
            list = expiredList
        } else {
            var masked = (elapsed ^ tick) | 63
            if masked > Self.maxSpan { masked = Self.maxSpan }
            let significant = 63 - UInt64(masked.leadingZeroBitCount)
            let level = Int(significant / Self.slotBits)
            let slot = Int((tick >> (UInt64(level) * Self.slotBits)) & 63)
            occupied[level] |= 1 << UInt64(slot)
            list = Int32(level * Self.slotsPerLevel + slot)
            earliestBound = min(earliestBound, slotTick(level: level, slot: slot))
        }
        // Append at the tail so timers of one tick fire in arming order.
        nodes[Int(index)].list = list
        nodes[Int(index)].next = -1
        nodes[Int(index)].prev = tails[Int(list)]
        if tails[Int(list)] >= 0 {
            nodes[Int(tails[Int(list)])].next = index
        } else {
            heads[Int(list)] = index
        }
        tails[Int(list)] = index
    }

    private mutating func unlink(_ index: Int32) {
        let node = nodes[Int(index)]
        let list = Int(node.list)
        if node.prev >= 0 { nodes[Int(node.prev)].next = node.next } else { heads[list] = node.next }
        if node.next >= 0 { nodes[Int(node.next)].prev = node.prev } else { tails[list] = node.prev }
        if heads[list] < 0 && list < Int(expiredList) {
            occupied[list / Self.slotsPerLevel] &= ~(1 << UInt64(list % Self.slotsPerLevel))
        }
        nodes[Int(index)].list = -1
    }

    private mutating func release(_ index: Int32) -> Value? {
        let value = nodes[Int(index)].value
        nodes[Int(index)].value = nil
        nodes[Int(index)].generation &+= 1
        nodes[Int(index)].next = freeHead
        freeHead = index
        return value
    }

    /// The tick at which the wheel reaches `slot` of `level` (the slot's start; the next
    /// round of the level when that start is not after the current tick).
    @inline(__always)
    private func slotTick(level: Int, slot: Int) -> UInt64 {
        let shift = UInt64(level) * Self.slotBits
        let slotRange: UInt64 = 1 << shift
        let levelRange: UInt64 = slotRange << Self.slotBits
        let levelStart = elapsed & ~(levelRange &- 1)
        let tick = levelStart &+ UInt64(slot) &* slotRange
        return tick <= elapsed ? tick &+ levelRange : tick
    }

    private func nextExpiration() -> (tick: UInt64, level: Int, slot: Int, list: Int32)? {
        var best: (tick: UInt64, level: Int, slot: Int, list: Int32)?
        for level in 0..<Self.levels {
            let bits = occupied[level]
            if bits == 0 { continue }
            let nowSlot = Int((elapsed >> (UInt64(level) * Self.slotBits)) & 63)
            let rotated = nowSlot == 0 ? bits : (bits >> UInt64(nowSlot)) | (bits << UInt64(64 - nowSlot))
            let slot = (rotated.trailingZeroBitCount + nowSlot) & 63
            let tick = slotTick(level: level, slot: slot)
            if best == nil || tick < best!.tick {
                best = (tick, level, slot, Int32(level * Self.slotsPerLevel + slot))
            }
        }
        return best
    }
}
