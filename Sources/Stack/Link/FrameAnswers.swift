/// Which frames a peer may answer at once. Over the TAP the kernel runs its own stack inside
/// our write, so the answer to a SYN (SYN-ACK or RST), a FIN or data (an ACK, at once in
/// Linux's quick-ACK mode), an ARP request or an echo request is queued before the write
/// returns. A pure ACK or a RST is answered with nothing, so reading after one is a read that
/// finds nothing (`TapDevice` reads once per frame that may have been answered, and leaves
/// anything further to the reactor, which reports the TAP readable).
public enum FrameAnswers {
    /// false only for a TCP segment (over IPv4 or IPv6 without extension headers) that
    /// carries neither SYN, FIN nor data: anything else may be answered at once.
    public static func mayBeAnsweredAtOnce(_ frame: UnsafeRawBufferPointer) -> Bool {
        guard frame.count >= EthernetFrame.headerLength else { return true }
        let type = UInt16(frame[12]) << 8 | UInt16(frame[13])
        let tcp: Int
        let ipEnd: Int
        switch type {
        case 0x0800:
            guard frame.count >= 34, frame[23] == 6 else { return true }
            tcp = 14 + Int(frame[14] & 0x0F) * 4
            let total = Int(frame[16]) << 8 | Int(frame[17])
            ipEnd = total > 0 ? min(14 + total, frame.count) : frame.count
        case 0x86DD:
            guard frame.count >= 54, frame[20] == 6 else { return true }
            tcp = 54
            let payload = Int(frame[18]) << 8 | Int(frame[19])
            ipEnd = payload > 0 ? min(54 + payload, frame.count) : frame.count
        default:
            return true
        }
        guard ipEnd >= tcp + 20 else { return true }
        let flags = frame[tcp + 13]
        if flags & 0x03 != 0 { return true }  // SYN or FIN
        let dataOffset = Int(frame[tcp + 12] >> 4) * 4
        return ipEnd - tcp - dataOffset > 0
    }
}
