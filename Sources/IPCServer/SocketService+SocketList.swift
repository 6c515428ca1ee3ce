import Glibc
import Stack

/// The lines of SOCKETS_REPLY (`lvlipctl ss`; docs/ipc.md): one per stack socket, "key=value"
/// fields, with the process that owns it. `family` is inet or inet6 (the socket's, as ss -4
/// and -6 select); addresses are written as ss writes them: a.b.c.d:port for IPv4,
/// [address]:port for IPv6 (an AF_INET6 socket's IPv4 peers as [::ffff:a.b.c.d]), and
/// *:port for a dual-stack socket bound to [::].
extension SocketService {
    /// Every TCP socket of the stack, then every datagram socket of the service. TCP sockets no
    /// application holds (orphans finishing their FIN or TIME-WAIT after their application
    /// closed) show owner "-".
    public func socketLines() -> String {
        var text = ""
        for id in stack.tcpSocketIDs {
            guard let i = stack.tcpInfo(id) else { continue }
            let listening = i.state == .listen
            let v6 = i.family == .ipv6
            let dual = v6 && !(stack.tcpOptions(id)?.v6Only ?? false)
            text += "proto=tcp family=\(v6 ? "inet6" : "inet") state=\(i.state.rawValue)"
            text += " local=\(Self.endpoint(i.localAddress, i.localPort, v6: v6, dual: dual))"
            text += listening ? " peer=*:*" : " peer=\(Self.endpoint(i.remoteAddress, i.remotePort, v6: v6, dual: false))"
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
            let v6 = s.family == AF_INET6
            let local = Self.endpoint(names.local, names.localPort, v6: v6, dual: v6 && !s.v6only)
            let peer = names.remote.map { Self.endpoint($0.address, $0.port, v6: v6, dual: false) } ?? "*:*"
            let proto = switch stack.datagramKind(id) {
            case .ping: "icmp"
            case .rawICMP: "raw"
            default: "udp"
            }
            text += "proto=\(proto) family=\(v6 ? "inet6" : "inet") state=\(names.remote == nil ? "UNCONN" : "ESTABLISHED") local=\(local) peer=\(peer)"
            text += " recvq=\(stack.udpQueued(id)) sendq=0 owner=\(owner(s))\n"
        }
        return text
    }

    /// An address and port as ss shows them (`v6`: of an AF_INET6 socket; `dual`: one that is
    /// not IPV6_V6ONLY, whose [::] is "*").
    static func endpoint(_ address: IPAddress, _ port: UInt16, v6: Bool, dual: Bool) -> String {
        guard v6 else { return "\(address.v4 ?? .any):\(port)" }
        if address.isUnspecified && dual { return "*:\(port)" }
        return "[\(address.bits)]:\(port)"
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
