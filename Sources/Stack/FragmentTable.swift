import Timing

/// A datagram under reassembly. Fragments are kept apart, sorted by offset (not merged,
/// so that an exact duplicate can be told from an overlap), and copied into one buffer only
/// when the datagram is complete: a flood of lone fragments at large offsets costs only
/// their own bytes.
struct PartialDatagram {
    var fragments: [(range: Range<Int>, data: [UInt8])] = []
    var dataBytes = 0
    /// Length of the reassembled data, known once the last fragment (MF / M clear) has arrived.
    var totalLength: Int?
    /// The headers before the data of the fragment at offset 0, once it has arrived: the IPv4
    /// header, or IPv6's unfragmentable part and Fragment header.
    var firstHeader: [UInt8] = []
    var broadcast = false
    /// An overlap discarded it (RFC 5722): it holds no data and stays until its timer runs
    /// out only so that its later fragments are discarded too.
    var discarded = false
    var timer: TimerHandle?
    var sequence: UInt64
    var memory: Int { dataBytes + firstHeader.count + PartialDatagram.overhead * (1 + fragments.count) }

    /// Book-keeping cost charged per datagram and per fragment, so that many tiny ones are
    /// bounded too.
    static let overhead = 128

    /// Copies the fragments' data to their offsets in `buffer` (at least `totalLength` bytes).
    func copyData(into buffer: UnsafeMutableRawBufferPointer) {
        for fragment in fragments {
            fragment.data.withUnsafeBytes { buffer.copy($0, to: fragment.range.lowerBound) }
        }
    }
}

/// The reassembly machinery both IP versions share (RFC 791 with RFC 815's observation that
/// only the received ranges matter; RFC 8200 4.5): datagrams under way keyed by `Key`,
/// bounded in number, in fragments each and in memory across all (under pressure the oldest
/// go), each with a timer in the stack's wheel. What is sent or counted about a fragment is
/// left to the caller, told by the `Outcome`.
struct FragmentTable<Key: Hashable> {
    private(set) var partials: [Key: PartialDatagram] = [:]
    private(set) var memory = 0
    private var sequence: UInt64 = 0
    let limits: ReassemblyConfiguration
    /// Keep a datagram discarded for an overlap until it times out (RFC 5722, IPv6), rather
    /// than forgetting it (IPv4: a later fragment then starts a datagram that cannot finish).
    let remembersDiscarded: Bool
    /// The wheel entry of a datagram's timeout.
    let timer: (Key) -> StackTimer

    init(limits: ReassemblyConfiguration, remembersDiscarded: Bool, timer: @escaping (Key) -> StackTimer) {
        self.limits = limits
        self.remembersDiscarded = remembersDiscarded
        self.timer = timer
    }

    enum Outcome {
        case incomplete
        case duplicate
        /// Overlapping an earlier fragment: the whole datagram is discarded.
        case overlap
        /// Inconsistent ends, too many fragments or no memory: the datagram is dropped.
        case failed
        /// No room for another datagram.
        case refused
        /// A fragment of a datagram already discarded for an overlap.
        case discarded
        /// The last missing fragment: the datagram, no longer in the table.
        case complete(PartialDatagram)
    }

    /// Takes one fragment of data at `start` (the last if `last`); `header` is kept from the
    /// fragment at offset 0. `evicted` says how many other datagrams were dropped for room.
    mutating func add(_ key: Key, start: Int, data: UnsafeRawBufferPointer, last: Bool, header: UnsafeRawBufferPointer,
                      broadcast: Bool = false, now: Instant, wheel: inout TimingWheel<StackTimer>)
        -> (outcome: Outcome, evicted: Int) {
        let end = start + data.count
        var evicted = 0
        if partials[key] == nil {
            if partials.count >= limits.maxDatagrams {
                guard evictOldest(sparing: nil, wheel: &wheel) else { return (.refused, 0) }
                evicted += 1
            }
            sequence &+= 1
            var partial = PartialDatagram(sequence: sequence)
            partial.timer = wheel.schedule(at: now.adding(milliseconds: limits.timeoutMilliseconds), timer(key))
            partials[key] = partial
            memory += partial.memory
        }
        var partial = partials[key]!
        if partial.discarded { return (.discarded, evicted) }

        // Where the new range goes, and whether it collides.
        var index = partial.fragments.count
        for (i, range) in partial.fragments.lazy.map(\.range).enumerated() {
            if range == start..<end { return (.duplicate, evicted) }
            if range.overlaps(start..<end) {
                discard(key, wheel: &wheel)
                return (.overlap, evicted)
            }
            if range.lowerBound > start {
                index = i
                break
            }
        }
        if last {
            if let total = partial.totalLength, total != end {
                remove(key, wheel: &wheel)
                return (.failed, evicted)
            }
            partial.totalLength = end
        }
        if let total = partial.totalLength, end > total || (partial.fragments.last?.range.upperBound ?? 0) > total {
            remove(key, wheel: &wheel)
            return (.failed, evicted)
        }
        guard partial.fragments.count < limits.maxFragmentsPerDatagram else {
            remove(key, wheel: &wheel)
            return (.failed, evicted)
        }

        // Charge the memory this fragment needs before taking it.
        let growth = data.count + PartialDatagram.overhead + (start == 0 ? header.count : 0)
        if memory + growth > limits.memoryLimit {
            partials[key] = partial
            while memory + growth > limits.memoryLimit, evictOldest(sparing: key, wheel: &wheel) { evicted += 1 }
            guard memory + growth <= limits.memoryLimit else {
                remove(key, wheel: &wheel)
                return (.failed, evicted)
            }
            partial = partials[key]!
        }
        memory += growth
        partial.fragments.insert((start..<end, Array(data)), at: index)
        partial.dataBytes += data.count
        if start == 0 { partial.firstHeader = Array(header) }
        partial.broadcast = partial.broadcast || broadcast
        partials[key] = partial

        guard let total = partial.totalLength, Self.isContiguous(partial.fragments, total: total) else {
            return (.incomplete, evicted)
        }
        remove(key, wheel: &wheel)
        return (.complete(partial), evicted)
    }

    /// The datagram whose timer fired, taken out of the table; nil if it is gone already.
    mutating func expire(_ key: Key, wheel: inout TimingWheel<StackTimer>) -> PartialDatagram? {
        guard partials[key] != nil else { return nil }
        partials[key]!.timer = nil
        let partial = partials[key]!
        remove(key, wheel: &wheel)
        return partial
    }

    mutating func remove(_ key: Key, wheel: inout TimingWheel<StackTimer>) {
        guard let partial = partials.removeValue(forKey: key) else { return }
        if let timer = partial.timer { wheel.cancel(timer) }
        memory -= partial.memory
    }

    /// Drops an overlapped datagram's data; it stays as a marker if `remembersDiscarded`.
    private mutating func discard(_ key: Key, wheel: inout TimingWheel<StackTimer>) {
        guard remembersDiscarded, var partial = partials[key] else { return remove(key, wheel: &wheel) }
        memory -= partial.memory
        partial.fragments = []
        partial.dataBytes = 0
        partial.firstHeader = []
        partial.discarded = true
        memory += partial.memory
        partials[key] = partial
    }

    /// Drops the oldest datagram under reassembly (other than `sparing`); false if none.
    private mutating func evictOldest(sparing: Key?, wheel: inout TimingWheel<StackTimer>) -> Bool {
        var victim: (key: Key, sequence: UInt64)?
        for (key, partial) in partials where key != sparing && partial.sequence < (victim?.sequence ?? .max) {
            victim = (key, partial.sequence)
        }
        guard let victim else { return false }
        remove(victim.key, wheel: &wheel)
        return true
    }

    private static func isContiguous(_ fragments: [(range: Range<Int>, data: [UInt8])], total: Int) -> Bool {
        var expected = 0
        for (range, _) in fragments {
            guard range.lowerBound == expected else { return false }
            expected = range.upperBound
        }
        return expected == total
    }
}
