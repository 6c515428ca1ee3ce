import Timing

/// Identifies the fragments of one datagram (RFC 791 section 3.2: source, destination,
/// protocol and identification).
struct FragmentKey: Hashable {
    var source: IPv4Address
    var destination: IPv4Address
    var identification: UInt16
    var proto: IPProtocol
}

/// A datagram under reassembly. Fragments are kept apart, sorted by offset (not merged,
/// so that an exact duplicate can be told from an overlap), and copied into one buffer only
/// when the datagram is complete: a flood of lone fragments at large offsets costs only
/// their own bytes.
struct PartialDatagram {
    var fragments: [(range: Range<Int>, data: [UInt8])] = []
    var dataBytes = 0
    /// Payload length, known once the last fragment (MF clear) has arrived.
    var totalLength: Int?
    /// The header of the fragment at offset 0, once it has arrived.
    var firstHeader: [UInt8] = []
    var broadcast = false
    var timer: TimerHandle?
    var sequence: UInt64
    var memory: Int { dataBytes + firstHeader.count + PartialDatagram.overhead * (1 + fragments.count) }

    /// Book-keeping cost charged per datagram and per fragment, so that many tiny ones are
    /// bounded too.
    static let overhead = 128
}

/// IPv4 reassembly, bounded in datagrams, fragments and memory; a datagram left incomplete
/// times out, with an ICMP Time Exceeded when its first fragment came (RFC 1122 3.3.2).
extension NetworkStack {
    /// RFC 791 reassembly with RFC 815's observation that only the received ranges matter.
    /// Overlapping fragments are refused and the whole datagram dropped, as Linux does since
    /// 2018 (overlaps serve only attacks; RFC 5722 makes the same rule for IPv6). Memory is
    /// bounded across all datagrams; under pressure the oldest are dropped.
    func reassemble(_ packet: IPv4Packet, broadcast: Bool, now: Instant) {
        counters.ipReasmReqds &+= 1
        let key = FragmentKey(source: packet.source, destination: packet.destination,
                              identification: packet.identification, proto: packet.proto)
        let start = packet.fragmentOffset
        let data = packet.payload
        let end = start + data.count
        let last = !packet.moreFragments

        // Per-fragment sanity: all but the last carry a non-zero multiple of 8 bytes, and no
        // datagram exceeds 65535 bytes (RFC 791 section 3.1, Total Length).
        guard data.count > 0, last || data.count % 8 == 0, packet.headerLength + end <= IPv4Packet.maximumLength else {
            counters.ipReasmFails &+= 1
            if reassembly[key] != nil { removePartial(key) }
            return
        }

        if reassembly[key] == nil {
            guard reassembly.count < configuration.reassembly.maxDatagrams || evictOldestPartial() else {
                counters.ipReasmFails &+= 1
                return
            }
            reassemblySequence &+= 1
            var partial = PartialDatagram(sequence: reassemblySequence)
            partial.timer = wheel.schedule(at: now.adding(milliseconds: configuration.reassembly.timeoutMilliseconds), .reassembly(key))
            reassembly[key] = partial
            reassemblyMemory += partial.memory
        }
        var partial = reassembly[key]!

        // Where the new range goes, and whether it collides.
        var index = partial.fragments.count
        for (i, range) in partial.fragments.lazy.map(\.range).enumerated() {
            if range == start..<end {
                counters.ipReasmDuplicates &+= 1
                return
            }
            if range.overlaps(start..<end) {
                counters.ipReasmOverlaps &+= 1
                counters.ipReasmFails &+= 1
                removePartial(key)
                return
            }
            if range.lowerBound > start {
                index = i
                break
            }
        }
        if last {
            if let total = partial.totalLength, total != end {
                counters.ipReasmFails &+= 1
                removePartial(key)
                return
            }
            partial.totalLength = end
        }
        if let total = partial.totalLength, end > total || (partial.fragments.last?.range.upperBound ?? 0) > total {
            counters.ipReasmFails &+= 1
            removePartial(key)
            return
        }
        guard partial.fragments.count < configuration.reassembly.maxFragmentsPerDatagram else {
            counters.ipReasmFails &+= 1
            removePartial(key)
            return
        }

        // Charge the memory this fragment needs before taking it.
        let growth = data.count + PartialDatagram.overhead + (start == 0 ? packet.headerLength : 0)
        if reassemblyMemory + growth > configuration.reassembly.memoryLimit {
            reassembly[key] = partial
            while reassemblyMemory + growth > configuration.reassembly.memoryLimit {
                guard evictOldestPartial(sparing: key) else { break }
            }
            guard reassemblyMemory + growth <= configuration.reassembly.memoryLimit else {
                counters.ipReasmFails &+= 1
                removePartial(key)
                return
            }
            partial = reassembly[key]!
        }
        reassemblyMemory += growth
        partial.fragments.insert((start..<end, Array(data)), at: index)
        partial.dataBytes += data.count
        if start == 0 { partial.firstHeader = Array(packet.header) }
        partial.broadcast = partial.broadcast || broadcast

        if let total = partial.totalLength, isContiguous(partial.fragments, total: total) {
            reassembly[key] = partial
            removePartial(key)
            counters.ipReasmOKs &+= 1
            var payload = [UInt8](repeating: 0, count: total)
            payload.withUnsafeMutableBytes { buffer in
                for fragment in partial.fragments {
                    fragment.data.withUnsafeBytes { buffer.copy($0, to: fragment.range.lowerBound) }
                }
            }
            partial.firstHeader.withUnsafeBytes { header in
                payload.withUnsafeBytes { payload in
                    deliver(IPv4Datagram(source: key.source, destination: key.destination, proto: key.proto,
                                         header: header, payload: payload, broadcast: partial.broadcast),
                            now: now)
                }
            }
            return
        }
        reassembly[key] = partial
    }

    func reassemblyTimedOut(_ key: FragmentKey, now: Instant) {
        guard let partial = reassembly[key] else { return }
        reassembly[key]!.timer = nil
        removePartial(key)
        counters.ipReasmTimeout &+= 1
        counters.ipReasmFails &+= 1
        // RFC 792 / RFC 1122 3.3.2: Time Exceeded, code 1, only if the first fragment came.
        guard !partial.firstHeader.isEmpty else { return }
        // The first fragment is the first in offset order; quote its leading data.
        partial.firstHeader.withUnsafeBytes { header in
            partial.fragments[0].data.withUnsafeBytes { data in
                sendICMPError(type: .timeExceeded, code: 1,
                              about: IPv4Datagram(source: key.source, destination: key.destination, proto: key.proto,
                                                  header: header, payload: data, broadcast: partial.broadcast),
                              now: now)
            }
        }
    }

    /// Number of datagrams under reassembly and the bytes they hold (for tests and display).
    public var reassemblyState: (datagrams: Int, bytes: Int) { (reassembly.count, reassemblyMemory) }

    private func isContiguous(_ fragments: [(range: Range<Int>, data: [UInt8])], total: Int) -> Bool {
        var expected = 0
        for (range, _) in fragments {
            guard range.lowerBound == expected else { return false }
            expected = range.upperBound
        }
        return expected == total
    }

    func removePartial(_ key: FragmentKey) {
        guard let partial = reassembly.removeValue(forKey: key) else { return }
        if let timer = partial.timer { wheel.cancel(timer) }
        reassemblyMemory -= partial.memory
    }


    /// Drops the oldest datagram under reassembly (other than `sparing`); false if none.
    private func evictOldestPartial(sparing: FragmentKey? = nil) -> Bool {
        guard let victim = reassembly.filter({ $0.key != sparing }).min(by: { $0.value.sequence < $1.value.sequence }) else {
            return false
        }
        counters.ipReasmFails &+= 1
        removePartial(victim.key)
        return true
    }
}
