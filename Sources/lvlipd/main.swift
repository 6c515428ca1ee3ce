import ArgumentParser
import Glibc
import Logging
import Stack

struct LvlipdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lvlipd",
        abstract: "The lvlip userspace TCP/IP stack daemon: serves a TAP interface on one thread.",
        discussion: """
            Creates the TAP interface if it does not exist, brings its kernel side up, and answers
            ARP and ICMP for --addr. Programs reach it through the IPC socket (see docs/ipc.md).
            SIGINT or SIGTERM stop it in order; SIGUSR1 logs its counters.
            """,
        version: "0.1.0")

    @Option(help: "TAP interface to serve (created if missing).")
    var tap: String = "tap0"

    @Option(help: "The stack's address and prefix, e.g. 10.0.0.4/24.")
    var addr: String

    @Option(help: "Default gateway, inside the --addr subnet.")
    var gateway: String?

    @Option(help: "The stack's MAC address (default 02:00 followed by the four bytes of --addr).")
    var mac: String?

    @Option(help: "Link MTU, 68 to 9216; the kernel side of the TAP is set to it too.")
    var mtu: Int = 1500

    @Option(help: "Path of the IPC socket.")
    var socket: String = "/run/lvlip/lvlipd.sock"

    @Option(help: "Write every frame received and sent to this pcap file.")
    var pcap: String?

    @Option(help: "One of trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard IPv4Interface(cidr: addr) != nil else {
            throw ValidationError("--addr '\(addr)' is not an IPv4 address with a prefix such as 10.0.0.4/24 (not the network or broadcast address)")
        }
        if let gateway {
            guard let gw = IPv4Address(gateway) else { throw ValidationError("--gateway '\(gateway)' is not an IPv4 address") }
            let iface = IPv4Interface(cidr: addr)!
            guard iface.contains(gw), gw != iface.address else {
                throw ValidationError("--gateway \(gateway) must be another address inside \(addr)")
            }
        }
        if let mac {
            guard let m = MACAddress(mac) else { throw ValidationError("--mac '\(mac)' is not a MAC address such as 02:00:0a:00:00:04") }
            guard !m.isGroup, m != .zero else { throw ValidationError("--mac \(mac) must be a unicast address") }
        }
        guard (68...9216).contains(mtu) else { throw ValidationError("--mtu \(mtu) is outside 68...9216") }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level '\(logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        guard !tap.isEmpty, tap.utf8.count < 16 else { throw ValidationError("--tap '\(tap)' must be 1 to 15 characters") }
    }

    func run() throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "lvlipd")
        let interface = IPv4Interface(cidr: addr)!
        var stack = StackConfiguration(
            mac: mac.flatMap(MACAddress.init) ?? MACAddress(derivedFrom: interface.address),
            interface: interface, gateway: gateway.flatMap(IPv4Address.init), mtu: mtu)
        stack.seed = UInt64.random(in: .min ... .max)
        do {
            let daemon = try Daemon(options: .init(tap: tap, stack: stack, socketPath: socket, pcapPath: pcap), logger: logger)
            try daemon.run()
        } catch {
            FileHandleStderr.write("lvlipd: error: \(error)\n")
            Glibc.exit(1)
        }
    }
}

enum FileHandleStderr {
    static func write(_ text: String) {
        var text = text
        text.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

LvlipdCommand.main()
