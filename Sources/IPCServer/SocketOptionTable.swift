import Glibc
import Stack

private let SOL = K.SOL_SOCKET

// MARK: - Row shapes

extension OptionRow {
    /// A boolean kept for reading back: any nonzero value reads 1 (socket(7), ip(7): "a
    /// boolean integer flag"). `minLength`: IP options that refuse an empty value; `capability`:
    /// the errno for setting it without privilege.
    static func flag(_ level: Int32, _ name: Int32, _ label: String, initial: Bool = false, minLength: Int = 0,
                     capability: Int32 = 0) -> OptionRow {
        OptionRow(level: level, name: name, label: label,
                  get: { c, _ in .int(Int32(c.stored(level, name, initial ? 1 : 0))) },
                  set: { c, v in
                      guard v.count >= minLength else { return -EINVAL }
                      if capability != 0 && v.int != 0 && !c.privileged { return -capability }
                      c.store(level, name, v.int != 0 ? 1 : 0)
                      return 0
                  })
    }

    /// An int kept for reading back. `check` gives 0 or the errno for a value; `map` what is
    /// kept of an accepted value.
    static func int(_ level: Int32, _ name: Int32, _ label: String, initial: @escaping (OptionContext) -> Int32,
                    minLength: Int = 0, check: @escaping (OptionContext, Int32) -> Int32 = { _, _ in 0 },
                    map: @escaping (OptionContext, Int32) -> Int32 = { $1 }) -> OptionRow {
        OptionRow(level: level, name: name, label: label,
                  get: { c, _ in .int(Int32(truncatingIfNeeded: c.stored(level, name, Int64(initial(c))))) },
                  set: { c, v in
                      guard v.count >= minLength else { return -EINVAL }
                      let code = check(c, v.int)
                      if code != 0 { return -code }
                      c.store(level, name, Int64(map(c, v.int)))
                      return 0
                  })
    }

    static func int(_ level: Int32, _ name: Int32, _ label: String, initial: Int32, minLength: Int = 0,
                    check: @escaping (OptionContext, Int32) -> Int32 = { _, _ in 0 },
                    map: @escaping (OptionContext, Int32) -> Int32 = { $1 }) -> OptionRow {
        int(level, name, label, initial: { _ in initial }, minLength: minLength, check: check, map: map)
    }

    /// An int in `range`, else EINVAL.
    static func ranged(_ level: Int32, _ name: Int32, _ label: String, initial: Int32, _ range: ClosedRange<Int32>,
                       minLength: Int = 0) -> OptionRow {
        int(level, name, label, initial: initial, minLength: minLength, check: { _, v in range.contains(v) ? 0 : EINVAL })
    }

    /// A value read but never written (socket(7): SO_TYPE, SO_PROTOCOL...): setting it is
    /// ENOPROTOOPT.
    static func readOnly(_ level: Int32, _ name: Int32, _ label: String,
                         _ get: @escaping (OptionContext, Int) -> Value) -> OptionRow {
        OptionRow(level: level, name: name, label: label, get: get, set: nil)
    }

    /// Written but not readable: reading is ENOPROTOOPT; `set` answers a write.
    static func writeOnly(_ level: Int32, _ name: Int32, _ label: String, raw: Bool = false,
                          _ set: @escaping (OptionContext, Input) -> Int32) -> OptionRow {
        OptionRow(level: level, name: name, label: label, raw: raw, get: nil, set: set)
    }

    /// Answers the same errors whatever the value (options of other socket families, or
    /// facilities lvlip does not have; docs/shim.md lists them).
    static func refused(_ level: Int32, _ name: Int32, _ label: String, get: Int32?, set: Int32, raw: Bool = false) -> OptionRow {
        OptionRow(level: level, name: name, label: label, raw: raw,
                  get: get.map { code in { _, _ in .error(code) } }, set: { _, _ in -set })
    }
}

private func bool(_ v: Bool) -> OptionRow.Value { .int(v ? 1 : 0) }

func le<T: FixedWidthInteger>(_ values: T...) -> [UInt8] {
    var out: [UInt8] = []
    for v in values { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    return out
}

// MARK: - The rows

extension OptionTable {
    static let rows: [OptionRow] = socketRows + buffers + ipRows + multicastRows + tcpRows + ipv6Rows + rawRows

    /// SOL_SOCKET (socket(7), net/core/sock.c).
    static let socketRows: [OptionRow] = [
        .flag(SOL, K.SO_DEBUG, "SO_DEBUG", capability: EACCES),
        OptionRow(level: SOL, name: K.SO_REUSEADDR, label: "SO_REUSEADDR",
                  get: { c, _ in
                      if c.udp, let id = c.socket.stackID { return bool(c.stack.udpOptions(id)?.reuseAddress ?? false) }
                      return bool(c.socket.reuseAddress)
                  },
                  set: { c, v in
                      if c.udp, let id = c.socket.stackID { c.stack.udpSetOptions(id, reuseAddress: v.int != 0) }
                      c.socket.reuseAddress = v.int != 0
                      return 0
                  }),
        .readOnly(SOL, K.SO_TYPE, "SO_TYPE") { c, _ in .int(!c.udp ? 1 : c.datagramKind == .rawICMP ? 3 : 2) },
        .readOnly(SOL, K.SO_ERROR, "SO_ERROR") { c, _ in
            guard c.udp else { return .int(c.service.takeError(c.socket)) }
            return .int(c.socket.stackID.flatMap { c.stack.udpTakeError($0)?.errno } ?? 0)
        },
        .flag(SOL, K.SO_DONTROUTE, "SO_DONTROUTE"),
        OptionRow(level: SOL, name: K.SO_BROADCAST, label: "SO_BROADCAST",
                  get: { c, _ in
                      if c.udp, let id = c.socket.stackID { return bool(c.stack.udpOptions(id)?.broadcast ?? false) }
                      return .int(Int32(c.stored(SOL, K.SO_BROADCAST, 0)))
                  },
                  set: { c, v in
                      if c.udp, let id = c.socket.stackID { c.stack.udpSetOptions(id, broadcast: v.int != 0) }
                      c.store(SOL, K.SO_BROADCAST, v.int != 0 ? 1 : 0)
                      return 0
                  }),
        OptionRow(level: SOL, name: K.SO_KEEPALIVE, label: "SO_KEEPALIVE",
                  get: { c, _ in c.udp ? .int(Int32(c.stored(SOL, K.SO_KEEPALIVE, 0))) : bool(c.tcpOptions.keepAlive) },
                  set: { c, v in
                      guard !c.udp else { c.store(SOL, K.SO_KEEPALIVE, v.int != 0 ? 1 : 0); return 0 }
                      return c.tcp { $0.keepAlive = v.int != 0 }
                  }),
        .flag(SOL, K.SO_OOBINLINE, "SO_OOBINLINE"),
        .flag(SOL, K.SO_NO_CHECK, "SO_NO_CHECK"),
        // Priorities above 6 need CAP_NET_ADMIN (socket(7)).
        .int(SOL, K.SO_PRIORITY, "SO_PRIORITY", initial: 0,
             check: { c, v in (0...6).contains(v) || c.privileged ? 0 : EPERM }),
        OptionRow(level: SOL, name: K.SO_LINGER, label: "SO_LINGER",
                  get: { c, _ in .bytes(c.bytes(SOL, K.SO_LINGER) ?? [UInt8](repeating: 0, count: 8)) },
                  set: { c, v in
                      // struct linger; l_linger is kept only while l_onoff is set (sock.c).
                      guard v.count >= 8 else { return -EINVAL }
                      let on = v.int != 0
                      let seconds = on ? Array(v.bytes[4..<8]) : Array((c.bytes(SOL, K.SO_LINGER) ?? [0, 0, 0, 0, 0, 0, 0, 0])[4..<8])
                      c.store(SOL, K.SO_LINGER, bytes: le(Int32(on ? 1 : 0)) + seconds)
                      guard !c.udp else { return 0 }
                      return c.tcp { $0.lingerZero = on && seconds == [0, 0, 0, 0] }
                  }),
        OptionRow(level: SOL, name: K.SO_BSDCOMPAT, label: "SO_BSDCOMPAT", get: { _, _ in .int(0) }, set: { _, _ in 0 }),
        OptionRow(level: SOL, name: K.SO_REUSEPORT, label: "SO_REUSEPORT",
                  get: { c, _ in
                      if c.udp, let id = c.socket.stackID { return bool(c.stack.udpOptions(id)?.reusePort ?? false) }
                      return .int(Int32(c.stored(SOL, K.SO_REUSEPORT, 0)))
                  },
                  set: { c, v in
                      if c.udp, let id = c.socket.stackID { c.stack.udpSetOptions(id, reusePort: v.int != 0) }
                      c.store(SOL, K.SO_REUSEPORT, v.int != 0 ? 1 : 0)
                      return 0
                  }),
        // Credentials passing is AF_UNIX's (since 6.16 other families answer EOPNOTSUPP).
        .refused(SOL, K.SO_PASSCRED, "SO_PASSCRED", get: EOPNOTSUPP, set: EOPNOTSUPP),
        // A TCP or UDP socket has no peer credentials: pid 0, uid and gid -1 (cred_to_ucred).
        .readOnly(SOL, K.SO_PEERCRED, "SO_PEERCRED") { _, _ in .bytes(le(Int32(0), Int32(-1), Int32(-1))) },
        OptionRow(level: SOL, name: K.SO_RCVLOWAT, label: "SO_RCVLOWAT",
                  get: { c, _ in .int(Int32(c.stored(SOL, K.SO_RCVLOWAT, 1))) },
                  set: { c, v in
                      // Negative is INT_MAX; TCP caps it at half of tcp_rmem[2]; 0 is 1 (sock.c,
                      // tcp_set_rcvlowat). Kept, not acted on: readiness is the pair's.
                      var value = v.int < 0 ? Int32.max : v.int
                      if !c.udp { value = min(value, Int32(clamping: HostSettings.tcpReadMemoryMax >> 1)) }
                      c.store(SOL, K.SO_RCVLOWAT, Int64(value == 0 ? 1 : value))
                      return 0
                  }),
        OptionRow(level: SOL, name: K.SO_SNDLOWAT, label: "SO_SNDLOWAT", get: { _, _ in .int(1) }, set: nil),
        bindToDevice,
        bindToIndex,
        // Socket filters (classic and eBPF) are not run by lvlip: none is ever attached.
        OptionRow(level: SOL, name: 26, label: "SO_ATTACH_FILTER", get: { _, _ in .bytes([]) },
                  set: { _, v in v.count < 16 ? -EINVAL : -EOPNOTSUPP }),
        .writeOnly(SOL, 27, "SO_DETACH_FILTER") { _, _ in -ENOENT },
        .writeOnly(SOL, 50, "SO_ATTACH_BPF") { _, v in v.int < 0 ? -EBADF : -EINVAL },
        .writeOnly(SOL, 51, "SO_ATTACH_REUSEPORT_CBPF") { _, v in v.count < 16 ? -EINVAL : -EOPNOTSUPP },
        .writeOnly(SOL, 52, "SO_ATTACH_REUSEPORT_EBPF") { _, v in v.int < 0 ? -EBADF : -EINVAL },
        .writeOnly(SOL, 68, "SO_DETACH_REUSEPORT_BPF") { c, _ in
            // reuseport_detach_prog: ENOENT with SO_REUSEPORT and no program, else EINVAL.
            c.stored(SOL, K.SO_REUSEPORT, 0) != 0 ? -ENOENT : -EINVAL
        },
        // Once locked, the filter stays locked (socket(7)).
        .int(SOL, 44, "SO_LOCK_FILTER", initial: 0, check: { c, v in v == 0 && c.stored(SOL, 44, 0) != 0 ? EPERM : 0 },
             map: { _, v in v != 0 ? 1 : 0 }),
        .readOnly(SOL, 28, "SO_PEERNAME") { c, room in
            let peer = c.socket.peerName
            guard c.connected, peer.port != 0 else { return .error(ENOTCONN) }
            // The socket's sockaddr_in or sockaddr_in6 (IPv4 peers v4-mapped); a longer buffer
            // than the address is EINVAL (sock.c).
            let port = withUnsafeBytes(of: peer.port.bigEndian) { Array($0) }
            let address: [UInt8]
            if c.socket.family == AF_INET6 {
                let name = c.service.wireName(peer.address, peer.port)
                address = le(UInt16(AF_INET6)) + port + [0, 0, 0, 0] + withUnsafeBytes(of: name.addr) { Array($0) }
                    + le(name.scope_id)
            } else {
                address = le(UInt16(AF_INET)) + port + withUnsafeBytes(of: (peer.address.v4?.value ?? 0).bigEndian) { Array($0) }
                    + [UInt8](repeating: 0, count: 8)
            }
            return room > address.count ? .error(EINVAL) : .bytes(address)
        },
        .flag(SOL, 29, "SO_TIMESTAMP_OLD"),
        .readOnly(SOL, K.SO_ACCEPTCONN, "SO_ACCEPTCONN") { c, _ in bool(c.listening) },
        .flag(SOL, 35, "SO_TIMESTAMPNS_OLD"),
        .refused(SOL, 34, "SO_PASSSEC", get: EOPNOTSUPP, set: EOPNOTSUPP),
        .int(SOL, K.SO_MARK, "SO_MARK", initial: 0, check: { c, _ in c.privileged ? 0 : EPERM }),
        timestamping(37, "SO_TIMESTAMPING_OLD"),
        .readOnly(SOL, K.SO_PROTOCOL, "SO_PROTOCOL") { c, _ in .int(!c.udp ? 6 : c.datagramKind == .udp ? 17 : 1) },
        .readOnly(SOL, K.SO_DOMAIN, "SO_DOMAIN") { c, _ in .int(c.socket.family) },
        .flag(SOL, 40, "SO_RXQ_OVFL"),
        .flag(SOL, 41, "SO_WIFI_STATUS"),
        // Kept, not acted on: MSG_PEEK always reads from the start.
        .int(SOL, 42, "SO_PEEK_OFF", initial: -1),
        .flag(SOL, 43, "SO_NOFCS"),
        .flag(SOL, 45, "SO_SELECT_ERR_QUEUE"),
        .int(SOL, K.SO_BUSY_POLL, "SO_BUSY_POLL", initial: 0, check: { c, v in
            v < 0 ? EINVAL : (v > Int32(c.stored(SOL, K.SO_BUSY_POLL, 0)) && !c.privileged ? EPERM : 0)
        }),
        maxPacingRate,
        .readOnly(SOL, 48, "SO_BPF_EXTENSIONS") { _, _ in .int(64) },  // SKF_AD_MAX
        // The CPU the last segment came in on: 0, lvlipd's one thread, once connected.
        .int(SOL, K.SO_INCOMING_CPU, "SO_INCOMING_CPU", initial: { c in c.connected ? 0 : -1 }),
        .writeOnly(SOL, 53, "SO_CNX_ADVICE") { _, _ in 0 },
        .readOnly(SOL, 55, "SO_MEMINFO") { c, _ in
            // SK_MEMINFO_*: nothing allocated; the buffer sizes as SO_RCVBUF and SO_SNDBUF say.
            .bytes(le(UInt32(0), UInt32(bitPattern: receiveBuffer(c)), UInt32(0), UInt32(bitPattern: sendBuffer(c)),
                      UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0)))
        },
        .readOnly(SOL, 56, "SO_INCOMING_NAPI_ID") { _, _ in .int(0) },
        .readOnly(SOL, K.SO_COOKIE, "SO_COOKIE") { c, room in
            guard room >= 8 else { return .error(EINVAL) }
            if c.socket.options.cookie == 0 { c.socket.options.cookie = SocketCookies.next() }
            return .bytes(le(c.socket.options.cookie))
        },
        .readOnly(SOL, 59, "SO_PEERGROUPS") { _, _ in .error(ENODATA) },
        .int(SOL, 60, "SO_ZEROCOPY", initial: 0, check: { _, v in (0...1).contains(v) ? 0 : EINVAL }),
        OptionRow(level: SOL, name: 61, label: "SO_TXTIME", get: { _, _ in .bytes(le(UInt32(0), UInt32(0))) },
                  set: { _, v in v.count != 8 ? -EINVAL : -EOPNOTSUPP }),
        .flag(SOL, 63, "SO_TIMESTAMP_NEW"),
        .flag(SOL, 64, "SO_TIMESTAMPNS_NEW"),
        timestamping(65, "SO_TIMESTAMPING_NEW"),
        .flag(SOL, 69, "SO_PREFER_BUSY_POLL", capability: EPERM),
        .writeOnly(SOL, 70, "SO_BUSY_POLL_BUDGET") { c, v in
            // At most U16_MAX; raising it needs CAP_NET_ADMIN. Kept, not acted on.
            guard (0...65535).contains(v.int) else { return -EINVAL }
            if v.int > Int32(c.stored(SOL, 70, 0)) && !c.privileged { return -EPERM }
            c.store(SOL, 70, Int64(v.int))
            return 0
        },
        .readOnly(SOL, K.SO_NETNS_COOKIE, "SO_NETNS_COOKIE") { _, room in
            room == 8 ? .bytes(le(HostSettings.namespaceCookie)) : .error(EINVAL)
        },
        .int(SOL, 72, "SO_BUF_LOCK", initial: 0, check: { _, v in v & ~3 == 0 ? 0 : EINVAL }),
        // Memory reservation needs a memory cgroup's socket accounting (sk_memcg): none here.
        OptionRow(level: SOL, name: 73, label: "SO_RESERVE_MEM", get: { _, _ in .int(0) },
                  set: { _, v in v.int < 0 ? -EINVAL : -EOPNOTSUPP }),
        OptionRow(level: SOL, name: 74, label: "SO_TXREHASH",
                  get: { c, _ in c.udp ? .error(EOPNOTSUPP) : .int(Int32(c.stored(SOL, 74, Int64(HostSettings.txRehash)))) },
                  set: { c, v in
                      guard !c.udp else { return -EOPNOTSUPP }
                      guard (-1...1).contains(v.int) else { return -EINVAL }
                      c.store(SOL, 74, Int64(v.int == -1 ? Int32(HostSettings.txRehash) : v.int))
                      return 0
                  }),
        .flag(SOL, 75, "SO_RCVMARK"),
        .refused(SOL, 76, "SO_PASSPIDFD", get: EOPNOTSUPP, set: EOPNOTSUPP),
        .readOnly(SOL, 77, "SO_PEERPIDFD") { _, _ in .error(ENODATA) },
        .writeOnly(SOL, 80, "SO_DEVMEM_DONTNEED") { c, _ in c.udp ? -EBADF : -EINVAL },
        .flag(SOL, 82, "SO_RCVPRIORITY"),
        .refused(SOL, 83, "SO_PASSRIGHTS", get: EOPNOTSUPP, set: EOPNOTSUPP),
    ]

    /// SO_TIMESTAMPING (old and new): struct so_timestamping, flags and bind_phc. Kept; the
    /// stack reports no timestamps. SOF_TIMESTAMPING_OPT_ID on TCP needs a connection.
    static func timestamping(_ name: Int32, _ label: String) -> OptionRow {
        OptionRow(level: SOL, name: name, label: label,
                  get: { c, _ in .bytes(le(UInt32(truncatingIfNeeded: c.stored(SOL, 37, 0)), UInt32(0))) },
                  set: { c, v in
                      let mask: UInt32 = (1 << 19) - 1  // SOF_TIMESTAMPING_MASK
                      guard v.uint & ~mask == 0 else { return -EINVAL }
                      if v.uint & (1 << 7) != 0 && !c.udp && !c.connected { return -EINVAL }
                      c.store(SOL, 37, Int64(v.uint))
                      return 0
                  })
    }

    /// SO_MAX_PACING_RATE: a u64 (an int of ~0 means ~0); a read shorter than 8 bytes gets a
    /// u32, saturated (sock.c). Kept, not acted on.
    static let maxPacingRate = OptionRow(
        level: SOL, name: 47, label: "SO_MAX_PACING_RATE",
        get: { c, room in
            let rate = UInt64(bitPattern: c.stored(SOL, 47, -1))
            return room >= 8 ? .bytes(le(rate)) : .bytes(le(UInt32(clamping: rate)))
        },
        set: { c, v in
            var rate = UInt64(v.uint)
            if v.count >= 8 { rate = v.bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } }
            else if v.uint == UInt32.max { rate = UInt64.max }
            c.store(SOL, 47, Int64(bitPattern: rate))
            return 0
        })

    /// SO_BINDTODEVICE: an interface name of the namespace; empty unbinds; a name longer than
    /// IFNAMSIZ-1 is cut. Reading gives the name and its NUL, or nothing when unbound.
    /// Kept (the stack has one interface), shared with SO_BINDTOIFINDEX as in the kernel.
    static let bindToDevice = OptionRow(
        level: SOL, name: K.SO_BINDTODEVICE, label: "SO_BINDTODEVICE", raw: true,
        get: { c, room in
            let index = UInt32(c.stored(SOL, 62, 0))
            guard index != 0 else { return .bytes([]) }
            var name = [CChar](repeating: 0, count: Int(IF_NAMESIZE))
            guard if_indextoname(index, &name) != nil else { return .error(ENODEV) }
            // A bound socket's name needs a buffer of IFNAMSIZ (sock_getbindtodevice).
            guard room >= Int(IF_NAMESIZE) else { return .error(EINVAL) }
            return .bytes(name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) } + [0])
        },
        set: { c, v in
            let name = v.bytes.prefix(Int(IF_NAMESIZE) - 1).prefix { $0 != 0 }
            guard !name.isEmpty else { c.store(SOL, 62, 0); return 0 }
            let index = if_nametoindex(String(decoding: name, as: UTF8.self))
            guard index != 0 else { return -ENODEV }
            c.store(SOL, 62, Int64(index))
            return 0
        })

    static let bindToIndex = OptionRow.int(SOL, 62, "SO_BINDTOIFINDEX", initial: 0,
                                           check: { _, v in v < 0 ? EINVAL : 0 })

    /// Buffer sizes: the kernel doubles what is asked (room for its bookkeeping, socket(7)),
    /// caps it at wmem_max/rmem_max unless forced, and keeps at least SOCK_MIN_SNDBUF (4608)
    /// or SOCK_MIN_RCVBUF (2304). Setting one locks it (SO_BUF_LOCK bit 1 or 2).
    static let buffers: [OptionRow] = [
        OptionRow(level: SOL, name: K.SO_SNDBUF, label: "SO_SNDBUF", get: { c, _ in .int(sendBuffer(c)) },
                  set: { c, v in setBuffer(c, v, send: true, force: false) }),
        OptionRow(level: SOL, name: K.SO_RCVBUF, label: "SO_RCVBUF", get: { c, _ in .int(receiveBuffer(c)) },
                  set: { c, v in setBuffer(c, v, send: false, force: false) }),
        .writeOnly(SOL, K.SO_SNDBUFFORCE, "SO_SNDBUFFORCE") { c, v in setBuffer(c, v, send: true, force: true) },
        .writeOnly(SOL, K.SO_RCVBUFFORCE, "SO_RCVBUFFORCE") { c, v in setBuffer(c, v, send: false, force: true) },
    ]

    static func sendBuffer(_ c: OptionContext) -> Int32 {
        if c.udp { return Int32(c.stored(SOL, K.SO_SNDBUF, 212_992)) }
        return Int32(clamping: c.tcpOptions.sendBuffer ?? c.stack.configuration.tcp.sendBuffer)
    }

    static func receiveBuffer(_ c: OptionContext) -> Int32 {
        if c.udp { return Int32(clamping: c.socket.stackID.flatMap { c.stack.udpOptions($0)?.receiveBuffer } ?? 212_992) }
        return Int32(clamping: c.tcpOptions.receiveBuffer ?? c.stack.configuration.tcp.receiveBuffer)
    }

    static func setBuffer(_ c: OptionContext, _ v: OptionRow.Input, send: Bool, force: Bool) -> Int32 {
        if force && !c.privileged { return -EPERM }
        let asked = force ? Int(max(v.int, 0)) : min(Int(v.uint), send ? HostSettings.writeMemoryMax : HostSettings.readMemoryMax)
        let size = max(min(asked, Int(Int32.max / 2)) * 2, send ? 4608 : 2304)
        c.store(SOL, 72, c.stored(SOL, 72, 0) | (send ? 1 : 2))
        if c.udp {
            if send { c.store(SOL, K.SO_SNDBUF, Int64(size)) }
            else if let id = c.socket.stackID { c.stack.udpSetOptions(id, receiveBuffer: size) }
            return 0
        }
        return c.tcp { if send { $0.sendBuffer = size } else { $0.receiveBuffer = size } }
    }
}
