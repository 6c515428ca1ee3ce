import Timing

/// One transmitted span of sequence space and what is known of it.
struct SentSegment {
    var start: SeqNum
    var end: SeqNum
    /// When it was (last) sent.
    var sentAt: Instant
    var retransmitted = false
    /// RACK deemed it lost and it has not been resent since.
    var lost = false
    var sacked = false

    var length: Int { start.distance(to: end) }
}

/// Send times and loss marks of everything between SND.UNA and SND.MAX, in sequence order
/// and contiguous: the per-segment state RACK (RFC 8985) needs. Entries split when a
/// retransmission covers part of one.
struct TransmitLog {
    private(set) var segments: [SentSegment] = []
    private var head = 0
    /// Entries marked retransmitted: while zero, entries are in send-time order too, and
    /// RACK can stop at the first one sent after the most recently delivered.
    private(set) var retransmittedCount = 0

    var isEmpty: Bool { head == segments.count }
    var count: Int { segments.count - head }
    var indices: Range<Int> { head..<segments.count }

    subscript(i: Int) -> SentSegment {
        get { segments[i] }
        set { segments[i] = newValue }
    }

    mutating func clear() {
        segments.removeAll(keepingCapacity: true)
        head = 0
        retransmittedCount = 0
    }

    /// Records a transmission of [start, end): new data is appended; a retransmission
    /// restamps the entries it covers (split to its bounds).
    mutating func sent(start: SeqNum, end: SeqNum, at now: Instant) {
        guard start < end else { return }
        if let last = segments.last, head < segments.count, start >= last.end {
            segments.append(SentSegment(start: start, end: end, sentAt: now))
            return
        }
        if isEmpty {
            // A new connection's first: room for a short exchange (SYN, data, FIN) in one
            // allocation rather than one per doubling.
            if segments.capacity == 0 { segments.reserveCapacity(4) }
            segments.append(SentSegment(start: start, end: end, sentAt: now))
            return
        }
        split(at: start)
        split(at: end)
        var i = firstIndex(containing: start) ?? segments.count
        while i < segments.count && segments[i].start < end {
            segments[i].sentAt = now
            if !segments[i].retransmitted { retransmittedCount += 1 }
            segments[i].retransmitted = true
            segments[i].lost = false
            i += 1
        }
        if let last = segments.last, end > last.end {
            segments.append(SentSegment(start: last.end, end: end, sentAt: now))
        }
    }

    /// Drops what SND.UNA has passed.
    mutating func acknowledge(upTo una: SeqNum) {
        while head < segments.count && segments[head].end <= una {
            if segments[head].retransmitted { retransmittedCount -= 1 }
            head += 1
        }
        if head < segments.count && segments[head].start < una { segments[head].start = una }
        if head > 256 && head * 2 > segments.count {
            segments.removeFirst(head)
            head = 0
        }
    }

    /// Index of the entry holding `seq`, by binary search.
    func firstIndex(containing seq: SeqNum) -> Int? {
        var lo = head
        var hi = segments.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if segments[mid].end <= seq { lo = mid + 1 } else { hi = mid }
        }
        return lo < segments.count && segments[lo].start <= seq ? lo : nil
    }

    /// Splits the entry containing `seq` so that an entry starts at `seq`.
    mutating func split(at seq: SeqNum) {
        guard let i = firstIndex(containing: seq), segments[i].start < seq else { return }
        var right = segments[i]
        right.start = seq
        segments[i].end = seq
        segments.insert(right, at: i + 1)
        if right.retransmitted { retransmittedCount += 1 }
    }
}
