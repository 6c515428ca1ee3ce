import Timing

/// TCP output: a connection's segments, handed to the IP layer (IPv4's are framed in place in
/// the outbox, or the loopback queue), and RSTs with or without a connection.
extension NetworkStack {
    /// Writes one TCP segment of connection `c`; data comes from its send buffer. With
    /// `segmentSize` (less than `length`) it is a super-segment the link cuts into segments
    /// of that many bytes (`StackConfiguration.offload.tcpSegmentation`): one frame, one
    /// header, counted as the segments it becomes. Returns how many segments that is.
    @discardableResult
    func emitTCP(_ c: TCPConnection, seq: SeqNum, ack: SeqNum, flags: TCPFlags, window: UInt16, options: TCPOptions?,
                 dataOffset: Int, length: Int, segmentSize: Int = 0, now: Instant) -> Int {
        let segments = segmentSize > 0 ? (length + segmentSize - 1) / segmentSize : 1
        let destination = c.remoteAddress
        // Fast path: the next hop is known; the IPv4 layer frames the segment in place in the
        // outbox and it is written straight there. (Super-segments never go to the loopback.)
        let mac: MACAddress?
        if c.viaLoopback {
            mac = nil
        } else if let v4 = destination.v4 {
            mac = knownNextHopMAC(toward: v4, cache: &c.neighborCache, now: now)
        } else {
            mac = knownNextHopMAC(toward: destination.bits, now: now)
        }
        if mac == nil && segments > 1 {
            // The next hop is being resolved: what waits for it waits as ordinary segments.
            var offset = 0
            while offset < length {
                let piece = min(segmentSize, length - offset)
                let last = offset + piece == length
                emitTCP(c, seq: seq + offset, ack: ack, flags: last ? flags : flags.subtracting([.fin, .psh]), window: window,
                        options: options, dataOffset: dataOffset + offset, length: piece, now: now)
                offset += piece
            }
            return segments
        }
        counters.tcpOutSegs &+= UInt64(segments)
        if flags.contains(.rst) { counters.tcpOutRsts &+= 1 }
        if c.viaLoopback {
            emitLoopbackTCP(c, seq: seq, ack: ack, flags: flags, window: window, options: options, dataOffset: dataOffset,
                            length: length, now: now)
            return 1
        }
        let headerLength = TCPSegment.minimumHeaderLength + (options?.encodedLength ?? 0)
        let segmentLength = headerLength + length
        let source = c.localAddress
        if let mac {
            let checksumOffload = configuration.offload.checksum
            // A local function, not a closure value: nothing is allocated per segment.
            func writeSegment(_ buffer: UnsafeMutableRawBufferPointer) {
                Self.writeSegment(of: c, into: buffer, seq: seq, ack: ack, flags: flags, window: window, options: options,
                                  headerLength: headerLength, dataOffset: dataOffset, length: length,
                                  partialChecksum: checksumOffload)
            }
            var offload = FrameOffload.none
            if checksumOffload {
                offload = FrameOffload(segmentSize: segments > 1 ? UInt16(segmentSize) : 0,
                                       checksumStart: UInt16(EthernetFrame.headerLength + destination.ipHeaderLength),
                                       checksumOffset: UInt16(TCPSegment.Field.checksum))
            }
            if let s = source.v4, let d = destination.v4 {
                counters.ipOutRequests &+= UInt64(segments)
                _ = frameIPv4(to: mac, source: s, destination: d, proto: .tcp, payloadLength: segmentLength,
                              identification: takeIdentification(count: segments), dontFragment: true, offload: offload,
                              writeSegment)
            } else {
                counters.ip6OutRequests &+= UInt64(segments)
                if !frameIPv6(to: mac, source: source.bits, destination: destination.bits, nextHeader: .tcp,
                              hopLimit: ip6!.configuration.hopLimit, payloadLength: segmentLength, offload: offload,
                              writeSegment) {
                    counters.ip6OutDiscards &+= 1
                }
            }
            return segments
        }
        Self.writeSegment(of: c, into: scratch.slice(0..<segmentLength), seq: seq, ack: ack, flags: flags, window: window,
                          options: options, headerLength: headerLength, dataOffset: dataOffset, length: length,
                          partialChecksum: false)
        sendIP(to: destination, from: source, proto: .tcp, payload: UnsafeRawBufferPointer(scratch.slice(0..<segmentLength)),
               now: now)
        return 1
    }

    /// One segment of `c` into `buffer` (its whole length): header, data from the send
    /// buffer, checksum: complete, or with `partialChecksum` only the pseudo-header's sum for
    /// the link to finish (`FrameOffload`). Shared by the link's path and the loopback's.
    @inline(__always)
    static func writeSegment(of c: TCPConnection, into buffer: UnsafeMutableRawBufferPointer, seq: SeqNum, ack: SeqNum,
                             flags: TCPFlags, window: UInt16, options: TCPOptions?, headerLength: Int, dataOffset: Int,
                             length: Int, partialChecksum: Bool) {
        TCPSegment.writeHeader(into: buffer, sourcePort: c.localPort, destinationPort: c.remotePort, seq: seq,
                               ack: ack, flags: flags, window: window, options: options)
        if length > 0 {
            let (a, b) = c.sendBuffer.regions(from: dataOffset, length: length)
            buffer.copy(a, to: headerLength)
            buffer.copy(b, to: headerLength + a.count)
        }
        let segment = buffer.slice(0..<headerLength + length)
        if partialChecksum {
            TCPSegment.writePseudoHeaderSum(segment, source: c.localAddress, destination: c.remoteAddress)
        } else {
            TCPSegment.finishChecksum(segment, source: c.localAddress, destination: c.remoteAddress)
        }
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
        sendIP(to: tuple.remoteAddress, from: tuple.localAddress, proto: .tcp, payload: UnsafeRawBufferPointer(buffer), now: now)
    }
}
