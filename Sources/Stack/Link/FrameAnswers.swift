/// Which frames a peer may answer at once. Over the TAP the kernel runs its own stack inside
/// our write, so the answer to a SYN (SYN-ACK or RST), a FIN or data (an ACK, at once in
/// Linux's quick-ACK mode), an ARP request or an echo request is queued before the write
/// returns. A pure ACK or a RST is answered with nothing, so reading after one is a read that
/// finds nothing (`TapDevice` reads once per frame that may have been answered, and leaves
/// anything further to the reactor, which reports the TAP readable).
public enum FrameAnswers {
    /// false only for a TCP segment (over IPv4 or IPv6 without extension headers) that
    /// carries neither SYN, FIN nor data: anything else may be answered at once. The frame is
    /// one the stack built, read without validation (a short one counts as answerable).
    public static func mayBeAnsweredAtOnce(_ frame: UnsafeRawBufferPointer) -> Bool {
        let ip = EthernetFrame.headerLength
        guard frame.count >= ip else { return true }
        let tcp: Int
        let ipEnd: Int
        switch EtherType(rawValue: frame.be16(EthernetFrame.Field.etherType)) {
        case .ipv4:
            guard frame.count >= ip + IPv4Packet.minimumHeaderLength,
                  frame[ip + IPv4Packet.Field.proto] == IPProtocol.tcp.rawValue else { return true }
            tcp = ip + Int(frame[ip + IPv4Packet.Field.versionIHL] & 0x0F) * 4
            let total = Int(frame.be16(ip + IPv4Packet.Field.totalLength))
            ipEnd = total > 0 ? min(ip + total, frame.count) : frame.count
        case .ipv6:
            guard frame.count >= ip + IPv6Packet.headerLength,
                  frame[ip + IPv6Packet.Field.nextHeader] == IPProtocol.tcp.rawValue else { return true }
            tcp = ip + IPv6Packet.headerLength
            let payload = Int(frame.be16(ip + IPv6Packet.Field.payloadLength))
            ipEnd = payload > 0 ? min(tcp + payload, frame.count) : frame.count
        default:
            return true
        }
        guard ipEnd >= tcp + TCPSegment.minimumHeaderLength else { return true }
        let flags = TCPFlags(rawValue: frame[tcp + TCPSegment.Field.flags])
        if !flags.isDisjoint(with: [.syn, .fin]) { return true }
        let dataOffset = Int(frame[tcp + TCPSegment.Field.dataOffset] >> 4) * 4
        return ipEnd - tcp - dataOffset > 0
    }
}
