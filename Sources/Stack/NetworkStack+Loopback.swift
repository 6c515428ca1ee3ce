import Timing

/// The stack's loopback: datagrams to 127.0.0.0/8, ::1 or the stack's own addresses are
/// received by the stack itself and never framed onto the link (RFC 1122 3.2.1.3 (g): an
/// address of the form {127, <any>} "MUST NOT appear outside a host"; Linux routes the
/// host's own addresses through `lo` likewise).
///
/// Sending queues the datagram (`LoopbackQueue`); `deliverLoopback(now:)` receives what is
/// queued. The owner calls it after draining the outbox, and `poll(now:)` calls it too, with
/// `nextDeadline` due while anything waits, so no datagram waits for a timer.
extension NetworkStack {
    /// Linux's `lo` MTU. IPv4's own limit (a 16-bit total length) caps a datagram at 65535,
    /// so TCP over loopback announces an MSS of 65495 (65483 with timestamps), as Linux does.
    public static let loopbackMTU = 65536

    /// Whether `destination` is one of this host's addresses: the loopback network or the
    /// interface's own address.
    @inline(__always)
    public func isLocal(_ destination: IPv4Address) -> Bool {
        destination.isLoopback || destination == address
    }

    /// Whether `candidate` can be a socket's local address (bind(2)): any, ours, or loopback.
    public func isBindable(_ candidate: IPv4Address) -> Bool {
        candidate.isUnspecified || isLocal(candidate)
    }

    /// The source address for datagrams to `destination` from a socket bound to any address,
    /// as Linux's route lookup picks it: 127.0.0.1 toward the loopback network (the `lo`
    /// route's preferred source), the interface address otherwise (also toward itself).
    @inline(__always)
    public func sourceAddress(toward destination: IPv4Address) -> IPv4Address {
        destination.isLoopback ? IPv4Address(127, 0, 0, 1) : address
    }

    /// Whether a socket with local address `source` (unspecified: any) may send to
    /// `destination`. A loopback source may reach only local destinations (Linux refuses the
    /// route with EINVAL: loopback addresses must not leave the host).
    func sourceUsable(_ source: IPv4Address, toward destination: IPv4Address) -> Bool {
        !source.isLoopback || isLocal(destination)
    }

    /// The largest datagram toward `destination` in one piece: the loopback's or the link's.
    @inline(__always)
    func pathMTU(toward destination: IPv4Address) -> Int {
        isLocal(destination) ? min(Self.loopbackMTU, IPv4Packet.maximumLength) : configuration.mtu
    }

    /// Whether looped datagrams wait to be received (`deliverLoopback(now:)`).
    public var hasLoopbackPending: Bool { !loopback.isEmpty }

    /// Whether the loopback queue may lack room for one more datagram of the largest size.
    public var loopbackIsFull: Bool { loopback.isFull }

    /// When a looped datagram has been waiting since (due at once in `nextDeadline`).
    var loopbackDeadline: Instant? { loopback.isEmpty ? nil : loopbackQueuedAt }

    /// Queues one datagram to a local destination; `writePayload` fills its payload.
    @inline(__always)
    func sendLoopback(source: IPv4Address, destination: IPv4Address, proto: IPProtocol, payloadLength: Int,
                      dontFragment: Bool = false, now: Instant,
                      _ writePayload: (UnsafeMutableRawBufferPointer) -> Void) -> Bool {
        sendLoopback(source: IPAddress(source), destination: IPAddress(destination), proto: proto,
                     payloadLength: payloadLength, dontFragment: dontFragment, now: now, writePayload)
    }

    /// The same for either family: an IPv6 packet (to ::1 or one of our IPv6 addresses) gets
    /// a plain 40-byte header; the queue's reader tells the versions apart.
    func sendLoopback(source: IPAddress, destination: IPAddress, proto: IPProtocol, payloadLength: Int,
                      dontFragment: Bool = false, now: Instant,
                      _ writePayload: (UnsafeMutableRawBufferPointer) -> Void) -> Bool {
        let v4 = source.v4.flatMap { s in destination.v4.map { (s, $0) } }
        let header = v4 != nil ? IPv4Packet.minimumHeaderLength : IPv6Packet.headerLength
        if v4 != nil { counters.ipOutRequests &+= 1 } else { counters.ip6OutRequests &+= 1 }
        guard v4 != nil ? header + payloadLength <= IPv4Packet.maximumLength : payloadLength <= 65535 else {
            if v4 != nil { counters.ipFragFails &+= 1 } else { counters.ip6FragFails &+= 1 }
            return false
        }
        let identification = v4 != nil ? takeIdentification() : 0
        let wasEmpty = loopback.isEmpty
        let queued = loopback.append(length: header + payloadLength) { buffer in
            if let (s, d) = v4 {
                _ = IPv4Packet.writeHeader(into: buffer, source: s, destination: d, proto: proto,
                                           payloadLength: payloadLength, identification: identification,
                                           ttl: configuration.defaultTTL, dontFragment: dontFragment)
            } else {
                _ = IPv6Packet.writeHeader(into: buffer, source: source.bits, destination: destination.bits,
                                           nextHeader: IPv6NextHeader(rawValue: proto.rawValue),
                                           payloadLength: payloadLength, hopLimit: ip6?.configuration.hopLimit ?? 64)
            }
            writePayload(buffer.suffix(from: header))
        }
        guard queued else {
            counters.loopbackQueueFull &+= 1
            if v4 != nil { counters.ipOutDiscards &+= 1 } else { counters.ip6OutDiscards &+= 1 }
            return false
        }
        if wasEmpty { loopbackQueuedAt = now }
        counters.loopbackDatagrams &+= 1
        return true
    }

    /// `emitTCP` toward a local address: the segment is built in place in the loopback queue by
    /// the writer both paths share (`writeSegment(of:into:...)`). Apart from emitTCP so that the
    /// link's path keeps its shape (measured: one emitter for both queues cost retains on every
    /// segment; the shared writer does not: lvlip-membench 100 under callgrind, 662.8M
    /// instructions with two writers, 662.0M with one).
    @inline(never)
    func emitLoopbackTCP(_ c: TCPConnection, seq: SeqNum, ack: SeqNum, flags: TCPFlags, window: UInt16, options: TCPOptions?,
                         dataOffset: Int, length: Int, now: Instant) {
        let headerLength = TCPSegment.minimumHeaderLength + (options?.encodedLength ?? 0)
        let segmentLength = headerLength + length
        let source = c.localAddress
        let destination = c.remoteAddress
        _ = sendLoopback(source: source, destination: destination, proto: .tcp, payloadLength: segmentLength,
                         dontFragment: true, now: now) { buffer in
            Self.writeSegment(of: c, into: buffer, seq: seq, ack: ack, flags: flags, window: window, options: options,
                              headerLength: headerLength, dataOffset: dataOffset, length: length, partialChecksum: false)
        }
    }

    /// Receives looped datagrams until none is left (or `rounds` passes, each delivering
    /// what the previous one sent; what remains keeps `nextDeadline` due). Connections held
    /// back by a full loopback queue send on.
    public func deliverLoopback(now: Instant, rounds: Int = 64) {
        let now = advanceClock(now)
        var round = 0
        while !loopback.isEmpty && round < rounds {
            round += 1
            loopback.drain { bytes in
                if bytes.first.map({ $0 >> 4 }) == 6 {
                    receiveIPv6(bytes, checksumVerified: true, viaLoopback: true, now: now)
                    return
                }
                counters.ipInReceives &+= 1
                // Built by this stack a moment ago: the header is sound, the transport
                // checksum was computed over these very bytes.
                guard let packet = try? IPv4Packet(bytes) else {
                    counters.ipInHdrErrors &+= 1
                    return
                }
                deliver(IPv4Datagram(source: packet.source, destination: packet.destination, proto: packet.proto,
                                     header: packet.header, payload: packet.payload, broadcast: false,
                                     checksumVerified: true), now: now)
            }
            flushDeferredAcks(now: now)
            resumeOutput(now: now)
        }
        if !loopback.isEmpty { loopbackQueuedAt = now }
    }
}
