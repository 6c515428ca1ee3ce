import Timing

/// ICMP (RFC 792, host rules of RFC 1122 3.2.2): echo replies, errors about datagrams we
/// received (rate-limited), and errors about datagrams we sent, handed to the transport or
/// socket that sent them.
extension NetworkStack {
    func receiveICMP(_ datagram: IPv4Datagram, now: Instant) {
        counters.icmpInMsgs &+= 1
        let message: ICMPMessage
        do {
            message = try ICMPMessage(datagram.payload)
        } catch {
            counters.icmpInErrors &+= 1
            if case .badChecksum = error { counters.icmpInCsumErrors &+= 1 }
            return
        }
        defer { deliverToICMPSockets(datagram, message) }
        switch message.type {
        case .echoRequest:
            counters.icmpInEchos &+= 1
            // Linux's default (icmp_echo_ignore_broadcasts): broadcast pings are not answered,
            // which RFC 1122 3.2.2.6 allows.
            guard !datagram.broadcast else {
                counters.icmpInBroadcastEchoIgnored &+= 1
                return
            }
            // RFC 792 / RFC 1122 3.2.2.6: the reply carries the request's identifier,
            // sequence number and data unchanged.
            let length = message.bytes.count
            scratch.copy(message.bytes, to: 0)
            scratch.setU8(ICMPType.echoReply.rawValue, ICMPMessage.Field.type)
            scratch.setU8(0, ICMPMessage.Field.code)
            scratch.setBE16(0, ICMPMessage.Field.checksum)
            let reply = UnsafeRawBufferPointer(scratch.slice(0..<length))
            scratch.setBE16(InternetChecksum.checksum(reply), ICMPMessage.Field.checksum)
            if sendIPv4(to: datagram.source, from: datagram.destination, proto: .icmp, payload: reply, now: now) {
                counters.icmpOutMsgs &+= 1
                counters.icmpOutEchoReps &+= 1
            }
        case .echoReply:
            counters.icmpInEchoReps &+= 1
        case .destinationUnreachable:
            counters.icmpInDestUnreachs &+= 1
            deliverICMPError(message, from: datagram.source, now: now)
        case .timeExceeded:
            counters.icmpInTimeExcds &+= 1
            deliverICMPError(message, from: datagram.source, now: now)
        default:
            counters.icmpInOther &+= 1
        }
    }

    /// Hands an ICMP error to the transport the quoted datagram belongs to (RFC 1122
    /// 3.2.2.1 and 4.2.3.9). The quote must be a datagram we sent.
    private func deliverICMPError(_ message: ICMPMessage, from offender: IPv4Address, now: Instant) {
        let quote = message.body
        guard quote.count >= IPv4Packet.minimumHeaderLength + 8, quote[0] >> 4 == 4 else { return }
        let headerLength = Int(quote[0] & 0x0F) * 4
        guard headerLength >= 20, quote.count >= headerLength + 8,
              isLocal(IPv4Address(quote.be32(IPv4Packet.Field.source))) else { return }
        let source = IPv4Address(quote.be32(IPv4Packet.Field.source))
        let destination = IPv4Address(quote.be32(IPv4Packet.Field.destination))
        let transport = quote.suffix(from: headerLength)
        if quote[IPv4Packet.Field.proto] == IPProtocol.tcp.rawValue {
            // Fragmentation Needed: path MTU discovery is not implemented for IPv4; segments
            // are sized to the link MTU and sent with DF, so the message changes nothing.
            guard !(message.type == .destinationUnreachable && message.code == UnreachableCode.fragmentationNeeded)
            else { return }
            let error: SocketError
            switch (message.type, message.code) {
            case (.destinationUnreachable, UnreachableCode.network): error = .networkUnreachable
            case (.destinationUnreachable, UnreachableCode.proto), (.destinationUnreachable, UnreachableCode.port):
                error = .connectionRefused
            default: error = .hostUnreachable  // other unreachables, Time Exceeded
            }
            tcpICMPError(error, source: IPAddress(source), destination: IPAddress(destination), sourcePort: transport.be16(0),
                         destinationPort: transport.be16(2), seq: SeqNum(transport.be32(4)), now: now)
        } else if quote[IPv4Packet.Field.proto] == IPProtocol.udp.rawValue {
            udpICMPError(message, offender: offender, destination: destination, sourcePort: transport.be16(0),
                         destinationPort: transport.be16(2), quoted: transport.suffix(from: 8))
        } else if quote[IPv4Packet.Field.proto] == IPProtocol.icmp.rawValue {
            icmpSocketError(message, offender: offender, destination: destination, quoted: transport)
        }
    }

    /// The errno an ICMP error means to a socket, and whether it is a hard error that a
    /// connected socket reports without IP_RECVERR: Linux's icmp_err_convert table (RFC 1122
    /// 4.2.3.9 lets transient ones pass).
    static func icmpErrorConversion(type: ICMPType, code: UInt8) -> (SocketError, fatal: Bool) {
        switch type {
        case .destinationUnreachable:
            let table: [(SocketError, Bool)] = [
                (.networkUnreachable, false), (.hostUnreachable, false), (.protocolOption, true),
                (.connectionRefused, true), (.messageTooLong, false), (.notSupported, false),
                (.networkUnreachable, true), (.hostDown, true), (.noNetwork, true), (.networkUnreachable, true),
                (.hostUnreachable, true), (.networkUnreachable, false), (.hostUnreachable, false),
                (.hostUnreachable, true), (.hostUnreachable, true), (.hostUnreachable, true),
            ]
            return Int(code) < table.count ? table[Int(code)] : (.hostUnreachable, false)
        case .parameterProblem:
            return (.protocolError, true)
        default:
            return (.hostUnreachable, false)  // time exceeded, source quench...
        }
    }

    /// Datagrams of ours lost because their next hop never answered ARP: each is answered with
    /// an ICMP Host Unreachable from ourselves to ourselves, as Linux's ipv4_link_failure does,
    /// so that the programs that sent them learn it as from the network (IP_RECVERR reports
    /// EHOSTUNREACH, a raw ICMP socket reads it: ping's "Destination Host Unreachable"; a
    /// transient error, so a plain connected UDP socket is not told). TCP learns it from the
    /// neighbour.
    func reportHostUnreachable(_ lost: [PendingDatagram], now: Instant) {
        // The header the datagram would have carried, for the error to quote.
        var header = [UInt8](repeating: 0, count: IPv4Packet.minimumHeaderLength)
        for d in lost where d.proto != .tcp {
            header.withUnsafeMutableBytes {
                _ = IPv4Packet.writeHeader(into: $0, source: address, destination: d.destination, proto: d.proto,
                                           payloadLength: d.payload.count, identification: 0, ttl: configuration.defaultTTL)
            }
            header.withUnsafeBytes { h in
                d.payload.withUnsafeBytes { payload in
                    sendICMPError(type: .destinationUnreachable, code: UnreachableCode.host,
                                  about: IPv4Datagram(source: address, destination: d.destination, proto: d.proto,
                                                      header: h, payload: payload, broadcast: false), now: now)
                }
            }
        }
    }

    /// Sends an ICMP error about a received datagram, unless RFC 1122 3.2.2 forbids it:
    /// never about an ICMP error, a broadcast or multicast datagram, a non-initial fragment,
    /// or a source that is not one host. Rate limited (RFC 1812 4.3.2.8).
    func sendICMPError(type: ICMPType, code: UInt8, about datagram: IPv4Datagram, now: Instant) {
        guard !datagram.broadcast, !datagram.destination.isMulticast else { return }
        let source = datagram.source
        // (A loopback source is one host, this one: such datagrams came over the loopback,
        // the link's were dropped as martians.)
        guard !source.isUnspecified, !source.isMulticast, !source.isLimitedBroadcast,
              source != configuration.interface.subnetBroadcast
        else { return }
        if datagram.header.count >= IPv4Packet.minimumHeaderLength,
           datagram.header.be16(IPv4Packet.Field.flagsFragment) & 0x1FFF != 0 {
            return
        }
        if datagram.proto == .icmp {
            // An error about an error, or about a message too short to tell, is never sent.
            guard let first = datagram.payload.first, !ICMPType(rawValue: first).isError else { return }
        }
        guard icmpErrorBucket.take(now: now) else {
            counters.icmpOutRateLimited &+= 1
            return
        }
        // Body: the original header and the start of its data, keeping the whole error
        // within 576 bytes (RFC 1812 4.3.2.3; RFC 792 asks for at least 64 bits of data).
        let header = datagram.header
        let quoted = min(datagram.payload.count, 576 - IPv4Packet.minimumHeaderLength - ICMPMessage.headerLength - header.count)
        let length = ICMPMessage.headerLength + header.count + quoted
        scratch.setU8(type.rawValue, ICMPMessage.Field.type)
        scratch.setU8(code, ICMPMessage.Field.code)
        scratch.setBE16(0, ICMPMessage.Field.checksum)
        scratch.setBE32(0, ICMPMessage.Field.identifier)
        scratch.copy(header, to: ICMPMessage.headerLength)
        scratch.copy(datagram.payload.slice(0..<quoted), to: ICMPMessage.headerLength + header.count)
        let message = UnsafeRawBufferPointer(scratch.slice(0..<length))
        scratch.setBE16(InternetChecksum.checksum(message), ICMPMessage.Field.checksum)
        // From the address the datagram was sent to when it is ours (Linux's icmp_send), else
        // as the route picks (an error about our own datagram that could not leave).
        let from = isLocal(datagram.destination) ? datagram.destination : nil
        guard sendIPv4(to: source, from: from, proto: .icmp, payload: message, now: now) else { return }
        counters.icmpOutMsgs &+= 1
        if type == .destinationUnreachable { counters.icmpOutDestUnreachs &+= 1 }
        if type == .timeExceeded { counters.icmpOutTimeExcds &+= 1 }
    }
}
