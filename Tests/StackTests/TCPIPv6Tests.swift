import Stack
import Timing
import XCTest

/// TCP over IPv6 and across the families: the same TCP carries IPv6 segments (RFC 8200 8.1's
/// pseudo-header, RFC 8200 8.3's MSS), and an IPv6 socket bound to `::` serves IPv4 peers as
/// v4-mapped addresses unless IPV6_V6ONLY (RFC 3493 3.7 and 5.3), with Linux's bind rules.
final class TCPIPv6Tests: XCTestCase {
    static let v6A = IPv6Address("fd00::1")!
    static let v6B = IPv6Address("fd00::2")!

    /// Two simulated stacks with IPv6 on, their addresses preferred at once (no DAD).
    private func dualStackSimulation(seed: UInt64 = 1) -> Simulation {
        let sim = Simulation(seed: seed) { c in
            let address = c.interface.address == Simulation.addressA ? Self.v6A : Self.v6B
            var v6 = IPv6Configuration(addresses: [IPv6Interface(address: address, prefixLength: 64)])
            v6.dadTransmits = 0
            c.ipv6 = v6
        }
        return sim
    }

    private func listen(_ stack: NetworkStack, family: AddressFamily, address: IPAddress, port: UInt16,
                        v6Only: Bool = false) throws -> SocketID {
        let l = stack.tcpOpen(family: family)
        if v6Only { try stack.tcpSetOptions(l, now: .milliseconds(0)) { $0.v6Only = true } }
        try stack.tcpBind(l, address: address, port: port)
        try stack.tcpListen(l, backlog: 8)
        return l
    }

    /// Connects from sim.b to `address`:`port`; returns the accepted socket on sim.a.
    private func connect(_ sim: Simulation, listener: SocketID, to address: IPAddress, port: UInt16,
                         family: AddressFamily = .ipv6, file: StaticString = #filePath,
                         line: UInt = #line) throws -> (client: SocketID, server: SocketID) {
        let client = sim.b.tcpOpen(family: family)
        try sim.b.tcpConnect(client, to: address, port: port, now: sim.now)
        var server: SocketID?
        let ok = sim.run(for: 10_000) {
            if server == nil { server = try? sim.a.tcpAccept(listener) }
            return server != nil && sim.b.tcpState(client) == .established
        }
        XCTAssertTrue(ok, "handshake to \(address)", file: file, line: line)
        return (client, try XCTUnwrap(server, file: file, line: line))
    }

    func testTransferBothWaysOverIPv6UnderLoss() throws {
        let sim = dualStackSimulation(seed: 7)
        let listener = try listen(sim.a, family: .ipv6, address: .anyIPv6, port: 5000)
        let (client, server) = try connect(sim, listener: listener, to: IPAddress(Self.v6A), port: 5000)
        let c = try XCTUnwrap(sim.b.tcpNames(client))
        XCTAssertEqual(c.local, IPAddress(Self.v6B))
        XCTAssertEqual(c.remote, IPAddress(Self.v6A))
        let s = try XCTUnwrap(sim.a.tcpNames(server))
        XCTAssertEqual(s.local, IPAddress(Self.v6A))
        XCTAssertEqual(s.remote, IPAddress(Self.v6B))
        XCTAssertEqual(s.remotePort, c.localPort)
        // 1500 less 40 (IPv6), 20 (TCP) and 12 (timestamps), where IPv4 sends 1448.
        XCTAssertEqual(sim.b.tcpInfo(client)?.sendMSS, 1428)

        sim.faults = Faults(loss: 0.02)
        let bytes = 600_000
        let up = Transfer(sim: sim, sender: sim.b, senderSocket: client, receiver: sim.a, receiverSocket: server,
                          total: bytes, seed: 11)
        let down = Transfer(sim: sim, sender: sim.a, senderSocket: server, receiver: sim.b, receiverSocket: client,
                            total: bytes, seed: 12)
        XCTAssertTrue(sim.run(for: 600_000) {
            up.pump()
            down.pump()
            return up.done && down.done
        })
        XCTAssertNil(up.mismatch)
        XCTAssertNil(down.mismatch)
        XCTAssertGreaterThan(sim.b.counters.tcpRetransSegs + sim.a.counters.tcpRetransSegs, 0, "the loss was recovered from")
        XCTAssertGreaterThan(sim.a.counters.ip6InDelivers, 400, "the segments travelled as IPv6")
        XCTAssertEqual(sim.a.counters.tcpInCsumErrors, 0)
    }

    func testDualStackListenerServesIPv4PeersAsMapped() throws {
        let sim = dualStackSimulation()
        let listener = try listen(sim.a, family: .ipv6, address: .anyIPv6, port: 80)
        let (_, viaV4) = try connect(sim, listener: listener, to: IPAddress(Simulation.addressA), port: 80, family: .ipv4)
        let names = try XCTUnwrap(sim.a.tcpNames(viaV4))
        XCTAssertEqual(names.remote, IPAddress(Simulation.addressB))
        XCTAssertEqual(names.remote.bits, IPv6Address("::ffff:10.0.0.2")!, "an IPv4 peer, v4-mapped")
        XCTAssertEqual(names.local.v4, Simulation.addressA)
        let (_, viaV6) = try connect(sim, listener: listener, to: IPAddress(Self.v6A), port: 80)
        XCTAssertEqual(sim.a.tcpNames(viaV6)?.remote, IPAddress(Self.v6B))

        // An IPv6 client socket reaches an IPv4 server through a v4-mapped address.
        let v4Listener = try listen(sim.a, family: .ipv4, address: .anyIPv4, port: 81)
        let (mappedClient, _) = try connect(sim, listener: v4Listener, to: IPAddress(IPv6Address("::ffff:10.0.0.1")!),
                                            port: 81)
        XCTAssertEqual(sim.b.tcpNames(mappedClient)?.local, IPAddress(Simulation.addressB))
    }

    func testV6OnlyListenerRefusesIPv4() throws {
        let sim = dualStackSimulation()
        let listener = try listen(sim.a, family: .ipv6, address: .anyIPv6, port: 80, v6Only: true)
        let v4 = sim.b.tcpOpen()
        try sim.b.tcpConnect(v4, to: IPAddress(Simulation.addressA), port: 80, now: sim.now)
        XCTAssertTrue(sim.run(for: 5_000) { sim.b.tcpState(v4) == .closed })
        XCTAssertEqual(sim.b.tcpTakeError(v4), .connectionRefused, "nobody listens on IPv4's side of port 80")
        _ = try connect(sim, listener: listener, to: IPAddress(Self.v6A), port: 80)

        // An IPv6-only socket cannot reach an IPv4 peer; an IPv4 socket cannot name an IPv6 one.
        let only = sim.b.tcpOpen(family: .ipv6)
        try sim.b.tcpSetOptions(only, now: sim.now) { $0.v6Only = true }
        XCTAssertThrowsError(try sim.b.tcpConnect(only, to: IPAddress(Simulation.addressA), port: 80, now: sim.now)) {
            XCTAssertEqual($0 as? SocketError, .networkUnreachable)
        }
        XCTAssertThrowsError(try sim.b.tcpConnect(sim.b.tcpOpen(), to: IPAddress(Self.v6A), port: 80, now: sim.now)) {
            XCTAssertEqual($0 as? SocketError, .invalidArgument)
        }
        // And the option is fixed once bound.
        XCTAssertThrowsError(try sim.a.tcpSetOptions(listener, now: sim.now) { $0.v6Only = false }) {
            XCTAssertEqual($0 as? SocketError, .invalidArgument)
        }
    }

    func testBindConflictsAcrossFamilies() throws {
        let sim = dualStackSimulation()
        let stack = sim.a
        func bind(_ family: AddressFamily, _ address: IPAddress, _ port: UInt16, v6Only: Bool = false) throws {
            let s = stack.tcpOpen(family: family)
            if v6Only { try stack.tcpSetOptions(s, now: sim.now) { $0.v6Only = true } }
            try stack.tcpBind(s, address: address, port: port)
        }
        func inUse(_ body: @autoclosure () throws -> Void, _ message: String) {
            XCTAssertThrowsError(try body(), message) { XCTAssertEqual($0 as? SocketError, .addressInUse, message) }
        }
        // A dual-stack `::` holds the port for both families.
        try bind(.ipv6, .anyIPv6, 80)
        inUse(try bind(.ipv4, .anyIPv4, 80), "0.0.0.0 after dual ::")
        inUse(try bind(.ipv4, IPAddress(Simulation.addressA), 80), "10.0.0.1 after dual ::")
        inUse(try bind(.ipv6, IPAddress(Self.v6A), 80), "fd00::1 after ::")
        // A v6-only one leaves IPv4's names free, and IPv4's any leaves IPv6's free.
        try bind(.ipv6, .anyIPv6, 81, v6Only: true)
        try bind(.ipv4, .anyIPv4, 81)
        inUse(try bind(.ipv6, .anyIPv6, 81), "dual :: over 0.0.0.0")
        try bind(.ipv4, .anyIPv4, 82)
        try bind(.ipv6, IPAddress(Self.v6A), 82)
        inUse(try bind(.ipv6, .anyIPv6, 82), "dual :: over both")
        // Addresses that are not ours, and IPv4 addresses on an IPv4 socket only.
        XCTAssertThrowsError(try bind(.ipv6, IPAddress(IPv6Address("fd00::99")!), 83)) {
            XCTAssertEqual($0 as? SocketError, .addressNotAvailable)
        }
        XCTAssertThrowsError(try bind(.ipv4, IPAddress(Self.v6A), 83)) { XCTAssertEqual($0 as? SocketError, .invalidArgument) }
    }

    func testConnectFailsWhenNeighbourDiscoveryGetsNoAnswer() throws {
        let sim = dualStackSimulation()
        let client = sim.b.tcpOpen(family: .ipv6)
        try sim.b.tcpConnect(client, to: IPAddress(IPv6Address("fd00::99")!), port: 80, now: sim.now)
        let started = sim.now
        XCTAssertTrue(sim.run(for: 10_000) { sim.b.tcpState(client) == .closed })
        XCTAssertEqual(sim.b.tcpTakeError(client), .hostUnreachable, "RFC 4861 7.2.2's failure, as Linux reports it")
        XCTAssertGreaterThanOrEqual(sim.now.nanoseconds(since: started), 3_000_000_000, "after three solicitations")
        XCTAssertEqual(sim.b.counters.ndp6ResolutionFailures, 1)
    }

    /// RFC 8201 5.4: a Packet Too Big about one of our segments shrinks the connection's MSS
    /// and what was in flight is sent again in segments that fit, and the transfer completes.
    func testPacketTooBigShrinksTheMSSAndResendsTheFlight() throws {
        let sim = dualStackSimulation(seed: 5)
        let listener = try listen(sim.a, family: .ipv6, address: .anyIPv6, port: 5000)
        let (client, server) = try connect(sim, listener: listener, to: IPAddress(Self.v6A), port: 5000)
        let up = Transfer(sim: sim, sender: sim.b, senderSocket: client, receiver: sim.a, receiverSocket: server,
                          total: 1_000_000, seed: 9)
        up.pump()
        XCTAssertGreaterThan(sim.b.tcpInfo(client)?.unacked ?? 0, 0, "a flight is out")
        XCTAssertEqual(sim.b.tcpInfo(client)?.sendMSS, 1428)
        // What a router on the path would quote: the start of one of our full-sized segments.
        let quoted = Frames6.ipv6(from: Self.v6B, to: Self.v6A, next: 6, payloadLength: 1460,
                                  [UInt8](repeating: 0, count: 48))
        let tooBig = Frames6.frame(to: MACAddress(derivedFrom: Simulation.addressB),
                                   from: MACAddress(derivedFrom: Simulation.addressA),
                                   Frames6.ipv6(from: Self.v6A, to: Self.v6B, next: 58,
                                                Frames6.icmp6(type: 2, body: Frames.be32(1280) + quoted,
                                                              from: Self.v6A, to: Self.v6B)))
        // Frames already framed in the outbox still leave whole; what is sent from one round
        // trip later on fits.
        let settled = sim.now.adding(nanoseconds: 1_000_000)
        var largest = 0
        sim.wire.onDeliver = { towardA, frame in
            if towardA && sim.now > settled { largest = max(largest, frame.count) }
        }
        tooBig.withUnsafeBytes { sim.b.receive(frame: $0, checksumVerified: false, now: sim.now) }
        XCTAssertEqual(sim.b.pathMTU(toward: Self.v6A), 1280)
        XCTAssertEqual(sim.b.tcpInfo(client)?.sendMSS, 1280 - 60 - 12)
        XCTAssertEqual(sim.b.counters.tcpPathMTURetransmits, 1)
        XCTAssertTrue(sim.run(for: 100_000) {
            up.pump()
            return up.done
        })
        XCTAssertNil(up.mismatch)
        XCTAssertEqual(largest, 14 + 1280, "every frame sent after the message fits the path")
    }

    func testLoopbackOverIPv6() throws {
        let sim = dualStackSimulation()
        let stack = sim.a
        let loopback = IPAddress(IPv6Address.loopback)
        let listener = try listen(stack, family: .ipv6, address: loopback, port: 6379)
        let client = stack.tcpOpen(family: .ipv6)
        try stack.tcpConnect(client, to: loopback, port: 6379, now: sim.now)
        let framesBefore = stack.counters.linkOutFrames
        var server: SocketID?
        XCTAssertTrue(sim.run(for: 1_000) {
            if server == nil { server = try? stack.tcpAccept(listener) }
            return server != nil && stack.tcpState(client) == .established
        })
        let accepted = try XCTUnwrap(server)
        XCTAssertEqual(stack.tcpNames(client)?.local, loopback)
        XCTAssertEqual(stack.tcpNames(accepted)?.remote, loopback)
        // The loopback's MTU: 65536 less 40, 20 and 12.
        XCTAssertEqual(stack.tcpInfo(client)?.sendMSS, 65464)
        let message: [UInt8] = Array("over ::1".utf8)
        _ = try message.withUnsafeBytes { try stack.tcpSend(client, $0, now: sim.now) }
        var got = [UInt8](repeating: 0, count: 64)
        var n = 0
        XCTAssertTrue(sim.run(for: 1_000) {
            n = (try? got.withUnsafeMutableBytes { try stack.tcpReceive(accepted, into: $0, now: sim.now) }) ?? 0
            return n > 0
        })
        XCTAssertEqual(Array(got[0..<n]), message)
        XCTAssertEqual(stack.counters.linkOutFrames, framesBefore, "nothing left for the link")
        // Our own global address goes through the loopback too; it is refused while not ours.
        let own = stack.tcpOpen(family: .ipv6)
        try stack.tcpConnect(own, to: IPAddress(Self.v6A), port: 6379, now: sim.now)
        XCTAssertTrue(sim.run(for: 1_000) { stack.tcpState(own) == .closed })
        XCTAssertEqual(stack.tcpTakeError(own), .connectionRefused, "the listener is on ::1 only")
    }
}

/// TCP segmentation and checksum offload for IPv6 super-segments (VIRTIO_NET_HDR_GSO_TCPV6).
final class TCPIPv6OffloadTests: XCTestCase {
    func testSuperSegmentsOverIPv6AreCutAndChecksummedLikeIPv4s() throws {
        let sim = Simulation(seed: 3) { c in
            let address = c.interface.address == Simulation.addressA ? TCPIPv6Tests.v6A : TCPIPv6Tests.v6B
            var v6 = IPv6Configuration(addresses: [IPv6Interface(address: address, prefixLength: 64)])
            v6.dadTransmits = 0
            c.ipv6 = v6
            c.offload = OutputOffload(checksum: true, tcpSegmentation: true)
        }
        let listener = sim.a.tcpOpen(family: .ipv6)
        try sim.a.tcpBind(listener, address: .anyIPv6, port: 5000)
        try sim.a.tcpListen(listener, backlog: 4)
        let client = sim.b.tcpOpen(family: .ipv6)
        try sim.b.tcpConnect(client, to: IPAddress(TCPIPv6Tests.v6A), port: 5000, now: sim.now)
        var server: SocketID?
        XCTAssertTrue(sim.run(for: 10_000) {
            if server == nil { server = try? sim.a.tcpAccept(listener) }
            return server != nil && sim.b.tcpState(client) == .established
        })
        let framesBefore = sim.b.counters.linkOutFrames
        let segmentsBefore = sim.b.counters.tcpOutSegs
        let up = Transfer(sim: sim, sender: sim.b, senderSocket: client, receiver: sim.a,
                          receiverSocket: try XCTUnwrap(server), total: 2_000_000, seed: 5)
        XCTAssertTrue(sim.run(for: 100_000) {
            up.pump()
            return up.done
        })
        XCTAssertNil(up.mismatch)
        let frames = sim.b.counters.linkOutFrames - framesBefore
        let segments = sim.b.counters.tcpOutSegs - segmentsBefore
        XCTAssertLessThan(frames * 4, segments, "super-segments: \(frames) frames for \(segments) segments")
        XCTAssertEqual(sim.a.counters.tcpInCsumErrors, 0, "the software completion's checksums are right")
        XCTAssertEqual(sim.a.counters.ip6InHdrErrors, 0)
    }

    func testTheVirtioHeaderSaysTCPV6() {
        // Ethernet, a 40-byte IPv6 header, a TCP header of 32 bytes (data offset 8), data.
        var frame = [UInt8](repeating: 0, count: 14 + 40 + 32 + 3000)
        frame[14] = 0x60
        frame[14 + 40 + 12] = 8 << 4
        let offload = FrameOffload(segmentSize: 1428, checksumStart: 54, checksumOffset: 16)
        var header = [UInt8](repeating: 0xEE, count: 10)
        header.withUnsafeMutableBytes { h in frame.withUnsafeBytes { offload.writeVirtioHeader(into: h, frame: $0) } }
        XCTAssertEqual(header, [1, 4, 86, 0, 0x94, 0x05, 54, 0, 16, 0],
                       "NEEDS_CSUM, GSO_TCPV6, hdr_len 86, gso_size 1428, csum_start 54, csum_offset 16")
    }
}
