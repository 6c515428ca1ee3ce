/// The sender's record of what the receiver has SACKed (RFC 2018, RFC 6675 section 3):
/// sorted, disjoint ranges above SND.UNA.
struct SACKScoreboard {
    private(set) var ranges: [(start: SeqNum, end: SeqNum)] = []
    private(set) var sackedBytes = 0

    var isEmpty: Bool { ranges.isEmpty }
    var highestSacked: SeqNum? { ranges.last?.end }

    mutating func clear() {
        ranges.removeAll(keepingCapacity: true)
        sackedBytes = 0
    }

    /// Adds the blocks of one ACK. Blocks outside (una, max] are ignored (D-SACK and
    /// invalid ones, RFC 2883 / RFC 6675 section 5). Returns whether anything new was learnt.
    mutating func update(_ blocks: SACKBlocks, una: SeqNum, max: SeqNum) -> Bool {
        var changed = false
        for i in 0..<blocks.count {
            var (start, end) = blocks[i]
            guard start < end, end <= max, end > una else { continue }
            if start < una { start = una }
            changed = insert(start, end) || changed
        }
        return changed
    }

    private mutating func insert(_ start: SeqNum, _ end: SeqNum) -> Bool {
        var s = start
        var e = end
        var i = 0
        // Skip ranges entirely below.
        while i < ranges.count && ranges[i].end < s { i += 1 }
        var j = i
        while j < ranges.count && ranges[j].start <= e {
            if ranges[j].start <= s && ranges[j].end >= e { return false }  // already known
            s = SeqNum.min(s, ranges[j].start)
            e = SeqNum.max(e, ranges[j].end)
            j += 1
        }
        for k in i..<j { sackedBytes -= ranges[k].start.distance(to: ranges[k].end) }
        ranges.replaceSubrange(i..<j, with: [(s, e)])
        sackedBytes += s.distance(to: e)
        return true
    }

    /// Forgets everything below the new SND.UNA.
    mutating func advance(una: SeqNum) {
        var drop = 0
        while drop < ranges.count && ranges[drop].end <= una {
            sackedBytes -= ranges[drop].start.distance(to: ranges[drop].end)
            drop += 1
        }
        if drop > 0 { ranges.removeFirst(drop) }
        if let first = ranges.first, first.start < una {
            sackedBytes -= first.start.distance(to: una)
            ranges[0].start = una
        }
    }

    /// If `seq` lies in a SACKed range, that range's end.
    func sackedEnd(containing seq: SeqNum) -> SeqNum? {
        for r in ranges {
            if seq < r.start { return nil }
            if seq < r.end { return r.end }
        }
        return nil
    }

    /// The first SACKed range starting after `seq` (to bound a retransmission).
    func nextSackedStart(after seq: SeqNum) -> SeqNum? {
        ranges.first { $0.start > seq }?.start
    }

    /// Whether [start, end) lies inside one SACKed range.
    func covers(_ start: SeqNum, _ end: SeqNum) -> Bool {
        for r in ranges {
            if start < r.start { return false }
            if end <= r.end { return true }
        }
        return false
    }
}
