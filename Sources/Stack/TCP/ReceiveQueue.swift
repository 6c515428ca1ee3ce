/// A connection's receive buffer (RFC 9293 3.10.7.4 "seventh, process the segment text"):
/// in-order bytes wait in a ring for the application; segments beyond RCV.NXT are written
/// straight to their place in the same ring and remembered as ranges, so out-of-order data
/// costs no extra memory and can never exceed the window we advertised.
struct ReceiveQueue {
    private(set) var ring: ByteRing
    /// Out-of-order ranges beyond RCV.NXT, sorted and disjoint (merged when adjacent).
    private(set) var outOfOrder: [(start: SeqNum, end: SeqNum)] = []
    /// The range that received the latest out-of-order segment, reported first in SACK
    /// blocks (RFC 2018 section 4).
    private var latest: SeqNum?

    init(capacity: Int, pool: RingStoragePool? = nil) { ring = ByteRing(capacity: capacity, pool: pool) }

    /// Bytes ready for the application.
    var readable: Int { ring.count }
    /// Room from RCV.NXT for new data (the largest window we may offer).
    var space: Int { ring.free }
    var hasOutOfOrder: Bool { !outOfOrder.isEmpty }

    /// Stores `data` that starts at `seq`, with `rcvNxt` the next expected byte. Bytes
    /// outside [rcvNxt, rcvNxt + space) are ignored. Returns how far RCV.NXT advanced and
    /// whether the segment left (or filled) a hole, which asks for an immediate ACK.
    mutating func insert(seq: SeqNum, data: UnsafeRawBufferPointer, rcvNxt: SeqNum) -> (advanced: Int, outOfOrder: Bool) {
        var start = seq
        var bytes = data
        // Trim what is already received.
        let old = start.distance(to: rcvNxt)
        if old > 0 {
            guard old < bytes.count else { return (0, false) }
            bytes = bytes.suffix(from: old)
            start = rcvNxt
        }
        let offset = rcvNxt.distance(to: start)
        let room = space - offset
        guard room > 0 else { return (0, true) }
        if bytes.count > room { bytes = bytes.slice(0..<room) }
        guard !bytes.isEmpty else { return (0, false) }
        ring.write(bytes, at: ring.count + offset)
        let end = start + bytes.count
        if offset == 0 {
            var advanced = bytes.count
            var next = end
            let hadHoles = !outOfOrder.isEmpty
            // Absorb out-of-order ranges that are now contiguous.
            while let first = outOfOrder.first, first.start <= next {
                if first.end > next {
                    advanced += next.distance(to: first.end)
                    next = first.end
                }
                outOfOrder.removeFirst()
            }
            ring.commit(advanced)
            if outOfOrder.isEmpty { latest = nil }
            return (advanced, hadHoles)
        }
        addRange(start, end)
        latest = start
        return (0, true)
    }

    private mutating func addRange(_ start: SeqNum, _ end: SeqNum) {
        var s = start
        var e = end
        var merged: [(start: SeqNum, end: SeqNum)] = []
        merged.reserveCapacity(outOfOrder.count + 1)
        var placed = false
        for range in outOfOrder {
            if range.end < s {
                merged.append(range)
            } else if e < range.start {
                if !placed {
                    merged.append((s, e))
                    placed = true
                }
                merged.append(range)
            } else {
                s = SeqNum.min(s, range.start)
                e = SeqNum.max(e, range.end)
            }
        }
        if !placed { merged.append((s, e)) }
        outOfOrder = merged
    }

    /// SACK blocks to report (RFC 2018 section 4): the block holding the latest arrival
    /// first, then the others from the highest down, at most `limit`.
    func sackBlocks(limit: Int) -> SACKBlocks {
        var blocks = SACKBlocks()
        guard !outOfOrder.isEmpty, limit > 0 else { return blocks }
        var first: Int?
        if let latest {
            first = outOfOrder.firstIndex { latest.isIn($0.start, $0.end) || latest == $0.start }
        }
        if let first { blocks.append(start: outOfOrder[first].start, end: outOfOrder[first].end) }
        for i in outOfOrder.indices.reversed() where i != first && blocks.count < min(limit, SACKBlocks.capacity) {
            blocks.append(start: outOfOrder[i].start, end: outOfOrder[i].end)
        }
        return blocks
    }

    /// Gives the ring's storage back (TIME-WAIT); nothing may be held, in order or beyond.
    mutating func releaseStorage() {
        precondition(outOfOrder.isEmpty)
        ring.releaseStorage()
        latest = nil
    }

    /// Enlarges the buffer (receive autotuning), keeping readable and out-of-order data.
    mutating func grow(to capacity: Int, rcvNxt: SeqNum) {
        guard capacity > ring.capacity else { return }
        let extra = outOfOrder.last.map { rcvNxt.distance(to: $0.end) } ?? 0
        ring = ring.grown(to: capacity, extra: max(extra, 0))
    }

    /// Drops `n` readable bytes (they were taken in place).
    mutating func consume(_ n: Int) { ring.consume(n) }

    /// Copies up to `destination.count` readable bytes; consumes them unless peeking.
    mutating func read(into destination: UnsafeMutableRawBufferPointer, peek: Bool) -> Int {
        let n = min(destination.count, ring.count)
        ring.copy(from: 0, length: n, into: destination)
        if !peek { ring.consume(n) }
        return n
    }
}
