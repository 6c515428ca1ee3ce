import Glibc
import Stack

private let IP = K.IPPROTO_IP

/// IPPROTO_IP (ip(7), net/ipv4/ip_sockglue.c); IPPROTO_IPV6 is SocketOptionTable+IPv6.swift. Values that shape the
/// stack's packets (IP_TOS, IP_TTL, IP_OPTIONS, IP_MTU_DISCOVER) are kept and read back but
/// not applied: the stack sends with its own (docs/shim.md, "What is not served").
extension OptionTable {
    static let ipRows: [OptionRow] = [
        OptionRow(level: IP, name: 1, label: "IP_TOS",
                  get: { c, _ in .int(Int32(c.stored(IP, 1, 0))) },
                  set: { c, v in
                      // TCP keeps the ECN bits its own (ip_sockglue.c, INET_ECN_MASK).
                      c.store(IP, 1, Int64(v.int & (c.udp ? 0xff : 0xfc)))
                      return 0
                  }),
        OptionRow(level: IP, name: 2, label: "IP_TTL",
                  get: { c, _ in .int(Int32(c.stored(IP, 2, -1) == -1 ? Int64(HostSettings.defaultTTL) : c.stored(IP, 2, -1))) },
                  set: { c, v in
                      // -1 restores the default (ip_default_ttl).
                      guard v.int == -1 || (1...255).contains(v.int) else { return -EINVAL }
                      c.store(IP, 2, Int64(v.int))
                      return 0
                  }),
        .refused(IP, 3, "IP_HDRINCL", get: nil, set: ENOPROTOOPT).reading { _, _ in .int(0) },  // raw sockets only
        ipOptions,
        .refused(IP, 5, "IP_ROUTER_ALERT", get: nil, set: EINVAL).reading { _, _ in .int(0) },  // raw sockets only
        .flag(IP, 6, "IP_RECVOPTS"),
        .flag(IP, 7, "IP_RETOPTS"),
        .flag(IP, 8, "IP_PKTINFO"),
        packetOptions,
        .ranged(IP, 10, "IP_MTU_DISCOVER", initial: 1, 0...5),
        .flag(IP, K.IP_RECVERR, "IP_RECVERR").acting(receiveErrors),
        .flag(IP, 12, "IP_RECVTTL"),
        .flag(IP, 13, "IP_RECVTOS"),
        .readOnly(IP, K.IP_MTU, "IP_MTU") { c, _ in
            c.connected ? .int(Int32(c.stack.configuration.mtu)) : .error(ENOTCONN)
        },
        .flag(IP, 15, "IP_FREEBIND", minLength: 1),
        // IPsec policies: lvlip has no IPsec. An empty value clears them (xfrm_user_policy).
        .writeOnly(IP, 16, "IP_IPSEC_POLICY", raw: true) { _, v in v.count == 0 ? 0 : -EOPNOTSUPP },
        .writeOnly(IP, 17, "IP_XFRM_POLICY", raw: true) { c, v in
            v.count == 0 ? 0 : c.socket.family == AF_INET6 ? -EOPNOTSUPP : -EINVAL
        },
        .flag(IP, 18, "IP_PASSSEC"),
        .flag(IP, 19, "IP_TRANSPARENT", minLength: 1, capability: EPERM),
        .flag(IP, 20, "IP_RECVORIGDSTADDR"),
        .ranged(IP, 21, "IP_MINTTL", initial: 0, 0...255, minLength: 1),
        .refused(IP, 22, "IP_NODEFRAG", get: nil, set: ENOPROTOOPT).reading { _, _ in .int(0) },  // raw sockets only
        .flag(IP, 23, "IP_CHECKSUM"),
        .flag(IP, 24, "IP_BIND_ADDRESS_NO_PORT"),
        OptionRow(level: IP, name: 25, label: "IP_RECVFRAGSIZE", get: { c, _ in .int(Int32(c.stored(IP, 25, 0))) },
                  set: { c, v in
                      guard c.udp else { return -EINVAL }  // datagram sockets only
                      c.store(IP, 25, v.int != 0 ? 1 : 0)
                      return 0
                  }),
        .ranged(IP, 26, "IP_RECVERR_RFC4884", initial: 0, 0...1),
        // On by default for AF_INET sockets, off for AF_INET6 ones (inet_create, inet6_create).
        .int(IP, 49, "IP_MULTICAST_ALL", initial: { c in c.socket.family == AF_INET6 ? 0 : 1 }, minLength: 1,
             check: { _, v in (0...1).contains(v) ? 0 : EINVAL }),
        OptionRow(level: IP, name: 50, label: "IP_UNICAST_IF", get: { c, _ in .int(Int32(c.stored(IP, 50, 0))) },
                  set: { c, v in
                      // An interface index in network byte order (ip(7)); 0 unbinds.
                      guard v.count == 4 else { return -EINVAL }
                      let index = UInt32(bigEndian: v.uint)
                      var name = [CChar](repeating: 0, count: Int(IF_NAMESIZE))
                      guard index == 0 || if_indextoname(index, &name) != nil else { return -EADDRNOTAVAIL }
                      c.store(IP, 50, Int64(v.int))
                      return 0
                  }),
        OptionRow(level: IP, name: 51, label: "IP_LOCAL_PORT_RANGE", get: { c, _ in .int(Int32(c.stored(IP, 51, 0))) },
                  set: { c, v in
                      // Low port in the low 16 bits, high in the high; 0 for either means the
                      // namespace's. Kept: the stack's ephemeral range is its own.
                      guard v.count >= 4 else { return -EINVAL }
                      let low = v.uint & 0xffff, high = v.uint >> 16
                      guard low == 0 || high == 0 || low <= high else { return -EINVAL }
                      c.store(IP, 51, Int64(v.int))
                      return 0
                  }),
        // IP_PROTOCOL answers inet_num, which for TCP and UDP sockets is the local port.
        .readOnly(IP, 52, "IP_PROTOCOL") { c, _ in .int(Int32(c.socket.localName.port)) },
    ]

    /// IP_PKTOPTIONS of a TCP socket (not UDP's: ENOPROTOOPT): the control messages that
    /// IP_PKTINFO, IP_RECVTTL and IP_RECVTOS ask for, as recvmsg would give them, made from the
    /// socket since no packet is saved (do_ip_getsockopt): the bound address (interface 0:
    /// lvlip takes no ip_mreqn), IP_MULTICAST_TTL, the TOS last received (0). Each cmsg takes CMSG_SPACE; one
    /// that does not fit is cut, and none starts in less than a cmsghdr (put_cmsg).
    static let packetOptions = OptionRow.readOnly(IP, 9, "IP_PKTOPTIONS") { c, room in
        guard !c.udp else { return .error(ENOPROTOOPT) }
        var messages: [(type: Int32, data: [UInt8])] = []
        if c.stored(IP, 8, 0) != 0 {
            let address = withUnsafeBytes(of: (c.socket.localName.address.v4?.value ?? 0).bigEndian) { Array($0) }
            messages.append((8, le(Int32(0)) + address + address))
        }
        if c.stored(IP, 12, 0) != 0 { messages.append((2, le(Int32(truncatingIfNeeded: c.stored(IP, 33, 1))))) }
        if c.stored(IP, 13, 0) != 0 { messages.append((1, le(Int32(0)))) }
        var out: [UInt8] = []
        for m in messages {
            let remaining = room - out.count
            guard remaining >= 16 else { break }
            // A cut message says so in its cmsg_len (put_cmsg: MSG_CTRUNC).
            var message = le(UInt64(min(16 + m.data.count, remaining))) + le(IP, m.type) + m.data
            message += [UInt8](repeating: 0, count: (8 - message.count % 8) % 8)
            out += message.prefix(remaining)
        }
        return .bytes(out)
    }

    /// IP_OPTIONS (RFC 791 3.1): kept after a check of each option's length, padded to 4 bytes
    /// with End of Option List, and read back so; at most 40 bytes.
    static let ipOptions = OptionRow(
        level: IP, name: K.IP_OPTIONS, label: "IP_OPTIONS", raw: true,
        get: { c, _ in .bytes(c.bytes(IP, K.IP_OPTIONS) ?? []) },
        set: { c, v in
            guard v.count <= 40 else { return -EINVAL }
            var i = 0
            while i < v.count {
                let type = v.bytes[i]
                if type == 0 { break }
                if type == 1 { i += 1; continue }
                guard i + 1 < v.count, v.bytes[i + 1] >= 2, i + Int(v.bytes[i + 1]) <= v.count else { return -EINVAL }
                // Record route and source routes carry a pointer (at least 4), the timestamp a
                // pointer (at least 5) and flags (ip_options_compile).
                let length = Int(v.bytes[i + 1])
                if [7, 0x83, 0x89].contains(type) && (length < 3 || v.bytes[i + 2] < 4) { return -EINVAL }
                if type == 0x44 && (length < 4 || v.bytes[i + 2] < 5) { return -EINVAL }
                i += Int(v.bytes[i + 1])
            }
            let padded = v.bytes + [UInt8](repeating: 0, count: (4 - v.count % 4) % 4)
            c.store(IP, K.IP_OPTIONS, bytes: padded.isEmpty ? nil : padded)
            return 0
        })

    /// Multicast (ip(7)): lvlip's interface joins no groups. Stream sockets refuse the
    /// datagram-only options as the kernel does (EINVAL, EPROTO for memberships); a UDP join
    /// fails as it does on a host without a multicast route (ENODEV), a leave as for a group not
    /// joined (EADDRNOTAVAIL). The rest are kept.
    static let multicastRows: [OptionRow] = [
        OptionRow(level: IP, name: 32, label: "IP_MULTICAST_IF",
                  get: { c, _ in .bytes(withUnsafeBytes(of: UInt32(truncatingIfNeeded: c.stored(IP, 32, 0)).bigEndian) { Array($0) }) },
                  set: { c, v in
                      guard c.udp, v.count >= 4 else { return -EINVAL }
                      let address = UInt32(bigEndian: v.uint)
                      guard address == 0 || address == c.stack.configuration.interface.address.value else { return -EADDRNOTAVAIL }
                      c.store(IP, 32, Int64(address))
                      return 0
                  }),
        OptionRow(level: IP, name: 33, label: "IP_MULTICAST_TTL",
                  // An accepted connection's is set from the peer's SYN (OptionStore.inherited).
                  get: { c, _ in .int(Int32(c.stored(IP, 33, 1))) },
                  set: { c, v in
                      guard c.udp, v.count >= 1 else { return -EINVAL }
                      guard v.int == -1 || (0...255).contains(v.int) else { return -EINVAL }
                      c.store(IP, 33, Int64(v.int == -1 ? 1 : v.int))
                      return 0
                  }),
        .flag(IP, 34, "IP_MULTICAST_LOOP", initial: true, minLength: 1),
        membership(35, "IP_ADD_MEMBERSHIP", size: 8, join: true),
        membership(36, "IP_DROP_MEMBERSHIP", size: 8, join: false),
        membership(37, "IP_UNBLOCK_SOURCE", size: 12, join: false),
        membership(38, "IP_BLOCK_SOURCE", size: 12, join: false),
        membership(39, "IP_ADD_SOURCE_MEMBERSHIP", size: 12, join: true),
        membership(40, "IP_DROP_SOURCE_MEMBERSHIP", size: 12, join: false),
        // A source filter of a group not joined.
        .refused(IP, 41, "IP_MSFILTER", get: EINVAL, set: EINVAL, raw: true),
        membership(42, "MCAST_JOIN_GROUP", size: 136, join: true),
        membership(43, "MCAST_BLOCK_SOURCE", size: 264, join: false),
        membership(44, "MCAST_UNBLOCK_SOURCE", size: 264, join: false),
        membership(45, "MCAST_LEAVE_GROUP", size: 136, join: false),
        membership(46, "MCAST_JOIN_SOURCE_GROUP", size: 264, join: true),
        membership(47, "MCAST_LEAVE_SOURCE_GROUP", size: 264, join: false),
        .refused(IP, 48, "MCAST_MSFILTER", get: EINVAL, set: EINVAL, raw: true),
    ]

    static func membership(_ name: Int32, _ label: String, size: Int, join: Bool) -> OptionRow {
        .writeOnly(IP, name, label, raw: true) { c, v in
            // ip_mreq for the first two: TCP sockets are EPROTO before the length is checked.
            if !c.udp && name <= 36 { return -EPROTO }
            guard v.count >= size else { return -EINVAL }
            return join ? -ENODEV : -EADDRNOTAVAIL
        }
    }

    /// IP_RECVERR and IPV6_RECVERR of a datagram socket: its ICMP errors reported in detail.
    static func receiveErrors(_ c: OptionContext, _ v: OptionRow.Input) {
        if c.udp, let id = c.socket.stackID { c.stack.udpSetReceiveErrors(id, v.int != 0) }
    }

    /// SOL_RAW (raw(7)): ICMP_FILTER of a raw ICMP socket, a bit per type not delivered.
    static let rawRows: [OptionRow] = [
        OptionRow(level: K.SOL_RAW, name: K.ICMP_FILTER, label: "ICMP_FILTER", raw: true,
                  get: { c, _ in
                      guard let filter = c.socket.stackID.flatMap({ c.stack.icmpFilter($0) }) else { return .error(ENOPROTOOPT) }
                      return .int(Int32(bitPattern: filter))
                  },
                  set: { c, v in
                      guard let id = c.socket.stackID, c.datagramKind == .rawICMP else { return -ENOPROTOOPT }
                      // Linux takes 4 bytes and refuses fewer.
                      guard v.count >= 4 else { return -EINVAL }
                      return (try? c.stack.icmpSetFilter(id, v.uint)) == nil ? -ENOPROTOOPT : 0
                  }),
    ]
}

extension OptionRow {
    /// The same row, read with `get`.
    func reading(_ get: @escaping (OptionContext, Int) -> Value) -> OptionRow {
        var row = self
        row.get = get
        return row
    }

    /// The same row, telling the stack of each write it accepts.
    func acting(_ act: @escaping (OptionContext, Input) -> Void) -> OptionRow {
        var row = self
        let set = self.set
        row.set = { c, v in
            let code = set?(c, v) ?? -ENOPROTOOPT
            if code == 0 { act(c, v) }
            return code
        }
        return row
    }
}
