import Timing

/// SYN cookies (RFC 4987 section 3.6): a listener whose SYN queue is full answers without
/// keeping state, and makes the connection when the cookie comes back in the ACK.
extension NetworkStack {
    func sendSynCookie(_ listener: TCPConnection, _ seg: IncomingSegment, tuple: TCPFourTuple, now: Instant) {
        let peerMSS = Int(seg.options.mss ?? 536)
        let index = SynCookie.mssTable.lastIndex { $0 <= peerMSS } ?? 0
        let counter = SynCookie.counter(now)
        let cookie = SynCookie.make(hash: secretHash(0x6B63 &+ UInt16(counter & 0xFF), tuple.localPort, tuple.remoteAddress,
                                                     tuple.remotePort) ^ UInt64(seg.seq.rawValue),
                                    counter: counter, mssIndex: index)
        listener.lastSynCookie = now
        counters.tcpSynCookiesSent &+= 1
        // A SYN-ACK with only MSS: window scaling, SACK and timestamps need state we do not keep.
        var options = TCPOptions()
        options.mss = UInt16(clamping: maximumSegment(toward: tuple.remoteAddress))
        let length = TCPSegment.minimumHeaderLength + options.encodedLength
        let buffer = scratch.slice(0..<length)
        TCPSegment.writeHeader(into: buffer, sourcePort: tuple.localPort, destinationPort: tuple.remotePort,
                               seq: SeqNum(cookie), ack: seg.seq + 1, flags: [.syn, .ack],
                               window: UInt16(clamping: configuration.tcp.receiveBuffer), options: options)
        TCPSegment.finishChecksum(buffer, source: tuple.localAddress, destination: tuple.remoteAddress)
        counters.tcpOutSegs &+= 1
        sendIP(to: tuple.remoteAddress, from: tuple.localAddress, proto: .tcp, payload: UnsafeRawBufferPointer(buffer), now: now)
    }

    /// Checks the cookie in an ACK to a listener; on success makes the connection, already
    /// ESTABLISHED, queues it for accept and processes the segment. False if invalid.
    func acceptSynCookie(_ listener: TCPConnection, _ seg: IncomingSegment, tuple: TCPFourTuple, now: Instant) -> Bool {
        let cookie = (seg.ack - 1).rawValue
        let clientISN = (seg.seq - 1).rawValue
        let current = SynCookie.counter(now)
        let valid = [current, current &- 1].contains { counter in
            SynCookie.counterBits(of: cookie) == counter & SynCookie.counterMask
                && SynCookie.make(hash: secretHash(0x6B63 &+ UInt16(counter & 0xFF), tuple.localPort, tuple.remoteAddress,
                                                   tuple.remotePort) ^ UInt64(clientISN),
                                  counter: counter, mssIndex: SynCookie.mssIndex(of: cookie)) == cookie
        }
        guard valid else {
            counters.tcpSynCookiesFailed &+= 1
            return false
        }
        guard listener.acceptQueue.count < max(listener.backlog, 1) else {
            counters.tcpListenOverflows &+= 1
            return true  // dropped; the peer retransmits
        }
        counters.tcpSynCookiesReceived &+= 1
        let child = makeChild(of: listener, tuple: tuple, now: now)
        child.iss = SeqNum(cookie)
        child.sndUna = child.iss + 1
        child.sndNxt = child.iss + 1
        child.sndMax = child.iss + 1
        child.sendBufferSeq = child.iss + 1
        child.recover = child.iss
        child.irs = SeqNum(clientISN)
        child.rcvNxt = seg.seq
        child.rcvAdv = seg.seq
        child.windowScaling = false
        child.rcvScale = 0
        child.sndScale = 0
        child.sackPermitted = false
        child.timestamps = false
        child.peerMSS = SynCookie.mssTable[SynCookie.mssIndex(of: cookie)]
        child.updateMSS(in: self)
        child.sndWnd = Int(seg.window)
        child.sndWl1 = seg.seq
        child.sndWl2 = seg.ack
        child.becomeEstablished(now: now, in: self)
        listener.acceptQueue.append(child.id)
        markReadinessChanged(listener.id)
        child.segmentsIn = 1
        child.processText(seg, now: now, in: self)
        child.output(now: now, in: self)
        return true
    }
}

/// The layout of a SYN cookie ISN: 5 bits of a 64-second counter, 3 bits of MSS index,
/// 24 bits of keyed hash over the connection's names, the counter and the client's ISN.
enum SynCookie {
    static let period: UInt64 = 64
    static let counterMask: UInt32 = 0x1F
    static let mssTable = [536, 1300, 1440, 1460, 4312, 8960]

    static func counter(_ now: Instant) -> UInt32 { UInt32(truncatingIfNeeded: now.nanoseconds / 1_000_000_000 / period) }

    static func make(hash: UInt64, counter: UInt32, mssIndex: Int) -> UInt32 {
        (counter & counterMask) << 27 | UInt32(mssIndex & 7) << 24 | UInt32(truncatingIfNeeded: hash) & 0xFF_FFFF
    }

    static func counterBits(of cookie: UInt32) -> UInt32 { cookie >> 27 }

    static func mssIndex(of cookie: UInt32) -> Int { min(Int(cookie >> 24 & 7), mssTable.count - 1) }
}
