import Timing

/// Framing of the IPv6 packets we send: whole when they fit the path MTU toward their
/// destination, else in fragments (RFC 8200 4.5) whose identification an off-path node
/// cannot predict (RFC 7739).
extension NetworkStack {
    /// Frames a packet to `mac`, in fragments if it exceeds the path MTU.
    func emitIPv6(to mac: MACAddress, source: IPv6Address, destination: IPv6Address, nextHeader: IPv6NextHeader,
                  hopLimit: UInt8, payload: UnsafeRawBufferPointer) {
        let mtu = pathMTU(toward: destination)
        guard IPv6Packet.headerLength + payload.count > mtu else {
            emitIPv6Frame(to: mac, source: source, destination: destination, nextHeader: nextHeader, hopLimit: hopLimit,
                          payload: payload, fragment: nil)
            return
        }
        // Every fragment but the last carries a multiple of 8 bytes (RFC 8200 4.5); with an
        // MTU of at least 1280 the first holds our headers, which are all upper-layer ones.
        let perFragment = (mtu - IPv6Packet.headerLength - FragmentHeader.length) & ~7
        let identification = fragmentIdentification(source: source, destination: destination)
        var start = 0
        while start < payload.count {
            let end = min(start + perFragment, payload.count)
            let field = UInt16(start) | (end < payload.count ? FragmentHeader.moreFragments : 0)
            emitIPv6Frame(to: mac, source: source, destination: destination, nextHeader: nextHeader, hopLimit: hopLimit,
                          payload: payload.slice(start..<end), fragment: (field, identification))
            counters.ip6FragCreates &+= 1
            start = end
        }
        counters.ip6FragOKs &+= 1
    }

    /// One frame of `payload`, behind a Fragment header if `fragment` is given.
    private func emitIPv6Frame(to mac: MACAddress, source: IPv6Address, destination: IPv6Address,
                               nextHeader: IPv6NextHeader, hopLimit: UInt8, payload: UnsafeRawBufferPointer,
                               fragment: (offsetAndFlags: UInt16, identification: UInt32)?) {
        _ = frameIPv6(to: mac, source: source, destination: destination, nextHeader: nextHeader, hopLimit: hopLimit,
                      payloadLength: payload.count, fragment: fragment) { $0.copy(payload, to: 0) }
    }

    /// Frames an IPv6 packet in place in the outbox: the IPv6 header, a Fragment header if
    /// `fragment` (offset and M flag, identification) is given, then `payloadLength` bytes
    /// that `writePayload` fills (TCP writes its segments straight there, as into IPv4's
    /// frameIPv4). False when the outbox is full.
    func frameIPv6(to mac: MACAddress, source: IPv6Address, destination: IPv6Address, nextHeader: IPv6NextHeader,
                   hopLimit: UInt8, payloadLength: Int, fragment: (offsetAndFlags: UInt16, identification: UInt32)? = nil,
                   offload: FrameOffload = .none, _ writePayload: (UnsafeMutableRawBufferPointer) -> Void) -> Bool {
        let extra = fragment == nil ? 0 : FragmentHeader.length
        let frameLength = EthernetFrame.headerLength + IPv6Packet.headerLength + extra + payloadLength
        let queued = outbox.append(reserving: max(frameLength, outbox.frameSize), offload: offload) { buffer in
            var offset = EthernetFrame.writeHeader(into: buffer, destination: mac, source: self.mac, etherType: .ipv6)
            offset += IPv6Packet.writeHeader(into: buffer.suffix(from: offset), source: source, destination: destination,
                                             nextHeader: fragment == nil ? nextHeader : .fragment,
                                             payloadLength: extra + payloadLength, hopLimit: hopLimit)
            if let fragment {
                buffer.setU8(nextHeader.rawValue, offset + FragmentHeader.nextHeader)
                buffer.setU8(0, offset + 1)
                buffer.setBE16(fragment.offsetAndFlags, offset + FragmentHeader.offsetAndFlags)
                buffer.setBE32(fragment.identification, offset + FragmentHeader.identification)
                offset += FragmentHeader.length
            }
            writePayload(buffer.slice(offset..<offset + payloadLength))
            return offset + payloadLength
        }
        if queued { counters.linkOutFrames &+= 1 } else { counters.linkOutQueueFull &+= 1 }
        return queued
    }

    /// RFC 7739 5.3: a counter picked from a table by a keyed hash of the addresses, plus an
    /// offset from the same hash: consecutive packets to one destination get consecutive
    /// identifications (no early reuse), but no one can learn from them those of other
    /// destinations, nor guess the next one toward a destination they cannot see.
    private func fragmentIdentification(source: IPv6Address, destination: IPv6Address) -> UInt32 {
        var h = SipHash24(key0: configuration.seed ^ 0x6970_7636_6672_6167, key1: configuration.seed)
        h.add(source.high)
        h.add(source.low)
        h.add(destination.high)
        h.add(destination.low)
        let hash = h.finalize()
        let index = Int(hash >> 32) % IPv6State.fragmentCounterCount
        ip6!.fragmentCounters[index] &+= 1
        return UInt32(truncatingIfNeeded: hash) &+ ip6!.fragmentCounters[index]
    }
}
