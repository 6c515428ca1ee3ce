import CLinux
import Glibc
import Reactor
import Stack

/// Datagram sockets: UDP, ping and raw ICMP, on a SOCK_SEQPACKET pair, one message per
/// datagram, each led by a `lvlip_dgram_header` (docs/ipc.md, "Socket service: the data path").
extension SocketService {
    // MARK: - Requests

    // UDP serves both families (an AF_INET6 socket is the stack's IPv6 UDP socket, dual-stack
    // unless IPV6_V6ONLY); ping and raw ICMP sockets are AF_INET only.

    func udpBind(_ s: Socket, _ addr: lvlip_addr, sender: (pid: Int32, uid: UInt32)) -> Int32 {
        guard let id = s.stackID, s.localName.port == 0 else { return -EINVAL }
        let address: IPAddress
        switch bindTarget(s, addr, sender: stack.datagramKind(id) == .udp ? sender : nil) {
        case .error(let code): return code
        case .address(let a): address = a
        }
        do {
            try stack.udpBind(id, address: address, port: addr.port)
        } catch {
            return -error.errno
        }
        s.boundAddress = address
        s.localName = (address, stack.udpNames(id)?.localPort ?? addr.port)
        return 0
    }

    func udpConnect(_ s: Socket, _ datagram: Socket.Datagram, _ addr: lvlip_addr) -> Int32 {
        // Datagrams written before this connect() go where they were meant to: to the peer
        // connected then (the pair holds them until lvlipd reads them).
        readDatagrams(s, datagram, draining: true)
        guard let id = s.stackID else { return -EBADF }
        do {
            if Int32(addr.family) == AF_UNSPEC {
                try stack.udpConnect(id, to: nil)
                datagram.connected = false
                return 0
            }
            // An AF_INET6 datagram socket takes an AF_INET peer too, unless IPV6_V6ONLY
            // (__ip6_datagram_connect).
            let family = Int32(addr.family)
            guard family == s.family || s.family == AF_INET6 && family == AF_INET && !s.v6only else { return -EAFNOSUPPORT }
            let peer = addr.ipAddress
            if let code = scopeError(peer, addr.scope_id) { return code }
            // A v4-mapped peer of an IPV6_V6ONLY socket is ENETUNREACH (the stack's answer).
            try stack.udpConnect(id, to: (peer, addr.port))
        } catch {
            return -error.errno
        }
        datagram.connected = true
        let names = stack.udpNames(id)
        s.localName = (names?.local ?? s.boundAddress, names?.localPort ?? 0)
        s.peerName = (addr.ipAddress, addr.port)
        return 0
    }

    /// shutdown(2) of a datagram socket (`how` checked).
    func udpShutdown(_ s: Socket, _ datagram: Socket.Datagram, how: Int32) -> Int32 {
        guard datagram.connected else { return -ENOTCONN }
        if (how == 0 || how == 2) && !datagram.eofSent && s.fd >= 0 {
            // Reads end: the application's end sees end of stream.
            datagram.eofSent = true
            PairIO.shutdownWrite(s.fd)
        }
        if (how == 1 || how == 2) && !datagram.writeShut {
            // What the program wrote before shutdown() is still sent (the shim refuses later
            // writes): the pair's queued bytes are counted now and read as usual.
            datagram.writeShut = true
            if s.fd >= 0, let queued = PairIO.unread(s.fd) { datagram.writtenBeforeShutdown = queued }
        }
        return 0
    }

    // MARK: - Events

    func datagramEvent(_ s: Socket, _ datagram: Socket.Datagram, _ events: IOEvents) {
        if events.contains(.hangup) {
            // The application closed its last descriptor: send what it wrote, then forget it.
            datagram.waitingForOutput = false
            if let i = waitingForOutput.firstIndex(where: { $0 === s }) { waitingForOutput.remove(at: i) }
            readDatagrams(s, datagram, draining: true)
            if s.fd >= 0 {
                counters.socketsClosedByApp &+= 1
                release(s)
            }
            return
        }
        if events.contains(.writable) { pushDatagrams(s) }
        if events.contains(.readable) || events.contains(.error) { readDatagrams(s, datagram) }
        if s.fd >= 0 { refreshInterest(s) }
    }

    func updateDatagram(_ s: Socket, _ datagram: Socket.Datagram) {
        pushDatagrams(s)
        refreshInterest(s)
    }

    func datagramInterest(_ s: Socket, _ datagram: Socket.Datagram) -> IOEvents {
        var events: IOEvents = []
        if !datagram.waitingForOutput { events.insert(.readable) }
        if let id = s.stackID, stack.udpQueued(id) > 0 || stack.udpHasError(id) { events.insert(.writable) }
        return events
    }

    /// The link's queue was drained: datagram sockets that waited read on.
    public func outputDrained() {
        guard !waitingForOutput.isEmpty else { return }
        let waiting = waitingForOutput
        waitingForOutput.removeAll()
        for s in waiting {
            guard case .datagram(let datagram) = s.kind else { continue }
            datagram.waitingForOutput = false
            readDatagrams(s, datagram)
            refreshInterest(s)
        }
    }

    // MARK: - Data

    /// Sends what the application wrote, one datagram per message, while the link has room.
    private func readDatagrams(_ s: Socket, _ datagram: Socket.Datagram, draining: Bool = false) {
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
                if !datagram.waitingForOutput {
                    datagram.waitingForOutput = true
                    waitingForOutput.append(s)
                }
                return
            }
            let n: Int
            switch PairIO.receive(s.fd, into: scratch, count: scratch.count) {
            case .done(0), .failed:
                // End of stream (or the end is broken): the application closed its last descriptor.
                counters.socketsClosedByApp &+= 1
                release(s)
                return
            case .wouldBlock:
                return
            case .done(let count):
                n = count
            }
            counters.appBytesIn &+= UInt64(n)
            if datagram.writeShut {
                guard datagram.writtenBeforeShutdown >= n else {
                    datagram.writtenBeforeShutdown = 0
                    counters.appBytesDiscarded &+= UInt64(n)
                    continue
                }
                datagram.writtenBeforeShutdown -= n
            }
            var payload = UnsafeRawBufferPointer(scratch.slice(min(header, n)..<n))
            var destination: (address: IPAddress, port: UInt16)?
            let h = n >= header ? UnsafeRawBufferPointer(scratch).loadUnaligned(as: lvlip_dgram_header.self) : nil
            if let h, h.magic == LVLIP_DGRAM_MAGIC {
                let addressed = h.addr.port != 0 || h.flags & UInt16(LVLIP_DGRAM_ADDRESSED) != 0
                destination = addressed ? (h.addr.ipAddress, h.addr.port) : nil
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
                if datagram.connected,
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
            var h = lvlip_dgram_header()
            h.addr = wireName(d.source, d.sourcePort)
            h.magic = LVLIP_DGRAM_MAGIC
            h.ifindex = stack.isLocal(d.source) ? Self.loopbackIndex : interfaceIndex
            h.ttl = d.ttl
            h.tos = d.tos
            h.local = lvlip_addr(d.destination, port: 0).addr
            let written = d.payload.withUnsafeBytes { payload in
                withUnsafeBytes(of: &h) { PairIO.write(s.fd, $0, payload) }
            }
            // Not written: the application's end is full; wait for room.
            guard case .done = written else { return }
            counters.appBytesOut &+= UInt64(d.payload.count)
            _ = stack.udpReceive(id)
        }
    }

    /// An error record (the socket's pending error); with a report (IP_RECVERR), an error
    /// queue record with its details and quoted payload follows (docs/ipc.md).
    private func pushError(_ s: Socket, _ code: Int32, _ report: UDPErrorReport? = nil) {
        guard s.fd >= 0 else { return }
        var h = lvlip_dgram_header()
        h.flags = UInt16(LVLIP_DGRAM_ERROR)
        h.error = code
        h.magic = LVLIP_DGRAM_MAGIC
        _ = withUnsafeBytes(of: &h) { PairIO.write(s.fd, $0) }
        guard let report else { return }
        var e = lvlip_dgram_error()
        e.type = report.type
        e.code = report.code
        e.origin = report.origin
        e.info = report.info
        e.offender = wireName(report.offender, 0)
        e.destination = wireName(report.destination, report.destinationPort)
        let details = withUnsafeBytes(of: &e) { Array($0) } + report.payload
        h.flags |= UInt16(LVLIP_DGRAM_ERRQUEUE)
        _ = withUnsafeBytes(of: &h) { header in details.withUnsafeBytes { PairIO.write(s.fd, header, $0) } }
    }
}
