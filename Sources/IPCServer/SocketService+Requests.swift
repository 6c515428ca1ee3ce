import CLinux
import Glibc
import IPCProtocol
import Reactor
import Stack

/// The shim's socket requests (docs/ipc.md): each decoded from its lvlip_* struct, handed to
/// the socket's kind, and answered at once.
extension SocketService {
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
    /// SOCKET requests. Nil: the request is malformed (the IPC server closes the client).
    public func handle(type: UInt16, tag: UInt32, body: UnsafeRawBufferPointer, fd received: Int32, pid: Int32,
                       uid: UInt32, created: inout Created) -> Reply? {
        var fd = received
        defer { if fd >= 0 { Syscall.close(fd) } }
        func lookup(_ ref: lvlip_ref) -> Socket? { self.lookup(created.resolve(ref)) }
        switch Int(type) {
        case Int(LVLIP_MSG_SOCKET.rawValue):
            guard let req = IPCBody.decodeExactly(lvlip_socket_req.self, body), fd >= 0 else { return nil }
            let (reply, socket) = open(req, daemonFD: fd, pid: pid, uid: uid)
            if let socket {
                fd = -1  // the socket's now
                created.add(tag: tag, ref: socket.ref)
            }
            return reply
        case Int(LVLIP_MSG_IDENTIFY.rawValue):
            guard body.isEmpty, fd >= 0 else { return nil }
            return identify(fd)
        case Int(LVLIP_MSG_BIND.rawValue):
            guard let req = IPCBody.decodeExactly(lvlip_addr_req.self, body), req.addr.isWellFormed,
                  req.flags == 0 else { return nil }
            guard let s = lookup(req.ref) else { return result(-EBADF) }
            let sender = (pid: pid, uid: uid)
            switch s.kind {
            case .stream(let stream): return result(bind(s, stream, req.addr, sender: sender))
            case .listener: return result(-EINVAL)
            case .datagram: return result(udpBind(s, req.addr, sender: sender))
            }
        case Int(LVLIP_MSG_LISTEN.rawValue):
            guard let req = IPCBody.decodeExactly(lvlip_int_req.self, body) else { return nil }
            guard let s = lookup(req.ref) else { return result(-EBADF) }
            return result(s.isDatagram ? -EOPNOTSUPP : listen(s, backlog: Int(req.value)))
        case Int(LVLIP_MSG_CONNECT.rawValue):
            guard let req = IPCBody.decodeExactly(lvlip_addr_req.self, body), req.addr.isWellFormed,
                  req.flags & ~UInt32(LVLIP_CONNECT_WAITS | LVLIP_CONNECT_FILLER) == 0 else { return nil }
            guard let s = lookup(req.ref) else { return nameReply(-EBADF, nil) }
            switch s.kind {
            case .stream(let stream):
                if req.flags & UInt32(LVLIP_CONNECT_FILLER) != 0 {
                    return nameReply(lateFiller(s, stream, req.addr, Int(req.filler)), s.localName)
                }
                let code = connect(s, stream, req.addr, filler: Int(req.filler))
                var reply = nameReply(code, stream.phase == .unconnected ? nil : s.localName)
                if code == -EINPROGRESS && req.flags & UInt32(LVLIP_CONNECT_WAITS) != 0 {
                    // The caller waits: if the handshake is over when the reply is written,
                    // it is told so (and reported, as a blocking connect's success is).
                    // Otherwise a caller that sent no filler writes it after reading the
                    // reply, and the pair must stay unread until it says so.
                    let withoutFiller = req.filler == 0
                    reply.settle = {
                        if stream.phase == .connected && !stream.connectReported {
                            stream.connectReported = true
                            return 0
                        }
                        if withoutFiller && stream.phase == .connecting { stream.fillerAwaited = true }
                        return nil
                    }
                }
                return reply
            case .listener:
                // The shim thought the socket unconnected and wrote filler: take it back.
                discardFiller(s, Int(req.filler))
                return nameReply(-EISCONN, s.localName)
            case .datagram(let datagram):
                return nameReply(udpConnect(s, datagram, req.addr), s.localName)
            }
        case Int(LVLIP_MSG_SHUTDOWN.rawValue):
            guard let req = IPCBody.decodeExactly(lvlip_int_req.self, body) else { return nil }
            guard let s = lookup(req.ref) else { return result(-EBADF) }
            guard req.value >= 0 && req.value <= 2 else { return result(-EINVAL) }
            switch s.kind {
            case .stream(let stream): return result(shutdown(s, stream, how: req.value))
            case .listener: return result(-ENOTCONN)
            case .datagram(let datagram): return result(udpShutdown(s, datagram, how: req.value))
            }
        case Int(LVLIP_MSG_NAME.rawValue):
            guard let req = IPCBody.decodeExactly(lvlip_int_req.self, body) else { return nil }
            guard let s = lookup(req.ref) else { return nameReply(-EBADF, nil) }
            return name(s, peer: req.value != 0)
        case Int(LVLIP_MSG_SETOPT.rawValue):
            let header = MemoryLayout<lvlip_opt_req>.size
            guard body.count >= header else { return nil }
            let req = IPCBody.decode(lvlip_opt_req.self, body)
            guard Int(req.length) == body.count - header, req.length <= LVLIP_OPT_MAX_VALUE else { return nil }
            guard let s = lookup(req.ref) else { return result(-EBADF) }
            // `uid` decides privileged options (SO_MARK, SO_SNDBUFFORCE...).
            let context = OptionContext(service: self, socket: s, uid: uid)
            return result(OptionTable.set(context, level: req.level, name: req.name,
                                          value: UnsafeRawBufferPointer(rebasing: body[header...])))
        case Int(LVLIP_MSG_GETOPT.rawValue):
            guard let req = IPCBody.decodeExactly(lvlip_opt_req.self, body) else { return nil }
            guard let s = lookup(req.ref) else { return optReply(-EBADF, []) }
            let context = OptionContext(service: self, socket: s, uid: uid)
            let (code, value) = OptionTable.get(context, level: req.level, name: req.name, room: Int(min(req.length, LVLIP_OPT_MAX_VALUE)))
            return optReply(code, value)
        case Int(LVLIP_MSG_STATUS.rawValue):
            guard let req = IPCBody.decodeExactly(lvlip_int_req.self, body) else { return nil }
            guard let s = lookup(req.ref) else { return result(-EBADF) }
            return result(status(s, kind: req.value))
        default:
            return nil
        }
    }

    // MARK: - Replies

    func result(_ code: Int32) -> Reply {
        Reply(body: IPCBody.encode(lvlip_result(result: code, reserved: 0)))
    }

    func nameReply(_ code: Int32, _ name: (address: IPAddress, port: UInt16)?) -> Reply {
        var r = lvlip_name_rep()
        r.result = code
        if let name { r.addr = wireName(name.address, name.port) }
        return Reply(body: IPCBody.encode(r))
    }

    func optReply(_ code: Int32, _ value: [UInt8]) -> Reply {
        var body = IPCBody.encode(lvlip_opt_rep(result: code, length: UInt32(value.count)))
        body.append(contentsOf: value)
        return Reply(body: body)
    }

    func socketReply(_ s: Socket) -> Reply {
        var r = lvlip_socket_rep()
        r.result = 0
        r.family = s.family
        let kind = s.isDatagram ? s.stackID.flatMap { stack.datagramKind($0) } : nil
        r.type = !s.isDatagram ? K.SOCK_STREAM : kind == .rawICMP ? K.SOCK_RAW : K.SOCK_DGRAM
        r.state = s.state
        r.ref = s.ref
        r.headroom = UInt32(clamping: limits.socketsPerUser - s.user.sockets)
        if kind == .ping || kind == .rawICMP { r.protocol = UInt32(K.IPPROTO_ICMP) }
        return Reply(body: IPCBody.encode(r))
    }

    func failedSocket(_ code: Int32) -> Reply {
        var r = lvlip_socket_rep()
        r.result = code
        return Reply(body: IPCBody.encode(r))
    }

    // MARK: - Requests every kind answers alike

    /// SOCKET: the shim made the pair; `daemonFD` becomes the socket's on success.
    private func open(_ req: lvlip_socket_req, daemonFD: Int32, pid: Int32, uid: UInt32) -> (Reply, Socket?) {
        guard req.family == AF_INET || req.family == AF_INET6 else { return (failedSocket(-EAFNOSUPPORT), nil) }
        guard req.type == K.SOCK_STREAM || req.type == K.SOCK_DGRAM || req.type == K.SOCK_RAW else {
            return (failedSocket(-ESOCKTNOSUPPORT), nil)
        }
        let datagram = req.type != K.SOCK_STREAM
        // ICMP: ping sockets (SOCK_DGRAM) and raw ICMP sockets, IPv4 only.
        let icmp = req.protocol == K.IPPROTO_ICMP && req.family == AF_INET
        if req.type == K.SOCK_RAW && !icmp { return (failedSocket(-EPROTONOSUPPORT), nil) }
        guard icmp || req.protocol == 0 || req.protocol == (datagram ? 17 : 6) else {
            return (failedSocket(-EPROTONOSUPPORT), nil)
        }
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
        guard lvlip_is_pair_end(daemonFD, datagram ? K.SOCK_SEQPACKET : K.SOCK_STREAM) == 1 else {
            return (failedSocket(-EINVAL), nil)
        }
        let user = self.user(uid)
        guard user.sockets < limits.socketsPerUser else {
            counters.limitRefusals &+= 1
            logger.warning("uid \(uid) (pid \(pid)) reached its limit of \(limits.socketsPerUser) sockets")
            return (failedSocket(-EMFILE), nil)
        }
        let stackID = icmp ? stack.icmpOpen(raw: req.type == K.SOCK_RAW)
            : datagram ? stack.udpOpen(family: req.family == AF_INET6 ? .ipv6 : .ipv4)
            : stack.tcpOpen(family: req.family == AF_INET6 ? .ipv6 : .ipv4)
        let kind: Socket.Kind = datagram ? .datagram(Socket.Datagram()) : .stream(Socket.Stream())
        guard let s = adopt(daemonFD: daemonFD, family: req.family, kind: kind, user: user, pid: pid, stackID: stackID) else {
            return (failedSocket(-ENOMEM), nil)
        }
        counters.socketsCreated &+= 1
        refreshInterest(s)
        return (socketReply(s), s)
    }

    /// What a BIND's address is for a socket of its family: an address of the stack's form,
    /// or the kernel's error.
    enum BindTarget {
        case address(IPAddress)
        case error(Int32)
    }

    /// `sender`: who asks, for ports below ip_unprivileged_port_start; nil where the port is
    /// no port (a ping socket's echo identifier).
    func bindTarget(_ s: Socket, _ addr: lvlip_addr, sender: (pid: Int32, uid: UInt32)?) -> BindTarget {
        // inet_bind, inet6_bind: the family first, then the port's privilege.
        guard Int32(addr.family) == s.family else { return .error(-EAFNOSUPPORT) }
        if let sender, !Privilege.mayBind(port: addr.port, uid: sender.uid, pid: sender.pid) { return .error(-EACCES) }
        let address = addr.ipAddress
        if s.family == AF_INET6 {
            // An IPv4 address, v4-mapped, is no IPv6-only socket's (__inet6_bind).
            if address.isIPv4 && s.v6only { return .error(-EINVAL) }
            if let code = scopeError(address, addr.scope_id) { return .error(code) }
        }
        return .address(address)
    }

    /// A link-local address needs the interface it is on (RFC 4007 6, ipv6(7)): without a
    /// scope id EINVAL; an interface other than the stack's does not hold the address.
    func scopeError(_ address: IPAddress, _ scopeID: UInt32) -> Int32? {
        guard !address.isIPv4, address.bits.isLinkLocal else { return nil }
        if scopeID == 0 { return -EINVAL }
        guard scopeID == UInt32(interfaceIndex) else {
            var name = [CChar](repeating: 0, count: Int(IF_NAMESIZE))
            return if_indextoname(scopeID, &name) == nil ? -ENODEV : -EADDRNOTAVAIL
        }
        return nil
    }

    private func name(_ s: Socket, peer: Bool) -> Reply {
        if s.isDatagram, let id = s.stackID, let names = stack.udpNames(id) {
            if peer {
                guard let remote = names.remote else { return nameReply(-ENOTCONN, nil) }
                return nameReply(0, remote)
            }
            return nameReply(0, (names.local, names.localPort))
        }
        if peer {
            // As Linux: ENOTCONN before the connection is established and once it is over
            // (its socket then in CLOSE, whether it went through TIME-WAIT or was reset); the
            // peer while any of it lasts (FIN-WAIT, CLOSE-WAIT, CLOSING, LAST-ACK).
            let state = s.stackID.flatMap { stack.tcpState($0) } ?? s.finalState
            guard case .stream(let stream) = s.kind, stream.phase == .connected || stream.phase == .closed,
                  state != .closed, state != .timeWait else {
                return nameReply(-ENOTCONN, nil)
            }
            return nameReply(0, s.peerName)
        }
        return nameReply(0, s.localName)
    }

    /// SO_ERROR: the error kept after the daemon's end closed, or the connection's own;
    /// reading it clears it.
    func takeError(_ s: Socket) -> Int32 {
        var error = s.pendingError
        s.pendingError = 0
        if error == 0, let id = s.stackID, let e = stack.tcpTakeError(id) { error = e.errno }
        return error
    }

    /// STATUS: what a read or write that found the stream's end should report.
    private func status(_ s: Socket, kind: Int32) -> Int32 {
        let error = takeError(s)
        if kind == Int32(LVLIP_STATUS_READ_END.rawValue) { return error == 0 ? 0 : -error }
        return error == 0 ? -EPIPE : -error
    }
}
