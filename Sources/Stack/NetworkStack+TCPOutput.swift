import Timing

/// TCP output: a connection's segments, handed to the IPv4 layer to be framed in place in the
/// outbox (or the loopback queue), and RSTs with or without a connection.
extension NetworkStack {
    /// Writes one TCP segment of connection `c`; data comes from its send buffer.
    func emitTCP(_ c: TCPConnection, seq: SeqNum, ack: SeqNum, flags: TCPFlags, window: UInt16, options: TCPOptions?,
                 dataOffset: Int, length: Int, now: Instant) {
        counters.tcpOutSegs &+= 1
        if flags.contains(.rst) { counters.tcpOutRsts &+= 1 }
        if c.viaLoopback {
            emitLoopbackTCP(c, seq: seq, ack: ack, flags: flags, window: window, options: options, dataOffset: dataOffset,
                            length: length, now: now)
            return
        }
        let headerLength = TCPSegment.minimumHeaderLength + (options?.encodedLength ?? 0)
        let segmentLength = headerLength + length
        let destination = c.remoteAddress
        let source = c.localAddress
        // A local function, not a closure value: nothing is allocated per segment.
        func writeSegment(_ buffer: UnsafeMutableRawBufferPointer) {
            Self.writeSegment(of: c, into: buffer, seq: seq, ack: ack, flags: flags, window: window, options: options,
                              headerLength: headerLength, dataOffset: dataOffset, length: length)
        }
        // Fast path: the next hop is known; the IPv4 layer frames the segment in place in the
        // outbox and it is written straight there.
        if let mac = knownNextHopMAC(toward: destination, cache: &c.neighborCache, now: now) {
            counters.ipOutRequests &+= 1
            _ = frameIPv4(to: mac, source: source, destination: destination, proto: .tcp, payloadLength: segmentLength,
                          identification: takeIdentification(), dontFragment: true, writeSegment)
            return
        }
        writeSegment(scratch.slice(0..<segmentLength))
        sendIPv4(to: destination, from: source, proto: .tcp, payload: UnsafeRawBufferPointer(scratch.slice(0..<segmentLength)),
                 now: now)
    }

    /// One segment of `c` into `buffer` (its whole length): header, data from the send
    /// buffer, checksum. Shared by the link's path and the loopback's.
    @inline(__always)
    static func writeSegment(of c: TCPConnection, into buffer: UnsafeMutableRawBufferPointer, seq: SeqNum, ack: SeqNum,
                             flags: TCPFlags, window: UInt16, options: TCPOptions?, headerLength: Int, dataOffset: Int,
                             length: Int) {
        TCPSegment.writeHeader(into: buffer, sourcePort: c.localPort, destinationPort: c.remotePort, seq: seq,
                               ack: ack, flags: flags, window: window, options: options)
        if length > 0 {
            let (a, b) = c.sendBuffer.regions(from: dataOffset, length: length)
            buffer.copy(a, to: headerLength)
            buffer.copy(b, to: headerLength + a.count)
        }
        TCPSegment.finishChecksum(buffer.slice(0..<headerLength + length), source: c.localAddress, destination: c.remoteAddress)
    }

    /// A RST for connection `c` (abort, or an unacceptable ACK in SYN states).
    func sendReset(seq: SeqNum, ack: SeqNum?, to c: TCPConnection, now: Instant) {
        sendReset(to: TCPFourTuple(remoteAddress: c.remoteAddress, remotePort: c.remotePort, localAddress: c.localAddress,
                                   localPort: c.localPort),
                  seq: seq, ack: ack, now: now)
    }

    /// A RST without a connection (RFC 9293 3.10.7.1).
    func sendReset(to tuple: TCPFourTuple, seq: SeqNum, ack: SeqNum?, now: Instant) {
        counters.tcpOutSegs &+= 1
        counters.tcpOutRsts &+= 1
        let length = TCPSegment.minimumHeaderLength
        let buffer = scratch.slice(0..<length)
        var flags: TCPFlags = .rst
        if ack != nil { flags.insert(.ack) }
        TCPSegment.writeHeader(into: buffer, sourcePort: tuple.localPort, destinationPort: tuple.remotePort, seq: seq,
                               ack: ack ?? SeqNum(0), flags: flags, window: 0, options: nil)
        TCPSegment.finishChecksum(buffer, source: tuple.localAddress, destination: tuple.remoteAddress)
        sendIPv4(to: tuple.remoteAddress, from: tuple.localAddress, proto: .tcp, payload: UnsafeRawBufferPointer(buffer), now: now)
    }
}
