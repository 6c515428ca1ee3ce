import Glibc
import Stack

/// The lines of SOCKETS_REPLY (`lvlipctl ss`; docs/ipc.md): one per stack socket, "key=value"
/// fields, with the process that owns it.
extension SocketService {
    /// Every TCP socket of the stack, then every datagram socket of the service. TCP sockets no
    /// application holds (orphans finishing their FIN or TIME-WAIT after their application
    /// closed) show owner "-".
    public func socketLines() -> String {
        var text = ""
        for id in stack.tcpSocketIDs {
            guard let i = stack.tcpInfo(id) else { continue }
            let listening = i.state == .listen
            text += "proto=tcp state=\(i.state.rawValue) local=\(i.localAddress):\(i.localPort)"
            text += listening ? " peer=*:*" : " peer=\(i.remoteAddress):\(i.remotePort)"
            text += " recvq=\(listening ? i.acceptQueue : i.receiveQueue) sendq=\(listening ? i.backlog : i.sendQueue)"
            if !listening {
                text += " cc=\(i.congestionControl) rtt_us=\(i.rtt) rttvar_us=\(i.rttVariance) rto_us=\(i.rto)"
                text += " mss=\(i.sendMSS) rcvmss=\(i.receiveMSS) cwnd=\(i.congestionWindow)"
                text += " ssthresh=\(i.slowStartThreshold == Int.max ? -1 : i.slowStartThreshold)"
                text += " snd_wnd=\(i.sendWindow) rcv_wnd=\(i.receiveWindow) unacked=\(i.unacked)"
                text += " retrans=\(i.retransmits) backoff=\(i.backoff) bytes_acked=\(i.bytesAcked)"
                text += " bytes_received=\(i.bytesReceived) segs_out=\(i.segmentsOut) segs_in=\(i.segmentsIn)"
                text += " sack=\(i.sack ? 1 : 0) ts=\(i.timestamps ? 1 : 0)"
                if let ws = i.windowScale { text += " wscale=\(ws.send),\(ws.receive)" }
            }
            text += " owner=\(byStack[id].map(owner) ?? "-")\n"
        }
        for case let s? in slots where s.isDatagram {
            guard let id = s.stackID, let names = stack.udpNames(id) else { continue }
            let local = "\(names.local):\(names.localPort)"
            let peer = names.remote.map { "\($0.address):\($0.port)" } ?? "*:*"
            let proto = switch stack.datagramKind(id) {
            case .ping: "icmp"
            case .rawICMP: "raw"
            default: "udp"
            }
            text += "proto=\(proto) state=\(names.remote == nil ? "UNCONN" : "ESTABLISHED") local=\(local) peer=\(peer)"
            text += " recvq=\(stack.udpQueued(id)) sendq=0 owner=\(owner(s))\n"
        }
        return text
    }

    /// What ss -p shows: the owner's process name, pid and uid.
    private func owner(_ s: Socket) -> String {
        "\(Self.command(of: s.ownerPid)),pid=\(s.ownerPid),uid=\(s.user.uid)"
    }

    /// The process name of `pid`, "?" once it has exited.
    static func command(of pid: Int32) -> String {
        guard let file = fopen("/proc/\(pid)/comm", "r") else { return "?" }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 64)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return "?" }
        let name = String(cString: buffer).filter { $0 != "\n" && $0 != " " && $0 != "," && $0 != "=" }
        return name.isEmpty ? "?" : name
    }
}
