import CLinux
import Glibc
import IPCServer
import Links
import Logging
import Reactor
import Stack
import Timing

/// Wires the TAP, the reactor, the stack and the IPC server together: after every reactor
/// wake-up the stack's driver polls the link (the TAP, wrapped by the pcap writer and the
/// fault injector when asked for).
final class Daemon {
    struct Options {
        var tap: String
        var stack: StackConfiguration
        var socketPath: String
        var pcapPath: String?
        var faults: FaultInjector.Settings?
        var group: gid_t?
        var offload = true
        var limits = SocketService.Limits()
        /// Reactor.busyPollNanoseconds in microseconds, when lvlipd may use more than one CPU.
        var busyPollMicroseconds = 0
    }

    private let options: Options
    private let logger: Logger
    private let reactor: Reactor
    private let tap: TapDevice
    private let stack: NetworkStack
    private let driver: StackDriver
    /// What the driver polls: the TAP, or its wrappers.
    private let link: any Link
    private let pcap: PcapWriter?
    private var ipc: IPCServer!
    private var service: SocketService!
    private let faults: FaultInjector?
    /// Duplicate IPv6 addresses already logged.
    private var loggedDuplicates = 0

    init(options: Options, logger: Logger) throws {
        self.options = options
        self.logger = logger
        // Refuse early if another daemon serves this socket, before touching its TAP.
        try Self.checkSocketFree(options.socketPath)
        reactor = try Reactor()
        tap = try TapDevice(name: options.tap, offload: options.offload, logger: logger)
        try tap.configureKernelSide(mtu: options.stack.mtu)
        try Self.ensureSocketDirectory(options.socketPath)
        // The pcap writer sits next to the TAP: it records what the kernel gave and what
        // reaches the kernel, before and after the faults.
        let tap = tap
        pcap = try options.pcapPath.map { path throws(DaemonError) in
            do {
                return try PcapWriter(path: path, wrapping: tap)
            } catch {
                throw DaemonError("cannot open pcap file: \(error)")
            }
        }
        let recorded: any Link = pcap ?? tap
        faults = options.faults.map { FaultInjector(settings: $0, wrapping: recorded) }
        link = faults ?? recorded
        stack = NetworkStack(configuration: options.stack, now: reactor.now)
        driver = StackDriver(stack: stack)
        lvlip_ignore_sigpipe()
        Self.raiseDescriptorLimit()
        // Connection buffers (256 KB rings, up to 4 MB) from the heap rather than a fresh
        // mmap each: a connection then costs no mmap/munmap pair and no zero-filled pages.
        lvlip_malloc_prefer_heap(16 << 20)
    }

    /// Every stack socket costs the daemon one descriptor: take what the hard limit allows.
    private static func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if getuid() == 0 {
            // Root may raise the hard limit up to fs.nr_open.
            var nrOpen: rlim_t = 1 << 20
            if let file = fopen("/proc/sys/fs/nr_open", "r") {
                var value: UInt = 0
                if withVaList([withUnsafeMutablePointer(to: &value) { $0 }], { vfscanf(file, "%lu", $0) }) == 1 {
                    nrOpen = rlim_t(value)
                }
                fclose(file)
            }
            var raised = rlimit(rlim_cur: nrOpen, rlim_max: max(nrOpen, limit.rlim_max))
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return }
        }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// Serves until SIGINT or SIGTERM, then shuts down in order.
    func run() throws {
        try reactor.handleSignals([SIGINT, SIGTERM, SIGUSR1]) { [unowned self] signo in
            if signo == SIGUSR1 {
                logger.info("counters:\n\(statsText())")
                return
            }
            logger.info("received signal \(signo), shutting down")
            reactor.stop()
        }
        try reactor.register(fd: tap.fd, events: .readable) { [unowned self] _ in tap.readable = true }
        reactor.addAfterWakeHook { [unowned self] in afterWake() }

        service = SocketService(stack: stack, reactor: reactor, logger: logger, limits: options.limits)
        // The TAP's kernel index names the interface in IP_PKTINFO, as the kernel would.
        service.interfaceIndex = UInt16(truncatingIfNeeded: if_nametoindex(tap.name))
        driver.delegate = service
        var ipcConfiguration = IPCServer.Configuration(path: options.socketPath)
        ipcConfiguration.group = options.group
        ipc = IPCServer(configuration: ipcConfiguration, reactor: reactor, logger: logger,
                        stats: { [unowned self] in statsText() }, sockets: { [unowned self] in socketsText() },
                        service: service)
        do {
            try ipc.start()
        } catch {
            throw DaemonError(error.description)
        }
        let config = options.stack
        let ipv6 = stack.ipv6Addresses.map { " \($0.interface)" }.joined()
        let polling = configureBusyPolling()
        logger.info("lvlipd serving \(config.interface)\(ipv6) mac \(config.mac) mtu \(config.mtu) on \(tap.name); IPC \(options.socketPath); \(polling)")
        stack.start(now: reactor.now)
        afterWake()
        try reactor.run()
        service.shutdown()
        ipc.shutdown()
        afterWake()
        pcap?.writeBuffered()
        logger.info("lvlipd stopped")
    }

    /// Busy polling pays only where the programs lvlipd serves can run beside it: on one
    /// CPU it finds nothing the sleeping loop would not (measured: the same connection rate
    /// with and without), and only spends that CPU. The affinity is read once, at start.
    /// Returns what was chosen, for the log.
    private func configureBusyPolling() -> String {
        guard options.busyPollMicroseconds > 0 else { return "busy polling off" }
        guard lvlip_usable_cpus() > 1 else { return "busy polling off (one CPU)" }
        reactor.busyPollNanoseconds = UInt64(options.busyPollMicroseconds) * 1000
        return "busy polling \(options.busyPollMicroseconds) µs"
    }

    private func afterWake() {
        link.polled(by: driver, now: reactor.now)
        service?.closeReleasedEnds()
        pcap?.writeBuffered()
        // The driver's poll after the wake-up runs what is due.
        reactor.wakeDeadline = driver.nextDeadline
        logDuplicateAddresses()
    }

    /// RFC 4862 5.4.5: a duplicate address is not used, and the fact is logged.
    private func logDuplicateAddresses() {
        guard stack.counters.ndp6DADFailures != UInt64(loggedDuplicates) else { return }
        let duplicates = stack.ipv6Addresses.filter { !$0.isPreferred && !$0.isTentative }
        for a in duplicates.dropFirst(loggedDuplicates) {
            logger.error("IPv6 address \(a.interface) is in use by another node on the link (duplicate address detection): not used")
        }
        loggedDuplicates = duplicates.count
    }

    private func statsText() -> String {
        var text = ""
        let counters = stack.counters
        for field in Counters.fields { text += "\(field.name) \(counters[keyPath: field.path])\n" }
        let io = tap.counters
        text += "TapReads \(io.reads)\nTapReadErrors \(io.readErrors)\n"
        text += "TapWrites \(io.writes)\nTapWriteErrors \(io.writeErrors)\n"
        let reassembly = stack.reassemblyState
        text += "IpReasmPending \(reassembly.datagrams)\nIpReasmBytes \(reassembly.bytes)\n"
        let reassembly6 = stack.reassembly6State
        text += "Ip6ReasmPending \(reassembly6.datagrams)\nIp6ReasmBytes \(reassembly6.bytes)\n"
        text += "ArpEntries \(stack.neighborTable.count)\n"
        text += "Ndp6Entries \(stack.neighbor6Table.count)\n"
        text += "Ip6TentativeAddresses \(stack.ipv6Addresses.filter(\.isTentative).count)\n"
        // Tables for `lvlipctl neigh`: lines of more than two words, which `stat` skips.
        for n in stack.neighborTable {
            text += "neigh \(n.address) \(n.mac.map { "\($0)" } ?? "-") \(n.state)\n"
        }
        for n in stack.neighbor6Table {
            text += "neigh \(n.address) \(n.mac.map { "\($0)" } ?? "-") \(n.state)\(n.router ? " router" : "")\n"
        }
        for a in stack.ipv6Addresses {
            let state = a.isPreferred ? "preferred" : a.isTentative ? "tentative" : "duplicate"
            text += "inet6 \(a.interface) \(state)\n"
        }
        // For `lvlipctl route`: "route6 default|prefix WHAT SECONDS-LEFT" ("-": for ever),
        // "mtu6 link MTU" when a router advertised one, "pmtu6 DESTINATION MTU SECONDS-LEFT".
        for r in stack.defaultRouter6Table { text += "route6 default \(r.router) \(r.secondsLeft.map { "\($0)" } ?? "-")\n" }
        for p in stack.onLinkPrefix6Table { text += "route6 prefix \(p.prefix) \(p.secondsLeft.map { "\($0)" } ?? "-")\n" }
        if let mtu = stack.advertisedMTU6 { text += "mtu6 link \(mtu)\n" }
        for p in stack.pathMTU6Table { text += "pmtu6 \(p.destination) \(p.mtu) \(p.secondsLeft)\n" }
        text += "ReactorWakeups \(reactor.wakeups)\n"
        text += "ReactorBusyPollHits \(reactor.busyPollHits)\nReactorBusyPollMicroseconds \(reactor.busyPollTime / 1000)\n"
        if let service {
            let c = service.counters
            text += "IpcSocketsOpen \(service.socketCount)\nIpcSocketsCreated \(c.socketsCreated)\n"
            text += "IpcSocketsAccepted \(c.socketsAccepted)\nIpcSocketsClosedByApp \(c.socketsClosedByApp)\n"
            text += "IpcAppBytesIn \(c.appBytesIn)\nIpcAppBytesOut \(c.appBytesOut)\n"
            text += "IpcAppBytesDiscarded \(c.appBytesDiscarded)\nIpcLimitRefusals \(c.limitRefusals)\n"
            text += "IpcAcceptHandoffWaits \(c.handoffWaits)\n"
        }
        if let faults {
            let f = faults.counters
            text += "FaultDropped \(f.dropped)\nFaultDuplicated \(f.duplicated)\nFaultReordered \(f.reordered)\nFaultCorrupted \(f.corrupted)\n"
        }
        return text
    }

    /// One line per socket for SOCKETS_REPLY (lvlipctl ss).
    private func socketsText() -> String {
        service?.socketLines() ?? ""
    }

    /// Creates the socket's parent directory (for the default under /run) if it is missing.
    private static func ensureSocketDirectory(_ path: String) throws {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        let directory = String(path[..<slash])
        var info = stat()
        if stat(directory, &info) == 0 { return }
        guard mkdir(directory, 0o755) == 0 || errno == EEXIST else {
            throw DaemonError("cannot create socket directory \(directory): \(String(cString: strerror(errno)))")
        }
    }

    private static func checkSocketFree(_ path: String) throws {
        let fd = lvlip_unix_connect(path)
        if fd >= 0 {
            Syscall.close(fd)
            throw DaemonError("socket path \(path) is in use by a running lvlipd")
        }
    }
}

extension Link {
    /// Polls this link, whatever its concrete type: a method of the protocol opens the
    /// existential the daemon holds (its link is chosen at run time).
    fileprivate func polled(by driver: StackDriver, now: Instant) { driver.poll(now: now, link: self) }
}
