import ArgumentParser
import Glibc
import IPCServer

struct Lvlipctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lvlipctl",
        abstract: "Inspect a running lvlipd.",
        version: "0.1.0",
        subcommands: [Stat.self])
}

struct SocketOption: ParsableArguments {
    @Option(help: "Path of lvlipd's IPC socket (default: $LVLIP_SOCKET or /run/lvlip/lvlipd.sock).")
    var socket: String?

    var path: String {
        if let socket { return socket }
        if let env = getenv("LVLIP_SOCKET"), env.pointee != 0 { return String(cString: env) }
        return "/run/lvlip/lvlipd.sock"
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
        do {
            var client = try IPCClient(path: socketOption.path)
            defer { client.close() }
            let reply = try client.request(type: IPCMessageType.stats, expecting: IPCMessageType.statsReply)
            let text = String(decoding: reply, as: UTF8.self)
            let prefixes = patterns.map { $0.lowercased() }
            var rows: [(String, String)] = []
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: " ")
                guard parts.count == 2 else { continue }
                let name = String(parts[0])
                let value = String(parts[1])
                if !prefixes.isEmpty && !prefixes.contains(where: { name.lowercased().hasPrefix($0) }) { continue }
                if !zeros && value == "0" { continue }
                rows.append((name, value))
            }
            print("#lvlipd")
            let width = max(32, (rows.map { $0.0.count }.max() ?? 0) + 2)
            for (name, value) in rows {
                print(name + String(repeating: " ", count: width - name.count) + value)
            }
        } catch let failure as IPCClient.Failure {
            throw ValidationErrorless(failure.description)
        }
    }
}

/// An error printed as "lvlipctl: error: ..." with exit status 1, without usage text.
struct ValidationErrorless: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

Lvlipctl.main()
