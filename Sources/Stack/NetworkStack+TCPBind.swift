/// A local address and port as bound; the address is unspecified for a socket bound to any.
struct TCPLocalName: Hashable {
    var address: IPv4Address
    var port: UInt16
}

/// TCP's local names: bind(2), listen(2) and the port table, with Linux's rules. A socket
/// holds its port under the address it bound (any, our interface address, or one of
/// 127.0.0.0/8); two sockets' names overlap when the ports are equal and the addresses are
/// equal or either is any. Overlapping names conflict unless both allow reuse and neither
/// listens (SO_REUSEADDR); sockets on one port with different specific addresses coexist
/// (127.0.0.1:6379 beside 10.0.0.4:6379).
extension NetworkStack {
    func usePort(_ port: UInt16, address: IPv4Address, by c: TCPConnection) {
        c.heldAddress = address
        tcp.portUsers[port, default: 0] += 1
        tcp.nameUsers[TCPLocalName(address: address, port: port), default: 0] += 1
    }

    /// Gives the socket's local port back; the socket keeps the number for getsockname.
    func releasePort(of c: TCPConnection) {
        guard c.localPort != 0, !c.portReleased else { return }
        c.portReleased = true
        let port = c.localPort
        if let users = tcp.portUsers[port] { tcp.portUsers[port] = users > 1 ? users - 1 : nil }
        let name = TCPLocalName(address: c.heldAddress, port: port)
        if let users = tcp.nameUsers[name] { tcp.nameUsers[name] = users > 1 ? users - 1 : nil }
        if c.boundExplicitly, let users = tcp.explicitBinds[port] {
            tcp.explicitBinds[port] = users > 1 ? users - 1 : nil
        }
    }

    /// Whether some socket holds a name overlapping `address`:`port`.
    private func nameInUse(_ address: IPv4Address, _ port: UInt16) -> Bool {
        if address.isUnspecified { return tcp.portUsers[port] != nil }
        return tcp.nameUsers[TCPLocalName(address: address, port: port)] != nil
            || tcp.nameUsers[TCPLocalName(address: .any, port: port)] != nil
    }

    /// Whether some listener's name overlaps `address`:`port`.
    private func listenerOverlaps(_ address: IPv4Address, _ port: UInt16) -> Bool {
        if address.isUnspecified { return tcp.listenersOnPort[port] != nil }
        return tcp.listeners[TCPLocalName(address: address, port: port)] != nil
            || tcp.listeners[TCPLocalName(address: .any, port: port)] != nil
    }

    /// The listener a segment to `tuple`'s local name goes to: one bound to that very address
    /// first, then one bound to any (as Linux's listener lookup scores them).
    @inline(__always)
    func listener(for tuple: TCPFourTuple) -> TCPConnection? {
        guard tcp.listenersOnPort[tuple.localPort] != nil else { return nil }
        return tcp.listeners[TCPLocalName(address: tuple.localAddress, port: tuple.localPort)]
            ?? tcp.listeners[TCPLocalName(address: .any, port: tuple.localPort)]
    }

    func removeListener(_ c: TCPConnection) {
        let name = TCPLocalName(address: c.localAddress, port: c.localPort)
        guard tcp.listeners[name] === c else { return }
        tcp.listeners[name] = nil
        if let count = tcp.listenersOnPort[c.localPort] { tcp.listenersOnPort[c.localPort] = count > 1 ? count - 1 : nil }
    }

    /// bind(2) to a local address (unspecified: any; otherwise ours or one of 127.0.0.0/8,
    /// else EADDRNOTAVAIL) and port (0 picks an ephemeral one). Overlapping names are
    /// refused unless `reuseAddress` is set and no listener holds one (Linux's SO_REUSEADDR).
    public func tcpBind(_ id: SocketID, address: IPv4Address = .any, port: UInt16, reuseAddress: Bool = false) throws(SocketError) {
        guard let s = tcpSocket(id), !s.orphaned else { throw .badSocket }
        guard s.state == .closed, s.localPort == 0, s.remotePort == 0 else { throw .invalidArgument }
        guard isBindable(address) else { throw .addressNotAvailable }
        var chosen = port
        if chosen == 0 {
            guard let p = ephemeralPort(remote: nil, remotePort: 0) else { throw .addressInUse }
            chosen = p
        } else if nameInUse(address, chosen) {
            guard reuseAddress && !listenerOverlaps(address, chosen) else { throw .addressInUse }
        }
        s.localAddress = address
        s.localPort = chosen
        s.boundExplicitly = true
        usePort(chosen, address: address, by: s)
        tcp.explicitBinds[chosen, default: 0] += 1
    }

    /// listen(2).
    public func tcpListen(_ id: SocketID, backlog: Int) throws(SocketError) {
        guard let s = tcpSocket(id), !s.orphaned else { throw .badSocket }
        if s.isListener {
            s.backlog = max(0, min(backlog, 4096))
            return
        }
        guard s.state == .closed, s.remotePort == 0, s.terminalError == nil else { throw .invalidArgument }
        if s.localPort == 0 { try tcpBind(id, port: 0) }
        guard !listenerOverlaps(s.localAddress, s.localPort) else { throw .addressInUse }
        s.state = .listen
        s.backlog = max(0, min(backlog, 4096))
        tcp.listeners[TCPLocalName(address: s.localAddress, port: s.localPort)] = s
        tcp.listenersOnPort[s.localPort, default: 0] += 1
    }

    /// RFC 6056 Algorithm 3 (simple hash-based): a per-destination offset into the range
    /// plus a global counter; the first port whose names are free is taken.
    func ephemeralPort(remote: IPv4Address?, remotePort: UInt16, local: IPv4Address = .any) -> UInt16? {
        let range = configuration.tcp.ephemeralPorts
        let count = UInt32(range.upperBound - range.lowerBound) + 1
        let offset = UInt32(truncatingIfNeeded: secretHash(0x6570, 0, remote, remotePort))
        for i in 0..<count {
            let port = UInt16(UInt32(range.lowerBound) + (offset &+ tcp.nextEphemeral &+ i) % count)
            let free: Bool
            if let remote {
                // Connecting: the port may be shared with other destinations, never with a
                // listener or an explicit bind.
                free = tcp.listenersOnPort[port] == nil
                    && tcp.connections[TCPFourTuple(remoteAddress: remote, remotePort: remotePort, localAddress: local,
                                                    localPort: port)] == nil
                    && tcp.explicitBinds[port] == nil
            } else {
                free = tcp.portUsers[port] == nil
            }
            if free {
                tcp.nextEphemeral &+= i + 1
                return port
            }
        }
        return nil
    }
}
