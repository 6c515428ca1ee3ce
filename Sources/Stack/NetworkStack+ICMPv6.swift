import Timing

/// ICMPv6 (RFC 4443): echo replies, rate-limited errors about packets we received, the
/// neighbour discovery messages handed to NetworkStack+NDP and +RouterDiscovery, Packet Too
/// Big to NetworkStack+PathMTU; other errors about packets we sent go to their transport
/// (NetworkStack+ICMPv6Errors).
extension NetworkStack {
    func receiveICMPv6(_ datagram: IPv6Datagram, now: Instant) {
        counters.icmp6InMsgs &+= 1
        let message: ICMPv6Message
        do {
            message = try ICMPv6Message(datagram.payload, source: datagram.source, destination: datagram.destination)
        } catch {
            counters.icmp6InErrors &+= 1
            if case .badChecksum = error { counters.icmp6InCsumErrors &+= 1 }
            return
        }
        switch message.type {
        case .echoRequest:
            counters.icmp6InEchos &+= 1
            answerEcho(message, datagram, now: now)
        case .echoReply: counters.icmp6InEchoReplies &+= 1
        case .neighborSolicitation:
            counters.icmp6InNeighborSolicits &+= 1
            receiveNeighborSolicitation(message, datagram, now: now)
        case .neighborAdvertisement:
            counters.icmp6InNeighborAdvertisements &+= 1
            receiveNeighborAdvertisement(message, datagram, now: now)
        // A host silently discards solicitations (RFC 4861 6.1.1); redirects are not acted on.
        case .routerSolicitation: counters.icmp6InRouterSolicits &+= 1
        case .routerAdvertisement:
            counters.icmp6InRouterAdvertisements &+= 1
            receiveRouterAdvertisement(message, datagram, now: now)
        case .redirect: counters.icmp6InRedirects &+= 1
        case .destinationUnreachable:
            counters.icmp6InDestUnreachs &+= 1
            deliverICMPv6Error(message, from: datagram.source, now: now)
        case .packetTooBig:
            counters.icmp6InPktTooBigs &+= 1
            receivePacketTooBig(message, now: now)
        case .timeExceeded:
            counters.icmp6InTimeExcds &+= 1
            deliverICMPv6Error(message, from: datagram.source, now: now)
        case .parameterProblem:
            counters.icmp6InParmProblems &+= 1
            deliverICMPv6Error(message, from: datagram.source, now: now)
        // Unknown informational messages (and MLD, RFC 2710, which a host on a TAP has no
        // snooping switch to answer) are discarded (RFC 4443 2.4 (b)).
        default: counters.icmp6InOther &+= 1
        }
    }

    /// RFC 4443 4.2: the reply carries the request's identifier, sequence number and data; to
    /// a request sent to a multicast address it comes from one of our unicast addresses.
    private func answerEcho(_ message: ICMPv6Message, _ datagram: IPv6Datagram, now: Instant) {
        guard !datagram.source.isUnspecified,
              let from = datagram.destination.isMulticast ? ip6!.source(for: datagram.source) : datagram.destination
        else { return }
        let length = message.bytes.count
        scratch.copy(message.bytes, to: 0)
        scratch.setU8(ICMPv6Type.echoReply.rawValue, ICMPv6Message.Field.type)
        scratch.setBE16(0, ICMPv6Message.Field.checksum)
        let reply = scratch.slice(0..<length)
        ICMPv6Message.setChecksum(reply, source: from, destination: datagram.source)
        if sendIPv6(to: datagram.source, from: from, nextHeader: .icmpv6, payload: UnsafeRawBufferPointer(reply), now: now) {
            counters.icmp6OutMsgs &+= 1
            counters.icmp6OutEchoReplies &+= 1
        }
    }

    /// Sends an ICMPv6 error about `packet` (a whole received IPv6 packet) unless RFC 4443
    /// 2.4 (e) forbids it: never about an ICMPv6 error, a packet to a multicast address
    /// (except where `allowMulticast`: Parameter Problem for an option of type 10xxxxxx), or
    /// from an address that is not one node's. Rate limited (2.4 (f)).
    func sendICMPv6Error(type: ICMPv6Type, code: UInt8, parameter: UInt32, about packet: UnsafeRawBufferPointer,
                         allowMulticast: Bool = false, now: Instant) {
        let source = IPv6Address(packet, at: IPv6Packet.Field.source)
        let destination = IPv6Address(packet, at: IPv6Packet.Field.destination)
        guard allowMulticast || !destination.isMulticast, !source.isUnspecified, !source.isMulticast,
              !Self.carriesICMPv6Error(packet) else { return }
        // About a packet of ours that came over the loopback, the error goes back that way (from
        // ::1 about a packet to ::1), never to the link.
        let local = isLocal(IPAddress(source))
        guard let from = ip6!.isPreferred(destination) || local && destination.isLoopback ? destination
                : ip6!.source(for: source) else { return }
        guard ip6!.errorBucket.take(now: now) else {
            counters.icmp6OutRateLimitHost &+= 1
            return
        }
        // As much of the packet as fits in the minimum MTU (RFC 4443 2.4 (c)).
        let quoted = min(packet.count, IPv6Packet.minimumMTU - IPv6Packet.headerLength - 8)
        let length = 8 + quoted
        scratch.setU8(type.rawValue, ICMPv6Message.Field.type)
        scratch.setU8(code, ICMPv6Message.Field.code)
        scratch.setBE16(0, ICMPv6Message.Field.checksum)
        scratch.setBE32(parameter, ICMPv6Message.Field.body)
        scratch.copy(packet.slice(0..<quoted), to: 8)
        let message = scratch.slice(0..<length)
        ICMPv6Message.setChecksum(message, source: from, destination: source)
        let sent = local
            ? sendLoopback(source: IPAddress(from), destination: IPAddress(source),
                           proto: IPProtocol(rawValue: IPv6NextHeader.icmpv6.rawValue), payloadLength: length,
                           now: now) { $0.copy(UnsafeRawBufferPointer(message), to: 0) }
            : sendIPv6(to: source, from: from, nextHeader: .icmpv6, payload: UnsafeRawBufferPointer(message), now: now)
        guard sent else { return }
        counters.icmp6OutMsgs &+= 1
        if type == .destinationUnreachable { counters.icmp6OutDestUnreachs &+= 1 }
        if type == .parameterProblem { counters.icmp6OutParmProblems &+= 1 }
        if type == .timeExceeded { counters.icmp6OutTimeExcds &+= 1 }
    }

    /// Whether the packet's upper layer is an ICMPv6 error, found past any hop-by-hop,
    /// routing and destination options headers; false when it cannot be told.
    static func carriesICMPv6Error(_ packet: UnsafeRawBufferPointer) -> Bool {
        var next = IPv6NextHeader(rawValue: packet.u8(IPv6Packet.Field.nextHeader))
        var offset = IPv6Packet.headerLength
        while next == .hopByHop || next == .routing || next == .destinationOptions {
            guard offset + 2 <= packet.count else { return false }
            next = IPv6NextHeader(rawValue: packet.u8(offset))
            offset += (Int(packet.u8(offset + 1)) + 1) * 8
        }
        guard next == .icmpv6, offset < packet.count else { return false }
        return ICMPv6Type(rawValue: packet.u8(offset)).isError
    }
}
