import CLinux
import Glibc
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
/// Linux socket option numbers (asm-generic/socket.h, netinet/in.h, linux/tcp.h): Glibc
/// does not export all of them to Swift.
enum K {
    static let SOL_SOCKET: Int32 = 1
    static let SO_DEBUG: Int32 = 1
    static let SO_REUSEADDR: Int32 = 2
    static let SO_TYPE: Int32 = 3
    static let SO_ERROR: Int32 = 4
    static let SO_DONTROUTE: Int32 = 5
    static let SO_BROADCAST: Int32 = 6
    static let SO_SNDBUF: Int32 = 7
    static let SO_RCVBUF: Int32 = 8
    static let SO_KEEPALIVE: Int32 = 9
    static let SO_OOBINLINE: Int32 = 10
    static let SO_PRIORITY: Int32 = 12
    static let SO_LINGER: Int32 = 13
    static let SO_REUSEPORT: Int32 = 15
    static let SO_PASSCRED: Int32 = 16
    static let SO_PEERCRED: Int32 = 17
    static let SO_RCVLOWAT: Int32 = 18
    static let SO_ACCEPTCONN: Int32 = 30
    static let SO_SNDBUFFORCE: Int32 = 32
    static let SOCK_STREAM: Int32 = 1
    static let SOCK_DGRAM: Int32 = 2
    static let SOCK_RAW: Int32 = 3
    static let SOCK_SEQPACKET: Int32 = 5
    static let IPPROTO_ICMP: Int32 = 1
    static let SOL_RAW: Int32 = 255
    static let ICMP_FILTER: Int32 = 1
    static let SO_RCVBUFFORCE: Int32 = 33
    static let SO_MARK: Int32 = 36
    static let SO_PROTOCOL: Int32 = 38
    static let SO_DOMAIN: Int32 = 39
    static let SO_BUSY_POLL: Int32 = 46
    static let SO_INCOMING_CPU: Int32 = 49
    static let IPPROTO_IP: Int32 = 0
    static let IPPROTO_TCP: Int32 = 6
    static let IPPROTO_IPV6: Int32 = 41
    static let IP_RECVERR: Int32 = 11
    static let IPV6_RECVERR: Int32 = 25
    static let IPV6_V6ONLY: Int32 = 26
    static let IPV6_TCLASS: Int32 = 67
    static let TCP_NODELAY: Int32 = 1
    static let TCP_MAXSEG: Int32 = 2
    static let TCP_CORK: Int32 = 3
    static let TCP_KEEPIDLE: Int32 = 4
    static let TCP_KEEPINTVL: Int32 = 5
    static let TCP_KEEPCNT: Int32 = 6
    static let TCP_SYNCNT: Int32 = 7
    static let TCP_LINGER2: Int32 = 8
    static let TCP_DEFER_ACCEPT: Int32 = 9
    static let TCP_WINDOW_CLAMP: Int32 = 10
    static let TCP_INFO: Int32 = 11
    static let TCP_QUICKACK: Int32 = 12
    static let TCP_CONGESTION: Int32 = 13
    static let TCP_USER_TIMEOUT: Int32 = 18
    static let TCP_FASTOPEN: Int32 = 23
    static let TCP_NOTSENT_LOWAT: Int32 = 25
    static let TCP_FASTOPEN_CONNECT: Int32 = 30
}

public final class SocketService {
    public struct Limits {
        /// Sockets one user may hold at once.
        public var socketsPerUser = 65536
        /// Bytes the daemon may buffer for one user's sockets (send queues and data read
        /// from applications); beyond it the daemon stops reading their writes.
        public var bufferedBytesPerUser = 1 << 30
        public init() {}
    }

    enum Phase: String {
        case unconnected, connecting, connected, listening, closed
    }

    final class User {
        let uid: UInt32
        var sockets = 0
        var buffered = 0
        /// Sockets not reading their application's writes because the user is over its limit.
        var paused: [Socket] = []
        init(uid: UInt32) { self.uid = uid }
    }

    final class Socket {
        let slot: Int32
        let generation: UInt32
        let token: UInt64
        let family: Int32
        /// A datagram (UDP) socket: its pair is SOCK_SEQPACKET, one message per datagram.
        let udp: Bool
        /// UDP: not reading the application's datagrams until the link's queue drains.
        var waitingForOutput = false
        let user: User
        let ownerPid: Int32
        var stackID: SocketID?
        /// The key under which `byStack` holds the socket.
        var stackKey: SocketID?
        var paused = false
        /// The daemon's end of the pair; -1 once closed.
        var fd: Int32
        /// lvlipd's end holds the socket's name (IDENTIFY finds the socket by it).
        var named = false
        var phase = Phase.unconnected
        var interest: IOEvents = []
        /// Filler bytes still in the pair from the shim's connect.
        var filler = 0
        var connectReported = false
        var v6only = false
        /// Bound to [::] with K.IPV6_V6ONLY: the stack cannot serve it, it holds no IPv4 port.
        var phantomPort: UInt16?
        var boundAddress: UInt32 = 0
        var reuseAddress = false
        var finPending = false
        var writeShut = false
        /// UDP after shutdown(SHUT_WR): bytes of datagrams written before it, still to send.
        var writtenBeforeShutdown = 0
        var readShut = false
        var eofSent = false
        var appClosed = false
        /// Application bytes read after the application closed, waiting for send space.
        var overflow: [UInt8] = []
        /// Accepted connections waiting for room in a listener's pair.
        var handoff: [(socket: Socket, appFD: Int32)] = []
        /// The error to report once the daemon's end is closed (K.SO_ERROR, reads).
        var pendingError: Int32 = 0
        var finalState = TCPState.closed
        var localName = (address: UInt32(0), port: UInt16(0))
        var peerName = (address: UInt32(0), port: UInt16(0))
        var buffered = 0
        var closedAt: Instant?
        /// Option values kept for reading back (SocketOptions.swift).
        var options = OptionStore()

        init(slot: Int32, generation: UInt32, token: UInt64, family: Int32, udp: Bool, user: User, ownerPid: Int32, fd: Int32) {
            self.slot = slot
            self.generation = generation
            self.token = token
            self.family = family
            self.udp = udp
            self.user = user
            self.ownerPid = ownerPid
            self.fd = fd
        }

        var ref: (index: UInt32, generation: UInt32, token: UInt64) { (UInt32(slot), generation, token) }
    }

    /// A reply to a request (replies carry no descriptors: the shim makes the pairs).
    public struct Reply {
        public var body: [UInt8]
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
    private let logger: Logger
    private let limits: Limits
    private var slots: [Socket?] = []
    private var generations: [UInt32] = []
    private var freeSlots: [Int32] = []
    private var byStack: [SocketID: Socket] = [:]
    private var users: [UInt32: User] = [:]
    private var tombstones: [Socket] = []
    /// Daemon ends to close at the end of the wake-up (closeReleasedEnds).
    private var closing: [Int32] = []
    /// UDP sockets waiting for room in the link's queue.
    private var waitingForOutput: [Socket] = []
    /// Tokens are SipHash-2-4 of a counter under a random key: unguessable without the key.
    private let tokenKey: (UInt64, UInt64)
    private var tokenCounter: UInt64 = 0
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 64)
    public private(set) var counters = Counters()
    private let daemonPid = getpid()
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
                _ = Glibc.read(fd, buffer.baseAddress, buffer.count)
                Glibc.close(fd)
            }
        }
        key.0 ^= lvlip_monotonic_ns()
        tokenKey = key
    }

    deinit { scratch.deallocate() }

    public var socketCount: Int { byStack.count }

    /// The stack's interface for HELLO_REPLY: address, netmask, gateway (0: none).
    public var interface: (address: UInt32, netmask: UInt32, gateway: UInt32) {
        let i = stack.configuration.interface
        let mask: UInt32 = i.prefixLength == 0 ? 0 : ~UInt32(0) << (32 - UInt32(i.prefixLength))
        return (i.address.value, mask, stack.configuration.gateway?.value ?? 0)
    }

    /// The owner of a stack socket, for `lvlipctl ss`.
    public func owner(of id: SocketID) -> String? {
        guard let s = byStack[id] else { return nil }
        return "\(Self.command(of: s.ownerPid)),pid=\(s.ownerPid),uid=\(s.user.uid)"
    }

    /// The process name of `pid` (what ss -p shows), "?" once it has exited.
    static func command(of pid: Int32) -> String {
        guard let file = fopen("/proc/\(pid)/comm", "r") else { return "?" }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 64)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return "?" }
        let name = String(cString: buffer).filter { $0 != "\n" && $0 != " " && $0 != "," && $0 != "=" }
        return name.isEmpty ? "?" : name
    }

    // MARK: - Requests

    /// What one client connection made with SOCKET, by request tag: the shim names a socket
    /// that way until it has read the reply (LVLIP_REF_PENDING).
    public struct Created {
        fileprivate var recent: [(tag: UInt32, ref: lvlip_ref)] = []

        public init() {}

        fileprivate mutating func add(tag: UInt32, ref: lvlip_ref) {
            if recent.count == Int(LVLIP_PENDING_REFS) { recent.removeFirst() }
            recent.append((tag, ref))
        }

        fileprivate func resolve(_ ref: lvlip_ref) -> lvlip_ref {
            guard ref.index == LVLIP_REF_PENDING, ref.token == 0 else { return ref }
            return recent.last(where: { $0.tag == ref.generation })?.ref ?? ref
        }
    }

    /// Answers one socket request. `fd` is the descriptor that came with it (or -1); the
    /// service closes it or keeps it. `created` is the client connection's record of its
    /// SOCKET requests.
    public func handle(type: UInt16, tag: UInt32, body: UnsafeRawBufferPointer, fd received: Int32, pid: Int32,
                       uid: UInt32, created: inout Created) -> Reply? {
        var fd = received
        defer { if fd >= 0 { Syscall.close(fd) } }
        func lookup(_ ref: lvlip_ref) -> Socket? { self.lookup(created.resolve(ref)) }
        switch Int(type) {
        case Int(LVLIP_MSG_SOCKET.rawValue):
            guard body.count == MemoryLayout<lvlip_socket_req>.size, fd >= 0 else { return nil }
            let req = body.loadUnaligned(as: lvlip_socket_req.self)
            let (reply, socket) = open(req, daemonFD: fd, pid: pid, uid: uid)
            if let socket {
                fd = -1  // the socket's now
                created.add(tag: tag, ref: lvlip_ref(index: UInt32(socket.slot), generation: socket.generation,
                                                     token: socket.token))
            }
            return reply
        case Int(LVLIP_MSG_IDENTIFY.rawValue):
            guard body.isEmpty, fd >= 0 else { return nil }
            return identify(fd)
        case Int(LVLIP_MSG_BIND.rawValue):
            guard body.count == MemoryLayout<lvlip_addr_req>.size else { return nil }
            let req = body.loadUnaligned(as: lvlip_addr_req.self)
            guard let s = lookup(req.ref) else { return result(-EBADF) }
            let sender = (pid: pid, uid: uid)
            return result(s.udp ? udpBind(s, req.addr, sender: sender) : bind(s, req.addr, sender: sender))
        case Int(LVLIP_MSG_LISTEN.rawValue):
            guard body.count == MemoryLayout<lvlip_int_req>.size else { return nil }
            let req = body.loadUnaligned(as: lvlip_int_req.self)
            guard let s = lookup(req.ref) else { return result(-EBADF) }
            return result(s.udp ? -EOPNOTSUPP : listen(s, backlog: Int(req.value)))
        case Int(LVLIP_MSG_CONNECT.rawValue):
            guard body.count == MemoryLayout<lvlip_addr_req>.size else { return nil }
            let req = body.loadUnaligned(as: lvlip_addr_req.self)
            guard let s = lookup(req.ref) else { return nameReply(-EBADF, nil) }
            if s.udp { return nameReply(udpConnect(s, req.addr), (s.localName.address, s.localName.port)) }
            let code = connect(s, req.addr, filler: Int(req.filler))
            return nameReply(code, s.phase == .unconnected ? nil : (s.localName.address, s.localName.port))
        case Int(LVLIP_MSG_SHUTDOWN.rawValue):
            guard body.count == MemoryLayout<lvlip_int_req>.size else { return nil }
            let req = body.loadUnaligned(as: lvlip_int_req.self)
            guard let s = lookup(req.ref) else { return result(-EBADF) }
            return result(s.udp ? udpShutdown(s, how: req.value) : shutdown(s, how: req.value))
        case Int(LVLIP_MSG_NAME.rawValue):
            guard body.count == MemoryLayout<lvlip_int_req>.size else { return nil }
            let req = body.loadUnaligned(as: lvlip_int_req.self)
            guard let s = lookup(req.ref) else { return nameReply(-EBADF, nil) }
            return name(s, peer: req.value != 0)
        case Int(LVLIP_MSG_SETOPT.rawValue):
            let header = MemoryLayout<lvlip_opt_req>.size
            guard body.count >= header else { return nil }
            let req = body.loadUnaligned(as: lvlip_opt_req.self)
            guard Int(req.length) == body.count - header, req.length <= 1024 else { return nil }
            guard let s = lookup(req.ref) else { return result(-EBADF) }
            return result(setOption(s, level: req.level, name: req.name,
                                    value: UnsafeRawBufferPointer(rebasing: body[header...]), uid: uid))
        case Int(LVLIP_MSG_GETOPT.rawValue):
            guard body.count == MemoryLayout<lvlip_opt_req>.size else { return nil }
            let req = body.loadUnaligned(as: lvlip_opt_req.self)
            guard let s = lookup(req.ref) else { return optReply(-EBADF, []) }
            let (code, value) = getOption(s, level: req.level, name: req.name, room: Int(min(req.length, 1024)), uid: uid)
            return optReply(code, value)
        case Int(LVLIP_MSG_STATUS.rawValue):
            guard body.count == MemoryLayout<lvlip_int_req>.size else { return nil }
            let req = body.loadUnaligned(as: lvlip_int_req.self)
            guard let s = lookup(req.ref) else { return result(-EBADF) }
            return result(status(s, kind: req.value))
        default:
            return nil
        }
    }

    /// Whether `type` is a socket request (the IPC server routes those here).
    public static func handles(_ type: UInt16) -> Bool {
        type >= UInt16(LVLIP_MSG_SOCKET.rawValue) && type <= UInt16(LVLIP_MSG_STATUS.rawValue) && type % 2 == 0
    }

    private func lookup(_ ref: lvlip_ref) -> Socket? {
        let i = Int(ref.index)
        guard i < slots.count, let s = slots[i], s.generation == ref.generation, s.token == ref.token else { return nil }
        return s
    }

    private func result(_ code: Int32) -> Reply {
        var r = lvlip_result(result: code, reserved: 0)
        return Reply(body: withUnsafeBytes(of: &r) { Array($0) })
    }

    private func nameReply(_ code: Int32, _ name: (UInt32, UInt16)?, kind: UInt16 = UInt16(LVLIP_ADDR_V4.rawValue)) -> Reply {
        var r = lvlip_name_rep()
        r.result = code
        if let name { r.addr = lvlip_addr(addr: name.0, port: name.1, kind: kind) }
        return Reply(body: withUnsafeBytes(of: &r) { Array($0) })
    }

    private func optReply(_ code: Int32, _ value: [UInt8]) -> Reply {
        var r = lvlip_opt_rep(result: code, length: UInt32(value.count))
        var body = withUnsafeBytes(of: &r) { Array($0) }
        body.append(contentsOf: value)
        return Reply(body: body)
    }

    private func socketReply(_ s: Socket) -> Reply {
        var r = lvlip_socket_rep()
        r.result = 0
        r.family = s.family
        let kind = s.udp ? s.stackID.flatMap { stack.datagramKind($0) } : nil
        r.type = !s.udp ? K.SOCK_STREAM : kind == .rawICMP ? K.SOCK_RAW : K.SOCK_DGRAM
        r.state = stateCode(s)
        r.ref = lvlip_ref(index: UInt32(s.slot), generation: s.generation, token: s.token)
        r.headroom = UInt32(clamping: limits.socketsPerUser - s.user.sockets)
        if kind == .ping || kind == .rawICMP { r.protocol = UInt32(K.IPPROTO_ICMP) }
        return Reply(body: withUnsafeBytes(of: &r) { Array($0) })
    }

    private func stateCode(_ s: Socket) -> UInt32 {
        switch s.phase {
        case .unconnected: LVLIP_STATE_UNCONNECTED.rawValue
        case .connecting: LVLIP_STATE_CONNECTING.rawValue
        case .connected: LVLIP_STATE_CONNECTED.rawValue
        case .listening: LVLIP_STATE_LISTENING.rawValue
        case .closed: LVLIP_STATE_CLOSED.rawValue
        }
    }

    // MARK: - Socket lifetime

    /// SOCKET: the shim made the pair; `daemonFD` becomes the socket's on success.
    private func open(_ req: lvlip_socket_req, daemonFD: Int32, pid: Int32, uid: UInt32) -> (Reply, Socket?) {
        guard req.family == AF_INET || req.family == AF_INET6 else { return (failedSocket(-EAFNOSUPPORT), nil) }
        guard req.type == K.SOCK_STREAM || req.type == K.SOCK_DGRAM || req.type == K.SOCK_RAW else {
            return (failedSocket(-ESOCKTNOSUPPORT), nil)
        }
        let udp = req.type != K.SOCK_STREAM
        // ICMP: ping sockets (SOCK_DGRAM) and raw ICMP sockets, IPv4 only.
        let icmp = req.protocol == K.IPPROTO_ICMP && req.family == AF_INET
        if req.type == K.SOCK_RAW && !icmp { return (failedSocket(-EPROTONOSUPPORT), nil) }
        guard icmp || req.protocol == 0 || req.protocol == (udp ? 17 : 6) else { return (failedSocket(-EPROTONOSUPPORT), nil) }
        if icmp {
            // As Linux: ping sockets for the groups of net.ipv4.ping_group_range (EACCES),
            // raw sockets with CAP_NET_RAW (EPERM), judged by the requester now.
            if req.type == K.SOCK_RAW && !Privilege.capable(Privilege.netRaw, pid: pid, uid: uid) {
                return (failedSocket(-EPERM), nil)
            }
            if req.type == K.SOCK_DGRAM && !Privilege.mayOpenPingSocket(pid: pid) { return (failedSocket(-EACCES), nil) }
        }
        // A client could pass anything. lvlipd's end must be one end of a fresh pair whose
        // other end the client keeps: were the other end lvlipd's too (a stack socket's, or a
        // control connection), neither would ever see the other close. (All I/O on it is
        // non-blocking per call, whatever the descriptor's flags.)
        guard lvlip_is_pair_end(daemonFD, udp ? K.SOCK_SEQPACKET : K.SOCK_STREAM) == 1 else {
            return (failedSocket(-EINVAL), nil)
        }
        let user = self.user(uid)
        guard user.sockets < limits.socketsPerUser else {
            counters.limitRefusals &+= 1
            logger.warning("uid \(uid) (pid \(pid)) reached its limit of \(limits.socketsPerUser) sockets")
            return (failedSocket(-EMFILE), nil)
        }
        guard let s = adopt(daemonFD: daemonFD, family: req.family, user: user, pid: pid,
                            stackID: icmp ? stack.icmpOpen(raw: req.type == K.SOCK_RAW) : udp ? stack.udpOpen() : stack.tcpOpen(),
                            udp: udp) else {
            return (failedSocket(-ENOMEM), nil)
        }
        counters.socketsCreated &+= 1
        refreshInterest(s)
        return (socketReply(s), s)
    }

    private func failedSocket(_ code: Int32) -> Reply {
        var r = lvlip_socket_rep()
        r.result = code
        return Reply(body: withUnsafeBytes(of: &r) { Array($0) })
    }

    private func user(_ uid: UInt32) -> User {
        if let u = users[uid] { return u }
        let u = User(uid: uid)
        users[uid] = u
        return u
    }

    /// A new pair and record for an accepted connection; the application's end is returned.
    private func makeSocket(family: Int32, user: User, pid: Int32, stackID: SocketID) -> (Socket, Int32)? {
        var appFD: Int32 = -1
        var daemonFD: Int32 = -1
        guard lvlip_stream_pair(&appFD, &daemonFD) == 0 else {
            logger.warning("socketpair failed: \(String(cString: strerror(errno)))")
            stack.tcpAbort(stackID, now: reactor.now)
            return nil
        }
        _ = lvlip_set_int_option(appFD, K.SOL_SOCKET, K.SO_SNDBUFFORCE, Self.appBuffer)
        guard let s = adopt(daemonFD: daemonFD, family: family, user: user, pid: pid, stackID: stackID)
        else {
            Syscall.close(appFD)
            Syscall.close(daemonFD)
            return nil
        }
        return (s, appFD)
    }

    /// The record for a stack socket whose daemon end is `daemonFD` (kept; on failure the
    /// caller's again, and the stack's socket is closed).
    private func adopt(daemonFD: Int32, family: Int32, user: User, pid: Int32, stackID: SocketID,
                       udp: Bool = false) -> Socket? {
        let index: Int32
        if let free = freeSlots.popLast() {
            index = free
        } else {
            index = Int32(slots.count)
            slots.append(nil)
            generations.append(0)
        }
        tokenCounter &+= 1
        var hash = SipHash24(key0: tokenKey.0, key1: tokenKey.1)
        hash.add(tokenCounter)
        let s = Socket(slot: index, generation: generations[Int(index)], token: hash.finalize(), family: family, udp: udp, user: user,
                       ownerPid: pid, fd: daemonFD)
        slots[Int(index)] = s
        s.stackID = stackID
        s.stackKey = stackID
        byStack[stackID] = s
        user.sockets += 1
        // The name marks the pair as a stack socket for a shim that meets it after exec, and
        // names the socket for IDENTIFY (abstract names are unique: while lvlipd's end
        // holds it, only that end's peer can present it).
        s.named = lvlip_bind_abstract(daemonFD, "\(Self.markerPrefix(daemonPid))\(index)-\(s.generation)") == 0
        _ = lvlip_set_int_option(daemonFD, K.SOL_SOCKET, K.SO_SNDBUFFORCE, Self.pushBuffer)
        do {
            try reactor.register(fd: daemonFD, events: []) { [unowned self, unowned s] events in
                dataEvent(s, events)
            }
        } catch {
            logger.warning("cannot watch a socket pair: \(error)")
            s.fd = -1  // still the caller's
            release(s, appClosed: true)
            return nil
        }
        return s
    }

    static func markerPrefix(_ pid: Int32) -> String { "lvlip-\(pid)-" }

    /// IDENTIFY: the socket whose pair `fd` belongs to, by the name of its peer (lvlipd's
    /// end). While lvlipd's end is open the name cannot be anyone else's. Once it is closed
    /// (a finished connection kept for SO_ERROR) the name is free to take, so the pair must
    /// also have been made by lvlipd or by the socket's own user.
    private func identify(_ fd: Int32) -> Reply {
        var name = [CChar](repeating: 0, count: 108)
        guard lvlip_peer_abstract_name(fd, &name, name.count) == 0 else { return failedSocket(-ENOTSOCK) }
        let text = String(cString: name)
        let prefix = Self.markerPrefix(daemonPid)
        guard text.hasPrefix(prefix) else { return failedSocket(-ENOTSOCK) }
        let parts = text.dropFirst(prefix.count).split(separator: "-")
        guard parts.count == 2, let index = Int(parts[0]), let generation = UInt32(parts[1]), index < slots.count,
              let s = slots[index], s.generation == generation, s.named else {
            return failedSocket(-ENOTSOCK)
        }
        if s.fd < 0 {
            var pid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
            guard lvlip_peer_credentials(fd, &pid, &uid, &gid) == 0, uid == s.user.uid || uid == getuid() else {
                return failedSocket(-ENOTSOCK)
            }
        }
        return socketReply(s)
    }

    private func setInterest(_ s: Socket, _ events: IOEvents) {
        guard s.fd >= 0, events != s.interest else { return }
        s.interest = events
        do {
            try reactor.modify(fd: s.fd, events: events)
        } catch {
            logger.warning("epoll_ctl on a socket pair: \(error)")
        }
    }

    /// The application closed its last descriptor of the socket (`reset`: with data unread).
    private func applicationClosed(_ s: Socket, reset: Bool) {
        counters.socketsClosedByApp &+= 1
        s.appClosed = true
        if !reset && s.phase == .connected && !s.writeShut {
            // What it wrote before closing is still sent, then FIN.
            drainAfterClose(s)
        }
        closeDaemonEnd(s)
        for pending in s.handoff { Syscall.close(pending.appFD) }
        s.handoff.removeAll()
        if let id = s.stackID {
            if reset || (stack.tcpOptions(id)?.lingerZero ?? false) {
                stack.tcpAbort(id, now: reactor.now)
                s.stackID = nil
            } else if s.overflow.isEmpty {
                stack.tcpClose(id, now: reactor.now)
                s.stackID = nil
            }
        }
        if s.stackID == nil { release(s, appClosed: true) }
    }

    /// Reads what the application wrote before it closed: into the stack while it has room,
    /// the rest (at most the application's send buffer) into `overflow`.
    private func drainAfterClose(_ s: Socket) {
        while s.fd >= 0 {
            let n = Glibc.recv(s.fd, scratch.baseAddress, scratch.count, Int32(MSG_DONTWAIT))
            if n <= 0 { break }
            counters.appBytesIn &+= UInt64(n)
            var data = UnsafeRawBufferPointer(scratch.slice(0..<n))
            if s.overflow.isEmpty, let id = s.stackID {
                let taken = (try? stack.tcpSend(id, data, now: reactor.now)) ?? 0
                data = UnsafeRawBufferPointer(rebasing: data[taken...])
            }
            s.overflow.append(contentsOf: data)
        }
    }

    private func closeDaemonEnd(_ s: Socket) {
        guard s.fd >= 0 else { return }
        reactor.unregister(fd: s.fd)
        closing.append(s.fd)
        s.fd = -1
        s.interest = []
    }

    /// Closes the daemon ends let go during this wake-up. Done last, after the requests that
    /// came meanwhile were read: closing an AF_UNIX socket while descriptors are in flight
    /// (a shim's SOCKET request not read yet) makes the kernel run its garbage collector.
    public func closeReleasedEnds() {
        for fd in closing { Syscall.close(fd) }
        closing.removeAll(keepingCapacity: true)
    }

    /// Forgets the record (its slot may be reused).
    private func release(_ s: Socket, appClosed: Bool) {
        closeDaemonEnd(s)
        if let id = s.stackID {
            if s.udp { stack.udpClose(id) } else { stack.tcpClose(id, now: reactor.now) }
            s.stackID = nil
        }
        if s.waitingForOutput, let i = waitingForOutput.firstIndex(where: { $0 === s }) { waitingForOutput.remove(at: i) }
        guard slots[Int(s.slot)] === s else { return }
        slots[Int(s.slot)] = nil
        generations[Int(s.slot)] &+= 1
        freeSlots.append(s.slot)
        if let key = s.stackKey, byStack[key] === s { byStack[key] = nil }
        charge(s, 0)
        if s.paused, let i = s.user.paused.firstIndex(where: { $0 === s }) { s.user.paused.remove(at: i) }
        s.user.sockets -= 1
        if s.user.sockets == 0 && s.user.buffered == 0 { users[s.user.uid] = nil }
    }

    /// The connection is over and its data delivered: close the daemon's end so that the
    /// application sees EOF (or ECONNRESET) and EPIPE, and remember the error for a while.
    private func terminate(_ s: Socket, error: Int32) {
        if let id = s.stackID {
            s.finalState = stack.tcpState(id) ?? .closed
            if let e = stack.tcpTakeError(id) { s.pendingError = e.errno }
            if error != 0 { s.pendingError = error }
            byStack[id] = nil
            stack.tcpClose(id, now: reactor.now)
            s.stackID = nil
        } else if error != 0 {
            s.pendingError = error
        }
        s.phase = .closed
        closeDaemonEnd(s)
        charge(s, 0)
        s.closedAt = reactor.now
        tombstones.append(s)
        expireTombstones()
    }

    private func expireTombstones() {
        let now = reactor.now
        var drop = 0
        while drop < tombstones.count {
            let t = tombstones[drop]
            let old = t.closedAt.map { now.nanoseconds(since: $0) > Self.tombstoneSeconds * 1_000_000_000 } ?? true
            guard old || tombstones.count - drop > Self.maxTombstones else { break }
            drop += 1
            release(t, appClosed: false)
        }
        if drop > 0 { tombstones.removeFirst(drop) }
    }

    /// Keeps the user's count of buffered bytes in step with the socket's.
    private func charge(_ s: Socket, _ bytes: Int) {
        let user = s.user
        user.buffered += bytes - s.buffered
        s.buffered = bytes
        if user.buffered < limits.bufferedBytesPerUser && !user.paused.isEmpty {
            let waiting = user.paused
            user.paused.removeAll()
            for p in waiting {
                p.paused = false
                refreshInterest(p)
            }
        }
    }

    private func chargeBuffers(_ s: Socket) {
        guard let id = s.stackID else { return charge(s, s.overflow.count) }
        charge(s, stack.tcpSendQueued(id) + stack.tcpReadable(id) + s.overflow.count)
    }

    // MARK: - Operations

    /// How a BIND's address applies to a socket: an IPv4 address (nil: any), nothing more to
    /// do (an IPV6_V6ONLY socket bound to [::]), or an error.
    private enum BindTarget {
        case ipv4(IPv4Address?)
        case phantom
        case error(Int32)
    }

    /// `sender`: who asks, for ports below ip_unprivileged_port_start; nil where the port is
    /// no port (a ping socket's echo identifier).
    private func bindTarget(_ s: Socket, _ addr: lvlip_addr, sender: (pid: Int32, uid: UInt32)?) -> BindTarget {
        if let sender, !Privilege.mayBind(port: addr.port, uid: sender.uid, pid: sender.pid) { return .error(-EACCES) }
        switch Int(addr.kind) {
        case Int(LVLIP_ADDR_V6_OTHER.rawValue):
            return .error(-EADDRNOTAVAIL)
        case Int(LVLIP_ADDR_V6_ANY.rawValue):
            guard s.v6only else { return .ipv4(nil) }
            // IPv6 only: the stack has no IPv6, so this socket can never be reached; it keeps
            // its name and takes no IPv4 port (nginx binds [::]:80 beside 0.0.0.0:80).
            s.phantomPort = addr.port
            s.localName = (0, addr.port)
            return .phantom
        case Int(LVLIP_ADDR_V4.rawValue):
            if s.family == AF_INET6 && s.v6only { return .error(-EINVAL) }
            return .ipv4(addr.addr == 0 ? nil : IPv4Address(addr.addr))
        default:
            return .error(-EAFNOSUPPORT)
        }
    }

    private func bind(_ s: Socket, _ addr: lvlip_addr, sender: (pid: Int32, uid: UInt32)) -> Int32 {
        guard let id = s.stackID, s.phase == .unconnected, s.phantomPort == nil,
              stack.tcpNames(id)?.localPort == 0 else { return -EINVAL }
        let address: IPv4Address?
        switch bindTarget(s, addr, sender: sender) {
        case .phantom: return 0
        case .error(let code): return code
        case .ipv4(let a): address = a
        }
        // Ours, or any of 127.0.0.0/8 (the stack's loopback, as Linux's lo).
        guard address.map(stack.isBindable) ?? true else { return -EADDRNOTAVAIL }
        do {
            try stack.tcpBind(id, address: address ?? .any, port: addr.port, reuseAddress: s.reuseAddress)
        } catch {
            return -error.errno
        }
        s.boundAddress = address?.value ?? 0
        s.localName = (s.boundAddress, stack.tcpNames(id)?.localPort ?? addr.port)
        return 0
    }

    private func listen(_ s: Socket, backlog: Int) -> Int32 {
        if s.phantomPort != nil {
            s.phase = .listening
            return 0
        }
        guard let id = s.stackID, s.phase == .unconnected || s.phase == .listening else { return -EINVAL }
        do {
            try stack.tcpListen(id, backlog: backlog < 0 ? 4096 : backlog)
        } catch {
            return -error.errno
        }
        s.phase = .listening
        s.localName = (s.boundAddress, stack.tcpNames(id)?.localPort ?? 0)
        update(s)
        return 0
    }

    /// connect(2). The shim wrote `filler` bytes into its end first (docs/ipc.md): they stay
    /// unread until the handshake completes, unless the connect does not start.
    private func connect(_ s: Socket, _ addr: lvlip_addr, filler: Int) -> Int32 {
        if s.phase != .unconnected && filler > 0 {
            // The shim thought the socket unconnected: take its filler back.
            discardFiller(s, filler)
        }
        switch s.phase {
        case .connecting:
            return -EALREADY
        case .connected:
            if !s.connectReported {
                s.connectReported = true
                return 0
            }
            return -EISCONN
        case .listening:
            return -EISCONN
        case .closed:
            let e = s.pendingError
            s.pendingError = 0
            return e != 0 ? -e : -ECONNABORTED
        case .unconnected:
            break
        }
        let code = startConnect(s, addr)
        guard code == -EINPROGRESS else {
            // Failed at once: take the filler back so the end is writable again.
            discardFiller(s, filler)
            return code
        }
        s.phase = .connecting
        s.filler = filler
        return code
    }

    private func startConnect(_ s: Socket, _ addr: lvlip_addr) -> Int32 {
        guard let id = s.stackID, s.phantomPort == nil else { return -ENETUNREACH }
        guard addr.kind == UInt16(LVLIP_ADDR_V4.rawValue), !(s.family == AF_INET6 && s.v6only) else { return -ENETUNREACH }
        let address = IPv4Address(addr.addr)
        if addr.port == 0 { return -ECONNREFUSED }
        do {
            try stack.tcpConnect(id, to: address, port: addr.port, now: reactor.now)
        } catch {
            return -error.errno
        }
        if let names = stack.tcpNames(id) { s.localName = (names.local.value, names.localPort) }
        s.peerName = (addr.addr, addr.port)
        return -EINPROGRESS
    }

    private func discardFiller(_ s: Socket, _ count: Int) {
        var left = count
        while left > 0, s.fd >= 0 {
            let n = Glibc.recv(s.fd, scratch.baseAddress, min(left, scratch.count), Int32(MSG_DONTWAIT))
            if n <= 0 { break }
            left -= n
        }
    }


    private func shutdown(_ s: Socket, how: Int32) -> Int32 {
        guard how >= 0 && how <= 2 else { return -EINVAL }
        guard s.phase == .connected, let id = s.stackID else {
            return s.phase == .closed && s.peerName.port != 0 ? 0 : -ENOTCONN
        }
        if how == 0 || how == 2 {
            s.readShut = true
            try? stack.tcpShutdown(id, .read, now: reactor.now)
        }
        if (how == 1 || how == 2) && !s.writeShut {
            s.finPending = true
            readFromApp(s)
        }
        update(s)
        return 0
    }

    private func name(_ s: Socket, peer: Bool) -> Reply {
        if s.udp, let id = s.stackID, let names = stack.udpNames(id) {
            if peer {
                guard let remote = names.remote else { return nameReply(-ENOTCONN, nil) }
                return nameReply(0, (remote.address.value, remote.port))
            }
            if s.phantomPort != nil { return nameReply(0, (0, s.localName.port), kind: UInt16(LVLIP_ADDR_V6_ANY.rawValue)) }
            return nameReply(0, (names.local?.value ?? 0, names.localPort))
        }
        if peer {
            // As Linux: ENOTCONN before the connection is established and once it is over
            // (its socket then in CLOSE, whether it went through TIME-WAIT or was reset); the
            // peer while any of it lasts (FIN-WAIT, CLOSE-WAIT, CLOSING, LAST-ACK).
            let state = s.stackID.flatMap { stack.tcpState($0) } ?? s.finalState
            guard s.phase == .connected || s.phase == .closed, state != .closed, state != .timeWait else {
                return nameReply(-ENOTCONN, nil)
            }
            return nameReply(0, (s.peerName.address, s.peerName.port))
        }
        if s.phantomPort != nil {
            return nameReply(0, (0, s.localName.port), kind: UInt16(LVLIP_ADDR_V6_ANY.rawValue))
        }
        return nameReply(0, (s.localName.address, s.localName.port))
    }

    /// SO_ERROR: the error kept after the daemon's end closed, or the connection's own;
    /// reading it clears it.
    func takeError(_ s: Socket) -> Int32 {
        var error = s.pendingError
        s.pendingError = 0
        if error == 0, let id = s.stackID, let e = stack.tcpTakeError(id) { error = e.errno }
        return error
    }

    private func status(_ s: Socket, kind: Int32) -> Int32 {
        let error = takeError(s)
        if kind == Int32(LVLIP_STATUS_READ_END.rawValue) { return error == 0 ? 0 : -error }
        return error == 0 ? -EPIPE : -error
    }

    // MARK: - Data

    private func dataEvent(_ s: Socket, _ events: IOEvents) {
        guard s.fd >= 0 else { return }
        if s.udp { return datagramEvent(s, events) }
        if events.contains(.error) {
            // The application closed with data we gave it unread: as close(2) with unread
            // data, the connection is reset.
            applicationClosed(s, reset: true)
            return
        }
        switch s.phase {
        case .connected:
            if events.contains(.hangup) {
                // Both directions of the daemon's end shut: only the application's last close
                // does that (the daemon shuts only its writing side).
                applicationClosed(s, reset: false)
                return
            }
            if events.contains(.writable) { pushToApp(s) }
            if s.fd >= 0 && (events.contains(.readable) || events.contains(.readHangup)) {
                readFromApp(s)
            }
        default:
            if events.contains(.writable) && s.phase == .listening { handOff(s) }
            // Not connected, the pair is watched only for its hang-up (nothing else shuts the
            // application's end: it closed its last descriptor).
            if events.contains(.readHangup) || events.contains(.hangup) { applicationClosed(s, reset: false) }
        }
        if s.fd >= 0 { refreshInterest(s) }
    }

    /// Moves what the application wrote into the connection, as far as its send buffer allows.
    private func readFromApp(_ s: Socket) {
        while s.fd >= 0 {
            var room = scratch.count
            if !s.writeShut {
                guard let id = s.stackID else { break }
                room = min(room, stack.tcpSendSpace(id))
                if s.user.buffered >= limits.bufferedBytesPerUser { room = 0 }
                if room == 0 {
                    // Without room, a FIN can still go once nothing more waits in the pair.
                    if s.finPending && Self.pendingBytes(s.fd) == 0 { sendFin(s) }
                    break
                }
            }
            let n = Glibc.recv(s.fd, scratch.baseAddress, room, Int32(MSG_DONTWAIT))
            if n == 0 {
                applicationClosed(s, reset: false)
                return
            }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR {
                    if s.finPending { sendFin(s) }
                } else {
                    applicationClosed(s, reset: errno == ECONNRESET)
                    return
                }
                break
            }
            counters.appBytesIn &+= UInt64(n)
            if s.writeShut || s.stackID == nil {
                counters.appBytesDiscarded &+= UInt64(n)
                continue
            }
            let data = UnsafeRawBufferPointer(scratch.slice(0..<n))
            let taken = (try? stack.tcpSend(s.stackID!, data, now: reactor.now)) ?? 0
            if taken < n { s.overflow.append(contentsOf: data[taken...]) }
            // Less than asked: the pair is empty now (the FIN waits for the next event).
            if n < room && !s.finPending { break }
        }
        chargeBuffers(s)
    }

    private static func pendingBytes(_ fd: Int32) -> Int32 {
        var count: Int32 = 0
        return ioctl(fd, UInt(FIONREAD), &count) == 0 ? count : 1
    }

    private func sendFin(_ s: Socket) {
        s.finPending = false
        s.writeShut = true
        if let id = s.stackID { try? stack.tcpShutdown(id, .write, now: reactor.now) }
    }

    /// Writes received data into the application's end as far as it has room; then EOF or
    /// the end of the connection.
    private func pushToApp(_ s: Socket) {
        guard let id = s.stackID else { return }
        while s.fd >= 0 && !s.readShut {
            let (a, b) = stack.tcpReadableRegions(id, limit: Int(Self.pushBuffer))
            if a.isEmpty { break }
            let n = lvlip_writev2(s.fd, a.baseAddress, a.count, b.baseAddress, b.count)
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { break }
                // EPIPE: the application is gone; its hang-up event follows.
                return
            }
            counters.appBytesOut &+= UInt64(n)
            stack.tcpConsume(id, n, now: reactor.now)
        }
        let drained = stack.tcpReadable(id) == 0 || s.readShut
        if drained && !s.eofSent && (stack.tcpPeerFinished(id) || s.readShut) {
            s.eofSent = true
            _ = lvlip_shutdown_write(s.fd)
        }
        // A connection that ended in error closes the daemon's end; one that finished both
        // ways keeps its pair (names, TCP_INFO) until the application closes.
        if drained, let error = stack.tcpTerminalError(id) { terminate(s, error: error.errno) }
    }

    /// Hands accepted connections to the application through the listener's pair.
    private func handOff(_ listener: Socket) {
        guard let listenID = listener.stackID else { return }
        while listener.fd >= 0 {
            if listener.handoff.isEmpty {
                guard let child = try? stack.tcpAccept(listenID) else { break }
                guard listener.user.sockets < limits.socketsPerUser else {
                    counters.limitRefusals &+= 1
                    stack.tcpAbort(child, now: reactor.now)
                    continue
                }
                guard let (s, appFD) = makeSocket(family: listener.family, user: listener.user,
                                                  pid: listener.ownerPid, stackID: child) else { break }
                counters.socketsAccepted &+= 1
                // The kernel clones the listener: options set on it hold for its connections.
                s.options = listener.options.inherited
                s.reuseAddress = listener.reuseAddress
                s.phase = .connected
                s.connectReported = true
                if let names = stack.tcpNames(child) {
                    s.localName = (names.local.value, names.localPort)
                    s.peerName = (names.remote.value, names.remotePort)
                }
                listener.handoff.append((s, appFD))
                refreshInterest(s)
                update(s)
            }
            let (s, appFD) = listener.handoff[0]
            var record = lvlip_accept_record()
            record.magic = LVLIP_ACCEPT_MAGIC
            record.size = UInt32(MemoryLayout<lvlip_accept_record>.size)
            record.ref = lvlip_ref(index: UInt32(s.slot), generation: s.generation, token: s.token)
            record.local = lvlip_addr(addr: s.localName.address, port: s.localName.port, kind: 0)
            record.peer = lvlip_addr(addr: s.peerName.address, port: s.peerName.port, kind: 0)
            let sent = withUnsafeBytes(of: &record) { lvlip_send_with_fd(listener.fd, $0.baseAddress, $0.count, appFD) }
            if sent < 0 {
                if errno == EAGAIN { counters.handoffWaits &+= 1 }
                break
            }
            Syscall.close(appFD)
            listener.handoff.removeFirst()
        }
    }

    /// What the daemon's end should wait for, from the socket's phase and buffers.
    private func refreshInterest(_ s: Socket) {
        guard s.fd >= 0 else { return }
        var events: IOEvents = []
        if s.udp {
            if !s.waitingForOutput { events.insert(.readable) }
            if let id = s.stackID, stack.udpQueued(id) > 0 || stack.udpHasError(id) { events.insert(.writable) }
            return setInterest(s, events)
        }
        switch s.phase {
        case .unconnected:
            // Not .readable: the shim's connect writes its filler before the CONNECT request
            // arrives, and it must stay unread until the handshake completes.
            events = .readHangup
        case .connecting:
            events = .readHangup
        case .listening:
            events = .readHangup
            if !s.handoff.isEmpty { events.insert(.writable) }
        case .connected:
            if let id = s.stackID {
                let space = stack.tcpSendSpace(id) > 0
                let overLimit = s.user.buffered >= limits.bufferedBytesPerUser
                if space && overLimit && !s.paused && !s.writeShut {
                    s.paused = true
                    s.user.paused.append(s)
                }
                let room = s.writeShut || (space && !overLimit)
                // Without room, the end's hang-up (level-triggered) would fire on and on.
                if room { events.formUnion([.readable, .readHangup]) }
                if stack.tcpReadable(id) > 0 && !s.readShut { events.insert(.writable) }
            }
        case .closed:
            events = []
        }
        setInterest(s, events)
    }

    /// Readiness changes from the stack (`NetworkStack.takeReadinessChanges`).
    public func readinessChanged(_ ids: [SocketID]) {
        for id in ids {
            guard let s = byStack[id] else { continue }
            update(s)
        }
    }

    private func update(_ s: Socket) {
        guard let id = s.stackID else { return }
        if s.udp {
            pushDatagrams(s)
            refreshInterest(s)
            return
        }
        if s.appClosed {
            // Orphan draining what the application wrote before it closed.
            if !s.overflow.isEmpty {
                let taken = s.overflow.withUnsafeBytes { (try? stack.tcpSend(id, $0, now: reactor.now)) ?? 0 }
                s.overflow.removeFirst(taken)
                if stack.tcpTerminalError(id) != nil { s.overflow.removeAll() }
            }
            if s.overflow.isEmpty {
                byStack[id] = nil
                stack.tcpClose(id, now: reactor.now)
                s.stackID = nil
                release(s, appClosed: true)
            }
            return
        }
        switch s.phase {
        case .connecting:
            if let error = stack.tcpTerminalError(id) {
                terminate(s, error: error.errno)
                return
            }
            switch stack.tcpState(id) {
            case .established?, .closeWait?, .finWait1?, .finWait2?, .closing?, .lastAck?, .timeWait?:
                established(s)
            case .closed?:
                terminate(s, error: stack.tcpTakeError(id)?.errno ?? ECONNREFUSED)
                return
            default:
                break
            }
        case .connected:
            pushToApp(s)
            if s.fd >= 0 && s.interest.contains(.readable) == false { readFromApp(s) }
        case .listening:
            handOff(s)
        default:
            break
        }
        if s.fd >= 0 {
            chargeBuffers(s)
            refreshInterest(s)
        }
    }

    private func established(_ s: Socket) {
        discardFiller(s, s.filler)
        s.filler = 0
        s.phase = .connected
        if let id = s.stackID, let names = stack.tcpNames(id) {
            s.localName = (names.local.value, names.localPort)
        }
        pushToApp(s)
    }

    // MARK: - Options

    /// SETOPT: the option table's answer (SocketOptions.swift). `uid` decides privileged
    /// options (SO_MARK, SO_SNDBUFFORCE...).
    private func setOption(_ s: Socket, level: Int32, name: Int32, value: UnsafeRawBufferPointer, uid: UInt32) -> Int32 {
        OptionTable.set(OptionContext(service: self, socket: s, uid: uid), level: level, name: name, value: value)
    }

    private func getOption(_ s: Socket, level: Int32, name: Int32, room: Int, uid: UInt32) -> (Int32, [UInt8]) {
        OptionTable.get(OptionContext(service: self, socket: s, uid: uid), level: level, name: name, room: room)
    }

    func tcpInfo(_ s: Socket, room: Int) -> [UInt8] {
        var src = lvlip_tcp_info_source()
        if let id = s.stackID, let i = stack.tcpInfo(id) {
            src.state = Self.linuxState(i.state)
            src.retransmits = UInt8(clamping: i.backoff)
            src.backoff = UInt8(clamping: i.backoff)
            src.options = (i.timestamps ? 1 : 0) | (i.sack ? 2 : 0) | (i.windowScale != nil ? 4 : 0)
            src.snd_wscale = i.windowScale?.send ?? 0
            src.rcv_wscale = i.windowScale?.receive ?? 0
            src.rto_us = i.rto
            src.snd_mss = UInt32(clamping: i.sendMSS)
            src.rcv_mss = UInt32(clamping: i.receiveMSS)
            let mss = max(i.sendMSS, 1)
            src.unacked = UInt32(clamping: (i.unacked + mss - 1) / mss)
            src.pmtu = UInt32(stack.configuration.mtu)
            src.rtt_us = i.rtt
            src.rttvar_us = i.rttVariance
            src.snd_ssthresh = i.slowStartThreshold >= Int(Int32.max) ? 0x7fff_ffff : UInt32(clamping: i.slowStartThreshold / mss)
            src.snd_cwnd = UInt32(clamping: i.congestionWindow / mss)
            src.total_retrans = UInt32(truncatingIfNeeded: i.retransmits)
            src.segs_out = UInt32(truncatingIfNeeded: i.segmentsOut)
            src.segs_in = UInt32(truncatingIfNeeded: i.segmentsIn)
            src.notsent_bytes = UInt32(clamping: max(0, i.sendQueue - i.unacked))
            src.snd_wnd = UInt32(clamping: i.sendWindow)
            src.rcv_wnd = UInt32(clamping: i.receiveWindow)
            src.bytes_acked = i.bytesAcked
            src.bytes_received = i.bytesReceived
        } else {
            src.state = Self.linuxState(s.phase == .closed ? s.finalState : .closed)
        }
        var out = [UInt8](repeating: 0, count: room)
        let n = out.withUnsafeMutableBytes { lvlip_fill_tcp_info($0.baseAddress, room, &src) }
        return Array(out.prefix(n))
    }

    /// Linux's TCP state numbers (include/net/tcp_states.h).
    static func linuxState(_ state: TCPState) -> UInt8 {
        switch state {
        case .established: 1
        case .synSent: 2
        case .synReceived: 3
        case .finWait1: 4
        case .finWait2: 5
        case .timeWait: 6
        case .closed: 7
        case .closeWait: 8
        case .lastAck: 9
        case .listen: 10
        case .closing: 11
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

// MARK: - Datagram sockets

extension SocketService {
    private func udpBind(_ s: Socket, _ addr: lvlip_addr, sender: (pid: Int32, uid: UInt32)) -> Int32 {
        guard let id = s.stackID, s.phantomPort == nil, s.localName.port == 0 else { return -EINVAL }
        let address: IPv4Address?
        switch bindTarget(s, addr, sender: stack.datagramKind(id) == .udp ? sender : nil) {
        case .phantom: return 0
        case .error(let code): return code
        case .ipv4(let a): address = a
        }
        do {
            try stack.udpBind(id, address: address, port: addr.port)
        } catch {
            return -error.errno
        }
        let names = stack.udpNames(id)
        s.localName = (names?.local?.value ?? 0, names?.localPort ?? addr.port)
        return 0
    }

    private func udpConnect(_ s: Socket, _ addr: lvlip_addr) -> Int32 {
        // Datagrams written before this connect() go where they were meant to: to the peer
        // connected then (the pair holds them until lvlipd reads them).
        readDatagrams(s, draining: true)
        guard let id = s.stackID else { return -EBADF }
        do {
            switch Int(addr.kind) {
            case Int(LVLIP_ADDR_UNSPEC.rawValue):
                try stack.udpConnect(id, to: nil)
                s.phase = .unconnected
                return 0
            case Int(LVLIP_ADDR_V4.rawValue):
                guard s.phantomPort == nil, !(s.family == AF_INET6 && s.v6only) else { return -ENETUNREACH }
                try stack.udpConnect(id, to: (IPv4Address(addr.addr), addr.port))
            default:
                return -ENETUNREACH
            }
        } catch {
            return -error.errno
        }
        s.phase = .connected
        let names = stack.udpNames(id)
        s.localName = (names?.local?.value ?? 0, names?.localPort ?? 0)
        s.peerName = (addr.addr, addr.port)
        return 0
    }

    private func udpShutdown(_ s: Socket, how: Int32) -> Int32 {
        guard how >= 0 && how <= 2 else { return -EINVAL }
        guard s.phase == .connected else { return -ENOTCONN }
        if (how == 0 || how == 2) && !s.eofSent && s.fd >= 0 {
            // Reads end: the application's end sees end of stream.
            s.eofSent = true
            s.readShut = true
            _ = lvlip_shutdown_write(s.fd)
        }
        if (how == 1 || how == 2) && !s.writeShut {
            // What the program wrote before shutdown() is still sent (the shim refuses later
            // writes): the pair's queued bytes are counted now and read as usual.
            s.writeShut = true
            var queued: Int32 = 0
            if s.fd >= 0, ioctl(s.fd, UInt(FIONREAD), &queued) == 0 { s.writtenBeforeShutdown = Int(queued) }
        }
        return 0
    }

    private func datagramEvent(_ s: Socket, _ events: IOEvents) {
        if events.contains(.hangup) {
            // The application closed its last descriptor: send what it wrote, then forget it.
            s.waitingForOutput = false
            if let i = waitingForOutput.firstIndex(where: { $0 === s }) { waitingForOutput.remove(at: i) }
            readDatagrams(s, draining: true)
            if s.fd >= 0 {
                counters.socketsClosedByApp &+= 1
                release(s, appClosed: true)
            }
            return
        }
        if events.contains(.writable) { pushDatagrams(s) }
        if events.contains(.readable) || events.contains(.hangup) || events.contains(.error) { readDatagrams(s) }
        if s.fd >= 0 { refreshInterest(s) }
    }

    /// Sends what the application wrote, one datagram per message, while the link has room.
    private func readDatagrams(_ s: Socket, draining: Bool = false) {
        let header = MemoryLayout<lvlip_dgram_header>.size
        // At most 64 datagrams per wake-up (the pair is level-triggered: the rest follow at
        // once): the peer then meets bursts its receive buffer can hold, as from a kernel
        // sender, not everything the application queued while lvlipd was busy.
        var budget = draining ? Int.max : 64
        while s.fd >= 0, let id = s.stackID, budget > 0 {
            budget -= 1
            // A 64 KB datagram is 45 fragments: wait for that much room in the link's queue
            // (or, to a local address, for one in the loopback's).
            if !draining && (stack.outbox.capacity - stack.outbox.count < 48 || stack.loopbackIsFull) {
                if !s.waitingForOutput {
                    s.waitingForOutput = true
                    waitingForOutput.append(s)
                }
                return
            }
            let n = Glibc.recv(s.fd, scratch.baseAddress, scratch.count, Int32(MSG_DONTWAIT))
            if n == 0 {
                // End of stream: the application closed its last descriptor.
                counters.socketsClosedByApp &+= 1
                release(s, appClosed: true)
                return
            }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { return }
                counters.socketsClosedByApp &+= 1
                release(s, appClosed: true)
                return
            }
            counters.appBytesIn &+= UInt64(n)
            if s.writeShut {
                guard s.writtenBeforeShutdown >= n else {
                    s.writtenBeforeShutdown = 0
                    counters.appBytesDiscarded &+= UInt64(n)
                    continue
                }
                s.writtenBeforeShutdown -= n
            }
            guard n >= 1 else { continue }
            var payload = UnsafeRawBufferPointer(scratch.slice(min(header, n)..<n))
            var destination: (address: IPv4Address, port: UInt16)?
            let h = n >= header ? UnsafeRawBufferPointer(scratch).loadUnaligned(as: lvlip_dgram_header.self) : nil
            if let h, h.magic == LVLIP_DGRAM_MAGIC {
                let addressed = h.port != 0 || h.flags & UInt16(LVLIP_DGRAM_ADDRESSED) != 0
                destination = addressed ? (IPv4Address(h.addr), h.port) : nil
            } else {
                // Written past the shim (a raw sendmmsg syscall, a program without the shim
                // after exec): the whole message is the datagram, for the connected peer.
                payload = UnsafeRawBufferPointer(scratch.slice(0..<n))
                destination = nil
            }
            do {
                try stack.udpSend(id, to: destination, payload, now: reactor.now)
            } catch {
                // The shim checked what it could; what only the stack knows (no route, a
                // connected socket's ICMP error) is reported on the next call.
                counters.appBytesDiscarded &+= UInt64(n)
                if s.phase == .connected,
                   error == .connectionRefused || error == .hostUnreachable || error == .networkUnreachable {
                    pushError(s, error.errno)
                }
            }
        }
    }

    /// Received datagrams into the application's end; what does not fit waits in the stack's
    /// queue (bounded by SO_RCVBUF).
    private func pushDatagrams(_ s: Socket) {
        guard let id = s.stackID else { return }
        if stack.udpHasError(id) {
            while s.fd >= 0, let report = stack.udpTakeErrorReport(id) { pushError(s, report.error.errno, report) }
            if let error = stack.udpTakeError(id) { pushError(s, error.errno) }
        }
        while s.fd >= 0, let d = stack.udpReceive(id, peek: true) {
            var h = lvlip_dgram_header(addr: d.source.value, port: d.sourcePort, flags: 0, error: 0, magic: LVLIP_DGRAM_MAGIC,
                                       local: d.destination.value,
                                       ifindex: stack.isLocal(d.source) ? Self.loopbackIndex : interfaceIndex,
                                       ttl: d.ttl, tos: d.tos)
            let n = d.payload.withUnsafeBytes { payload in
                withUnsafeBytes(of: &h) { lvlip_writev2(s.fd, $0.baseAddress, $0.count, payload.baseAddress, payload.count) }
            }
            if n < 0 { return }  // EAGAIN: the application's end is full; wait for room
            counters.appBytesOut &+= UInt64(d.payload.count)
            _ = stack.udpReceive(id)
        }
    }

    /// An error record (the socket's pending error); with a report (IP_RECVERR), an error
    /// queue record with its details and quoted payload follows (docs/ipc.md).
    private func pushError(_ s: Socket, _ code: Int32, _ report: UDPErrorReport? = nil) {
        guard s.fd >= 0 else { return }
        var h = lvlip_dgram_header(addr: 0, port: 0, flags: UInt16(LVLIP_DGRAM_ERROR), error: code, magic: LVLIP_DGRAM_MAGIC,
                                   local: 0, ifindex: 0, ttl: 0, tos: 0)
        _ = withUnsafeBytes(of: &h) { lvlip_writev2(s.fd, $0.baseAddress, $0.count, nil, 0) }
        guard let report else { return }
        var e = lvlip_dgram_error(type: report.type, code: report.code, port: report.destinationPort, info: report.info,
                                  offender: report.offender.value, destination: report.destination.value)
        let details = withUnsafeBytes(of: &e) { Array($0) } + report.payload
        h.flags |= UInt16(LVLIP_DGRAM_ERRQUEUE)
        _ = withUnsafeBytes(of: &h) { header in
            details.withUnsafeBytes { lvlip_writev2(s.fd, header.baseAddress, header.count, $0.baseAddress, $0.count) }
        }
    }

    /// The link's queue was drained: datagram sockets that waited read on.
    public func outputDrained() {
        guard !waitingForOutput.isEmpty else { return }
        let waiting = waitingForOutput
        waitingForOutput.removeAll()
        for s in waiting {
            s.waitingForOutput = false
            readDatagrams(s)
            refreshInterest(s)
        }
    }

    /// One line per UDP socket for SOCKETS_REPLY.
    public func udpSocketLines() -> String {
        var text = ""
        for case let s? in slots where s.udp {
            guard let id = s.stackID, let names = stack.udpNames(id) else { continue }
            let local = "\(names.local.map { "\($0)" } ?? "0.0.0.0"):\(names.localPort)"
            let peer = names.remote.map { "\($0.address):\($0.port)" } ?? "*:*"
            let proto = switch stack.datagramKind(id) {
            case .ping: "icmp"
            case .rawICMP: "raw"
            default: "udp"
            }
            text += "proto=\(proto) state=\(names.remote == nil ? "UNCONN" : "ESTABLISHED") local=\(local) peer=\(peer)"
            text += " recvq=\(stack.udpQueued(id)) sendq=0 owner=\(Self.command(of: s.ownerPid)),pid=\(s.ownerPid),uid=\(s.user.uid)\n"
        }
        return text
    }
}
