import Timing

/// ICMPv6 errors about packets we sent (RFC 4443 3.1, 3.3, 3.4), handed to the transport of
/// the packet they quote, as IPv4's ICMP errors are (NetworkStack+ICMP): UDP sockets learn
/// them as their error or on the IPV6_RECVERR queue, TCP connections through tcpICMPError.
/// Packet Too Big is path MTU discovery's, not this file's.
extension NetworkStack {
    /// A Destination Unreachable, Time Exceeded or Parameter Problem: the quote must start
    /// with an IPv6 header from one of our addresses; hop-by-hop, routing and destination
    /// options headers are stepped over to the UDP or TCP header, of which 8 bytes are
    /// enough (RFC 4443 2.4 (c) quotes as much as fits in 1280 bytes).
    func deliverICMPv6Error(_ message: ICMPv6Message, from offender: IPv6Address, now: Instant) {
        let bytes = message.bytes
        let quoteStart = ICMPv6Message.Field.body + 4
        guard bytes.count >= quoteStart + IPv6Packet.headerLength else { return }
        let quote = bytes.suffix(from: quoteStart)
        guard quote.u8(IPv6Packet.Field.versionClassFlow) >> 4 == 6 else { return }
        let source = IPAddress(IPv6Address(quote, at: IPv6Packet.Field.source))
        let destination = IPAddress(IPv6Address(quote, at: IPv6Packet.Field.destination))
        guard !source.isIPv4, !destination.isIPv4, isLocal(source) else { return }
        var next = IPv6NextHeader(rawValue: quote.u8(IPv6Packet.Field.nextHeader))
        var offset = IPv6Packet.headerLength
        while next == .hopByHop || next == .routing || next == .destinationOptions {
            guard offset + 8 <= quote.count else { return }
            next = IPv6NextHeader(rawValue: quote.u8(offset))
            offset += (Int(quote.u8(offset + 1)) + 1) * 8
        }
        guard offset + 8 <= quote.count else { return }
        let transport = quote.suffix(from: offset)
        let (error, fatal) = Self.icmpv6ErrorConversion(type: message.type, code: message.code)
        if next == .udp {
            let report = UDPErrorReport(error: error, type: message.type.rawValue, code: message.code,
                                        info: bytes.be32(ICMPv6Message.Field.body), offender: IPAddress(offender),
                                        destination: destination, destinationPort: transport.be16(2),
                                        payload: Array(transport.suffix(from: UDPPacket.headerLength)))
            udpICMPError(error, fatal: fatal, sourcePort: transport.be16(0), report)
        } else if next == .tcp {
            tcpICMPError(error, source: source, destination: destination, sourcePort: transport.be16(0),
                         destinationPort: transport.be16(2), seq: SeqNum(transport.be32(4)), now: now)
        }
    }

    /// The errno an ICMPv6 error means to a socket, and whether it is a hard error that a
    /// connected socket reports without IPV6_RECVERR: Linux's icmpv6_err_convert table.
    static func icmpv6ErrorConversion(type: ICMPv6Type, code: UInt8) -> (SocketError, fatal: Bool) {
        switch type {
        case .destinationUnreachable:
            // RFC 4443 3.1: no route, administratively prohibited, beyond the source's scope,
            // address unreachable, port unreachable, failed ingress/egress policy, reject route.
            let table: [(SocketError, Bool)] = [
                (.networkUnreachable, false), (.permissionDenied, true), (.hostUnreachable, false),
                (.hostUnreachable, false), (.connectionRefused, true), (.permissionDenied, true),
                (.permissionDenied, true),
            ]
            return Int(code) < table.count ? table[Int(code)] : (.protocolError, true)
        case .packetTooBig:
            return (.messageTooLong, false)
        case .parameterProblem:
            return (.protocolError, true)
        case .timeExceeded:
            return (.hostUnreachable, false)
        default:
            return (.protocolError, false)
        }
    }
}
