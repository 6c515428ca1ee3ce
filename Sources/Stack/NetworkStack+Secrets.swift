import Timing

/// Numbers an off-path attacker must not guess, derived from the connection's names and the
/// stack's secret seed: initial sequence numbers, port offsets, timestamp offsets, ICMP
/// identifiers, SYN cookies.
extension NetworkStack {
    /// A keyed hash of a connection's names (RFC 6528's F, RFC 6056's F).
    func secretHash(_ purpose: UInt16, _ localPort: UInt16, _ remote: IPAddress?, _ remotePort: UInt16) -> UInt64 {
        var h = SipHash24(key0: configuration.seed, key1: configuration.seed ^ 0x6C76_6C69_7000_0000)
        h.add(purpose)
        h.add(address.value)
        h.add(localPort)
        if let remote, !remote.isIPv4 {
            h.add(remote.bits.high)
            h.add(remote.bits.low)
        } else {
            h.add(remote?.v4?.value ?? 0)
        }
        h.add(remotePort)
        return h.finalize()
    }

    /// RFC 6528: ISN = M + F(names, secret), M a 4 µs clock.
    func initialSequenceNumber(localPort: UInt16, remote: IPAddress, remotePort: UInt16, now: Instant) -> SeqNum {
        let m = UInt32(truncatingIfNeeded: now.nanoseconds / 4000)
        return SeqNum(m &+ UInt32(truncatingIfNeeded: secretHash(0x6973, localPort, remote, remotePort)))
    }
}
