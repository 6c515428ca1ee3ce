/// A local address and port as bound; the address is unspecified for a socket bound to any.
struct TCPLocalName: Hashable {
    var address: IPAddress
    var port: UInt16
}

/// A local port as held by one family: IPv4 names (0.0.0.0 and IPv4 addresses, however a
/// socket spelled them) or IPv6 ones.
struct TCPPortFamily: Hashable {
    var port: UInt16
    var ipv4: Bool
}

/// TCP's local names: bind(2), listen(2) and the port table, with Linux's rules. A socket
/// holds its port under the address it bound (either family's any, an address of ours, or
/// loopback); two sockets' names overlap when the ports are equal and the addresses are
/// equal or either is its family's any, and an IPv6 socket bound to `::` without IPV6_V6ONLY
/// (dual-stack) overlaps every name of both families (RFC 3493 5.3, Linux's
/// ipv6_rcv_saddr_equal). Overlapping names conflict unless both allow reuse and neither
/// listens (SO_REUSEADDR); sockets on one port with different specific addresses coexist
/// (127.0.0.1:6379 beside 10.0.0.4:6379).
extension NetworkStack {
    func usePort(_ port: UInt16, address: IPAddress, by c: TCPConnection) {
        c.heldAddress = address
        c.heldDual = address == .anyIPv6 && !c.options.v6Only
        tcp.portUsers[port, default: 0] += 1
        tcp.familyUsers[TCPPortFamily(port: port, ipv4: address.isIPv4), default: 0] += 1
        if c.heldDual { tcp.dualUsers[port, default: 0] += 1 }
        tcp.nameUsers[TCPLocalName(address: address, port: port), default: 0] += 1
    }

    /// Gives the socket's local port back; the socket keeps the number for getsockname.
    func releasePort(of c: TCPConnection) {
        guard c.localPort != 0, !c.portReleased else { return }
        c.portReleased = true
        let port = c.localPort
        func release<Key>(_ table: inout [Key: Int], _ key: Key) {
            if let users = table[key] { table[key] = users > 1 ? users - 1 : nil }
        }
        release(&tcp.portUsers, port)
        release(&tcp.familyUsers, TCPPortFamily(port: port, ipv4: c.heldAddress.isIPv4))
        if c.heldDual { release(&tcp.dualUsers, port) }
        release(&tcp.nameUsers, TCPLocalName(address: c.heldAddress, port: port))
        if c.boundExplicitly { release(&tcp.explicitBinds, port) }
    }

    /// Whether some socket holds a name overlapping `address`:`port` (`dual`: the name is a
    /// dual-stack `::`).
    private func nameInUse(_ address: IPAddress, _ port: UInt16, dual: Bool) -> Bool {
        if address.isIPv4 {
            if tcp.dualUsers[port] != nil { return true }
            if address.isUnspecified { return tcp.familyUsers[TCPPortFamily(port: port, ipv4: true)] != nil }
        } else if address.isUnspecified {
            return tcp.familyUsers[TCPPortFamily(port: port, ipv4: false)] != nil
                || dual && tcp.familyUsers[TCPPortFamily(port: port, ipv4: true)] != nil
        }
        return tcp.nameUsers[TCPLocalName(address: address, port: port)] != nil
            || tcp.nameUsers[TCPLocalName(address: address.familyAny, port: port)] != nil
    }

    /// Whether some listener's name overlaps `address`:`port` (`dual` as for nameInUse).
    private func listenerOverlaps(_ address: IPAddress, _ port: UInt16, dual: Bool) -> Bool {
        guard tcp.listenersOnPort[port] != nil else { return false }
        if address.isUnspecified {
            // Rare (a server starting): the listeners on the port are looked at one by one.
            return tcp.listeners.values.contains { l in
                l.localPort == port && Self.localNamesOverlap(address, dual, l.localAddress, l.heldDual)
            }
        }
        return tcp.listeners[TCPLocalName(address: address, port: port)] != nil
            || tcp.listeners[TCPLocalName(address: address.familyAny, port: port)] != nil
            || address.isIPv4 && dualListener(port) != nil
    }

    /// The listener a segment to `tuple`'s local name goes to: one bound to that very address
    /// first, then one bound to its family's any, then for IPv4 a dual-stack `::` one (as
    /// Linux's listener lookup scores them).
    @inline(__always)
    func listener(for tuple: TCPFourTuple) -> TCPConnection? {
        guard tcp.listenersOnPort[tuple.localPort] != nil else { return nil }
        if let exact = tcp.listeners[TCPLocalName(address: tuple.localAddress, port: tuple.localPort)] { return exact }
        if let any = tcp.listeners[TCPLocalName(address: tuple.localAddress.familyAny, port: tuple.localPort)] {
            return any
        }
        return tuple.localAddress.isIPv4 ? dualListener(tuple.localPort) : nil
    }

    /// A listener on `::` that takes IPv4 too (IPV6_V6ONLY off).
    private func dualListener(_ port: UInt16) -> TCPConnection? {
        guard let l = tcp.listeners[TCPLocalName(address: .anyIPv6, port: port)], l.heldDual else { return nil }
        return l
    }

    func removeListener(_ c: TCPConnection) {
        let name = TCPLocalName(address: c.localAddress, port: c.localPort)
        guard tcp.listeners[name] === c else { return }
        tcp.listeners[name] = nil
        if let count = tcp.listenersOnPort[c.localPort] { tcp.listenersOnPort[c.localPort] = count > 1 ? count - 1 : nil }
    }

    /// bind(2) to a local address (its family's any, or ours or loopback, else
    /// EADDRNOTAVAIL) and port (0 picks an ephemeral one). The address must be of the
    /// socket's family: an IPv4 one for an IPv6 socket only as v4-mapped (the service's
    /// part) and not with IPV6_V6ONLY. Overlapping names are refused unless `reuseAddress` is
    /// set and no listener holds one (Linux's SO_REUSEADDR).
    public func tcpBind(_ id: SocketID, address: IPAddress = .anyIPv4, port: UInt16, reuseAddress: Bool = false) throws(SocketError) {
        guard let s = tcpSocket(id), !s.orphaned else { throw .badSocket }
        guard s.state == .closed, s.localPort == 0, s.remotePort == 0 else { throw .invalidArgument }
        guard s.family == .ipv6 || address.isIPv4 else { throw .invalidArgument }
        guard !(address.isIPv4 && s.family == .ipv6 && s.options.v6Only) else { throw .invalidArgument }
        guard isBindable(address) else { throw .addressNotAvailable }
        let dual = address == .anyIPv6 && !s.options.v6Only
        var chosen = port
        if chosen == 0 {
            guard let p = ephemeralPort(remote: nil, remotePort: 0) else { throw .addressInUse }
            chosen = p
        } else if nameInUse(address, chosen, dual: dual) {
            guard reuseAddress && !listenerOverlaps(address, chosen, dual: dual) else { throw .addressInUse }
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
        if s.localPort == 0 { try tcpBind(id, address: s.localAddress, port: 0) }
        guard !listenerOverlaps(s.localAddress, s.localPort, dual: s.heldDual) else { throw .addressInUse }
        s.state = .listen
        s.backlog = max(0, min(backlog, 4096))
        tcp.listeners[TCPLocalName(address: s.localAddress, port: s.localPort)] = s
        tcp.listenersOnPort[s.localPort, default: 0] += 1
    }

    /// RFC 6056 Algorithm 3 (simple hash-based): a per-destination offset into the range
    /// plus a global counter; the first port whose names are free is taken.
    func ephemeralPort(remote: IPAddress?, remotePort: UInt16, local: IPAddress = .anyIPv4) -> UInt16? {
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
