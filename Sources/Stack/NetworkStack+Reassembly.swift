import Timing

/// Identifies the fragments of one datagram (RFC 791 section 3.2: source, destination,
/// protocol and identification).
struct FragmentKey: Hashable {
    var source: IPv4Address
    var destination: IPv4Address
    var identification: UInt16
    var proto: IPProtocol
}

/// IPv4 reassembly over the shared FragmentTable, bounded in datagrams, fragments and
/// memory; a datagram left incomplete times out, with an ICMP Time Exceeded when its first
/// fragment came (RFC 1122 3.3.2).
extension NetworkStack {
    /// Overlapping fragments are refused and the whole datagram dropped, as Linux does since
    /// 2018 (overlaps serve only attacks; RFC 5722 makes the same rule for IPv6).
    func reassemble(_ packet: IPv4Packet, broadcast: Bool, now: Instant) {
        counters.ipReasmReqds &+= 1
        let key = FragmentKey(source: packet.source, destination: packet.destination,
                              identification: packet.identification, proto: packet.proto)
        let start = packet.fragmentOffset
        let data = packet.payload
        let last = !packet.moreFragments

        // Per-fragment sanity: all but the last carry a non-zero multiple of 8 bytes, and no
        // datagram exceeds 65535 bytes (RFC 791 section 3.1, Total Length).
        guard data.count > 0, last || data.count % 8 == 0,
              packet.headerLength + start + data.count <= IPv4Packet.maximumLength else {
            counters.ipReasmFails &+= 1
            reassembly.remove(key, wheel: &wheel)
            return
        }
        let (outcome, evicted) = reassembly.add(key, start: start, data: data, last: last, header: packet.header,
                                                broadcast: broadcast, now: now, wheel: &wheel)
        counters.ipReasmFails &+= UInt64(evicted)
        switch outcome {
        case .incomplete, .discarded:
            break
        case .duplicate:
            counters.ipReasmDuplicates &+= 1
        case .overlap:
            counters.ipReasmOverlaps &+= 1
            counters.ipReasmFails &+= 1
        case .failed, .refused:
            counters.ipReasmFails &+= 1
        case .complete(let partial):
            counters.ipReasmOKs &+= 1
            var payload = [UInt8](repeating: 0, count: partial.totalLength!)
            payload.withUnsafeMutableBytes { partial.copyData(into: $0) }
            partial.firstHeader.withUnsafeBytes { header in
                payload.withUnsafeBytes { payload in
                    deliver(IPv4Datagram(source: key.source, destination: key.destination, proto: key.proto,
                                         header: header, payload: payload, broadcast: partial.broadcast),
                            now: now)
                }
            }
        }
    }

    func reassemblyTimedOut(_ key: FragmentKey, now: Instant) {
        guard let partial = reassembly.expire(key, wheel: &wheel) else { return }
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
    public var reassemblyState: (datagrams: Int, bytes: Int) { (reassembly.partials.count, reassembly.memory) }
}
