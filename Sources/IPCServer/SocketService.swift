import CLinux
import Glibc
import IPCProtocol
import Logging
import Reactor
import Stack
import Timing

/// The stack's sockets, served to applications through the LD_PRELOAD shim (docs/ipc.md,
/// "Socket service").
///
/// Every stack socket is one AF_UNIX stream pair. The application holds one end as its
/// socket descriptor; the daemon holds the other (`Socket.fd`). Payload flows through the
/// pair as plain bytes in both directions, so reads, writes, poll, select and epoll in the
/// application are the kernel's own, and fork, dup and exec share the socket as they share
/// any descriptor. The daemon decides readiness by what it puts in the pair:
/// - received data is written into it as the application's buffer has room (the TCP window
///   closes while it has none);
/// - the peer's FIN becomes shutdown(SHUT_WR) of the daemon's end: EOF after the data;
/// - a connection that ends in error closes the daemon's end: EOF or ECONNRESET for
///   reads, EPIPE for writes, POLLHUP;
/// - while a connect is in progress the application's end holds "filler" bytes the shim
///   wrote with a tiny send buffer, so it is not writable; the daemon consumes them when the
///   handshake completes, which makes the end writable (POLLOUT, EPOLLOUT) at that moment;
/// - a listening socket's pair carries one `lvlip_accept_record` per connection with the
///   connection's own descriptor attached, so accept readiness is plain POLLIN.
/// The application closing its last descriptor shows as end of stream on the daemon's end.
///
/// The service is spread over files by concern: the socket record and its kinds (Socket.swift),
/// the registry of handles, users, tombstones and closing (+Registry), requests (+Requests),
/// each kind's data path (+Stream, +Listener, +Datagram), TCP_INFO (+TCPInfo), the `ss` lines
/// (+SocketList), and options as data (SocketOptions.swift, SocketOptionTable*.swift).
public final class SocketService: StackDriverDelegate {
    public struct Limits {
        /// Sockets one user may hold at once.
        public var socketsPerUser = 65536
        /// Bytes the daemon may buffer for one user's sockets (send queues and data read
        /// from applications); beyond it the daemon stops reading their writes.
        public var bufferedBytesPerUser = 1 << 30
        public init() {}
    }

    /// A reply to a request (replies carry no descriptors: the shim makes the pairs).
    public struct Reply {
        public var body: [UInt8]
        /// Decides the reply's result (the body's first int32) when it is written, at the
        /// end of the wake-up, if it then returns one: a blocking CONNECT that the wake-up
        /// completed is answered 0 rather than -EINPROGRESS.
        public var settle: (() -> Int32?)?

        init(body: [UInt8], settle: (() -> Int32?)? = nil) {
            self.body = body
            self.settle = settle
        }
    }

    /// Counters shown by `lvlipctl stat`.
    public struct Counters {
        public var socketsCreated: UInt64 = 0
        public var socketsAccepted: UInt64 = 0
        public var socketsClosedByApp: UInt64 = 0
        public var appBytesIn: UInt64 = 0
        public var appBytesOut: UInt64 = 0
        public var appBytesDiscarded: UInt64 = 0
        public var limitRefusals: UInt64 = 0
        public var handoffWaits: UInt64 = 0
    }

    let stack: NetworkStack
    let reactor: Reactor
    let logger: Logger
    let limits: Limits
    var slots: [Socket?] = []
    var generations: [UInt32] = []
    var freeSlots: [Int32] = []
    var byStack = SocketTable()
    /// Reused by readinessMayHaveChanged so that taking the stack's readiness list does not allocate.
    private var readinessScratch: [SocketID] = []
    var users: [UInt32: User] = [:]
    var tombstones: [Socket] = []
    /// Daemon ends to close at the end of the wake-up (closeReleasedEnds).
    var closing: [Int32] = []
    /// Datagram sockets waiting for room in the link's queue.
    var waitingForOutput: [Socket] = []
    /// Tokens are SipHash-2-4 of a counter under a random key: unguessable without the key.
    let tokenKey: (UInt64, UInt64)
    var tokenCounter: UInt64 = 0
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 64)
    public internal(set) var counters = Counters()
    let daemonPid = getpid()
    /// The kernel's index of the TAP (the stack's interface) and of `lo`, for IP_PKTINFO.
    public var interfaceIndex: UInt16 = 0
    static let loopbackIndex = UInt16(truncatingIfNeeded: if_nametoindex("lo"))

    /// Send buffer of the daemon's end: how much received data may wait in the application's end.
    static let pushBuffer: Int32 = 1 << 20
    /// Send buffer of the application's end: how much it may write ahead of the stack.
    static let appBuffer = Int32(LVLIP_APP_SEND_BUFFER)
    /// How long the daemon remembers a socket whose connection ended, for K.SO_ERROR and
    /// getpeername, after closing its end of the pair (the application may still hold its end).
    static let tombstoneSeconds: UInt64 = 120
    static let maxTombstones = 8192

    public init(stack: NetworkStack, reactor: Reactor, logger: Logger, limits: Limits = Limits()) {
        self.stack = stack
        self.reactor = reactor
        self.logger = logger
        self.limits = limits
        var key: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &key) { buffer in
            let fd = Glibc.open("/dev/urandom", O_RDONLY | O_CLOEXEC)
            if fd >= 0 {
                _ = try? Syscall.call("read(/dev/urandom)") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
                Syscall.close(fd)
            }
        }
        key.0 ^= lvlip_monotonic_ns()
        tokenKey = key
        stack.directReceiver = self
    }

    deinit {
        if stack.directReceiver === self { stack.directReceiver = nil }
        scratch.deallocate()
    }

    public var socketCount: Int { byStack.count }

    /// The stack's interface for HELLO_REPLY: address, netmask, gateway (0: none).
    public var interface: IPCHello.Interface {
        let i = stack.configuration.interface
        return IPCHello.Interface(address: i.address.value, netmask: i.mask, gateway: stack.configuration.gateway?.value ?? 0)
    }

    // MARK: - Events, by kind

    /// Readiness changes from the stack (`NetworkStack.takeReadinessChanges`).
    public func readinessChanged(_ ids: [SocketID]) {
        for id in ids {
            guard let s = byStack[id] else { continue }
            update(s)
        }
    }

    /// What the stack's driver calls (StackDriverDelegate): takes the stack's readiness
    /// changes and serves them, in rounds, since what the service does (reading a pair into a
    /// send queue, consuming received data) may change more. Bounded: what is left is served
    /// on the driver's next call.
    public func readinessMayHaveChanged(now: Instant) {
        for _ in 0..<8 {
            stack.takeReadinessChanges(into: &readinessScratch)
            if readinessScratch.isEmpty { return }
            readinessChanged(readinessScratch)
        }
    }

    public func outputDrained(now: Instant) { outputDrained() }

    /// The stack's socket changed: move data and state between it and the pair.
    func update(_ s: Socket) {
        guard let id = s.stackID else { return }
        switch s.kind {
        case .stream(let stream): updateStream(s, stream, id)
        case .listener(let listener): updateListener(s, listener)
        case .datagram(let datagram): updateDatagram(s, datagram)
        }
    }

    /// The reactor's events on the daemon's end of a pair.
    func pairEvent(_ s: Socket, _ events: IOEvents) {
        guard s.fd >= 0 else { return }
        switch s.kind {
        case .stream(let stream): streamEvent(s, stream, events)
        case .listener(let listener): listenerEvent(s, listener, events)
        case .datagram(let datagram): datagramEvent(s, datagram, events)
        }
    }

    /// What the daemon's end should wait for, from the socket's kind, state and buffers.
    func refreshInterest(_ s: Socket) {
        guard s.fd >= 0 else { return }
        setInterest(s, interest(s))
    }

    /// What the daemon's end of `s` waits for now (the caller checked `s.fd`).
    func interest(_ s: Socket) -> IOEvents {
        switch s.kind {
        case .stream(let stream): streamInterest(s, stream)
        case .listener(let listener): listenerInterest(listener)
        case .datagram(let datagram): datagramInterest(s, datagram)
        }
    }

    /// Closes every pair (daemon shutdown): applications see their sockets end.
    public func shutdown() {
        for case let s? in slots {
            closeDaemonEnd(s)
            // The peers learn that the connections are gone (the stack goes with lvlipd).
            if let id = s.stackID { stack.tcpAbort(id, now: reactor.now) }
            s.stackID = nil
        }
        closeReleasedEnds()
    }
}
