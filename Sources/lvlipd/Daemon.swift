import CLinux
import Glibc
import IPCServer
import Logging
import Reactor
import Stack
import Timing

/// Wires the TAP, the reactor, the stack and the IPC server together.
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
    }

    /// Counters of the daemon's own I/O, beside the stack's.
    private struct IOCounters {
        var tapReads: UInt64 = 0
        var tapReadErrors: UInt64 = 0
        var tapWrites: UInt64 = 0
        var tapWriteErrors: UInt64 = 0
    }

    private let options: Options
    private let logger: Logger
    private let reactor: Reactor
    private let tap: TapDevice
    private let stack: NetworkStack
    private let pcap: PcapWriter?
    private var ipc: IPCServer!
    private var service: SocketService!
    private var io = IOCounters()
    private var stackTimer: TimerHandle?
    private var faults: FaultInjector?
    private var stackTimerDeadline: Instant?
    private var framesSinceDispatch = 0
    /// Applications hear of received data, and owed duplicate ACKs go out, every this many
    /// MTU frames of a batch.
    private static let dispatchFrames = 8
    /// Reused by dispatchReadiness so that taking the stack's readiness list does not allocate.
    private var readinessChanges: [SocketID] = []
    private let frameBuffer: UnsafeMutableRawBufferPointer
    /// Frames read per wake-up before yielding to other descriptors.
    private static let readBatch = 256
    /// Rounds of loopback delivery and application wake-ups per reactor wake-up.
    private static let loopbackRounds = 16

    init(options: Options, logger: Logger) throws {
        self.options = options
        self.logger = logger
        // Refuse early if another daemon serves this socket, before touching its TAP.
        try Self.checkSocketFree(options.socketPath)
        reactor = try Reactor()
        tap = try TapDevice(name: options.tap, offload: options.offload)
        try tap.configureKernelSide(mtu: options.stack.mtu)
        try Self.ensureSocketDirectory(options.socketPath)
        pcap = try options.pcapPath.map { path throws(DaemonError) in try PcapWriter(path: path) }
        stack = NetworkStack(configuration: options.stack, now: reactor.now)
        frameBuffer = .allocate(byteCount: TapDevice.maximumRead + 64, alignment: 16)
        faults = options.faults.map { FaultInjector(settings: $0) }
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

    deinit { frameBuffer.deallocate() }

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
        try reactor.register(fd: tap.fd, events: .readable) { [unowned self] _ in readFrames() }
        reactor.addAfterWakeHook { [unowned self] in afterWake() }

        service = SocketService(stack: stack, reactor: reactor, logger: logger, limits: options.limits)
        // The TAP's kernel index names the interface in IP_PKTINFO, as the kernel would.
        service.interfaceIndex = UInt16(truncatingIfNeeded: if_nametoindex(tap.name))
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
        logger.info("lvlipd serving \(config.interface) mac \(config.mac) mtu \(config.mtu) on \(tap.name); IPC \(options.socketPath)")
        stack.start(now: reactor.now)
        afterWake()
        try reactor.run()
        service.shutdown()
        ipc.shutdown()
        afterWake()
        pcap?.flush()
        logger.info("lvlipd stopped")
    }

    private func readFrames() {
        for _ in 0..<Self.readBatch {
            let read: (frame: Range<Int>, checksumVerified: Bool)?
            do {
                read = try tap.read(into: frameBuffer)
            } catch {
                io.tapReadErrors &+= 1
                logger.warning("\(error)")
                return
            }
            guard let read else { return }
            io.tapReads &+= 1
            let frame = UnsafeRawBufferPointer(frameBuffer.slice(read.frame))
            let verified = read.checksumVerified
            pcap?.record(frame)
            // The clock is read per frame (a vDSO call, tens of ns), not once per wake-up: a
            // reply to what we wrote can arrive within the same wake-up (the kernel handles
            // our TAP write synchronously), and RTT samples of zero would make RACK's
            // reordering window vanish.
            let now = Syscall.monotonicNow()
            if let faults {
                faults.receive(frame) { stack.receive(frame: $0, checksumVerified: verified, now: now) }
            } else {
                stack.receive(frame: frame, checksumVerified: verified, now: now)
            }
            // Applications hear of received data every 8 MTU frames (or after each large TSO
            // segment, which fills a receive window fast), not after every frame: one write
            // into a socket's pair then carries several segments.
            framesSinceDispatch += frame.count > 16384 ? Self.dispatchFrames : 1
            if framesSinceDispatch >= Self.dispatchFrames {
                framesSinceDispatch = 0
                stack.flushDeferredAcks(now: now)
                dispatchReadiness(now: now)
            }
            // Send what the frame produced before reading on: each frame costs one write
            // either way, and a reply should not wait for the read that finds the queue empty.
            if !stack.outbox.isEmpty { transmit() }
        }
    }

    /// Gives the stack's readiness changes to their owners; what they do may change more.
    private func dispatchReadiness(now: Instant) {
        for _ in 0..<8 {
            stack.takeReadinessChanges(into: &readinessChanges)
            if readinessChanges.isEmpty { return }
            service?.readinessChanged(readinessChanges)
        }
    }

    private func afterWake() {
        // Loopback traffic is received in transmit(), in rounds: what one round delivers
        // wakes sockets whose owners answer, which makes the next. Bounded: what is left
        // keeps the stack's deadline due, so the next wake-up goes on at once.
        for _ in 0..<Self.loopbackRounds {
            stack.flushDeferredAcks(now: reactor.now)
            dispatchReadiness(now: reactor.now)
            transmit()
            dispatchReadiness(now: reactor.now)
            if !stack.hasLoopbackPending { break }
        }
        service?.closeReleasedEnds()
        pcap?.flush()
        scheduleStackTimer()
    }

    /// Writes the outbox to the TAP and receives what the stack sent itself (its loopback);
    /// connections that were held back by a full queue then send on, until none is waiting.
    private func transmit() {
        repeat {
            writeOutbox()
            stack.deliverLoopback(now: reactor.now)
            stack.resumeOutput(now: reactor.now)
            service?.outputDrained()
        } while !stack.outbox.isEmpty
    }

    private func writeOutbox() {
        let outbox = stack.outbox
        for i in 0..<outbox.count {
            if let faults {
                faults.transmit(outbox[i]) { write($0) }
            } else {
                write(outbox[i])
            }
        }
        outbox.removeAll()
        faults?.flush(receive: { stack.receive(frame: $0, now: reactor.now) }, transmit: { write($0) })
    }

    private func write(_ frame: UnsafeRawBufferPointer) {
        pcap?.record(frame)
        if let error = tap.write(frame) {
            io.tapWriteErrors &+= 1
            if io.tapWriteErrors == 1 || io.tapWriteErrors % 1000 == 0 {
                logger.warning("TAP write failed (\(io.tapWriteErrors) so far): \(SyscallError("write(\(tap.name))", errno: error))")
            }
        } else {
            io.tapWrites &+= 1
        }
    }

    /// Keeps one reactor timer at the stack's next deadline, moved only when it changes.
    private func scheduleStackTimer() {
        let deadline = stack.nextDeadline
        guard deadline != stackTimerDeadline else { return }
        if let handle = stackTimer { reactor.cancel(handle) }
        stackTimer = nil
        stackTimerDeadline = deadline
        guard let deadline else { return }
        stackTimer = reactor.schedule(at: deadline) { [unowned self] in
            stackTimer = nil
            stackTimerDeadline = nil
            stack.poll(now: reactor.now)
        }
    }

    private func statsText() -> String {
        var text = ""
        let counters = stack.counters
        for field in Counters.fields { text += "\(field.name) \(counters[keyPath: field.path])\n" }
        text += "TapReads \(io.tapReads)\nTapReadErrors \(io.tapReadErrors)\n"
        text += "TapWrites \(io.tapWrites)\nTapWriteErrors \(io.tapWriteErrors)\n"
        let reassembly = stack.reassemblyState
        text += "IpReasmPending \(reassembly.datagrams)\nIpReasmBytes \(reassembly.bytes)\n"
        text += "ArpEntries \(stack.neighborTable.count)\n"
        text += "ReactorWakeups \(reactor.wakeups)\n"
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
