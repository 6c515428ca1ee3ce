import CLinux
import Glibc
import Stack

private let TCP = K.IPPROTO_TCP

/// IPPROTO_TCP (tcp(7), net/ipv4/tcp.c do_tcp_setsockopt / do_tcp_getsockopt). Options the
/// stack implements go to it (TCP_NODELAY, TCP_CORK, keepalive, TCP_USER_TIMEOUT,
/// TCP_MAXSEG, TCP_CONGESTION, TCP_INFO); the others are checked as the kernel checks them and
/// kept for reading back (docs/shim.md, "What is not served").
extension OptionTable {
    static let tcpRows: [OptionRow] = [
        OptionRow(level: TCP, name: K.TCP_NODELAY, label: "TCP_NODELAY", get: { c, _ in bool(c.tcpOptions.noDelay) },
                  set: { c, v in c.tcp { $0.noDelay = v.int != 0 } }),
        OptionRow(level: TCP, name: K.TCP_MAXSEG, label: "TCP_MAXSEG",
                  get: { c, _ in
                      // The MSS in use once connected; before, the user's bound or 536
                      // (TCP_MSS_DEFAULT, RFC 9293 3.7.1).
                      if let id = c.socket.stackID, let info = c.stack.tcpInfo(id), info.state != .closed, info.state != .listen {
                          return .int(Int32(clamping: info.sendMSS))
                      }
                      return .int(Int32(clamping: c.tcpOptions.maxSegment ?? 536))
                  },
                  set: { c, v in
                      // 0 or TCP_MIN_MSS (88) to MAX_TCP_WINDOW (32767).
                      guard v.int == 0 || (88...32767).contains(v.int) else { return -EINVAL }
                      return c.tcp { $0.maxSegment = v.int == 0 ? nil : Int(v.int) }
                  }),
        OptionRow(level: TCP, name: K.TCP_CORK, label: "TCP_CORK", get: { c, _ in bool(c.tcpOptions.cork) },
                  set: { c, v in c.tcp { $0.cork = v.int != 0 } }),
        // Keepalive bounds: MAX_TCP_KEEPIDLE and MAX_TCP_KEEPINTVL 32767 s, MAX_TCP_KEEPCNT 127.
        OptionRow(level: TCP, name: K.TCP_KEEPIDLE, label: "TCP_KEEPIDLE",
                  get: { c, _ in .int(Int32(clamping: c.tcpOptions.keepIdle)) },
                  set: { c, v in (1...32767).contains(v.int) ? c.tcp { $0.keepIdle = UInt64(v.int) } : -EINVAL }),
        OptionRow(level: TCP, name: K.TCP_KEEPINTVL, label: "TCP_KEEPINTVL",
                  get: { c, _ in .int(Int32(clamping: c.tcpOptions.keepInterval)) },
                  set: { c, v in (1...32767).contains(v.int) ? c.tcp { $0.keepInterval = UInt64(v.int) } : -EINVAL }),
        OptionRow(level: TCP, name: K.TCP_KEEPCNT, label: "TCP_KEEPCNT",
                  get: { c, _ in .int(Int32(clamping: c.tcpOptions.keepCount)) },
                  set: { c, v in (1...127).contains(v.int) ? c.tcp { $0.keepCount = Int(v.int) } : -EINVAL }),
        .ranged(TCP, K.TCP_SYNCNT, "TCP_SYNCNT", initial: 6, 1...127),
        OptionRow(level: TCP, name: K.TCP_LINGER2, label: "TCP_LINGER2",
                  get: { c, _ in
                      // Negative: no FIN-WAIT-2 wait; 0: tcp_fin_timeout.
                      let v = c.stored(TCP, K.TCP_LINGER2, 0)
                      return .int(v < 0 ? -1 : Int32(v == 0 ? Int64(HostSettings.finTimeout) : v))
                  },
                  set: { c, v in
                      c.store(TCP, K.TCP_LINGER2, v.int < 0 ? -1 : Int64(min(v.int, 120)))  // TCP_FIN_TIMEOUT_MAX
                      return 0
                  }),
        OptionRow(level: TCP, name: K.TCP_DEFER_ACCEPT, label: "TCP_DEFER_ACCEPT",
                  get: { c, _ in .int(retransmitsToSeconds(Int32(c.stored(TCP, K.TCP_DEFER_ACCEPT, 0)))) },
                  set: { c, v in
                      // Kept as SYN-ACK retransmissions, read back as the seconds they take.
                      c.store(TCP, K.TCP_DEFER_ACCEPT, Int64(secondsToRetransmits(v.int)))
                      return 0
                  }),
        OptionRow(level: TCP, name: K.TCP_WINDOW_CLAMP, label: "TCP_WINDOW_CLAMP",
                  get: { c, _ in
                      if let v = c.socket.options.ints[OptionStore.key(TCP, K.TCP_WINDOW_CLAMP)] { return .int(Int32(v)) }
                      return .int(c.connected ? receiveBuffer(c) / 2 : 0)
                  },
                  set: { c, v in
                      // 0 unclamps, only before connect; else at least SOCK_MIN_RCVBUF / 2.
                      guard v.int != 0 || c.unconnected else { return -EINVAL }
                      c.store(TCP, K.TCP_WINDOW_CLAMP, v.int == 0 ? 0 : Int64(max(v.int, 1152)))
                      return 0
                  }),
        .readOnly(TCP, K.TCP_INFO, "TCP_INFO") { c, room in .bytes(c.service.tcpInfo(c.socket, room: room)) },
        // Quick ACK mode: on until the application turns it off (reads !pingpong).
        .flag(TCP, K.TCP_QUICKACK, "TCP_QUICKACK", initial: true),
        congestion,
        md5(14, "TCP_MD5SIG"),
        .ranged(TCP, 16, "TCP_THIN_LINEAR_TIMEOUTS", initial: 0, 0...1),
        // Obsolete since 4.20: accepted, always read 0.
        OptionRow(level: TCP, name: 17, label: "TCP_THIN_DUPACK", get: { _, _ in .int(0) },
                  set: { _, v in (0...1).contains(v.int) ? 0 : -EINVAL }),
        OptionRow(level: TCP, name: K.TCP_USER_TIMEOUT, label: "TCP_USER_TIMEOUT",
                  get: { c, _ in .int(Int32(clamping: c.tcpOptions.userTimeout)) },
                  set: { c, v in v.int >= 0 ? c.tcp { $0.userTimeout = UInt64(v.int) } : -EINVAL }),
        // Repair mode (checkpoint and restore of connections) is not served: refused as for
        // a caller without CAP_NET_ADMIN; the socket is never in repair mode.
        OptionRow(level: TCP, name: 19, label: "TCP_REPAIR", get: { _, _ in .int(0) }, set: { _, _ in -EPERM }),
        .refused(TCP, 20, "TCP_REPAIR_QUEUE", get: EINVAL, set: EPERM),
        OptionRow(level: TCP, name: 21, label: "TCP_QUEUE_SEQ", get: { _, _ in .error(EINVAL) },
                  set: { c, _ in c.unconnected ? -EINVAL : -EPERM }),
        .refused(TCP, 22, "TCP_REPAIR_OPTIONS", get: nil, set: EINVAL),
        .refused(TCP, 29, "TCP_REPAIR_WINDOW", get: EINVAL, set: EPERM),
        // Fast Open: kept; the stack's SYNs carry no data. Only before connect (or on a listener).
        .int(TCP, K.TCP_FASTOPEN, "TCP_FASTOPEN", initial: 0,
             check: { c, v in v >= 0 && (c.unconnected || c.listening) ? 0 : EINVAL }),
        OptionRow(level: TCP, name: 24, label: "TCP_TIMESTAMP",
                  get: { _, _ in .int(Int32(truncatingIfNeeded: lvlip_monotonic_ns() / 1_000_000)) },  // tcp_clock_ms
                  set: { _, _ in -EPERM }),  // only in repair mode
        .int(TCP, K.TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT", initial: 0),
        // struct tcp_cc_info: CUBIC and Reno have none to give (no get_info).
        .readOnly(TCP, 26, "TCP_CC_INFO") { _, _ in .bytes([]) },
        .ranged(TCP, 27, "TCP_SAVE_SYN", initial: 0, 0...2),
        .readOnly(TCP, 28, "TCP_SAVED_SYN") { _, _ in .bytes([]) },
        .int(TCP, K.TCP_FASTOPEN_CONNECT, "TCP_FASTOPEN_CONNECT", initial: 0,
             check: { c, v in (0...1).contains(v) && c.unconnected ? 0 : EINVAL }),
        // Upper layer protocols (tls, mptcp, espintcp): lvlip has none.
        OptionRow(level: TCP, name: 31, label: "TCP_ULP", raw: true, get: { _, _ in .bytes([]) },
                  set: { _, v in v.count == 0 ? -EINVAL : -ENOENT }),
        md5(32, "TCP_MD5SIG_EXT"),
        OptionRow(level: TCP, name: 33, label: "TCP_FASTOPEN_KEY", raw: true,
                  get: { c, _ in .bytes(c.bytes(TCP, 33) ?? []) },
                  set: { c, v in
                      // One or two 16-byte keys (tcp(7)).
                      guard v.count == 16 || v.count == 32 else { return -EINVAL }
                      c.store(TCP, 33, bytes: v.bytes)
                      return 0
                  }),
        .int(TCP, 34, "TCP_FASTOPEN_NO_COOKIE", initial: 0,
             check: { c, v in (0...1).contains(v) && (c.unconnected || c.listening) ? 0 : EINVAL }),
        // Zero-copy receive maps nothing here: the struct comes back zeroed (no bytes mapped).
        .readOnly(TCP, 35, "TCP_ZEROCOPY_RECEIVE") { c, room in
            guard room >= 12 else { return .error(EINVAL) }  // up to the length field
            return c.listening ? .error(ENOTCONN) : .bytes([UInt8](repeating: 0, count: min(room, 64)))
        },
        .ranged(TCP, 36, "TCP_INQ", initial: 0, 0...1),
        .int(TCP, 37, "TCP_TX_DELAY", initial: 0, check: { _, v in v >= 0 ? 0 : EINVAL }),
        // TCP-AO is not built in (as CONFIG_TCP_AO off); its repair state is refused on listeners.
        OptionRow(level: TCP, name: 42, label: "TCP_AO_REPAIR",
                  get: { c, _ in .error(c.listening ? EPERM : ENOPROTOOPT) },
                  set: { c, _ in c.listening ? -EPERM : -ENOPROTOOPT }),
        .readOnly(TCP, 43, "TCP_IS_MPTCP") { _, _ in .int(0) },
        .ranged(TCP, 44, "TCP_RTO_MAX_MS", initial: 120_000, 1000...120_000),
        jiffies(45, "TCP_RTO_MIN_US"),
        jiffies(46, "TCP_DELACK_MAX_US"),
    ]

    /// TCP_CONGESTION: a name of at most 15 characters (TCP_CA_NAME_MAX - 1, longer is cut),
    /// one of the stack's algorithms, else ENOENT; read as 16 bytes, NUL-padded.
    static let congestion = OptionRow(
        level: TCP, name: K.TCP_CONGESTION, label: "TCP_CONGESTION", raw: true,
        get: { c, _ in
            let name = Array(c.tcpOptions.congestionControl.utf8.prefix(15))
            return .bytes(name + [UInt8](repeating: 0, count: 16 - name.count))
        },
        set: { c, v in
            guard v.count > 0 else { return -EINVAL }
            let name = String(decoding: v.bytes.prefix(15).prefix { $0 != 0 }, as: UTF8.self)
            // Linux's names: "newreno", which the stack also takes, is not one.
            guard ["cubic", "reno"].contains(name) else { return -ENOENT }
            return c.tcp { $0.congestionControl = name }
        })

    /// TCP-MD5 signatures (RFC 2385) are not served: a struct tcp_md5sig whose length and
    /// address family are right is answered as by a kernel without CONFIG_TCP_MD5SIG.
    static func md5(_ name: Int32, _ label: String) -> OptionRow {
        .writeOnly(TCP, name, label, raw: true) { c, v in
            guard v.count >= 216 else { return -EINVAL }
            let family = Int32(v.bytes[0]) | Int32(v.bytes[1]) << 8
            return family == AF_INET || (family == AF_INET6 && c.socket.family == AF_INET6) ? -ENOPROTOOPT : -EINVAL
        }
    }

    /// Microsecond options the kernel keeps in jiffies: rounded up to a jiffy, at least
    /// TCP_TIMEOUT_MIN (2 jiffies), at most TCP_RTO_MIN / TCP_DELACK_MAX (200 ms). The jiffy
    /// is 4 ms, CONFIG_HZ=250 of the kernel this was measured on.
    static func jiffies(_ name: Int32, _ label: String) -> OptionRow {
        let jiffy: Int64 = 4000
        // In 64 bits: a value near Int32.max must not overflow the rounding.
        func jiffies(_ v: Int32) -> Int64 { (Int64(v) + jiffy - 1) / jiffy }
        return .int(TCP, name, label, initial: 200_000,
                    check: { _, v in v > 0 && jiffies(v) >= 2 && jiffies(v) <= 50 ? 0 : EINVAL },
                    map: { _, v in Int32(jiffies(v) * jiffy) })
    }

    /// TCP_DEFER_ACCEPT's seconds as SYN-ACK retransmissions from a 1 s timeout doubling up to
    /// 120 s (secs_to_retrans), and back (retrans_to_secs).
    static func secondsToRetransmits(_ seconds: Int32) -> Int32 {
        guard seconds > 0 else { return 0 }
        var timeout: Int32 = 1, period: Int32 = 1, count: Int32 = 1
        while seconds > period && count < 255 {
            count += 1
            timeout = min(timeout << 1, 120)
            period += timeout
        }
        return count
    }

    static func retransmitsToSeconds(_ count: Int32) -> Int32 {
        guard count > 0 else { return 0 }
        var timeout: Int32 = 1, period: Int32 = 1
        for _ in 1..<count {
            timeout = min(timeout << 1, 120)
            period += timeout
        }
        return period
    }
}

private func bool(_ v: Bool) -> OptionRow.Value { .int(v ? 1 : 0) }
