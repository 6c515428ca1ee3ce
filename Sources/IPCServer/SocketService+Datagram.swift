import CLinux
import Glibc
import Reactor
import Stack

/// Datagram sockets: UDP, ping and raw ICMP, on a SOCK_SEQPACKET pair, one message per
/// datagram, each led by a `lvlip_dgram_header` (docs/ipc.md, "Socket service: the data path").
extension SocketService {
    // MARK: - Requests

    func udpBind(_ s: Socket, _ addr: lvlip_addr, sender: (pid: Int32, uid: UInt32)) -> Int32 {
        guard let id = s.stackID, s.phantomPort == nil, s.localName.port == 0 else { return -EINVAL }
        let address: IPv4Address?
        switch bindTarget(s, addr, sender: stack.datagramKind(id) == .udp ? sender : nil) {
        case .phantom: return 0
        case .error(let code): return code
        case .ipv4(let a): address = a
        }
        do {
            try stack.udpBind(id, address: address.map(IPAddress.init), port: addr.port)
        } catch {
            return -error.errno
        }
        let names = stack.udpNames(id)
        s.localName = (names?.local.v4?.value ?? 0, names?.localPort ?? addr.port)
        return 0
    }

    func udpConnect(_ s: Socket, _ datagram: Socket.Datagram, _ addr: lvlip_addr) -> Int32 {
        // Datagrams written before this connect() go where they were meant to: to the peer
        // connected then (the pair holds them until lvlipd reads them).
        readDatagrams(s, datagram, draining: true)
        guard let id = s.stackID else { return -EBADF }
        do {
            switch Int(addr.kind) {
            case Int(LVLIP_ADDR_UNSPEC.rawValue):
                try stack.udpConnect(id, to: nil)
                datagram.connected = false
                return 0
            case Int(LVLIP_ADDR_V4.rawValue):
                guard s.phantomPort == nil, !(s.family == AF_INET6 && s.v6only) else { return -ENETUNREACH }
                try stack.udpConnect(id, to: (IPAddress(IPv4Address(addr.addr)), addr.port))
            default:
                return -ENETUNREACH
            }
        } catch {
            return -error.errno
        }
        datagram.connected = true
        let names = stack.udpNames(id)
        s.localName = (names?.local.v4?.value ?? 0, names?.localPort ?? 0)
        s.peerName = (addr.addr, addr.port)
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
                let addressed = h.port != 0 || h.flags & UInt16(LVLIP_DGRAM_ADDRESSED) != 0
                destination = addressed ? (IPAddress(IPv4Address(h.addr)), h.port) : nil
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
            var h = lvlip_dgram_header(addr: d.source.v4?.value ?? 0, port: d.sourcePort, flags: 0, error: 0,
                                       magic: LVLIP_DGRAM_MAGIC, local: d.destination.v4?.value ?? 0,
                                       ifindex: stack.isLocal(d.source) ? Self.loopbackIndex : interfaceIndex,
                                       ttl: d.ttl, tos: d.tos)
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
        var h = lvlip_dgram_header(addr: 0, port: 0, flags: UInt16(LVLIP_DGRAM_ERROR), error: code, magic: LVLIP_DGRAM_MAGIC,
                                   local: 0, ifindex: 0, ttl: 0, tos: 0)
        _ = withUnsafeBytes(of: &h) { PairIO.write(s.fd, $0) }
        guard let report else { return }
        var e = lvlip_dgram_error(type: report.type, code: report.code, port: report.destinationPort, info: report.info,
                                  offender: report.offender.v4?.value ?? 0, destination: report.destination.v4?.value ?? 0)
        let details = withUnsafeBytes(of: &e) { Array($0) } + report.payload
        h.flags |= UInt16(LVLIP_DGRAM_ERRQUEUE)
        _ = withUnsafeBytes(of: &h) { header in details.withUnsafeBytes { PairIO.write(s.fd, header, $0) } }
    }
}
