import Timing

/// TCP input: a received segment is checked, then found its connection (a one-entry cache,
/// then the four-tuple table), its listener, or answered with a RST (RFC 9293 3.10.7); and
/// ICMP errors and failed address resolution reach the connections they concern.
extension NetworkStack {
    func receiveTCP(_ datagram: IPv4Datagram, now: Instant) {
        receiveTCP(source: IPAddress(datagram.source), destination: IPAddress(datagram.destination),
                   payload: datagram.payload, broadcast: datagram.broadcast, checksumVerified: datagram.checksumVerified,
                   now: now)
    }

    func receiveTCP(_ datagram: IPv6Datagram, now: Instant) {
        // An IPv6 packet carries no broadcast; multicast destinations never reach TCP.
        receiveTCP(source: IPAddress(datagram.source), destination: IPAddress(datagram.destination),
                   payload: datagram.payload, broadcast: datagram.destination.isMulticast,
                   checksumVerified: datagram.checksumVerified, now: now)
    }

    /// A segment of either family; `broadcast`: sent to a broadcast or multicast address.
    private func receiveTCP(source: IPAddress, destination: IPAddress, payload: UnsafeRawBufferPointer, broadcast: Bool,
                            checksumVerified: Bool, now: Instant) {
        let segment: TCPSegment
        do {
            segment = try TCPSegment(payload, source: source, destination: destination, checksumVerified: checksumVerified)
        } catch {
            counters.tcpInErrs &+= 1
            if case .badChecksum = error { counters.tcpInCsumErrors &+= 1 }
            return
        }
        counters.tcpInSegs &+= 1
        // RFC 9293 3.9.2 / RFC 1122 4.2.3.10: no segment to or from a broadcast is accepted.
        guard !broadcast else {
            counters.tcpInErrs &+= 1
            return
        }
        let flags = segment.flags
        let seg = IncomingSegment(seq: segment.seq, ack: segment.ack, flags: flags, window: segment.window,
                                  options: segment.options, payload: segment.payload)
        let tuple = TCPFourTuple(remoteAddress: source, remotePort: segment.sourcePort, localAddress: destination,
                                 localPort: segment.destinationPort)
        // A one-entry cache in front of the table: bulk traffic hits the same connection.
        let cached: TCPConnection?
        if let last = tcp.lastLookup, last.tuple == tuple, last.connection.state != .closed {
            cached = last.connection
        } else {
            cached = tcp.connections[tuple]
            if let c = cached { tcp.lastLookup = (tuple, c) }
        }
        if let c = cached {
            if c.state == .timeWait && flags.contains(.syn) && !flags.contains(.ack) && !flags.contains(.rst),
               seg.seq > c.rcvNxt, let listener = listener(for: tuple) {
                // RFC 9293 3.10.7.4 note / RFC 6191: a new SYN beyond the old connection's
                // sequence space may reopen the names.
                c.close(reason: nil, now: now, in: self)
                listenerArrives(listener, seg, tuple: tuple, now: now)
                return
            }
            c.segmentsIn &+= 1
            if c.state == .synSent {
                c.synSentArrives(seg, now: now, in: self)
            } else {
                c.synchronizedArrives(seg, now: now, in: self)
            }
            if c.state != .closed {
                if c.state == .established || c.state == .closeWait { c.armKeepalive(now: now, in: self) }
                c.output(now: now, in: self)
            }
            return
        }
        if let listener = listener(for: tuple) {
            listenerArrives(listener, seg, tuple: tuple, now: now)
            return
        }
        // RFC 9293 3.10.7.1: CLOSED. Everything but a RST is answered with a RST.
        counters.tcpNoSocket &+= 1
        guard !flags.contains(.rst) else { return }
        if flags.contains(.ack) {
            sendReset(to: tuple, seq: seg.ack, ack: nil, now: now)
        } else {
            sendReset(to: tuple, seq: SeqNum(0), ack: seg.seq + seg.length, now: now)
        }
    }

    /// RFC 9293 3.10.7.2: LISTEN.
    private func listenerArrives(_ listener: TCPConnection, _ seg: IncomingSegment, tuple: TCPFourTuple, now: Instant) {
        if seg.flags.contains(.rst) { return }
        if seg.flags.contains(.ack) {
            // The ACK completing a handshake answered with a SYN cookie (RFC 4987 3.6).
            if !seg.flags.contains(.syn), let sentAt = listener.lastSynCookie,
               now.nanoseconds(since: sentAt) < 2 * SynCookie.period * 1_000_000_000,
               acceptSynCookie(listener, seg, tuple: tuple, now: now) {
                return
            }
            sendReset(to: tuple, seq: seg.ack, ack: nil, now: now)
            return
        }
        guard seg.flags.contains(.syn) else { return }
        let queueLimit = max(listener.backlog, 1)
        guard listener.acceptQueue.count < queueLimit else {
            counters.tcpListenOverflows &+= 1
            counters.tcpListenDrops &+= 1
            return
        }
        guard listener.synQueue < max(configuration.tcp.maxSynBacklog, queueLimit) else {
            // The SYN queue is full (a flood, or a slow handshake storm): answer without
            // keeping state, with a SYN cookie as the ISN (RFC 4987 3.6).
            sendSynCookie(listener, seg, tuple: tuple, now: now)
            return
        }
        let child = makeChild(of: listener, tuple: tuple, now: now)
        listener.synQueue += 1
        child.irs = seg.seq
        child.rcvNxt = seg.seq + 1
        child.negotiateOptions(seg.options, synAck: false, in: self)
        if !child.windowScaling { child.rcvScale = 0 }
        if child.timestamps, let ts = seg.options.timestamp {
            child.tsRecent = ts.value
            child.tsRecentTime = now
        }
        child.sndWnd = Int(seg.window)
        child.sndWl1 = seg.seq
        child.state = .synReceived
        child.segmentsIn = 1
        child.output(now: now, in: self)
    }

    /// An ICMP or ICMPv6 error about a segment we sent (RFC 1122 4.2.3.9, RFC 4443 3, RFC
    /// 5927), as the errno it means (`error`). The quoted sequence number must lie in
    /// [SND.UNA, SND.MAX) or the message is ignored (blind attacks). While opening, the error
    /// ends the connect (as Linux does); later it is a soft error, reported if the connection
    /// then times out.
    func tcpICMPError(_ error: SocketError, source: IPAddress, destination: IPAddress, sourcePort: UInt16,
                      destinationPort: UInt16, seq: SeqNum, now: Instant) {
        let tuple = TCPFourTuple(remoteAddress: destination, remotePort: destinationPort, localAddress: source,
                                 localPort: sourcePort)
        guard let c = tcp.connections[tuple], seq >= c.sndUna, seq < c.sndMax || (c.sndMax == c.sndUna && seq == c.sndUna)
        else {
            counters.tcpICMPIgnored &+= 1
            return
        }
        counters.tcpICMPErrors &+= 1
        if c.state == .synSent || c.state == .synReceived {
            c.abort(error: error, sendReset: false, now: now, in: self)
        } else {
            c.softError = error
        }
    }

    /// The path to `destination` carries at most `mtu` bytes (IPv6's Packet Too Big, RFC
    /// 8201): connections to it shrink their MSS, and those with data in flight in larger
    /// segments resend it at once in the new size, without a congestion response (the loss
    /// was not congestion; Linux's tcp_simple_retransmit).
    func tcpPathMTUDecreased(_ destination: IPAddress, mtu: Int, now: Instant) {
        let affected = tcp.connections.values.filter { $0.remoteAddress == destination && !$0.viaLoopback }
        for c in affected where c.state.isSynchronized || c.state == .synSent {
            let previous = c.mss
            c.updateMSS(in: self, pathMTU: mtu)
            guard c.mss < previous, c.state.isSynchronized, c.sndUna != c.sndMax else { continue }
            counters.tcpPathMTURetransmits &+= 1
            c.goBackToUnacknowledged(now: now, in: self)
            c.output(now: now, in: self)
        }
    }

    /// Address resolution (ARP or NDP) for `nextHop` failed: connections opening through it
    /// end with EHOSTUNREACH; established ones keep it as a soft error.
    func tcpNeighborUnreachable(_ nextHop: IPAddress, now: Instant) {
        let affected = tcp.connections.values.filter { c in
            guard !c.viaLoopback else { return false }
            if let remote = c.remoteAddress.v4 {
                if case .via(let hop)? = route(remote) { return IPAddress(hop) == nextHop }
                return false
            }
            return ip6?.nextHop(for: c.remoteAddress.bits, now: now).map(IPAddress.init) == nextHop
        }
        for c in affected {
            if c.state == .synSent {
                c.abort(error: .hostUnreachable, sendReset: false, now: now, in: self)
            } else {
                c.softError = .hostUnreachable
            }
        }
    }
}
