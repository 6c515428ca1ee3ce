import Timing

/// Identifies the fragments of one IPv6 packet (RFC 8200 4.5: source, destination and
/// identification).
struct Fragment6Key: Hashable {
    var source: IPv6Address
    var destination: IPv6Address
    var identification: UInt32
}

/// The Fragment header (RFC 8200 4.5).
enum FragmentHeader {
    static let length = 8
    static let nextHeader = 0
    /// Fragment offset in 8-byte units (13 bits), two reserved bits, the M flag.
    static let offsetAndFlags = 2
    static let identification = 4
    static let moreFragments: UInt16 = 1
}

/// IPv6 reassembly (RFC 8200 4.5) over the FragmentTable IPv4 uses: a table of its own,
/// whose datagrams live 60 s; overlaps discard the whole packet and its later fragments
/// (RFC 5722); atomic fragments are processed at once (RFC 6946); a first fragment without
/// the whole header chain is refused (RFC 7112).
extension NetworkStack {
    /// A packet whose header walk reached a Fragment header at `offset`; `nextField` is the
    /// Next Header field that named it.
    func receiveFragment(_ packet: IPv6Packet, at offset: Int, nextField: Int, checksumVerified: Bool, now: Instant) {
        counters.ip6ReasmReqds &+= 1
        let bytes = packet.bytes
        guard offset + FragmentHeader.length <= bytes.count else {
            counters.ip6InHdrErrors &+= 1
            counters.ip6ReasmFails &+= 1
            return
        }
        let next = IPv6NextHeader(rawValue: bytes.u8(offset + FragmentHeader.nextHeader))
        let field = bytes.be16(offset + FragmentHeader.offsetAndFlags)
        let start = Int(field & 0xFFF8)
        let more = field & FragmentHeader.moreFragments != 0
        let dataOffset = offset + FragmentHeader.length
        let data = bytes.suffix(from: dataOffset)

        // RFC 6946 / RFC 8200 4.5: offset 0 and M clear is a whole packet with a Fragment
        // header; it never joins (or disturbs) a reassembly with the same identification.
        if start == 0 && !more {
            counters.ip6ReasmOKs &+= 1
            walkHeaders(packet, next: next, offset: dataOffset, nextField: offset, checksumVerified: checksumVerified,
                        now: now)
            return
        }
        // RFC 8200 4.5: a fragment other than the last whose length is not a multiple of 8:
        // Parameter Problem code 0 pointing at the Payload Length.
        if more && data.count % 8 != 0 {
            counters.ip6InHdrErrors &+= 1
            counters.ip6ReasmFails &+= 1
            sendParameterProblem(ICMPv6Code.erroneousHeaderField, pointer: IPv6Packet.Field.payloadLength, packet: packet,
                                 now: now)
            return
        }
        // A reassembled Payload Length over 65535: Parameter Problem at the Fragment Offset.
        if offset - IPv6Packet.headerLength + start + data.count > IPv6Packet.maximumPayloadLength {
            counters.ip6InHdrErrors &+= 1
            counters.ip6ReasmFails &+= 1
            sendParameterProblem(ICMPv6Code.erroneousHeaderField, pointer: offset + FragmentHeader.offsetAndFlags,
                                 packet: packet, now: now)
            return
        }
        // RFC 7112 section 5: the first fragment carries every header up to the upper layer's.
        if start == 0 && !Self.headerChainComplete(bytes, next: next, from: dataOffset) {
            counters.ip6InHdrErrors &+= 1
            counters.ip6ReasmFails &+= 1
            sendParameterProblem(ICMPv6Code.incompleteHeaderChain, pointer: 0, packet: packet, now: now)
            return
        }
        guard data.count > 0 else {
            counters.ip6ReasmFails &+= 1
            return
        }
        let key = Fragment6Key(source: packet.source, destination: packet.destination,
                               identification: bytes.be32(offset + FragmentHeader.identification))
        // The first fragment's headers are kept as they came, Fragment header included, so
        // that a Time Exceeded can quote the fragment whole.
        let (outcome, evicted) = ip6!.reassembly.add(key, start: start, data: data, last: !more,
                                                     header: bytes.slice(0..<dataOffset), now: now, wheel: &wheel)
        counters.ip6ReasmFails &+= UInt64(evicted)
        switch outcome {
        case .incomplete, .duplicate:
            break
        case .overlap, .failed, .refused, .discarded:
            counters.ip6ReasmFails &+= 1
        case .complete(let partial):
            // Each fragment was checked against its own unfragmentable part; the packet takes
            // the first fragment's, which may be longer.
            guard partial.firstHeader.count - FragmentHeader.length - IPv6Packet.headerLength + partial.totalLength!
                    <= IPv6Packet.maximumPayloadLength else {
                counters.ip6ReasmFails &+= 1
                return
            }
            counters.ip6ReasmOKs &+= 1
            deliverReassembled(partial, now: now)
        }
    }

    /// RFC 8200 4.5: the unfragmentable part of the first fragment, its last Next Header set
    /// to the Fragment header's, then the fragments' data; the header walk goes on from there.
    private func deliverReassembled(_ partial: PartialDatagram, now: Instant) {
        let unfragmentable = partial.firstHeader.count - FragmentHeader.length
        let next = partial.firstHeader[unfragmentable + FragmentHeader.nextHeader]
        var bytes = [UInt8](repeating: 0, count: unfragmentable + partial.totalLength!)
        bytes.withUnsafeMutableBytes { buffer in
            partial.firstHeader.withUnsafeBytes { buffer.copy($0.slice(0..<unfragmentable), to: 0) }
            partial.copyData(into: buffer.suffix(from: unfragmentable))
            buffer.setBE16(UInt16(buffer.count - IPv6Packet.headerLength), IPv6Packet.Field.payloadLength)
        }
        // The headers before the Fragment header were walked when the first fragment came.
        var nextField = IPv6Packet.Field.nextHeader
        var offset = IPv6Packet.headerLength
        while offset < unfragmentable {
            nextField = offset
            offset += (Int(bytes[offset + 1]) + 1) * 8
        }
        bytes[nextField] = next
        bytes.withUnsafeBytes { buffer in
            guard let packet = try? IPv6Packet(buffer) else { return }
            walkHeaders(packet, next: IPv6NextHeader(rawValue: next), offset: unfragmentable, nextField: nextField,
                        checksumVerified: false, now: now)
        }
    }

    /// Whether the headers from `offset` on reach the upper-layer header and hold it whole
    /// (RFC 7112); an unknown Next Header ends the chain.
    private static func headerChainComplete(_ bytes: UnsafeRawBufferPointer, next: IPv6NextHeader, from offset: Int) -> Bool {
        var next = next
        var offset = offset
        while true {
            switch next {
            case .hopByHop, .routing, .destinationOptions, .fragment:
                guard offset + 8 <= bytes.count else { return false }
                let length = next == .fragment ? FragmentHeader.length : (Int(bytes.u8(offset + 1)) + 1) * 8
                next = IPv6NextHeader(rawValue: bytes.u8(offset))
                offset += length
            case .tcp: return offset + 20 <= bytes.count
            case .udp: return offset + 8 <= bytes.count
            case .icmpv6: return offset + ICMPv6Message.headerLength <= bytes.count
            default: return offset <= bytes.count
            }
        }
    }

    func reassembly6TimedOut(_ key: Fragment6Key, now: Instant) {
        guard let partial = ip6?.reassembly.expire(key, wheel: &wheel), !partial.discarded else { return }
        counters.ip6ReasmTimeout &+= 1
        counters.ip6ReasmFails &+= 1
        // RFC 8200 4.5: Time Exceeded code 1 to the source, only if the first fragment came;
        // it quotes that fragment.
        guard !partial.firstHeader.isEmpty else { return }
        let first = partial.firstHeader + partial.fragments[0].data
        first.withUnsafeBytes { sendICMPv6Error(type: .timeExceeded, code: ICMPv6Code.reassemblyTimeExceeded, parameter: 0, about: $0, now: now) }
    }

    /// IPv6 packets under reassembly and the bytes they hold (for tests and display).
    public var reassembly6State: (datagrams: Int, bytes: Int) {
        (ip6?.reassembly.partials.count ?? 0, ip6?.reassembly.memory ?? 0)
    }
}
