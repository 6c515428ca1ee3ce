/// What a frame asks the link to finish, as virtio-net's header says it (and so a TAP with
/// IFF_VNET_HDR): the transport checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM) and the cutting of a
/// TCP super-segment into segments (VIRTIO_NET_HDR_GSO_TCPV4 and _TCPV6).
///
/// A frame that asks for the checksum carries in its checksum field the folded sum of the
/// pseudo-header (with the whole TCP length), not complemented: the link sums from
/// `checksumStart` to the end and stores the complement at `checksumStart + checksumOffset`.
/// A super-segment is one IPv4 or IPv6 packet whose TCP payload is cut every `segmentSize`
/// bytes; each segment gets the headers with its own sequence number, IP total length and
/// identification (the first's plus its index; IPv6: its payload length), FIN and PSH only
/// on the last, CWR only on the first (Linux's tcp_gso_segment).
public struct FrameOffload: Equatable, Sendable {
    /// TCP payload bytes per segment when the link must cut the frame; 0: one frame as is.
    public var segmentSize: UInt16
    /// Where the transport checksum's coverage begins, from the frame's start; 0: the
    /// checksum is complete.
    public var checksumStart: UInt16
    /// Where the checksum field lies, from `checksumStart`.
    public var checksumOffset: UInt16

    public init(segmentSize: UInt16 = 0, checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        self.segmentSize = segmentSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    public static let none = FrameOffload()

    public var isRequested: Bool { checksumStart != 0 }

    /// The virtio-net header for this frame (struct virtio_net_hdr, little-endian as on
    /// x86 and as the legacy TAP interface reads it): flags, gso_type, hdr_len, gso_size,
    /// csum_start, csum_offset. `frame` gives the header length of a super-segment.
    public func writeVirtioHeader(into header: UnsafeMutableRawBufferPointer, frame: UnsafeRawBufferPointer) {
        precondition(header.count >= 10)
        for i in 0..<10 { header[i] = 0 }
        guard isRequested else { return }
        header[0] = 1  // VIRTIO_NET_HDR_F_NEEDS_CSUM
        if segmentSize > 0 {
            // VIRTIO_NET_HDR_GSO_TCPV4 or _TCPV6, by the packet's version.
            header[1] = frame[EthernetFrame.headerLength] >> 4 == 6 ? 4 : 1
            header.storeBytes(of: UInt16(Self.headerLength(of: frame, checksumStart: Int(checksumStart))).littleEndian,
                              toByteOffset: 2, as: UInt16.self)
            header.storeBytes(of: segmentSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        }
        header.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        header.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
    }

    /// Ethernet, IPv4 and TCP headers of a super-segment: the TCP header starts at
    /// `checksumStart`.
    static func headerLength(of frame: UnsafeRawBufferPointer, checksumStart: Int) -> Int {
        checksumStart + Int(frame[checksumStart + 12] >> 4) * 4
    }

    /// Completes the checksum of a frame in place (a link without checksum offload, or a
    /// capture that must show correct checksums).
    public func finishChecksum(_ frame: UnsafeMutableRawBufferPointer) {
        guard isRequested else { return }
        let start = Int(checksumStart)
        let field = start + Int(checksumOffset)
        let sum = InternetChecksum.partialSum(UnsafeRawBufferPointer(frame.suffix(from: start)))
        frame.setBE16(InternetChecksum.finish(sum), field)
    }

    /// Does in software what the frame asks of the link, handing each finished frame to
    /// `body`: the fallback for links without offloads (the simulated wire, the fault
    /// injector), and the reference the framing is tested against.
    public func complete(_ frame: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
        guard isRequested else { return body(frame) }
        withUnsafeTemporaryAllocation(byteCount: frame.count, alignment: 16) { buffer in
            guard segmentSize > 0 else {
                buffer.copyMemory(from: frame)
                finishChecksum(buffer)
                body(UnsafeRawBufferPointer(buffer))
                return
            }
            let ipStart = EthernetFrame.headerLength
            let tcpStart = Int(checksumStart)
            let headers = Self.headerLength(of: frame, checksumStart: tcpStart)
            let payload = frame.count - headers
            let size = Int(segmentSize)
            let firstSeq = frame.be32(tcpStart + 4)
            let ipv6 = frame[ipStart] >> 4 == 6
            let firstID = frame.be16(ipStart + 4)
            let flags = frame[tcpStart + 13]
            var offset = 0
            var index = 0
            repeat {
                let length = min(size, payload - offset)
                let segment = buffer.slice(0..<headers + length)
                segment.copy(frame.slice(0..<headers), to: 0)
                segment.copy(frame.slice(headers + offset..<headers + offset + length), to: headers)
                let last = offset + length == payload
                let ip = segment.suffix(from: ipStart)
                if ipv6 {
                    // RFC 8200 3: the payload length, all the header there is to change.
                    ip.setBE16(UInt16(segment.count - tcpStart), 4)
                } else {
                    ip.setBE16(UInt16(segment.count - ipStart), 2)
                    ip.setBE16(firstID &+ UInt16(truncatingIfNeeded: index), 4)
                    ip.setBE16(0, 10)
                    ip.setBE16(InternetChecksum.checksum(UnsafeRawBufferPointer(ip.slice(0..<tcpStart - ipStart))), 10)
                }
                segment.setBE32(firstSeq &+ UInt32(offset), tcpStart + 4)
                var f = flags
                if !last { f &= ~(TCPFlags.fin.rawValue | TCPFlags.psh.rawValue) }
                if index > 0 { f &= ~TCPFlags.cwr.rawValue }
                segment[tcpStart + 13] = f
                let tcp = segment.suffix(from: tcpStart)
                tcp.setBE16(0, 16)
                let (source, destination) = Self.addresses(of: frame, ipStart: ipStart)
                TCPSegment.finishChecksum(tcp, source: source, destination: destination)
                body(UnsafeRawBufferPointer(segment))
                offset += length
                index += 1
            } while offset < payload
        }
    }

    /// The IP source and destination of a frame's packet, either version.
    static func addresses(of frame: UnsafeRawBufferPointer, ipStart: Int) -> (IPAddress, IPAddress) {
        if frame[ipStart] >> 4 == 6 {
            return (IPAddress(IPv6Address(frame, at: ipStart + 8)), IPAddress(IPv6Address(frame, at: ipStart + 24)))
        }
        return (IPAddress(IPv4Address(frame.be32(ipStart + 12))), IPAddress(IPv4Address(frame.be32(ipStart + 16))))
    }
}
