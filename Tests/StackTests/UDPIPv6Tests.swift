import Stack
import Timing
import XCTest

/// UDP over IPv6 and across the families: one UDP carries IPv6 datagrams (RFC 8200 8.1's
/// pseudo-header and mandatory checksum), an IPv6 socket bound to `::` takes IPv4 datagrams as
/// v4-mapped unless IPV6_V6ONLY (RFC 3493 3.7, 5.3), bind conflicts follow Linux across the
/// families, and ICMPv6 errors reach the sockets (RFC 4443, Linux's icmpv6_err_convert).
final class UDPIPv6Tests: XCTestCase {
    static let v6A = IPv6Address("fd00::1")!
    static let v6B = IPv6Address("fd00::2")!

    /// Two simulated stacks with IPv6 on, their addresses preferred at once (no DAD).
    private func dualStackSimulation() -> Simulation {
        Simulation { c in
            let address = c.interface.address == Simulation.addressA ? Self.v6A : Self.v6B
            var v6 = IPv6Configuration(addresses: [IPv6Interface(address: address, prefixLength: 64)])
            v6.dadTransmits = 0
            c.ipv6 = v6
        }
    }

    private func send(_ stack: NetworkStack, _ s: SocketID, to: (IPAddress, UInt16)?, _ payload: [UInt8],
                      now: Instant) throws {
        try payload.withUnsafeBytes { _ = try stack.udpSend(s, to: to.map { (address: $0.0, port: $0.1) }, $0, now: now) }
    }

    /// A UDP datagram from the peer to the stack's global address, checksum right unless given.
    private func udp6(from src: IPv6Address = Frames6.peerGlobal, to dst: IPv6Address = Frames6.stackGlobal,
                      sourcePort: UInt16 = 4000, port: UInt16, _ payload: [UInt8], checksum: UInt16? = nil,
                      trafficClass: UInt8 = 0, hopLimit: UInt8 = 64) -> [UInt8] {
        var datagram = Frames.be16(sourcePort) + Frames.be16(port) + Frames.be16(UInt16(8 + payload.count)) + [0, 0] + payload
        if let checksum {
            datagram[6] = UInt8(checksum >> 8)
            datagram[7] = UInt8(checksum & 0xFF)
        } else {
            datagram = Frames6.withChecksum(datagram, at: 6, from: src, to: dst, next: 17)
        }
        var packet = Frames6.ipv6(from: src, to: dst, next: 17, hopLimit: hopLimit, datagram)
        packet[0] |= trafficClass >> 4
        packet[1] |= trafficClass << 4
        return Frames6.frame(packet)
    }

    func testDatagramsBothWaysBetweenTwoStacks() throws {
        let sim = dualStackSimulation()
        let server = sim.a.udpOpen(family: .ipv6)
        try sim.a.udpBind(server, address: .anyIPv6, port: 5000)
        let client = sim.b.udpOpen(family: .ipv6)
        try sim.b.udpConnect(client, to: (IPAddress(Self.v6A), 5000))
        let names = try XCTUnwrap(sim.b.udpNames(client))
        XCTAssertEqual(names.local, IPAddress(Self.v6B), "the source chosen at connect")
        try send(sim.b, client, to: nil, Array("question".utf8), now: sim.now)
        var request: UDPDatagram?
        XCTAssertTrue(sim.run { request = sim.a.udpReceive(server); return request != nil })
        let q = try XCTUnwrap(request)
        XCTAssertEqual(q.source, IPAddress(Self.v6B))
        XCTAssertEqual(q.sourcePort, names.localPort)
        XCTAssertEqual(q.destination, IPAddress(Self.v6A))
        XCTAssertEqual(q.ttl, 64, "the hop limit")
        XCTAssertEqual(q.payload, Array("question".utf8))
        try send(sim.a, server, to: (q.source, q.sourcePort), Array("answer".utf8), now: sim.now)
        var reply: UDPDatagram?
        XCTAssertTrue(sim.run { reply = sim.b.udpReceive(client); return reply != nil })
        XCTAssertEqual(reply?.source, IPAddress(Self.v6A))
        XCTAssertEqual(reply?.sourcePort, 5000)
        XCTAssertEqual(reply?.payload, Array("answer".utf8))
        for stack in [sim.a, sim.b] {
            XCTAssertEqual(stack.counters.udp6InDatagrams, 1)
            XCTAssertEqual(stack.counters.udp6OutDatagrams, 1)
            XCTAssertEqual(stack.counters.udp6InCsumErrors, 0)
            XCTAssertEqual(stack.counters.udpOutDatagrams, 0, "nothing went as IPv4")
        }
    }

    func testChecksumIsMandatoryAndComputedZeroIsSentAsOnes() throws {
        let h = Harness.ipv6()
        h.learnPeer6()
        let s = h.stack.udpOpen(family: .ipv6)
        try h.stack.udpBind(s, address: nil, port: 9)
        // RFC 8200 8.1: a zero checksum is not "none" over IPv6; a wrong one is wrong.
        h.receive(udp6(port: 9, [1, 2, 3], checksum: 0))
        h.receive(udp6(port: 9, [1, 2, 3], checksum: 0x1234))
        XCTAssertNil(h.stack.udpReceive(s))
        XCTAssertEqual(h.stack.counters.udp6InCsumErrors, 2)
        XCTAssertEqual(h.stack.counters.udp6InErrors, 2)
        XCTAssertTrue(h.output().isEmpty, "no error is sent about a corrupt datagram")
        h.receive(udp6(port: 9, [1, 2, 3], trafficClass: 0xB8, hopLimit: 7))
        let d = try XCTUnwrap(h.stack.udpReceive(s))
        XCTAssertEqual(d.payload, [1, 2, 3])
        XCTAssertEqual(d.tos, 0xB8, "the traffic class")
        XCTAssertEqual(d.ttl, 7)

        // A payload whose last word makes the sum all ones: the checksum computes to zero.
        let probe = Frames6.withChecksum(Frames.be16(9) + Frames.be16(53) + Frames.be16(12) + [0, 0, 0xAB, 0xCD, 0, 0],
                                         at: 6, from: Frames6.stackGlobal, to: Frames6.peerGlobal, next: 17)
        let payload = [0xAB, 0xCD, probe[6], probe[7]]
        try send(h.stack, s, to: (IPAddress(Frames6.peerGlobal), 53), payload, now: h.now)
        let out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(out[0].nextHeader, 17)
        XCTAssertEqual(Array(out[0].payload[6...7]), [0xFF, 0xFF])
        XCTAssertTrue(out[0].checksumValid)
        XCTAssertEqual(Array(out[0].payload[8...]), payload)
    }

    func testClosedPortIsAnsweredWithPortUnreachable() throws {
        let h = Harness.ipv6()
        h.learnPeer6()
        let s = h.stack.udpOpen(family: .ipv6)
        try h.stack.udpBind(s, address: nil, port: 9)
        let frame = udp6(port: 10, [1])
        h.receive(frame)
        let out = h.output().map(Parsed6.init)
        XCTAssertEqual(out.map(\.icmpType), [1])
        XCTAssertEqual(out.first?.icmpCode, 4)
        XCTAssertEqual(out.first.map { Array($0.payload[8...]) }, Array(frame[14...]))
        XCTAssertEqual(h.stack.counters.udp6NoPorts, 1)
        XCTAssertEqual(h.stack.counters.udpNoPorts, 0)
    }

    func testDualStackSocketTakesIPv4AsMappedAndV6OnlyDoesNot() throws {
        let h = Harness.ipv6()
        h.learnPeer()
        let dual = h.stack.udpOpen(family: .ipv6)
        try h.stack.udpBind(dual, address: .anyIPv6, port: 53)
        h.receive(UDPTests.frame(UDPTests.udp(sourcePort: 4000, destinationPort: 53, [1])))
        let d = try XCTUnwrap(h.stack.udpReceive(dual))
        XCTAssertEqual(d.source.description, "10.0.0.5")
        XCTAssertEqual(d.source.bits.description, "::ffff:10.0.0.5")
        XCTAssertEqual(d.destination, IPAddress(Frames.stackIP))
        XCTAssertEqual(h.stack.counters.udpInDatagrams, 1, "an IPv4 datagram counts as IPv4's")
        XCTAssertEqual(h.stack.counters.udp6InDatagrams, 0)
        // Its answer goes back as IPv4.
        try send(h.stack, dual, to: (d.source, d.sourcePort), [2], now: h.now)
        let answer = try XCTUnwrap(h.output().first)
        XCTAssertEqual(Parsed(frame: answer).ethernetType, 0x0800)
        XCTAssertEqual(h.stack.counters.udpOutDatagrams, 1)

        let v6Only = h.stack.udpOpen(family: .ipv6)
        try h.stack.udpSetV6Only(v6Only, true)
        try h.stack.udpBind(v6Only, address: nil, port: 54)
        h.receive(UDPTests.frame(UDPTests.udp(sourcePort: 4000, destinationPort: 54, [1])))
        XCTAssertNil(h.stack.udpReceive(v6Only))
        XCTAssertEqual(h.stack.counters.udpNoPorts, 1, "answered as a closed IPv4 port")
        XCTAssertEqual(h.output().map { Parsed(frame: $0).ip[9] }, [1], "ICMP port unreachable")
        XCTAssertThrowsError(try send(h.stack, v6Only, to: (IPAddress(Frames.peerIP), 53), [1], now: h.now)) {
            XCTAssertEqual($0 as? SocketError, .networkUnreachable)
        }
        h.learnPeer6()
        h.receive(udp6(port: 54, [3]))
        XCTAssertEqual(h.stack.udpReceive(v6Only)?.payload, [3])

        // An IPv4 socket on the dual socket's port (both with SO_REUSEADDR) wins IPv4's datagrams,
        // as Linux scores an AF_INET socket above a dual-stack one.
        let shared = h.stack.udpOpen(family: .ipv6)
        h.stack.udpSetOptions(shared, reuseAddress: true)
        try h.stack.udpBind(shared, address: nil, port: 55)
        let v4 = h.stack.udpOpen()
        h.stack.udpSetOptions(v4, reuseAddress: true)
        try h.stack.udpBind(v4, address: nil, port: 55)
        h.receive(UDPTests.frame(UDPTests.udp(sourcePort: 4000, destinationPort: 55, [4])))
        h.receive(udp6(port: 55, [5]))
        XCTAssertEqual(h.stack.udpReceive(v4)?.payload, [4])
        XCTAssertEqual(h.stack.udpReceive(shared)?.payload, [5])
        XCTAssertNil(h.stack.udpReceive(shared))
    }

    func testBindConflictsAcrossFamilies() throws {
        let h = Harness.ipv6()
        let stack = h.stack
        func bind(_ family: AddressFamily, _ address: IPAddress?, _ port: UInt16, v6Only: Bool = false,
                  reuse: Bool = false) throws -> SocketID {
            let s = stack.udpOpen(family: family)
            if v6Only { try stack.udpSetV6Only(s, true) }
            stack.udpSetOptions(s, reuseAddress: reuse)
            try stack.udpBind(s, address: address, port: port)
            return s
        }
        func refused(_ family: AddressFamily, _ address: IPAddress?, _ port: UInt16, v6Only: Bool = false,
                     reuse: Bool = false, _ error: SocketError = .addressInUse, line: UInt = #line) {
            XCTAssertThrowsError(try bind(family, address, port, v6Only: v6Only, reuse: reuse), line: line) {
                XCTAssertEqual($0 as? SocketError, error, line: line)
            }
        }
        let local6 = IPAddress(Frames6.stackGlobal)
        // IPv4's any and a dual-stack :: overlap; a v6-only :: does not.
        _ = try bind(.ipv4, nil, 6000)
        refused(.ipv6, .anyIPv6, 6000)
        _ = try bind(.ipv6, .anyIPv6, 6000, v6Only: true)
        refused(.ipv6, local6, 6000)
        // A dual-stack :: overlaps IPv4 addresses too; IPv6 loopback beside IPv4's any is fine.
        _ = try bind(.ipv6, .anyIPv6, 6001)
        refused(.ipv4, IPAddress(IPv4Address(127, 0, 0, 1)), 6001)
        refused(.ipv6, IPAddress(IPv6Address.loopback), 6001)
        _ = try bind(.ipv4, nil, 6002)
        _ = try bind(.ipv6, IPAddress(IPv6Address.loopback), 6002)
        _ = try bind(.ipv6, local6, 6002)
        refused(.ipv6, local6, 6002)
        // SO_REUSEADDR on every holder shares the port across the families.
        _ = try bind(.ipv4, nil, 6003, reuse: true)
        _ = try bind(.ipv6, .anyIPv6, 6003, reuse: true)
        // An IPv6 socket binding ::ffff:0.0.0.0 holds IPv4's any.
        _ = try bind(.ipv6, .anyIPv4, 6004)
        refused(.ipv4, nil, 6004)
        _ = try bind(.ipv6, .anyIPv6, 6004, v6Only: true)
        // Families and IPV6_V6ONLY: EINVAL as Linux.
        refused(.ipv4, local6, 6005, .invalidArgument)
        refused(.ipv6, IPAddress(Frames.stackIP), 6005, v6Only: true, .invalidArgument)
        refused(.ipv6, IPAddress(IPv6Address("fd00::99")!), 6005, .addressNotAvailable)
        let bound = try bind(.ipv6, nil, 6006)
        XCTAssertThrowsError(try stack.udpSetV6Only(bound, true)) { XCTAssertEqual($0 as? SocketError, .invalidArgument) }
        XCTAssertThrowsError(try stack.udpSetV6Only(stack.udpOpen(), true)) {
            XCTAssertEqual($0 as? SocketError, .invalidArgument)
        }
        XCTAssertEqual(stack.udpNames(bound)?.local, .anyIPv6)
    }

    /// Sends one datagram from `s` to the peer's `port` (nil: to the connected peer) and returns
    /// the IPv6 packet that left.
    private func sendAndCapture(_ h: Harness, _ s: SocketID, _ payload: [UInt8], port: UInt16? = 53) throws -> [UInt8] {
        try send(h.stack, s, to: port.map { (IPAddress(Frames6.peerGlobal), $0) }, payload, now: h.now)
        let out = h.output()
        XCTAssertEqual(out.count, 1)
        return Array(try XCTUnwrap(out.first)[14...])
    }

    private func icmp6Error(type: UInt8, code: UInt8, parameter: UInt32 = 0, about packet: [UInt8]) -> [UInt8] {
        Frames6.frame(Frames6.ipv6(next: 58, Frames6.icmp6(type: type, code: code, body: Frames.be32(parameter) + packet)))
    }

    func testPortUnreachableRefusesTheConnectedSocket() throws {
        let h = Harness.ipv6()
        h.learnPeer6()
        let s = h.stack.udpOpen(family: .ipv6)
        try h.stack.udpConnect(s, to: (IPAddress(Frames6.peerGlobal), 53))
        var packet = try sendAndCapture(h, s, [1, 2])
        // Address unreachable (code 3) may be transient: a plain socket is not told.
        h.receive(icmp6Error(type: 1, code: 3, about: packet))
        XCTAssertFalse(h.stack.udpHasError(s))
        h.receive(icmp6Error(type: 1, code: 4, about: packet))
        XCTAssertEqual(h.stack.counters.icmp6InDestUnreachs, 2)
        XCTAssertTrue(h.stack.udpHasError(s))
        XCTAssertThrowsError(try send(h.stack, s, to: nil, [3], now: h.now)) {
            XCTAssertEqual($0 as? SocketError, .connectionRefused)
        }
        // An unconnected socket is not told; nor is one connected elsewhere.
        let other = h.stack.udpOpen(family: .ipv6)
        try h.stack.udpConnect(other, to: (IPAddress(Frames6.peerGlobal), 54))
        packet = try sendAndCapture(h, other, [4], port: nil)
        var quoted = packet
        quoted[43] = 53  // the quote says port 53, not the socket's peer's 54
        h.receive(icmp6Error(type: 1, code: 4, about: quoted))
        XCTAssertFalse(h.stack.udpHasError(other))
        // Administratively prohibited is EACCES (Linux's table), and fatal.
        h.receive(icmp6Error(type: 1, code: 1, about: packet))
        XCTAssertEqual(h.stack.udpTakeError(other), .permissionDenied)
        // A quote of a packet that was not ours is ignored.
        var forged = packet
        forged[8 + 15] ^= 1
        h.receive(icmp6Error(type: 1, code: 4, about: forged))
        XCTAssertFalse(h.stack.udpHasError(other))
    }

    func testErrorsReachTheErrorQueueWithICMPv6Details() throws {
        let h = Harness.ipv6()
        h.learnPeer6()
        let s = h.stack.udpOpen(family: .ipv6)
        try h.stack.udpBind(s, address: nil, port: 7000)
        h.stack.udpSetReceiveErrors(s, true)
        let packet = try sendAndCapture(h, s, Array(0..<20))
        // Unreachable from the peer, Time Exceeded from a router, a Parameter Problem quoting
        // only the UDP header and 8 bytes.
        let router = IPv6Address("fd00::1")!
        h.receive(icmp6Error(type: 1, code: 4, about: packet))
        h.receive(Frames6.frame(Frames6.ipv6(from: router, next: 58,
                                             Frames6.icmp6(type: 3, code: 0, body: [0, 0, 0, 0] + packet, from: router))))
        h.receive(icmp6Error(type: 4, code: 0, parameter: 42, about: Array(packet.prefix(56))))
        let unreachable = try XCTUnwrap(h.stack.udpTakeErrorReport(s))
        XCTAssertEqual(unreachable.error, .connectionRefused)
        XCTAssertEqual([unreachable.type, unreachable.code, unreachable.origin], [1, 4, 3])
        XCTAssertEqual(unreachable.offender, IPAddress(Frames6.peerGlobal))
        XCTAssertEqual(unreachable.destination, IPAddress(Frames6.peerGlobal))
        XCTAssertEqual(unreachable.destinationPort, 53)
        XCTAssertEqual(unreachable.payload, Array(0..<20))
        let exceeded = try XCTUnwrap(h.stack.udpTakeErrorReport(s))
        XCTAssertEqual(exceeded.error, .hostUnreachable)
        XCTAssertEqual([exceeded.type, exceeded.code], [3, 0])
        XCTAssertEqual(exceeded.offender, IPAddress(router))
        let problem = try XCTUnwrap(h.stack.udpTakeErrorReport(s))
        XCTAssertEqual(problem.error, .protocolError)
        XCTAssertEqual(problem.info, 42, "the pointer")
        XCTAssertEqual(problem.payload, Array(0..<8), "as much as was quoted")
        XCTAssertNil(h.stack.udpTakeErrorReport(s))
        XCTAssertNil(h.stack.udpTakeError(s), "an unconnected socket keeps no pending error")
    }

    func testErrorQuotingExtensionHeadersAndTCP() throws {
        let h = Harness.ipv6()
        h.learnPeer6()
        let s = h.stack.udpOpen(family: .ipv6)
        try h.stack.udpConnect(s, to: (IPAddress(Frames6.peerGlobal), 53))
        let packet = try sendAndCapture(h, s, [1])
        // The same packet as if it had carried a destination options header (PadN only).
        var withOptions = Array(packet[0..<40]) + [17, 0, 1, 4, 0, 0, 0, 0] + Array(packet[40...])
        withOptions[6] = 60
        withOptions[5] &+= 8
        h.receive(icmp6Error(type: 1, code: 4, about: withOptions))
        XCTAssertEqual(h.stack.udpTakeError(s), .connectionRefused)

        // A TCP connection opening to the peer is refused by Destination Unreachable code 4.
        let c = h.stack.tcpOpen(family: .ipv6)
        try h.stack.tcpConnect(c, to: IPAddress(Frames6.peerGlobal), port: 80, now: h.now)
        let syn = Array(try XCTUnwrap(h.output().first)[14...])
        XCTAssertEqual(syn[6], 6)
        h.receive(icmp6Error(type: 1, code: 4, about: syn))
        XCTAssertEqual(h.stack.tcpTerminalError(c), .connectionRefused)
        XCTAssertEqual(h.stack.counters.tcpICMPErrors, 1)
    }

    func testLoopbackOverIPv6() throws {
        let h = Harness.ipv6()
        let server = h.stack.udpOpen(family: .ipv6)
        try h.stack.udpBind(server, address: IPAddress(IPv6Address.loopback), port: 5353)
        let onAddress = h.stack.udpOpen(family: .ipv6)
        try h.stack.udpBind(onAddress, address: IPAddress(Frames6.stackGlobal), port: 5354)
        let client = h.stack.udpOpen(family: .ipv6)
        let big = [UInt8](repeating: 0x5A, count: 9000)
        try send(h.stack, client, to: (IPAddress(IPv6Address.loopback), 5353), big, now: h.now)
        h.stack.deliverLoopback(now: h.now)
        let request = try XCTUnwrap(h.stack.udpReceive(server))
        XCTAssertEqual(request.source, IPAddress(IPv6Address.loopback))
        XCTAssertEqual(request.payload, big, "the loopback takes what the link's MTU would refuse")
        try send(h.stack, server, to: (request.source, request.sourcePort), [1], now: h.now)
        h.stack.deliverLoopback(now: h.now)
        XCTAssertEqual(h.stack.udpReceive(client)?.sourcePort, 5353)
        try send(h.stack, client, to: (IPAddress(Frames6.stackGlobal), 5354), [2], now: h.now)
        h.stack.deliverLoopback(now: h.now)
        let d = try XCTUnwrap(h.stack.udpReceive(onAddress))
        XCTAssertEqual(d.source, IPAddress(Frames6.stackGlobal), "from our address to itself")
        XCTAssertTrue(h.output().isEmpty, "nothing left on the link")
        XCTAssertEqual(h.stack.counters.udp6InDatagrams, 3)
        XCTAssertEqual(h.stack.counters.udp6OutDatagrams, 3)
        // A socket bound to ::1 cannot reach the link; one bound to an IPv6 address, no IPv4 peer.
        XCTAssertThrowsError(try send(h.stack, server, to: (IPAddress(Frames6.peerGlobal), 53), [1], now: h.now)) {
            XCTAssertEqual($0 as? SocketError, .invalidArgument)
        }
        XCTAssertThrowsError(try send(h.stack, onAddress, to: (IPAddress(Frames.peerIP), 53), [1], now: h.now)) {
            XCTAssertEqual($0 as? SocketError, .networkUnreachable)
        }
    }

    /// Port Unreachable about a looped datagram comes back over the loopback (as from Linux's
    /// `lo`), and never solicits our own address on the link.
    func testClosedPortOverTheLoopbackRefusesTheConnectedSender() throws {
        let h = Harness.ipv6()
        for destination in [IPv6Address.loopback, Frames6.stackGlobal] {
            let c = h.stack.udpOpen(family: .ipv6)
            try h.stack.udpConnect(c, to: (IPAddress(destination), 9))
            try send(h.stack, c, to: nil, [1], now: h.now)
            h.stack.deliverLoopback(now: h.now)
            XCTAssertEqual(h.stack.udpTakeError(c), .connectionRefused, "to \(destination)")
        }
        XCTAssertTrue(h.output().isEmpty)
        XCTAssertEqual(h.stack.counters.udp6NoPorts, 2)
        XCTAssertEqual(h.stack.counters.icmp6InDestUnreachs, 2)
    }

    /// A datagram larger than the path MTU leaves in fragments (RFC 8200 4.5) that the peer
    /// reassembles into the datagram; 65527 bytes is the largest payload IPv6's 16-bit Payload
    /// Length leaves room for.
    func testLargeDatagramsLeaveInFragmentsUpToThePayloadLimit() throws {
        let h = Harness.ipv6()
        h.learnPeer6()
        let s = h.stack.udpOpen(family: .ipv6)
        let to = (IPAddress(Frames6.peerGlobal), UInt16(53))
        let payload = (0..<4000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        XCTAssertNoThrow(try send(h.stack, s, to: to, payload, now: h.now))
        let frames = h.output()
        XCTAssertEqual(frames.map { $0.count }, [14 + 1496, 14 + 1496, 14 + 1160], "1448 bytes of data per fragment, 1112 in the last")
        let peer = Harness.ipv6Peer()
        let server = peer.stack.udpOpen(family: .ipv6)
        try peer.stack.udpBind(server, address: nil, port: 53)
        for f in frames { peer.receive(f) }
        XCTAssertEqual(peer.stack.udpReceive(server)?.payload, payload)
        XCTAssertNoThrow(try send(h.stack, s, to: to, [UInt8](repeating: 1, count: 65527), now: h.now))
        XCTAssertEqual(h.output().count, 46)
        XCTAssertThrowsError(try send(h.stack, s, to: to, [UInt8](repeating: 1, count: 65528), now: h.now)) {
            XCTAssertEqual($0 as? SocketError, .messageTooLong)
        }
        XCTAssertThrowsError(try send(h.stack, s, to: (IPAddress(IPv6Address("fd01::1")!), 53), [1], now: h.now)) {
            XCTAssertEqual($0 as? SocketError, .networkUnreachable, "off-link, and no router is known")
        }
    }
}
