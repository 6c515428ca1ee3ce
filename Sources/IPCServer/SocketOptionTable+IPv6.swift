import Glibc
import Stack

private let IPV6 = K.IPPROTO_IPV6

/// IPPROTO_IPV6 (ipv6(7), net/ipv6/ipv6_sockglue.c) on AF_INET6 sockets; an AF_INET socket
/// has none (ENOPROTOOPT to write; reads are refused by the level rule). Measured on Linux
/// 6.18 against the same calls (Tests/integration/test_ipv6_sockets.py). The level's rule:
/// an int option needs 4 bytes (EINVAL), a read copies at most the caller's length.
/// IPV6_V6ONLY is the stack's; the rest are checked as Linux
/// checks them and kept to be read back: the stack sends with its own hop limit (64) and
/// traffic class (0) (docs/shim.md, "What is not served").
extension OptionTable {
    static let ipv6Rows: [OptionRow] = [
        addressForm,
        flag(2, "IPV6_2292PKTINFO"),
        flag(3, "IPV6_2292HOPOPTS"),
        flag(4, "IPV6_2292DSTOPTS"),
        flag(5, "IPV6_2292RTHDR"),
        // Sticky options as RFC 2292 control messages: a TCP socket reads back none (lvlip
        // keeps no received packet's), a UDP one has nothing to read.
        OptionRow(level: IPV6, name: 6, label: "IPV6_2292PKTOPTIONS", raw: true,
                  get: { c, _ in c.udp ? .error(ENOPROTOOPT) : .bytes([]) }, set: { _, _ in 0 }),
        flag(8, "IPV6_2292HOPLIMIT"),
        flag(11, "IPV6_FLOWINFO"),
        hops(16, "IPV6_UNICAST_HOPS", initial: 64),
        OptionRow(level: IPV6, name: 17, label: "IPV6_MULTICAST_IF",
                  get: { c, _ in .int(Int32(c.stored(IPV6, 17, 0))) },
                  set: { c, v in
                      guard c.udp else { return -ENOPROTOOPT }  // stream sockets: no multicast
                      guard v.count >= 4 else { return -EINVAL }
                      // An interface index of the namespace, or 0 (ipv6(7)).
                      var name = [CChar](repeating: 0, count: Int(IF_NAMESIZE))
                      guard v.int == 0 || v.int > 0 && if_indextoname(v.uint, &name) != nil else { return -ENODEV }
                      c.store(IPV6, 17, Int64(v.int))
                      return 0
                  }),
        hops(18, "IPV6_MULTICAST_HOPS", initial: 1, datagramOnly: true),
        boolean(19, "IPV6_MULTICAST_LOOP", initial: true),
        membership6(20, "IPV6_ADD_MEMBERSHIP", size: 20, join: true),
        membership6(21, "IPV6_DROP_MEMBERSHIP", size: 20, join: false),
        // Raw sockets only: reads 0; a write of an int is refused.
        OptionRow(level: IPV6, name: 22, label: "IPV6_ROUTER_ALERT", get: { _, _ in .int(0) },
                  set: { _, v in v.count < 4 ? -EINVAL : -ENOPROTOOPT }),
        .int(IPV6, 23, "IPV6_MTU_DISCOVER", initial: 1, minLength: 4, check: { _, v in (0...5).contains(v) ? 0 : EINVAL }),
        // The path MTU of a connected socket (the stack's link MTU); writing sets the largest
        // packet to send, 0 or at least 1280 (RFC 8200 5), not read back.
        OptionRow(level: IPV6, name: 24, label: "IPV6_MTU",
                  get: { c, _ in c.connected ? .int(Int32(c.stack.configuration.mtu)) : .error(ENOTCONN) },
                  set: { c, v in
                      guard v.count >= 4, v.int == 0 || v.int >= 1280 else { return -EINVAL }
                      c.store(IPV6, 24, Int64(v.int))
                      return 0
                  }),
        flag(K.IPV6_RECVERR, "IPV6_RECVERR").acting(receiveErrors),
        OptionRow(level: IPV6, name: K.IPV6_V6ONLY, label: "IPV6_V6ONLY",
                  get: { c, _ in .int(c.socket.v6only ? 1 : 0) },
                  set: { c, v in
                      let s = c.socket
                      // Fixed once the socket has a port (do_ipv6_setsockopt: EINVAL).
                      guard v.count >= 4, s.isUnconnected, s.localName.port == 0 else { return -EINVAL }
                      if c.udp, let id = s.stackID {
                          do throws(SocketError) { try c.stack.udpSetV6Only(id, v.int != 0) } catch { return -error.errno }
                      } else if !c.udp {
                          let code = c.tcp { $0.v6Only = v.int != 0 }
                          if code != 0 { return code }
                      }
                      s.v6only = v.int != 0
                      return 0
                  }),
        membership6(27, "IPV6_JOIN_ANYCAST", size: 20, join: true),
        membership6(28, "IPV6_LEAVE_ANYCAST", size: 20, join: false),
        flag(29, "IPV6_MULTICAST_ALL", initial: true),
        flag(30, "IPV6_ROUTER_ALERT_ISOLATE"),
        .int(IPV6, 31, "IPV6_RECVERR_RFC4884", initial: 0, minLength: 4, check: { _, v in (0...1).contains(v) ? 0 : EINVAL }),
        // Flow label leases (RFC 6437): lvlip has none to read; a request shorter than
        // struct in6_flowlabel_req (32 bytes) is EINVAL.
        OptionRow(level: IPV6, name: 32, label: "IPV6_FLOWLABEL_MGR", raw: true,
                  get: { _, room in .error(room < 32 ? EINVAL : ENOENT) }, set: { _, _ in -EINVAL }),
        flag(33, "IPV6_FLOWINFO_SEND"),
        .writeOnly(IPV6, 34, "IPV6_IPSEC_POLICY", raw: true) { _, v in v.count == 0 ? 0 : -EOPNOTSUPP },
        .writeOnly(IPV6, 35, "IPV6_XFRM_POLICY", raw: true) { _, v in v.count == 0 ? 0 : -EINVAL },
        membership6(42, "MCAST_JOIN_GROUP", size: 136, join: true),
        membership6(43, "MCAST_BLOCK_SOURCE", size: 264, join: false),
        membership6(44, "MCAST_UNBLOCK_SOURCE", size: 264, join: false),
        membership6(45, "MCAST_LEAVE_GROUP", size: 136, join: false),
        membership6(46, "MCAST_JOIN_SOURCE_GROUP", size: 264, join: true),
        membership6(47, "MCAST_LEAVE_SOURCE_GROUP", size: 264, join: false),
        .refused(IPV6, 48, "MCAST_MSFILTER", get: EINVAL, set: EINVAL, raw: true),
        flag(49, "IPV6_RECVPKTINFO"),
        // The sticky source and interface (RFC 3542 6.1): an in6_pktinfo.
        .writeOnly(IPV6, 50, "IPV6_PKTINFO", raw: true) { c, v in
            guard v.count >= 20 else { return -EINVAL }
            c.store(IPV6, 50, bytes: Array(v.bytes.prefix(20)))
            return 0
        },
        flag(51, "IPV6_RECVHOPLIMIT"),
        flag(53, "IPV6_RECVHOPOPTS"),
        stickyHeader(54, "IPV6_HOPOPTS"),
        stickyHeader(55, "IPV6_RTHDRDSTOPTS"),
        flag(56, "IPV6_RECVRTHDR"),
        stickyHeader(57, "IPV6_RTHDR"),
        flag(58, "IPV6_RECVDSTOPTS"),
        stickyHeader(59, "IPV6_DSTOPTS"),
        flag(60, "IPV6_RECVPATHMTU"),
        // struct ip6_mtuinfo of a connected socket: the path MTU after a sockaddr_in6 that
        // Linux leaves zero; a shorter buffer is EINVAL.
        .readOnly(IPV6, 61, "IPV6_PATHMTU") { c, room in
            guard room >= 32 else { return .error(EINVAL) }
            guard c.connected else { return .error(ENOTCONN) }
            return .bytes([UInt8](repeating: 0, count: 28) + le(UInt32(c.stack.configuration.mtu)))
        },
        // These three take a value of any length (a short one is 0).
        .flag(IPV6, 62, "IPV6_DONTFRAG"),
        // ip6tables' own options (netfilter's nf_sockopt): lvlip has no ip6tables, and the
        // kernel's answer to these sizes is EINVAL.
        .refused(IPV6, 64, "IP6T_SO_SET_REPLACE", get: EINVAL, set: EINVAL),
        .refused(IPV6, 65, "IP6T_SO_SET_ADD_COUNTERS", get: EINVAL, set: EINVAL),
        flag(66, "IPV6_RECVTCLASS"),
        OptionRow(level: IPV6, name: K.IPV6_TCLASS, label: "IPV6_TCLASS",
                  get: { c, _ in .int(Int32(c.stored(IPV6, K.IPV6_TCLASS, 0))) },
                  set: { c, v in
                      guard v.count >= 4, (-1...255).contains(v.int) else { return -EINVAL }
                      // -1 is the default, 0 (RFC 3542 6.5); TCP keeps the ECN bits its own,
                      // as for IP_TOS.
                      c.store(IPV6, K.IPV6_TCLASS, Int64(max(v.int, 0) & (c.udp ? 0xff : 0xfc)))
                      return 0
                  }),
        OptionRow(level: IPV6, name: 68, label: "IP6T_SO_GET_REVISION_MATCH", get: { _, _ in .error(EINVAL) }, set: nil),
        OptionRow(level: IPV6, name: 69, label: "IP6T_SO_GET_REVISION_TARGET", get: { _, _ in .error(EINVAL) }, set: nil),
        .flag(IPV6, 70, "IPV6_AUTOFLOWLABEL", initial: true),
        addressPreferences,
        .int(IPV6, 73, "IPV6_MINHOPCOUNT", initial: 0, minLength: 4, check: { _, v in (0...255).contains(v) ? 0 : EINVAL }),
        flag(74, "IPV6_RECVORIGDSTADDR"),
        .flag(IPV6, 75, "IPV6_TRANSPARENT", minLength: 4, capability: EPERM),
        OptionRow(level: IPV6, name: 76, label: "IPV6_UNICAST_IF", get: { c, _ in .int(Int32(c.stored(IPV6, 76, 0))) },
                  set: { c, v in
                      // An interface index in network byte order, as IP_UNICAST_IF; 0 unbinds.
                      guard v.count >= 4 else { return -EINVAL }
                      let index = UInt32(bigEndian: v.uint)
                      var name = [CChar](repeating: 0, count: Int(IF_NAMESIZE))
                      guard index == 0 || if_indextoname(index, &name) != nil else { return -EADDRNOTAVAIL }
                      c.store(IPV6, 76, Int64(v.int))
                      return 0
                  }),
        .flag(IPV6, 77, "IPV6_RECVFRAGSIZE"),
        flag(78, "IPV6_FREEBIND"),
        // A connection's original destination before NAT (netfilter), a sockaddr_in6: no
        // conntrack entry for a TCP socket (ENOENT); UDP has none to ask.
        OptionRow(level: IPV6, name: 80, label: "IP6T_SO_ORIGINAL_DST",
                  get: { c, room in .error(c.udp ? ENOPROTOOPT : room < 28 ? EINVAL : ENOENT) }, set: nil),
    ].map(onlyInet6)

    /// A boolean of the level: 4 bytes at least, any nonzero value reads 1.
    private static func flag(_ name: Int32, _ label: String, initial: Bool = false) -> OptionRow {
        .flag(IPV6, name, label, initial: initial, minLength: 4)
    }

    /// A boolean that must be 0 or 1 (valbool checks: IPV6_MULTICAST_LOOP).
    private static func boolean(_ name: Int32, _ label: String, initial: Bool) -> OptionRow {
        .int(IPV6, name, label, initial: initial ? 1 : 0, minLength: 4, check: { _, v in v == 0 || v == 1 ? 0 : EINVAL })
    }

    /// A hop limit: 0 to 255, or -1 for the default, which is what reads back (ipv6(7)).
    /// `datagramOnly`: the multicast one, which a stream socket refuses to set.
    private static func hops(_ name: Int32, _ label: String, initial: Int32, datagramOnly: Bool = false) -> OptionRow {
        OptionRow(level: IPV6, name: name, label: label,
                  get: { c, _ in
                      let v = c.stored(IPV6, name, -1)
                      return .int(v == -1 ? initial : Int32(v))
                  },
                  set: { c, v in
                      if datagramOnly && !c.udp { return -ENOPROTOOPT }
                      guard v.count >= 4, (-1...255).contains(v.int) else { return -EINVAL }
                      c.store(IPV6, name, Int64(v.int))
                      return 0
                  })
    }

    /// Group and anycast memberships: lvlip's interface joins no groups. A short request is
    /// EINVAL; a stream socket's is EPROTO; a join fails as without a multicast route
    /// (ENODEV), a leave as for a group not joined (EADDRNOTAVAIL), as IPv4's do.
    private static func membership6(_ name: Int32, _ label: String, size: Int, join: Bool) -> OptionRow {
        .writeOnly(IPV6, name, label, raw: true) { c, v in
            guard v.count >= size else { return -EINVAL }
            if !c.udp { return -EPROTO }
            return join ? -ENODEV : -EADDRNOTAVAIL
        }
    }

    /// A sticky extension header (RFC 3542 6.3): none is kept, so reads are empty; a header
    /// shorter than its own length field says is EINVAL, an empty one clears.
    private static func stickyHeader(_ name: Int32, _ label: String) -> OptionRow {
        OptionRow(level: IPV6, name: name, label: label, raw: true, get: { _, _ in .bytes([]) },
                  set: { _, v in
                      if v.count == 0 { return 0 }
                      // ipv6_renew_option: 8-byte units, the length field counting the rest.
                      guard v.count >= 8, v.count % 8 == 0, (Int(v.bytes[1]) + 1) * 8 == v.count else { return -EINVAL }
                      return -EPERM
                  })
    }

    /// IPV6_ADDRFORM: converts a connected TCP or UDP socket whose peer is IPv4 (and that is
    /// not IPV6_V6ONLY) to AF_INET; the shim then treats it as AF_INET. Reading gives the
    /// family of a connected socket.
    private static let addressForm = OptionRow(level: IPV6, name: 1, label: "IPV6_ADDRFORM",
        get: { c, _ in c.established ? .int(c.socket.family) : .error(ENOTCONN) },
        set: { c, v in
            // Anything but AF_INET (a short value reads as 0) leaves the socket as it is.
            guard v.count >= 4, v.int == AF_INET else { return -ENOPROTOOPT }
            if !c.udp && !c.established { return -ENOTCONN }
            let s = c.socket
            guard !s.v6only, s.isConnected, s.peerName.address.isIPv4 else { return -EADDRNOTAVAIL }
            s.family = AF_INET
            return 0
        })

    /// IPV6_ADDR_PREFERENCES (RFC 5014): three groups of source preferences (temporary,
    /// public or the sysctl's default; care-of or home; CGA or not), at most one of each. A
    /// write replaces them all; a read names one of each of the first two groups, the
    /// defaults (0x100, 0x400) where none was chosen (do_ipv6_getsockopt).
    private static let addressPreferences = OptionRow(level: IPV6, name: 72, label: "IPV6_ADDR_PREFERENCES",
        get: { c, _ in
            let chosen = UInt32(c.stored(IPV6, 72, 0))
            let source: UInt32 = chosen & 0x1 != 0 ? 0x1 : chosen & 0x2 != 0 ? 0x2 : 0x100
            return .int(Int32(source | (chosen & 0x4 != 0 ? 0x4 : 0x400)))
        },
        set: { c, v in
            guard v.count >= 4 else { return -EINVAL }
            let groups: [UInt32] = [0x001 | 0x002 | 0x100, 0x004 | 0x400, 0x008 | 0x800]
            guard v.uint & ~groups.reduce(0, |) == 0,
                  groups.allSatisfy({ (v.uint & $0).nonzeroBitCount <= 1 }) else { return -EINVAL }
            c.store(IPV6, 72, Int64(v.uint & 0x507))
            return 0
        })

    /// The row for AF_INET6 sockets: an AF_INET socket's write is ENOPROTOOPT (its reads are
    /// refused by the level rule).
    private static func onlyInet6(_ row: OptionRow) -> OptionRow {
        var r = row
        let set = row.set
        r.set = { c, v in c.socket.family == AF_INET6 ? set?(c, v) ?? -ENOPROTOOPT : -ENOPROTOOPT }
        return r
    }
}
