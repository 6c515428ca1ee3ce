import ArgumentParser
import Glibc
import IPCProtocol

struct Lvlipctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lvlipctl",
        abstract: "Inspect a running lvlipd.",
        version: "0.1.0",
        subcommands: [Stat.self, SS.self, Neigh.self, Route.self])
}

struct SocketOption: ParsableArguments {
    @Option(help: "Path of lvlipd's IPC socket (default: $LVLIP_SOCKET or /run/lvlip/lvlipd.sock).")
    var socket: String?

    var path: String {
        if let socket { return socket }
        if let env = getenv("LVLIP_SOCKET"), env.pointee != 0 { return String(cString: env) }
        return "/run/lvlip/lvlipd.sock"
    }

    /// One request to lvlipd's control socket and its reply as text; a failure to reach
    /// lvlipd is a one-line error.
    func fetch(_ type: UInt16, expecting reply: UInt16) throws -> String {
        do {
            var client = try IPCClient(path: path)
            defer { client.close() }
            return String(decoding: try client.request(type: type, expecting: reply), as: UTF8.self)
        } catch let failure as IPCClient.Failure {
            throw ValidationErrorless(failure.description)
        }
    }

    /// The STATS reply's lines as fields: "Name value" counters, and the tables `neigh` and
    /// `route` print (lines of more words).
    func statsFields() throws -> [[String]] {
        try fetch(IPCMessageType.stats, expecting: IPCMessageType.statsReply)
            .split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
    }
}

struct Stat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the stack's counters, like nstat -a.",
        discussion: "PATTERNs select counters whose names start with one of them (case-insensitive), e.g. `lvlipctl stat Ip Icmp`.")

    @OptionGroup var socketOption: SocketOption

    @Flag(help: "Also print counters that are zero.")
    var zeros = false

    @Argument(help: "Name prefixes to select.")
    var patterns: [String] = []

    func run() throws {
        let prefixes = patterns.map { $0.lowercased() }
        var rows: [(String, String)] = []
        for parts in try socketOption.statsFields() {
            guard parts.count == 2 else { continue }
            let name = parts[0]
            let value = parts[1]
            if !prefixes.isEmpty && !prefixes.contains(where: { name.lowercased().hasPrefix($0) }) { continue }
            if !zeros && value == "0" { continue }
            rows.append((name, value))
        }
        print("#lvlipd")
        let width = max(32, (rows.map { $0.0.count }.max() ?? 0) + 2)
        for (name, value) in rows {
            print(name + String(repeating: " ", count: width - name.count) + value)
        }
    }
}

struct SS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ss",
        abstract: "List the stack's sockets, like ss -tani: state, queues, addresses and TCP internals.")

    @OptionGroup var socketOption: SocketOption

    @Flag(name: .shortAndLong, help: "Only listening sockets.")
    var listening = false

    @Flag(name: .shortAndLong, help: "TCP sockets (the default unless --udp is given).")
    var tcp = false

    @Flag(name: .shortAndLong, help: "UDP sockets.")
    var udp = false

    @Flag(name: [.customShort("w"), .long], help: "ICMP sockets: ping (SOCK_DGRAM) and raw, as ss -w.")
    var raw = false

    @Flag(name: [.customShort("4"), .customLong("ipv4")], help: "Only AF_INET sockets, as ss -4.")
    var ipv4 = false

    @Flag(name: [.customShort("6"), .customLong("ipv6")], help: "Only AF_INET6 sockets, as ss -6 (IPv4 peers of dual-stack ones included).")
    var ipv6 = false

    func run() throws {
        let text = try socketOption.fetch(IPCMessageType.sockets, expecting: IPCMessageType.socketsReply)
        let states = ["ESTABLISHED": "ESTAB", "SYN-SENT": "SYN-SENT", "SYN-RECEIVED": "SYN-RECV", "FIN-WAIT-1": "FIN-WAIT-1",
                      "FIN-WAIT-2": "FIN-WAIT-2", "CLOSE-WAIT": "CLOSE-WAIT", "CLOSING": "CLOSING", "LAST-ACK": "LAST-ACK",
                      "TIME-WAIT": "TIME-WAIT", "LISTEN": "LISTEN", "CLOSED": "UNCONN"]
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
        print(pad("State", 11) + pad("Recv-Q", 7) + pad("Send-Q", 7) + pad("Local Address:Port", 22) + pad("Peer Address:Port", 22)
              + "Process")
        for line in text.split(separator: "\n") {
            var f: [String: String] = [:]
            for field in line.split(separator: " ") {
                let kv = field.split(separator: "=", maxSplits: 1)
                if kv.count == 2 { f[String(kv[0])] = String(kv[1]) }
            }
            let state = f["state"] ?? "?"
            let proto = f["proto"] ?? "tcp"
            var wanted = (tcp || !(udp || raw)) ? ["tcp"] : []
            if udp { wanted.append("udp") }
            if raw { wanted += ["icmp", "raw"] }
            guard wanted.contains(proto) else { continue }
            if listening && state != "LISTEN" && !(proto != "tcp" && state == "UNCONN") { continue }
            // Either flag alone selects its family; both (or neither) select every socket.
            if ipv4 != ipv6, let family = f["family"], family != (ipv6 ? "inet6" : "inet") { continue }
            // The owning process as ss -p shows it: users:(("curl",pid=123,uid=0)).
            var users = ""
            if let owner = f["owner"], owner != "-" {
                let parts = owner.split(separator: ",", maxSplits: 1).map(String.init)
                users = parts.count == 2 ? "users:((\"\(parts[0])\",\(parts[1])))" : "users:((\"\(owner)\"))"
            }
            print(pad(states[state] ?? state, 11) + pad(f["recvq"] ?? "0", 7) + pad(f["sendq"] ?? "0", 7)
                  + pad(f["local"] ?? "?", 22) + pad(f["peer"] ?? "?", 22) + users)
            guard proto == "tcp", state != "LISTEN", let rtt = f["rtt_us"].flatMap(Double.init) else { continue }
            func ms(_ key: String) -> String {
                guard let v = f[key].flatMap(Double.init) else { return "?" }
                return String((v / 1000 * 1000).rounded() / 1000)
            }
            let mss = Int(f["mss"] ?? "") ?? 1
            let cwnd = (Int(f["cwnd"] ?? "") ?? 0) / max(mss, 1)
            var details = "\t \(f["cc"] ?? "?")"
            if let ws = f["wscale"] { details += " wscale:\(ws)" }
            details += " rto:\(ms("rto_us")) rtt:\(String((rtt / 1000 * 1000).rounded() / 1000))/\(ms("rttvar_us"))"
            details += " mss:\(f["mss"] ?? "?") rcvmss:\(f["rcvmss"] ?? "?") cwnd:\(cwnd)"
            if let ss = Int(f["ssthresh"] ?? ""), ss >= 0 { details += " ssthresh:\(ss / max(mss, 1))" }
            details += " bytes_acked:\(f["bytes_acked"] ?? "0") bytes_received:\(f["bytes_received"] ?? "0")"
            details += " segs_out:\(f["segs_out"] ?? "0") segs_in:\(f["segs_in"] ?? "0")"
            details += " unacked:\(f["unacked"] ?? "0") retrans:\(f["retrans"] ?? "0") backoff:\(f["backoff"] ?? "0")"
            if f["sack"] == "1" { details += " sack" }
            if f["ts"] == "1" { details += " ts" }
            print(details)
        }
    }
}

struct Neigh: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the neighbour tables, like ip neigh: ARP entries, then the IPv6 neighbour cache, then the stack's IPv6 addresses.")

    @OptionGroup var socketOption: SocketOption

    func run() throws {
        // The stats reply carries the tables as "neigh ADDRESS MAC STATE [router]" and
        // "inet6 ADDRESS/PREFIX STATE" lines, printed as ip(8) prints them.
        for f in try socketOption.statsFields() {
            if f.count >= 4 && f[0] == "neigh" {
                let lladdr = f[2] == "-" ? "" : " lladdr \(f[2])"
                print("\(f[1])\(lladdr)\(f.count > 4 ? " router" : "") \(f[3])")
            } else if f.count == 3 && f[0] == "inet6" {
                print("inet6 \(f[1]) \(f[2])")
            }
        }
    }
}

struct Route: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the IPv6 routes, like ip -6 route: the default routers and on-link prefixes (given with --gateway6 or learnt from router advertisements), then the path MTUs learnt from Packet Too Big, like ip -6 route show cache.")

    @OptionGroup var socketOption: SocketOption

    func run() throws {
        // The stats reply carries "route6 default|prefix WHAT SECONDS" (SECONDS "-": for ever),
        // "mtu6 link MTU" and "pmtu6 DESTINATION MTU SECONDS" lines.
        let lines = try socketOption.statsFields()
        let mtu = lines.last { $0.count == 3 && $0[0] == "mtu6" }.map { " mtu \($0[2])" } ?? ""
        for f in lines {
            guard f.count == 4 else { continue }
            let expires = f[3] == "-" ? "" : " expires \(f[3])sec"
            switch f[0] {
            case "route6" where f[1] == "default": print("default via \(f[2])\(expires)\(mtu)")
            case "route6" where f[1] == "prefix": print("\(f[2])\(expires)\(mtu)")
            case "pmtu6": print("\(f[1]) cache expires \(f[3])sec mtu \(f[2])")
            default: break
            }
        }
    }
}

/// An error printed as "lvlipctl: error: ..." with exit status 1, without usage text.
struct ValidationErrorless: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

Lvlipctl.main()
