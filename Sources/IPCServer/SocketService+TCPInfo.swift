import CLinux
import Stack

/// TCP_INFO (tcp(7), struct tcp_info of linux/tcp.h): the stack's figures in Linux's units,
/// filled into the kernel's struct by C (lvlip_fill_tcp_info) so that its layout is the
/// kernel header's own.
extension SocketService {
    func tcpInfo(_ s: Socket, room: Int) -> [UInt8] {
        var src = lvlip_tcp_info_source()
        if let id = s.stackID, let i = stack.tcpInfo(id) {
            src.state = Self.linuxState(i.state)
            src.retransmits = UInt8(clamping: i.backoff)
            src.backoff = UInt8(clamping: i.backoff)
            src.options = (i.timestamps ? 1 : 0) | (i.sack ? 2 : 0) | (i.windowScale != nil ? 4 : 0)
            src.snd_wscale = i.windowScale?.send ?? 0
            src.rcv_wscale = i.windowScale?.receive ?? 0
            src.rto_us = i.rto
            src.snd_mss = UInt32(clamping: i.sendMSS)
            src.rcv_mss = UInt32(clamping: i.receiveMSS)
            let mss = max(i.sendMSS, 1)
            src.unacked = UInt32(clamping: (i.unacked + mss - 1) / mss)
            src.pmtu = UInt32(stack.configuration.mtu)
            src.rtt_us = i.rtt
            src.rttvar_us = i.rttVariance
            src.snd_ssthresh = i.slowStartThreshold >= Int(Int32.max) ? 0x7fff_ffff : UInt32(clamping: i.slowStartThreshold / mss)
            src.snd_cwnd = UInt32(clamping: i.congestionWindow / mss)
            src.ca_state = i.congestionState.rawValue
            src.total_retrans = UInt32(truncatingIfNeeded: i.retransmits)
            src.lost = UInt32(clamping: i.lostSegments)
            src.retrans = UInt32(clamping: i.retransmittedInFlight)
            src.dsack_dups = UInt32(truncatingIfNeeded: i.dsackBlocks)
            src.reord_seen = UInt32(truncatingIfNeeded: i.reorderingEvents)
            src.bytes_retrans = i.bytesRetransmitted
            src.segs_out = UInt32(truncatingIfNeeded: i.segmentsOut)
            src.segs_in = UInt32(truncatingIfNeeded: i.segmentsIn)
            src.notsent_bytes = UInt32(clamping: max(0, i.sendQueue - i.unacked))
            src.snd_wnd = UInt32(clamping: i.sendWindow)
            src.rcv_wnd = UInt32(clamping: i.receiveWindow)
            src.bytes_acked = i.bytesAcked
            src.bytes_received = i.bytesReceived
        } else if case .stream(let stream) = s.kind, stream.phase == .closed {
            // A tombstone: the state the connection ended in.
            src.state = Self.linuxState(s.finalState)
        } else {
            src.state = Self.linuxState(.closed)
        }
        var out = [UInt8](repeating: 0, count: room)
        let n = out.withUnsafeMutableBytes { lvlip_fill_tcp_info($0.baseAddress, room, &src) }
        return Array(out.prefix(n))
    }

    /// Linux's TCP state numbers (include/net/tcp_states.h).
    static func linuxState(_ state: TCPState) -> UInt8 {
        switch state {
        case .established: 1
        case .synSent: 2
        case .synReceived: 3
        case .finWait1: 4
        case .finWait2: 5
        case .timeWait: 6
        case .closed: 7
        case .closeWait: 8
        case .lastAck: 9
        case .listen: 10
        case .closing: 11
        }
    }
}
