import Timing

/// A received IPv6 packet handed to an upper layer, after its extension headers.
struct IPv6Datagram {
    var source: IPv6Address
    var destination: IPv6Address
    var hopLimit: UInt8
    /// The whole packet, for ICMPv6 errors about it.
    var packet: UnsafeRawBufferPointer
    /// The upper-layer header and data.
    var payload: UnsafeRawBufferPointer
    /// The link vouched for the TCP or UDP checksum (a TAP with offload, as for IPv4).
    var checksumVerified: Bool
}

/// IPv6 (RFC 8200): receive checks, the extension header walk (4.1-4.5; fragments go to
/// NetworkStack+IPv6Reassembly), hand-off to ICMPv6, TCP and UDP; every packet we send is
/// routed here (on-link, or to the default router) and framed, in fragments if it exceeds
/// the path MTU (NetworkStack+IPv6Fragmentation).
extension NetworkStack {
    /// A packet from the link or, `viaLoopback`, one this stack sent to ::1 or to one of its
    /// own addresses (NetworkStack+Loopback).
    func receiveIPv6(_ bytes: UnsafeRawBufferPointer, checksumVerified: Bool, viaLoopback: Bool = false, now: Instant) {
        counters.ip6InReceives &+= 1
        let packet: IPv6Packet
        do {
            packet = try IPv6Packet(bytes)
        } catch {
            if case .truncated = error { counters.ip6InTruncatedPkts &+= 1 } else { counters.ip6InHdrErrors &+= 1 }
            return
        }
        let source = packet.source
        let destination = packet.destination
        // A multicast source is never valid (RFC 4291 2.7), loopback addresses never appear on
        // a link (2.5.3), and no packet is sent to the unspecified address (2.5.2).
        // IPv4-mapped addresses stand for IPv4 endpoints in our sockets and must not arrive in
        // an IPv6 header (RFC 4291 2.5.5.2; Linux's ipv6_rcv drops them too).
        if source.isMulticast || destination.isUnspecified || source.isIPv4Mapped || destination.isIPv4Mapped
            || !viaLoopback && (source.isLoopback || destination.isLoopback) {
            counters.ip6InHdrErrors &+= 1
            return
        }
        // A host, not a router: only our addresses and groups (RFC 8200 section 3; Linux's
        // Ip6InAddrErrors). A tentative address receives nothing until DAD passes (RFC 4862 5.4).
        guard viaLoopback || ip6!.accepts(destination) else {
            counters.ip6InAddrErrors &+= 1
            return
        }
        walkHeaders(packet, next: packet.nextHeader, offset: IPv6Packet.headerLength,
                    nextField: IPv6Packet.Field.nextHeader, checksumVerified: checksumVerified, now: now)
    }

    /// Processes the extension headers in order (RFC 8200 4.1) up to the upper layer, from the
    /// header `next` at `offset`; `nextField` is where the Next Header value naming it lies,
    /// for a Parameter Problem's pointer. A reassembled packet resumes after its fragments'.
    func walkHeaders(_ packet: IPv6Packet, next: IPv6NextHeader, offset: Int, nextField: Int, checksumVerified: Bool,
                     now: Instant) {
        let bytes = packet.bytes
        var next = next
        var offset = offset
        var nextField = nextField
        while true {
            switch next {
            case .hopByHop, .destinationOptions, .routing:
                // RFC 8200 4.3: hop-by-hop options only directly after the IPv6 header;
                // elsewhere it is an unrecognized Next Header (Linux does the same).
                if next == .hopByHop && offset != IPv6Packet.headerLength {
                    counters.ip6InUnknownProtos &+= 1
                    sendParameterProblem(ICMPv6Code.unrecognizedNextHeader, pointer: nextField, packet: packet, now: now)
                    return
                }
                guard offset + 8 <= bytes.count else {
                    counters.ip6InHdrErrors &+= 1
                    return
                }
                let length = (Int(bytes.u8(offset + 1)) + 1) * 8
                guard offset + length <= bytes.count else {
                    counters.ip6InHdrErrors &+= 1
                    return
                }
                if next == .routing {
                    // RFC 8200 4.4: a host knows no routing type; one with segments left must
                    // not be ignored: Parameter Problem pointing at its Routing Type.
                    if bytes.u8(offset + 3) != 0 {
                        counters.ip6InHdrErrors &+= 1
                        sendParameterProblem(ICMPv6Code.erroneousHeaderField, pointer: offset + 2, packet: packet, now: now)
                        return
                    }
                } else if !processOptions(packet, range: offset + 2..<offset + length, now: now) {
                    return
                }
                nextField = offset
                next = IPv6NextHeader(rawValue: bytes.u8(offset))
                offset += length
            case .fragment:
                receiveFragment(packet, at: offset, nextField: nextField, checksumVerified: checksumVerified, now: now)
                return
            case .noNextHeader:
                counters.ip6InNoNextHeader &+= 1
                return
            case .icmpv6, .tcp, .udp:
                counters.ip6InDelivers &+= 1
                let datagram = IPv6Datagram(source: packet.source, destination: packet.destination, hopLimit: packet.hopLimit,
                                            packet: bytes, payload: bytes.suffix(from: offset),
                                            checksumVerified: checksumVerified)
                switch next {
                case .icmpv6: receiveICMPv6(datagram, now: now)
                case .tcp: receiveTCP(datagram, now: now)
                default: receiveUDP(datagram, now: now)
                }
                return
            default:
                // RFC 8200 4: an unrecognized Next Header: Parameter Problem code 1 at its field.
                counters.ip6InUnknownProtos &+= 1
                sendParameterProblem(ICMPv6Code.unrecognizedNextHeader, pointer: nextField, packet: packet, now: now)
                return
            }
        }
    }

    /// Walks the options of a hop-by-hop or destination options header (RFC 8200 4.2). This
    /// host acts on none: padding and Router Alert are skipped, others by the action their
    /// two high bits ask. Returns false when the packet is dropped.
    private func processOptions(_ packet: IPv6Packet, range: Range<Int>, now: Instant) -> Bool {
        let bytes = packet.bytes
        var i = range.lowerBound
        while i < range.upperBound {
            let type = bytes.u8(i)
            if type == 0 {  // Pad1
                i += 1
                continue
            }
            guard i + 2 <= range.upperBound, i + 2 + Int(bytes.u8(i + 1)) <= range.upperBound else {
                counters.ip6InHdrErrors &+= 1
                return false
            }
            let padN: UInt8 = 1, routerAlert: UInt8 = 5
            if type != padN && type != routerAlert {
                switch type >> 6 {
                case 0:
                    break
                case 1:
                    counters.ip6InDiscards &+= 1
                    return false
                default:
                    // 10: always tell the source; 11: only if not sent to a multicast address.
                    counters.ip6InDiscards &+= 1
                    if type >> 6 == 2 || !packet.destination.isMulticast {
                        sendParameterProblem(ICMPv6Code.unrecognizedOption, pointer: i, packet: packet, now: now)
                    }
                    return false
                }
            }
            i += 2 + Int(bytes.u8(i + 1))
        }
        return true
    }

    func sendParameterProblem(_ code: UInt8, pointer: Int, packet: IPv6Packet, now: Instant) {
        // RFC 4443 2.4 (e.3): an unrecognized option of type 10xxxxxx is reported even to a
        // multicast destination.
        sendICMPv6Error(type: .parameterProblem, code: code, parameter: UInt32(pointer), about: packet.bytes,
                        allowMulticast: code == ICMPv6Code.unrecognizedOption, now: now)
    }

    /// Sends an IPv6 packet from one of our addresses; false when it could not be sent nor
    /// queued for resolution. On-link destinations (RFC 4861 5.2) are reached directly, others
    /// through the default router; with none, there is no route. A packet over the path MTU
    /// leaves in fragments (emitIPv6), also when it waited for resolution.
    @discardableResult
    func sendIPv6(to destination: IPv6Address, from source: IPv6Address, nextHeader: IPv6NextHeader,
                  payload: UnsafeRawBufferPointer, hopLimit: UInt8? = nil, now: Instant) -> Bool {
        guard ip6 != nil else { return false }
        let hopLimit = hopLimit ?? ip6!.configuration.hopLimit
        // The packet, in fragments or not, must fit the 16-bit Payload Length (RFC 8200 4.5:
        // the reassembled packet's, which carries no Fragment header).
        guard payload.count <= IPv6Packet.maximumPayloadLength else {
            counters.ip6FragFails &+= 1
            return false
        }
        let nextHopMAC: MACAddress
        if destination.isMulticast {
            nextHopMAC = destination.multicastMAC
        } else {
            guard let nextHop = ip6!.nextHop(for: destination, now: now) else {
                counters.ip6OutNoRoutes &+= 1
                return false
            }
            switch resolve6(nextHop, from: source, now: now) {
            case .resolved(let mac):
                nextHopMAC = mac
            case .pending:
                counters.ip6OutRequests &+= 1
                enqueuePending6(PendingPacket6(source: source, destination: destination, nextHeader: nextHeader,
                                               hopLimit: hopLimit, payload: Array(payload)), nextHop: nextHop)
                return true
            case .unavailable:
                counters.ip6OutDiscards &+= 1
                return false
            }
        }
        counters.ip6OutRequests &+= 1
        emitIPv6(to: nextHopMAC, source: source, destination: destination, nextHeader: nextHeader, hopLimit: hopLimit,
                 payload: payload)
        return true
    }

    /// Our IPv6 addresses and their DAD states, for display.
    public var ipv6Addresses: [OwnIPv6Address] { ip6?.addresses ?? [] }
}
