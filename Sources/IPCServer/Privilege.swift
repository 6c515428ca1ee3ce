import Glibc

/// What the sender of a request may do that others may not, judged as Linux judges it, from
/// the sender's credentials at the time of the request (SCM_CREDENTIALS; see IPCServer).
enum Privilege {
    /// Capability numbers (linux/capability.h).
    static let netBindService = 10
    static let netRaw = 13

    /// Whether the sender holds `capability` in its effective set (root's, unless dropped).
    static func capable(_ capability: Int, pid: Int32, uid: UInt32) -> Bool {
        if let effective = effectiveCapabilities(pid) { return effective & (1 << UInt64(capability)) != 0 }
        return uid == 0
    }

    /// Ping sockets (icmp(7)): the sender's effective group or one of its supplementary
    /// groups must lie in net.ipv4.ping_group_range ("1 0", the default, admits no one).
    static func mayOpenPingSocket(pid: Int32) -> Bool {
        guard let text = HostSettings.text("/proc/sys/net/ipv4/ping_group_range") else { return false }
        let bounds = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { UInt32($0) }
        guard bounds.count == 2, bounds[0] <= bounds[1], let status = HostSettings.text("/proc/\(pid)/status") else { return false }
        var groups: [UInt32] = []
        for line in status.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if words.first == "Gid:", words.count >= 3, let egid = UInt32(words[2]) { groups.append(egid) }
            if words.first == "Groups:" { groups += words.dropFirst().compactMap { UInt32($0) } }
        }
        return groups.contains { bounds[0] <= $0 && $0 <= bounds[1] }
    }

    /// Whether `port` may be bound by the sender: ports below
    /// net.ipv4.ip_unprivileged_port_start (1024 by default) need CAP_NET_BIND_SERVICE
    /// (ip(7)). Root has it unless it was dropped; another user has it only if granted
    /// (file capabilities, ambient set), as /proc/PID/status's CapEff says.
    static func mayBind(port: UInt16, uid: UInt32, pid: Int32) -> Bool {
        guard port != 0, Int(port) < unprivilegedPortStart() else { return true }
        return capable(netBindService, pid: pid, uid: uid)
    }

    /// net.ipv4.ip_unprivileged_port_start of lvlipd's network namespace (the programs'
    /// too: they reach lvlipd's socket only from where it runs).
    static func unprivilegedPortStart() -> Int {
        guard let text = HostSettings.text("/proc/sys/net/ipv4/ip_unprivileged_port_start"),
              let value = Int(firstWord(text)) else { return 1024 }
        return value
    }

    /// The CapEff mask of process `pid`, or nil if it cannot be read (the process is gone).
    static func effectiveCapabilities(_ pid: Int32) -> UInt64? {
        guard pid > 0, let text = HostSettings.text("/proc/\(pid)/status") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("CapEff:") {
            return UInt64(firstWord(line.dropFirst("CapEff:".count)), radix: 16)
        }
        return nil
    }

    private static func firstWord<S: StringProtocol>(_ text: S) -> Substring {
        text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.map { Substring($0) } ?? ""
    }
}
