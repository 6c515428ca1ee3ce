import Stack
import Timing
import XCTest

/// The stack talking to itself over 127.0.0.0/8 and its own address (RFC 1122 3.2.1.3 (g)):
/// everything is delivered inside the stack, nothing is framed onto the link.
final class LoopbackTests: XCTestCase {
    static let localhost = IPv4Address(127, 0, 0, 1)

    /// Lets the stack receive what it sent itself, as the daemon's loop does, checking each
    /// time that nothing went to the link.
    private func settle(_ h: Harness, file: StaticString = #filePath, line: UInt = #line) {
        for _ in 0..<8 {
            if let deadline = h.stack.nextDeadline, deadline <= h.now {
                h.stack.poll(now: h.now)
            } else {
                h.stack.deliverLoopback(now: h.now)
            }
            XCTAssertTrue(h.output().isEmpty, "nothing looped appears in the outbox", file: file, line: line)
            if !h.stack.hasLoopbackPending { return }
        }
    }

    private func connect(_ h: Harness, listener: SocketID, to address: IPv4Address, port: UInt16,
                         file: StaticString = #filePath, line: UInt = #line) throws -> (client: SocketID, server: SocketID) {
        let client = h.stack.tcpOpen()
        try h.stack.tcpConnect(client, to: IPAddress(address), port: port, now: h.now)
        XCTAssertTrue(h.stack.hasLoopbackPending, "the SYN waits in the loopback", file: file, line: line)
        XCTAssertEqual(h.stack.nextDeadline, h.now, "and makes the stack due at once", file: file, line: line)
        settle(h, file: file, line: line)
        XCTAssertEqual(h.stack.tcpState(client), .established, file: file, line: line)
        let server = try h.stack.tcpAccept(listener)
        XCTAssertEqual(h.stack.tcpState(server), .established, file: file, line: line)
        return (client, server)
    }

    /// Moves `count` seeded bytes from `from` to `to`, checking each one.
    private func transfer(_ h: Harness, from: SocketID, to: SocketID, count: Int, seed: UInt8,
                          file: StaticString = #filePath, line: UInt = #line) throws {
        let data = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &+ $0 >> 11) }
        var sent = 0
        var received: [UInt8] = []
        received.reserveCapacity(count)
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        for _ in 0..<10_000 where received.count < count {
            let progress = (sent, received.count)
            if sent < count {
                sent += try data[sent...].withUnsafeBytes { try h.stack.tcpSend(from, $0, now: h.now) }
            }
            settle(h, file: file, line: line)
            while true {
                let n = try? buffer.withUnsafeMutableBytes { try h.stack.tcpReceive(to, into: $0, now: h.now) }
                guard let n, n > 0 else { break }
                received += buffer[0..<n]
            }
            settle(h, file: file, line: line)
            // A small last segment waits for the ACK of the rest (Nagle), which the receiver
            // delays (RFC 1122 4.2.3.2): let virtual time pass.
            if progress == (sent, received.count) {
                h.advance(milliseconds: 10)
                XCTAssertTrue(h.output().isEmpty, file: file, line: line)
            }
        }
        XCTAssertEqual(received.count, count, file: file, line: line)
        XCTAssertTrue(received == data, "byte-exact", file: file, line: line)
    }

    func testTCPOverLoopbackHandshakeDataBothWaysAndClose() throws {
        let h = Harness()
        let listener = h.stack.tcpOpen()
        try h.stack.tcpBind(listener, address: IPAddress(Self.localhost), port: 6379)
        try h.stack.tcpListen(listener, backlog: 8)
        let (client, server) = try connect(h, listener: listener, to: Self.localhost, port: 6379)
        let c = try XCTUnwrap(h.stack.tcpNames(client))
        let s = try XCTUnwrap(h.stack.tcpNames(server))
        XCTAssertEqual(c.local, IPAddress(Self.localhost))
        XCTAssertEqual(c.remote, IPAddress(Self.localhost))
        XCTAssertEqual(c.remotePort, 6379)
        XCTAssertEqual(s.local, IPAddress(Self.localhost))
        XCTAssertEqual(s.localPort, 6379)
        XCTAssertEqual(s.remote, IPAddress(Self.localhost))
        XCTAssertEqual(s.remotePort, c.localPort)

        try transfer(h, from: client, to: server, count: 1 << 20, seed: 1)
        try transfer(h, from: server, to: client, count: 1 << 20, seed: 2)

        try h.stack.tcpShutdown(client, .write, now: h.now)
        settle(h)
        XCTAssertTrue(h.stack.tcpPeerFinished(server))
        h.stack.tcpClose(server, now: h.now)
        settle(h)
        XCTAssertEqual(h.stack.tcpState(client), .timeWait)
        XCTAssertEqual(h.stack.tcpState(server), nil, "LAST-ACK acknowledged: gone")

        XCTAssertEqual(h.stack.counters.linkOutFrames, 0)
        XCTAssertEqual(h.stack.counters.arpOutRequests, 0)
        XCTAssertEqual(h.stack.counters.tcpRetransSegs, 0)
        XCTAssertEqual(h.stack.counters.loopbackQueueFull, 0)
        XCTAssertEqual(h.stack.counters.ipInHdrErrors, 0)
        XCTAssertGreaterThan(h.stack.counters.loopbackDatagrams, 0)
    }

    /// Linux's lo: MTU 65536, IPv4's 16-bit total length caps datagrams at 65535, so the SYN
    /// announces 65495 and data segments carry 65483 bytes with timestamps.
    func testLoopbackMSSIsLinuxsAndSegmentsFitIPv4() throws {
        let h = Harness()
        let listener = h.stack.tcpOpen()
        try h.stack.tcpBind(listener, port: 7000)
        try h.stack.tcpListen(listener, backlog: 8)
        let (client, server) = try connect(h, listener: listener, to: Frames.stackIP, port: 7000)
        for id in [client, server] {
            let info = try XCTUnwrap(h.stack.tcpInfo(id))
            XCTAssertEqual(info.receiveMSS, 65495)
            XCTAssertEqual(info.sendMSS, 65483)
            XCTAssertTrue(info.timestamps)
        }
        let before = try XCTUnwrap(h.stack.tcpInfo(client)).segmentsOut
        try transfer(h, from: client, to: server, count: 4 * 65483, seed: 3)
        let segments = try XCTUnwrap(h.stack.tcpInfo(client)).segmentsOut - before
        XCTAssertEqual(segments, 4, "four full-sized segments, each a 65535-byte datagram")
        XCTAssertEqual(h.stack.counters.ipFragFails, 0, "no datagram over 65535 bytes was attempted")
        XCTAssertEqual(h.stack.counters.linkOutFrames, 0)

        // A path over the link keeps the link's MSS.
        h.learnPeer()
        let remote = h.stack.tcpOpen()
        try h.stack.tcpConnect(remote, to: IPAddress(Frames.peerIP), port: 80, now: h.now)
        let syn = try XCTUnwrap(h.output().first)
        XCTAssertEqual(Parsed(frame: syn).ipSource, Frames.stackIP)
        XCTAssertEqual(h.stack.tcpInfo(remote)?.receiveMSS, 1460)
    }

    /// A full loopback queue holds the TCP sender back, as a full outbox does: nothing is
    /// dropped, nothing retransmitted, the transfer completes as the queue drains.
    func testFullLoopbackQueueHoldsTheSenderBack() throws {
        let h = Harness { $0.loopbackQueueBytes = 2 * (8 + 65536) + 64 }  // two entries of 65535-byte datagrams
        let listener = h.stack.tcpOpen()
        try h.stack.tcpBind(listener, address: IPAddress(Self.localhost), port: 9000)
        try h.stack.tcpListen(listener, backlog: 8)
        let (client, server) = try connect(h, listener: listener, to: Self.localhost, port: 9000)
        try transfer(h, from: client, to: server, count: 1 << 20, seed: 4)
        // Room for two full-sized segments, while the window (opened by the transfer) would
        // allow four.
        let data = [UInt8](repeating: 0x5A, count: 4 * 65483)
        let inFlight = try XCTUnwrap(h.stack.tcpInfo(client)).unacked
        let sent = try data.withUnsafeBytes { try h.stack.tcpSend(client, $0, now: h.now) }
        XCTAssertEqual(sent, data.count)
        XCTAssertTrue(h.stack.hasLoopbackPending)
        XCTAssertEqual(try XCTUnwrap(h.stack.tcpInfo(client)).unacked - inFlight, 2 * 65483, "held back after two segments")
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        for _ in 0..<100 where received < sent {
            settle(h)
            while let n = try? buffer.withUnsafeMutableBytes({ try h.stack.tcpReceive(server, into: $0, now: h.now) }), n > 0 {
                XCTAssertTrue(buffer[0..<n].allSatisfy { $0 == 0x5A })
                received += n
            }
        }
        XCTAssertEqual(received, sent)
        XCTAssertEqual(h.stack.counters.loopbackQueueFull, 0)
        XCTAssertEqual(h.stack.counters.tcpRetransSegs, 0)
        XCTAssertEqual(h.stack.counters.linkOutFrames, 0)
    }

    /// Source selection as Linux's routes: toward 127/8 from 127.0.0.1, toward our own
    /// address from it.
    func testSourceAddressFollowsTheDestination() throws {
        let h = Harness()
        let listener = h.stack.tcpOpen()
        try h.stack.tcpBind(listener, port: 8080)
        try h.stack.tcpListen(listener, backlog: 8)
        let (toOwn, acceptedOwn) = try connect(h, listener: listener, to: Frames.stackIP, port: 8080)
        XCTAssertEqual(h.stack.tcpNames(toOwn)?.local, IPAddress(Frames.stackIP))
        XCTAssertEqual(h.stack.tcpNames(acceptedOwn)?.remote, IPAddress(Frames.stackIP))
        let (toOther, acceptedOther) = try connect(h, listener: listener, to: IPv4Address(127, 0, 0, 2), port: 8080)
        XCTAssertEqual(h.stack.tcpNames(toOther)?.local, IPAddress(Self.localhost))
        XCTAssertEqual(h.stack.tcpNames(acceptedOther)?.local, IPAddress(IPv4Address(127, 0, 0, 2)))
        XCTAssertEqual(h.stack.tcpNames(acceptedOther)?.remote, IPAddress(Self.localhost))
        XCTAssertEqual(h.stack.tcpNames(listener)?.local, .anyIPv4)
    }

    func testBindingRulesCarryTheLocalAddress() throws {
        let h = Harness()
        func bound(_ address: IPv4Address, _ port: UInt16, reuse: Bool = false) throws -> SocketID {
            let s = h.stack.tcpOpen()
            try h.stack.tcpBind(s, address: IPAddress(address), port: port, reuseAddress: reuse)
            return s
        }
        let onLoopback = try bound(Self.localhost, 6379)
        let onInterface = try bound(Frames.stackIP, 6379)
        try h.stack.tcpListen(onLoopback, backlog: 8)
        try h.stack.tcpListen(onInterface, backlog: 8)
        XCTAssertThrowsError(try bound(.any, 6379)) { XCTAssertEqual($0 as? SocketError, .addressInUse) }
        XCTAssertThrowsError(try bound(Self.localhost, 6379, reuse: true)) { XCTAssertEqual($0 as? SocketError, .addressInUse) }
        _ = try bound(IPv4Address(127, 0, 0, 2), 6379)
        XCTAssertThrowsError(try bound(IPv4Address(10, 0, 0, 5), 6379)) {
            XCTAssertEqual($0 as? SocketError, .addressNotAvailable, "not one of ours")
        }
        XCTAssertThrowsError(try bound(IPv4Address(192, 0, 2, 1), 1)) { XCTAssertEqual($0 as? SocketError, .addressNotAvailable) }

        // Each listener gets only traffic to its own address.
        let (_, viaInterface) = try connect(h, listener: onInterface, to: Frames.stackIP, port: 6379)
        XCTAssertEqual(h.stack.tcpNames(viaInterface)?.local, IPAddress(Frames.stackIP))
        let (_, viaLoopback) = try connect(h, listener: onLoopback, to: Self.localhost, port: 6379)
        XCTAssertEqual(h.stack.tcpNames(viaLoopback)?.local, IPAddress(Self.localhost))
        XCTAssertThrowsError(try h.stack.tcpAccept(onLoopback)) { XCTAssertEqual($0 as? SocketError, .wouldBlock) }
        XCTAssertThrowsError(try h.stack.tcpAccept(onInterface)) { XCTAssertEqual($0 as? SocketError, .wouldBlock) }

        // No listener for 127.0.0.3:6379 (127.0.0.2's socket only bound): refused by RST.
        let refused = h.stack.tcpOpen()
        try h.stack.tcpConnect(refused, to: IPAddress(IPv4Address(127, 0, 0, 3)), port: 6379, now: h.now)
        settle(h)
        XCTAssertEqual(h.stack.tcpTakeError(refused), .connectionRefused)

        // SO_REUSEADDR: sockets bound to overlapping names coexist until one listens.
        let first = try bound(.any, 7000, reuse: true)
        _ = try bound(Self.localhost, 7000, reuse: true)
        try h.stack.tcpListen(first, backlog: 1)
        XCTAssertThrowsError(try bound(Frames.stackIP, 7000, reuse: true)) { XCTAssertEqual($0 as? SocketError, .addressInUse) }
        // Without it, a specific bind under a wildcard one conflicts.
        _ = try bound(.any, 7001)
        XCTAssertThrowsError(try bound(Self.localhost, 7001)) { XCTAssertEqual($0 as? SocketError, .addressInUse) }
        // Closing the listeners frees their names; the connections they made still hold
        // theirs, which SO_REUSEADDR may share.
        h.stack.tcpClose(onLoopback, now: h.now)
        h.stack.tcpClose(onInterface, now: h.now)
        XCTAssertThrowsError(try bound(Self.localhost, 6379)) { XCTAssertEqual($0 as? SocketError, .addressInUse) }
        let again = try bound(Self.localhost, 6379, reuse: true)
        try h.stack.tcpListen(again, backlog: 1)
        XCTAssertTrue(h.output().isEmpty)
    }

    /// A socket bound to a loopback address cannot reach the link (Linux: EINVAL).
    func testLoopbackSourceNeverLeaves() throws {
        let h = Harness()
        h.learnPeer()
        let s = h.stack.tcpOpen()
        try h.stack.tcpBind(s, address: IPAddress(Self.localhost), port: 0)
        XCTAssertThrowsError(try h.stack.tcpConnect(s, to: IPAddress(Frames.peerIP), port: 80, now: h.now)) {
            XCTAssertEqual($0 as? SocketError, .invalidArgument)
        }
        let u = h.stack.udpOpen()
        try h.stack.udpBind(u, address: IPAddress(Self.localhost), port: 0)
        XCTAssertThrowsError(try [1, 2].withUnsafeBytes { try h.stack.udpSend(u, to: (IPAddress(Frames.peerIP), 53), $0, now: h.now) }) {
            XCTAssertEqual($0 as? SocketError, .invalidArgument)
        }
        XCTAssertTrue(h.output().isEmpty)
    }

    func testUDPOverLoopback() throws {
        let h = Harness()
        let server = h.stack.udpOpen()
        try h.stack.udpBind(server, address: IPAddress(Self.localhost), port: 5353)
        let onInterface = h.stack.udpOpen()
        try h.stack.udpBind(onInterface, address: IPAddress(Frames.stackIP), port: 5354)
        let client = h.stack.udpOpen()
        try Array("ping".utf8).withUnsafeBytes { _ = try h.stack.udpSend(client, to: (IPAddress(Self.localhost), 5353), $0, now: h.now) }
        settle(h)
        let request = try XCTUnwrap(h.stack.udpReceive(server))
        XCTAssertEqual(request.payload, Array("ping".utf8))
        XCTAssertEqual(request.source, IPAddress(Self.localhost))
        let clientPort = try XCTUnwrap(h.stack.udpNames(client)).localPort
        XCTAssertEqual(request.sourcePort, clientPort)
        try Array("pong".utf8).withUnsafeBytes { _ = try h.stack.udpSend(server, to: (request.source, request.sourcePort), $0, now: h.now) }
        settle(h)
        let reply = try XCTUnwrap(h.stack.udpReceive(client))
        XCTAssertEqual(reply.payload, Array("pong".utf8))
        XCTAssertEqual(reply.source, IPAddress(Self.localhost))
        XCTAssertEqual(reply.sourcePort, 5353)

        // A socket bound to 10.0.0.4 does not hear what is sent to 127.0.0.1.
        try [7].withUnsafeBytes { _ = try h.stack.udpSend(client, to: (IPAddress(Self.localhost), 5354), $0, now: h.now) }
        settle(h)
        XCTAssertNil(h.stack.udpReceive(onInterface))
        XCTAssertEqual(h.stack.counters.udpNoPorts, 1)

        // A connected socket learns of nobody listening from the looped ICMP port unreachable.
        let connected = h.stack.udpOpen()
        try h.stack.udpConnect(connected, to: (IPAddress(IPv4Address(127, 0, 0, 9)), 9))
        XCTAssertEqual(h.stack.udpNames(connected)?.local, IPAddress(Self.localhost))
        try [1].withUnsafeBytes { _ = try h.stack.udpSend(connected, to: nil, $0, now: h.now) }
        settle(h)
        XCTAssertEqual(h.stack.udpTakeError(connected), .connectionRefused)
        XCTAssertEqual(h.stack.counters.icmpOutDestUnreachs, 2)
        XCTAssertEqual(h.stack.counters.linkOutFrames, 0)
    }

    /// From the link, 127/8 is a martian source and a destination that is not ours
    /// (RFC 1122 3.2.1.3 (g), RFC 1812 5.3.7): neither reaches a socket.
    func testLoopbackAddressesFromTheLinkAreDropped() throws {
        let h = Harness()
        h.learnPeer()
        let s = h.stack.udpOpen()
        try h.stack.udpBind(s, address: nil, port: 53)
        h.receive(UDPTests.frame(UDPTests.udp(from: Frames.peerIP, to: Self.localhost, sourcePort: 1, destinationPort: 53, [1]),
                                 to: Self.localhost))
        XCTAssertEqual(h.stack.counters.ipInAddrErrors, 1)
        let fromLoopback = Frames.ipv4(from: Self.localhost, proto: 17,
                                       UDPTests.udp(from: Self.localhost, sourcePort: 1, destinationPort: 53, [2]))
        h.receive(Frames.ethernet(type: 0x0800, fromLoopback))
        XCTAssertEqual(h.stack.counters.ipInMartianSources, 1)
        XCTAssertNil(h.stack.udpReceive(s))
        XCTAssertEqual(h.stack.counters.udpInDatagrams, 0)
        XCTAssertTrue(h.output().isEmpty, "no ICMP error about a martian")
    }
}
