import ArgumentParser
import Glibc
import Links
import Logging
import Stack

struct LvlipdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lvlipd",
        abstract: "The lvlip userspace TCP/IP stack daemon: serves a TAP interface on one thread.",
        discussion: """
            Creates the TAP interface if it does not exist, brings its kernel side up, and answers
            ARP and ICMP for --addr; over IPv6, neighbour and router discovery and ICMPv6 echo for
            its IPv6 addresses and the link-local one formed from the MAC. Programs reach it through the IPC socket (see docs/ipc.md).
            SIGINT or SIGTERM stop it in order; SIGUSR1 logs its counters.
            """,
        version: "0.1.0")

    @Option(help: "TAP interface to serve (created if missing).")
    var tap: String = "tap0"

    @Option(help: "An address and prefix of the stack, e.g. 10.0.0.4/24 or fd00::4/64; repeatable: one IPv4 address (required) and any IPv6 ones.")
    var addr: [String] = []

    /// The one IPv4 interface among --addr (validated).
    private var interface: IPv4Interface { addr.lazy.compactMap(IPv4Interface.init(cidr:)).first! }
    private var ipv6Interfaces: [IPv6Interface] { addr.compactMap(IPv6Interface.init(cidr:)) }

    @Option(help: "Default gateway, inside the --addr subnet.")
    var gateway: String?

    @Option(help: "Default IPv6 router: a link-local address or one inside an IPv6 --addr prefix. Without it, routers are learnt from router advertisements.")
    var gateway6: String?

    @Option(help: "The stack's MAC address (default 02:00 followed by the four bytes of --addr).")
    var mac: String?

    @Option(help: "Link MTU, 68 to 9216; the kernel side of the TAP is set to it too.")
    var mtu: Int = 1500

    @Option(help: "Path of the IPC socket.")
    var socket: String = "/run/lvlip/lvlipd.sock"

    @Option(help: "Group that may use the IPC socket (mode 0660); default: the daemon's group.")
    var group: String?

    @Option(help: "Sockets one user may hold at once.")
    var maxSocketsPerUser: Int = 65536

    @Option(help: "Megabytes the daemon may buffer for one user's sockets.")
    var maxBufferedMbPerUser: Int = 1024

    @Flag(help: "Do not use the TAP's checksum and segmentation offloads (one MTU frame per read and per write).")
    var noOffload = false

    @Option(help: ArgumentHelp("After a wake-up with I/O, look for more without sleeping for this many microseconds (0: off; 0 to 1000). Off by itself when lvlipd may run on one CPU only.", valueName: "microseconds"))
    var busyPoll: Int = 100

    @Option(help: "Write every frame received and sent to this pcap file.")
    var pcap: String?

    @Option(help: "One of trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(help: ArgumentHelp("SYN retransmissions before connect fails (default 6, as Linux).", visibility: .hidden))
    var tcpSynRetries: Int?

    @Option(help: ArgumentHelp("TIME-WAIT duration in milliseconds (default 60000).", visibility: .hidden))
    var tcpTimeWaitMs: UInt64?

    @Option(help: ArgumentHelp("Fault injection on the link: DROP,DUPLICATE,REORDER,CORRUPT probabilities and SEED, e.g. 0.01,0.01,0.01,0,7.", visibility: .hidden))
    var faults: String?

    func validate() throws {
        for a in addr where IPv4Interface(cidr: a) == nil && IPv6Interface(cidr: a) == nil {
            if a.contains(":") {
                throw ValidationError("--addr '\(a)' is not an IPv6 address with a prefix 1...128 such as fd00::4/64 (not multicast, unspecified or loopback)")
            }
            throw ValidationError("--addr '\(a)' is not an IPv4 address with a prefix such as 10.0.0.4/24 (not the network or broadcast address)")
        }
        let ipv4Count = addr.filter { IPv4Interface(cidr: $0) != nil }.count
        guard ipv4Count == 1 else {
            throw ValidationError(ipv4Count == 0 ? "--addr: an IPv4 address such as 10.0.0.4/24 is required"
                                                 : "--addr: only one IPv4 address is supported")
        }
        if let gateway {
            guard let gw = IPv4Address(gateway) else { throw ValidationError("--gateway '\(gateway)' is not an IPv4 address") }
            let iface = interface
            guard iface.contains(gw), gw != iface.address else {
                throw ValidationError("--gateway \(gateway) must be another address inside \(addr)")
            }
        }
        if let gateway6 {
            guard let gw = IPv6Address(gateway6), !gw.isMulticast, !gw.isUnspecified, !gw.isLoopback,
                  !gw.isIPv4Mapped else {
                throw ValidationError("--gateway6 '\(gateway6)' is not a unicast IPv6 address such as fe80::1")
            }
            guard gw.isLinkLocal || ipv6Interfaces.contains(where: { $0.contains(gw) }) else {
                throw ValidationError("--gateway6 \(gateway6) must be link-local (fe80::/10) or inside an IPv6 --addr prefix")
            }
            let ownMAC = mac.flatMap(MACAddress.init) ?? MACAddress(derivedFrom: interface.address)
            guard !ipv6Interfaces.contains(where: { $0.address == gw }), gw != IPv6Address(linkLocalFor: ownMAC) else {
                throw ValidationError("--gateway6 \(gateway6) is one of the stack's own addresses")
            }
            guard mtu >= IPv6Packet.minimumMTU else {
                throw ValidationError("--gateway6: IPv6 is off with --mtu \(mtu), below 1280")
            }
        }
        if let mac {
            guard let m = MACAddress(mac) else { throw ValidationError("--mac '\(mac)' is not a MAC address such as 02:00:0a:00:00:04") }
            guard !m.isGroup, m != .zero else { throw ValidationError("--mac \(mac) must be a unicast address") }
        }
        guard (68...9216).contains(mtu) else { throw ValidationError("--mtu \(mtu) is outside 68...9216") }
        if !ipv6Interfaces.isEmpty && mtu < IPv6Packet.minimumMTU {
            throw ValidationError("--mtu \(mtu) is below IPv6's minimum of 1280 (RFC 8200 section 5): no IPv6 --addr then")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level '\(logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        guard !tap.isEmpty, tap.utf8.count < 16 else { throw ValidationError("--tap '\(tap)' must be 1 to 15 characters") }
        if let faults, Self.parseFaults(faults) == nil {
            throw ValidationError("--faults '\(faults)' is not DROP,DUPLICATE,REORDER,CORRUPT,SEED with probabilities in 0...1")
        }
        if let group, getgrnam(group) == nil { throw ValidationError("--group '\(group)' is not a group on this system") }
        guard maxSocketsPerUser >= 1 else { throw ValidationError("--max-sockets-per-user must be at least 1") }
        guard (1...1 << 20).contains(maxBufferedMbPerUser) else { throw ValidationError("--max-buffered-mb-per-user must be 1...1048576") }
        if let tcpSynRetries, !(0...20).contains(tcpSynRetries) { throw ValidationError("--tcp-syn-retries must be 0...20") }
        guard (0...1000).contains(busyPoll) else { throw ValidationError("--busy-poll must be 0...1000 microseconds") }
    }

    static func parseFaults(_ text: String) -> FaultInjector.Settings? {
        let parts = text.split(separator: ",").map(String.init)
        guard parts.count == 5, let seed = UInt64(parts[4]) else { return nil }
        let p = parts[0..<4].compactMap(Double.init)
        guard p.count == 4, p.allSatisfy({ (0...1).contains($0) }) else { return nil }
        return .init(drop: p[0], duplicate: p[1], reorder: p[2], corrupt: p[3], seed: seed)
    }

    func run() throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "lvlipd")
        var stack = StackConfiguration(
            mac: mac.flatMap(MACAddress.init) ?? MACAddress(derivedFrom: interface.address),
            interface: interface, gateway: gateway.flatMap(IPv4Address.init), mtu: mtu)
        stack.seed = UInt64.random(in: .min ... .max)
        // IPv6 is on with the link-local address even with no IPv6 --addr, unless the link
        // cannot carry it (RFC 8200 section 5; Linux turns IPv6 off below 1280 too).
        if mtu >= IPv6Packet.minimumMTU {
            stack.ipv6 = IPv6Configuration(addresses: ipv6Interfaces, gateway: gateway6.flatMap(IPv6Address.init))
        }
        if let tcpSynRetries { stack.tcp.synRetries = tcpSynRetries }
        if let tcpTimeWaitMs { stack.tcp.timeWaitMilliseconds = tcpTimeWaitMs }
        var options = Daemon.Options(tap: tap, stack: stack, socketPath: socket, pcapPath: pcap)
        options.faults = faults.flatMap(Self.parseFaults)
        options.group = group.flatMap { getgrnam($0)?.pointee.gr_gid }
        // The fault injector corrupts frames to test checksums: the kernel's offloaded
        // segments come with checksums we cannot check, so it runs without offload.
        options.offload = !noOffload && options.faults == nil
        // The same header lets the kernel finish TCP checksums and cut super-segments (TSO).
        options.stack.offload = OutputOffload(checksum: options.offload, tcpSegmentation: options.offload)
        options.busyPollMicroseconds = busyPoll
        options.limits.socketsPerUser = maxSocketsPerUser
        options.limits.bufferedBytesPerUser = maxBufferedMbPerUser << 20
        do {
            let daemon = try Daemon(options: options, logger: logger)
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
