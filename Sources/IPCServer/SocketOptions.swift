import Glibc
import Stack

/// Socket options as data (docs/shim.md, "Socket options"): one `OptionRow` per option that
/// Linux defines for TCP and UDP sockets at SOL_SOCKET, IPPROTO_IP, IPPROTO_TCP and
/// IPPROTO_IPV6, each saying how the option is read and written. `OptionTable.rows`
/// (SocketOptionTable.swift) holds them; `SocketService`'s SETOPT and GETOPT walk it. What each
/// row answers was measured on Linux 6.18 sockets (Tests/integration/test_socket_options.py
/// runs every row on a kernel socket and on an lvlip socket and compares the answers).
///
/// The rules shared by all options of a level live here, in `OptionTable.get` and
/// `OptionTable.set`, as the kernel applies them before it looks at the option's name:
/// - SOL_SOCKET (net/core/sock.c, sk_setsockopt): a value shorter than an int is EINVAL for
///   every name but SO_BINDTODEVICE, known or not; getsockopt copies at most the given length.
/// - IPPROTO_IP (net/ipv4/ip_sockglue.c): an unknown name is ENOPROTOOPT whatever the length;
///   an int option takes an int from 4 bytes, an unsigned char from 1 to 3, 0 from none; a
///   read of 1 to 3 bytes of a value in 0...255 gives one byte (ip(7): "an int or a char").
/// - IPPROTO_TCP (net/ipv4/tcp.c, do_tcp_setsockopt): a value shorter than an int is EINVAL
///   for every name but the string and struct ones (TCP_CONGESTION, TCP_ULP, ...); reads copy
///   at most the given length. On a UDP socket every TCP option is EOPNOTSUPP to read and
///   ENOPROTOOPT to write (udp_getsockopt/udp_setsockopt hand other levels to IP); so is
///   IPPROTO_IPV6 on an AF_INET socket.
struct OptionRow {
    enum Value {
        /// An int, written to the caller's buffer by the level's rule.
        case int(Int32)
        /// Bytes, truncated to the caller's length.
        case bytes([UInt8])
        case error(Int32)
    }

    /// A value given to setsockopt.
    struct Input {
        let bytes: [UInt8]
        /// The value read as an int by the level's rule (IPPROTO_IP: 1 to 3 bytes are an
        /// unsigned char, none is 0).
        let int: Int32
        var count: Int { bytes.count }
        var uint: UInt32 { UInt32(bitPattern: int) }
    }

    let level: Int32
    let name: Int32
    /// The option's name, for messages about the table.
    let label: String
    /// The value is a string or a struct whose length the row checks itself (no level rule).
    var raw = false
    /// Read: the value, from the socket and the caller's buffer length. Nil: ENOPROTOOPT.
    var get: ((OptionContext, Int) -> Value)?
    /// Write: 0 or a negative errno. Nil: ENOPROTOOPT (read-only options, socket(7)).
    var set: ((OptionContext, Input) -> Int32)?
}

/// What a row sees of the socket it serves.
struct OptionContext {
    unowned let service: SocketService
    let socket: SocketService.Socket
    let uid: UInt32

    var stack: NetworkStack { service.stack }
    /// A datagram socket: UDP, ping or raw ICMP.
    var udp: Bool { socket.isDatagram }
    /// UDP, a ping socket or a raw ICMP socket (nil for TCP).
    var datagramKind: DatagramKind? { udp ? socket.stackID.flatMap { stack.datagramKind($0) } : nil }
    var listening: Bool { socket.isListening }
    var unconnected: Bool { socket.isUnconnected }
    var connected: Bool { socket.isConnected }
    /// The kernel's TCP_ESTABLISHED: a connected UDP socket, or a TCP connection in
    /// ESTABLISHED (not one the peer has begun to close).
    var established: Bool {
        connected && (udp || socket.stackID.flatMap { stack.tcpState($0) } == .established)
    }
    /// CAP_NET_ADMIN and CAP_NET_RAW, as the kernel asks capable(): the caller is root.
    var privileged: Bool { uid == 0 }

    /// A value kept only to be read back, or `initial` while never set.
    func stored(_ level: Int32, _ name: Int32, _ initial: Int64) -> Int64 {
        socket.options.ints[OptionStore.key(level, name)] ?? initial
    }

    func store(_ level: Int32, _ name: Int32, _ value: Int64) {
        socket.options.ints[OptionStore.key(level, name)] = value
    }

    func bytes(_ level: Int32, _ name: Int32) -> [UInt8]? { socket.options.bytes[OptionStore.key(level, name)] }

    func store(_ level: Int32, _ name: Int32, bytes: [UInt8]?) {
        socket.options.bytes[OptionStore.key(level, name)] = bytes
    }

    var tcpOptions: TCPSocketOptions { socket.stackID.flatMap { stack.tcpOptions($0) } ?? TCPSocketOptions() }

    /// Changes the stack's options of a TCP socket.
    func tcp(_ change: (inout TCPSocketOptions) -> Void) -> Int32 {
        guard let id = socket.stackID else { return 0 }
        do {
            try stack.tcpSetOptions(id, now: service.reactor.now, change)
            return 0
        } catch {
            return -error.errno
        }
    }
}

/// Option values a socket keeps for reading back; an accepted socket starts with a copy of its
/// listener's, as the kernel clones the listener (inet_csk_clone_lock).
struct OptionStore {
    var ints: [Int64: Int64] = [:]
    var bytes: [Int64: [UInt8]] = [:]
    /// SO_COOKIE: given on first request, as the kernel's sock_gen_cookie.
    var cookie: UInt64 = 0

    static func key(_ level: Int32, _ name: Int32) -> Int64 { Int64(level) << 32 | Int64(UInt32(bitPattern: name)) }

    /// What an accepted connection inherits (the cookie is its own), measured: not its
    /// listener's SO_PRIORITY (the SYN's, 0), TCP_QUICKACK (a new connection starts in quick
    /// ACK mode) or TCP_FASTOPEN (the listener's queue). Its IP_MULTICAST_TTL is the TTL of the
    /// peer's SYN (tcp_v4_syn_recv_sock), which the stack does not keep: the default TTL,
    /// which Linux peers send with, stands for it.
    var inherited: OptionStore {
        var copy = OptionStore(ints: ints, bytes: bytes, cookie: 0)
        for (level, name) in [(K.SOL_SOCKET, K.SO_PRIORITY), (K.IPPROTO_TCP, K.TCP_QUICKACK), (K.IPPROTO_TCP, K.TCP_FASTOPEN)] {
            copy.ints[Self.key(level, name)] = nil
        }
        copy.ints[Self.key(K.IPPROTO_IP, 33)] = Int64(HostSettings.defaultTTL)
        return copy
    }
}

enum OptionTable {
    static let byKey: [Int64: OptionRow] = {
        var index: [Int64: OptionRow] = [:]
        for row in rows {
            precondition(index[OptionStore.key(row.level, row.name)] == nil, "option \(row.label) listed twice")
            index[OptionStore.key(row.level, row.name)] = row
        }
        return index
    }()

    static func get(_ context: OptionContext, level: Int32, name: Int32, room: Int) -> (Int32, [UInt8]) {
        if level == K.IPPROTO_TCP && context.udp { return (-EOPNOTSUPP, []) }
        // IPPROTO_IPV6 on an AF_INET socket: ip_getsockopt refuses other levels so.
        if level == K.IPPROTO_IPV6 && context.socket.family != AF_INET6 { return (-EOPNOTSUPP, []) }
        guard let row = byKey[OptionStore.key(level, name)], let get = row.get else { return (-ENOPROTOOPT, []) }
        switch get(context, room) {
        case .error(let code):
            return (-code, [])
        case .bytes(let bytes):
            return (0, Array(bytes.prefix(room)))
        case .int(let value):
            if level == K.IPPROTO_IP && room > 0 && room < 4 && value >= 0 && value <= 255 { return (0, [UInt8(value)]) }
            return (0, withUnsafeBytes(of: value) { Array($0.prefix(room)) })
        }
    }

    static func set(_ context: OptionContext, level: Int32, name: Int32, value: UnsafeRawBufferPointer) -> Int32 {
        let row = byKey[OptionStore.key(level, name)]
        let bytes = Array(value)
        var int: Int32 = 0
        switch level {
        case K.SOL_SOCKET:
            if bytes.count < 4 && name != K.SO_BINDTODEVICE { return -EINVAL }
        case K.IPPROTO_TCP:
            if context.udp { return -ENOPROTOOPT }
            if bytes.count < 4 && !(row?.raw ?? false) { return -EINVAL }
        case K.IPPROTO_IP:
            if bytes.count >= 1 && bytes.count < 4 { int = Int32(bytes[0]) }
        default:
            break
        }
        if bytes.count >= 4 { int = value.loadUnaligned(as: Int32.self) }
        guard let row, let set = row.set else { return -ENOPROTOOPT }
        return set(context, OptionRow.Input(bytes: bytes, int: int))
    }
}

/// Host settings the kernel's answers depend on (sysctls of the daemon's network namespace,
/// the one the shim's callers live in), read once.
enum HostSettings {
    static let writeMemoryMax = read("/proc/sys/net/core/wmem_max", 212_992)
    static let readMemoryMax = read("/proc/sys/net/core/rmem_max", 212_992)
    /// tcp_rmem's third field: TCP's SO_RCVLOWAT is capped at half of it (tcp_set_rcvlowat).
    static let tcpReadMemoryMax = read("/proc/sys/net/ipv4/tcp_rmem", 6_291_456, field: 2)
    static let defaultTTL = read("/proc/sys/net/ipv4/ip_default_ttl", 64)
    static let finTimeout = read("/proc/sys/net/ipv4/tcp_fin_timeout", 60)
    static let txRehash = read("/proc/sys/net/core/txrehash", 1)
    /// SO_NETNS_COOKIE of the namespace: the kernel's own answer for a socket of lvlipd's.
    static let namespaceCookie: UInt64 = {
        var cookie: UInt64 = 0
        var length = socklen_t(8)
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd >= 0 {
            _ = getsockopt(fd, K.SOL_SOCKET, K.SO_NETNS_COOKIE, &cookie, &length)
            close(fd)
        }
        return cookie
    }()

    private static func read(_ path: String, _ fallback: Int, field: Int = 0) -> Int {
        guard let fields = text(path)?.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }),
              field < fields.count, let value = Int(fields[field]) else { return fallback }
        return value
    }

    /// A small file of /proc (at most 4 KB), or nil if it cannot be read.
    static func text(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        return String(decoding: bytes[0..<n], as: UTF8.self)
    }
}

/// SO_COOKIE values: a counter, nonzero and never reused while lvlipd runs (the kernel's is a
/// per-namespace counter too, sock_gen_cookie).
enum SocketCookies {
    private static var last: UInt64 = 0
    static func next() -> UInt64 {
        last &+= 1
        return last
    }
}
