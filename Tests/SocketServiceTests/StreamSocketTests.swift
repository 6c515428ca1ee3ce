import CLinux
import Glibc
import IPCServer
import Stack
import XCTest

/// Stream sockets through the service: connect, listen and accept, data both ways through the
/// pairs, shutdown and end of stream, reset and refusal.
final class StreamSocketTests: XCTestCase {
    let payload = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }

    func testAcceptHandsTheConnectionOverWithItsNamesAndCarriesDataBothWays() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let (_, record, socket, peer) = try client.acceptFromPeer()
        XCTAssertEqual(record.magic, LVLIP_ACCEPT_MAGIC)
        XCTAssertEqual(record.local.ipAddress, IPAddress(ServiceHarness.address))
        XCTAssertEqual(record.local.port, 8080)
        XCTAssertEqual(record.peer.ipAddress, IPAddress(ServiceHarness.peerAddress))
        XCTAssertEqual(record.peer.port, h.peer.tcpNames(peer)?.localPort)
        XCTAssertEqual(h.service.counters.socketsAccepted, 1)
        // The record's handle names the connection.
        XCTAssertEqual(client.name(socket, peer: true).addr.ipAddress, IPAddress(ServiceHarness.peerAddress))

        // Application to peer, then peer to application, each larger than one write's worth.
        var written = 0
        var received: [UInt8] = []
        XCTAssertTrue(h.run {
            if written < payload.count { written += max(0, appWrite(socket.fd, Array(payload[written...]))) }
            received += h.peerReceive(peer)
            return received.count == payload.count
        })
        XCTAssertEqual(received, payload)
        var sent = 0
        var read: [UInt8] = []
        XCTAssertTrue(h.run {
            if sent < payload.count { sent += h.peerSend(peer, Array(payload[sent...])) }
            read += appReadAll(socket.fd)
            return read.count == payload.count
        })
        XCTAssertEqual(read, payload)
        XCTAssertEqual(h.service.counters.appBytesIn, UInt64(payload.count))
        XCTAssertEqual(h.service.counters.appBytesOut, UInt64(payload.count))
    }

    /// Received data waits in the application's end beyond the kernel's default send buffer
    /// of lvlipd's end (212,992 bytes): the first push that fills the end raises it.
    func testReceivedDataWaitsInTheApplicationsEndBeyondTheDefaultBuffer() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let (_, _, socket, peer) = try client.acceptFromPeer()
        let big = [UInt8](repeating: 0x5a, count: 600_000)
        var sent = 0
        var waiting: Int32 = 0
        XCTAssertTrue(h.run {
            if sent < big.count { sent += h.peerSend(peer, Array(big[sent...])) }
            _ = ioctl(socket.fd, UInt(FIONREAD), &waiting)
            return waiting >= 500_000
        }, "\(waiting) bytes waiting in the application's end")
        let got = appReadAll(socket.fd)
        XCTAssertGreaterThanOrEqual(got.count, 500_000)
        XCTAssertTrue(got.allSatisfy { $0 == 0x5a })
    }

    /// Large in-order segments go from the frame into the pair without the ring while the
    /// application keeps up; while it does not (the pair full), the ring holds what arrives,
    /// and what the application reads is the stream, in order, either way.
    func testDataTakenStraightIntoThePairAndThroughTheRingKeepsItsOrder() throws {
        let h = try ServiceHarness { $0.tcp.directDeliveryMinimum = 1000 }
        let client = ShimClient(h)
        let (_, _, socket, peer) = try client.acceptFromPeer()
        let big = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }
        var sent = 0
        func send() -> Int {
            let n = sent < big.count ? h.peerSend(peer, Array(big[sent..<min(sent + 256 * 1024, big.count)])) : 0
            sent += n
            return n
        }
        // The application does not read until the peer can send no more: the pair, then
        // the ring, are full.
        var idle = 0
        var pushed = UInt64(0)
        XCTAssertTrue(h.run {
            _ = send()
            idle = h.service.counters.appBytesOut == pushed ? idle + 1 : 0
            pushed = h.service.counters.appBytesOut
            return idle >= 20
        })
        XCTAssertGreaterThan(h.stack.counters.tcpDirectBytes, 0)
        XCTAssertLessThan(pushed, UInt64(big.count), "the pair took everything")
        var read: [UInt8] = []
        XCTAssertTrue(h.run(seconds: 20) {
            _ = send()
            read += appReadAll(socket.fd)
            return read.count == big.count
        }, "\(read.count) of \(big.count) bytes read")
        XCTAssertTrue(read == big, "the bytes read are not the bytes sent")
        let direct = h.stack.counters.tcpDirectBytes
        XCTAssertGreaterThan(direct, 0)
        XCTAssertLessThan(direct, UInt64(big.count), "the ring carried nothing: the test did not fill the pair")
        XCTAssertEqual(h.service.counters.appBytesOut, UInt64(big.count))
    }

    func testConnectConsumesTheFillerWhenTheHandshakeCompletes() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let listener = h.peer.tcpOpen()
        try h.peer.tcpBind(listener, port: 9000)
        try h.peer.tcpListen(listener, backlog: 4)
        let s = client.open()
        let (result, local) = client.connect(s, ServiceHarness.peerAddress, 9000, filler: 100)
        XCTAssertEqual(result, -EINPROGRESS)
        XCTAssertEqual(local.ipAddress, IPAddress(ServiceHarness.address))
        var child: SocketID?
        XCTAssertTrue(h.run { child = try? h.peer.tcpAccept(listener); return child != nil })
        h.settle()
        // A second connect reports the completion once, then EISCONN.
        XCTAssertEqual(client.connect(s, ServiceHarness.peerAddress, 9000).result, 0)
        XCTAssertEqual(client.connect(s, ServiceHarness.peerAddress, 9000).result, -EISCONN)
        appWrite(s.fd, Array("hello".utf8))
        var received: [UInt8] = []
        XCTAssertTrue(h.run { received += h.peerReceive(child!); return received.count >= 5 })
        h.settle()
        received += h.peerReceive(child!)
        // The filler never reached the peer.
        XCTAssertEqual(received, Array("hello".utf8))
    }

    /// A blocking connect (LVLIP_CONNECT_WAITS) whose handshake completes within the wake-up
    /// is answered 0, with the filler taken; the next connect says
    /// EISCONN, as after a blocking connect that succeeded. Without the flag the answer stays
    /// -EINPROGRESS (a non-blocking connect), and to a peer that does not answer, too.
    func testWaitingConnectIsAnsweredEstablishedWhenTheHandshakeIsOver() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        _ = try h.peerListen(port: 9000)
        let s = client.open()
        let changes = h.reactor.interestChanges
        let (result, local) = client.connect(s, ServiceHarness.peerAddress, 9000, filler: 100, waits: true)
        XCTAssertEqual(result, 0)
        // Watched from the start for what a connected stream waits for: no epoll_ctl MOD.
        XCTAssertEqual(h.reactor.interestChanges, changes)
        XCTAssertEqual(local.ipAddress, IPAddress(ServiceHarness.address))
        XCTAssertEqual(unread(s.fd), 0, "the filler was taken")
        XCTAssertEqual(client.connect(s, ServiceHarness.peerAddress, 9000).result, -EISCONN)

        let other = client.open()
        XCTAssertEqual(client.connect(other, ServiceHarness.peerAddress, 9000, filler: 100).result, -EINPROGRESS)

        // Nobody answers (no host at the address): in progress, the filler in place.
        let lonely = client.open()
        XCTAssertEqual(client.connect(lonely, IPv4Address(10, 0, 0, 9), 9000, filler: 100, waits: true).result, -EINPROGRESS)
        XCTAssertGreaterThan(unread(lonely.fd), 0, "the filler waits with the handshake")
        // Reported readable once (the new stream is watched for reading), then watched for
        // its hang-up only (one epoll_ctl): the filler stays unread.
        let changesBefore = h.reactor.interestChanges
        h.settle()
        XCTAssertGreaterThan(unread(lonely.fd), 0, "still unread after the pair was reported readable")
        XCTAssertEqual(h.reactor.interestChanges, changesBefore + 1)
    }

    /// The shim's blocking connect sends no filler: answered 0 at once when the handshake
    /// completes within the request, with nothing to take. Otherwise -EINPROGRESS, and the
    /// pair stays unread, even once connected, until the shim says how much filler it wrote
    /// since (LVLIP_CONNECT_FILLER): then the filler is taken and what follows is data.
    func testWaitingConnectWithoutFillerLeavesThePairUnreadUntilTheFillerIsTold() throws {
        let filler = UInt32(LVLIP_CONNECT_FILLER)
        do {
            let h = try ServiceHarness()
            let client = ShimClient(h)
            let listener = try h.peerListen(port: 9000)
            let s = client.open()
            XCTAssertEqual(client.connect(s, ServiceHarness.peerAddress, 9000, waits: true).result, 0)
            var child: SocketID?
            XCTAssertTrue(h.run { child = try? h.peer.tcpAccept(listener); return child != nil })
            XCTAssertEqual(appWrite(s.fd, Array("at once".utf8)), 7)
            var received: [UInt8] = []
            XCTAssertTrue(h.run { received += h.peerReceive(child!); return received.count >= 7 })
            XCTAssertEqual(received, Array("at once".utf8))
        }

        // 20 ms each way: the handshake outlives the request.
        let h = try ServiceHarness(wireDelayMicroseconds: 20_000)
        let client = ShimClient(h)
        let listener = try h.peerListen(port: 9000)
        let s = client.open()
        XCTAssertEqual(client.connect(s, ServiceHarness.peerAddress, 9000, waits: true).result, -EINPROGRESS)
        // The shim writes its filler after the answer; the handshake completes before it tells.
        XCTAssertEqual(appWrite(s.fd, [UInt8](repeating: 0xFF, count: 100)), 100)
        var child: SocketID?
        XCTAssertTrue(h.run { child = try? h.peer.tcpAccept(listener); return child != nil })
        h.settle()
        XCTAssertGreaterThan(unread(s.fd), 0, "connected, and the filler still unread")
        XCTAssertEqual(client.tellFiller(s, ServiceHarness.peerAddress, 9000, count: 100), 0)
        XCTAssertEqual(unread(s.fd), 0, "the filler taken")
        XCTAssertEqual(client.connect(s, ServiceHarness.peerAddress, 9000).result, -EISCONN)
        XCTAssertEqual(appWrite(s.fd, Array("hello".utf8)), 5)
        var received: [UInt8] = []
        XCTAssertTrue(h.run { received += h.peerReceive(child!); return received.count >= 5 })
        h.settle()
        received += h.peerReceive(child!)
        XCTAssertEqual(received, Array("hello".utf8), "the filler never reached the peer")

        // Told while the handshake is still under way: the filler waits with it, as a
        // non-blocking connect's does.
        let early = client.open()
        XCTAssertEqual(client.connect(early, ServiceHarness.peerAddress, 9000, waits: true).result, -EINPROGRESS)
        XCTAssertEqual(client.connect(early, ServiceHarness.peerAddress, 9000, filler: 100, flags: filler).result, -EINPROGRESS)
        var second: SocketID?
        XCTAssertTrue(h.run { second = try? h.peer.tcpAccept(listener); return second != nil })
        XCTAssertTrue(h.run { unread(early.fd) == 0 }, "the filler taken once connected")
        XCTAssertEqual(client.connect(early, ServiceHarness.peerAddress, 9000).result, 0)

        // Not awaited: on a socket that never connected, refused and taken back; on a
        // connected one, a connect's answer.
        let fresh = client.open()
        XCTAssertEqual(client.connect(fresh, ServiceHarness.peerAddress, 9000, filler: 100, flags: filler).result, -EINVAL)
        XCTAssertEqual(unread(fresh.fd), 0)
        XCTAssertEqual(client.connect(s, ServiceHarness.peerAddress, 9000, filler: 100, flags: filler).result, -EISCONN)
        XCTAssertEqual(unread(s.fd), 0)
    }

    /// What the application's end has written that lvlipd has not read (SIOCOUTQ: the write
    /// memory still held, 0 once all is read).
    private func unread(_ fd: Int32) -> Int32 {
        var n: Int32 = -1
        _ = ioctl(fd, UInt(TIOCOUTQ), &n)
        return n
    }

    func testLoopbackConnectionThroughTwoPairsOfOneService() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let listener = client.open()
        XCTAssertEqual(client.bind(listener, IPv4Address(127, 0, 0, 1), 7000), 0)
        XCTAssertEqual(client.listen(listener), 0)
        let s = client.open()
        XCTAssertEqual(client.connect(s, IPv4Address(127, 0, 0, 1), 7000).result, -EINPROGRESS)
        var accepted: (record: lvlip_accept_record, socket: ShimSocket)?
        XCTAssertTrue(h.run { accepted = client.accept(listener); return accepted != nil })
        let server = try XCTUnwrap(accepted).socket
        appWrite(s.fd, Array("ping".utf8))
        var got: [UInt8] = []
        XCTAssertTrue(h.run { got += appReadAll(server.fd); return got.count == 4 })
        appWrite(server.fd, Array("pong".utf8))
        var back: [UInt8] = []
        XCTAssertTrue(h.run { back += appReadAll(s.fd); return back.count == 4 })
        XCTAssertEqual(got, Array("ping".utf8))
        XCTAssertEqual(back, Array("pong".utf8))
    }

    func testShutdownSendsFinAfterTheDataAndPeerFinIsEndOfStream() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let (_, _, socket, peer) = try client.acceptFromPeer()
        appWrite(socket.fd, Array("last words".utf8))
        XCTAssertEqual(client.shutdown(socket, Int32(SHUT_WR)), 0)
        var received: [UInt8] = []
        XCTAssertTrue(h.run { received += h.peerReceive(peer); return h.peerSawEnd(peer) })
        XCTAssertEqual(received, Array("last words".utf8))
        // The peer's FIN: end of stream after its data, and the connection's names stay.
        _ = h.peerSend(peer, Array("bye".utf8))
        try h.peer.tcpShutdown(peer, .write, now: h.now)
        var read: [UInt8] = []
        var ended = false
        XCTAssertTrue(h.run {
            switch appRead(socket.fd) {
            case .bytes(let b): read += b
            case .end: ended = true
            case .error: break
            }
            return ended
        })
        XCTAssertEqual(read, Array("bye".utf8))
        XCTAssertEqual(client.status(socket, LVLIP_STATUS_READ_END), 0)
        XCTAssertEqual(client.shutdown(socket, 7), -EINVAL)
    }

    func testResetClosesThePairAndReportsECONNRESET() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let (_, _, socket, peer) = try client.acceptFromPeer()
        h.peer.tcpAbort(peer, now: h.now)
        XCTAssertTrue(h.run { appRead(socket.fd) == .end })
        // The shim asks why the stream ended; SO_ERROR was taken with it.
        XCTAssertEqual(client.status(socket, LVLIP_STATUS_READ_END), -ECONNRESET)
        XCTAssertEqual(client.intOption(socket, 1, 4), 0)  // SOL_SOCKET, SO_ERROR
        let written = appWrite(socket.fd, [1])
        let error = errno
        XCTAssertEqual(written, -1)
        XCTAssertEqual(error, EPIPE)
    }

    func testResetIsTheSocketErrorOnce() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let (_, _, socket, peer) = try client.acceptFromPeer()
        h.peer.tcpAbort(peer, now: h.now)
        XCTAssertTrue(h.run { appRead(socket.fd) == .end })
        XCTAssertEqual(client.intOption(socket, 1, 4), ECONNRESET)
        XCTAssertEqual(client.intOption(socket, 1, 4), 0)
        XCTAssertEqual(client.status(socket, LVLIP_STATUS_WRITE_END), -EPIPE)
    }

    func testRefusedConnectEndsThePairAndTheNextConnectSaysWhy() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let s = client.open()
        XCTAssertEqual(client.connect(s, ServiceHarness.peerAddress, 9999, filler: 10).result, -EINPROGRESS)
        XCTAssertTrue(h.run { appRead(s.fd) != .error(EAGAIN) })
        XCTAssertEqual(client.connect(s, ServiceHarness.peerAddress, 9999).result, -ECONNREFUSED)
        XCTAssertEqual(client.connect(s, ServiceHarness.peerAddress, 9999).result, -ECONNABORTED)
        // TCP_INFO of the tombstone: the state the connection ended in (CLOSE).
        XCTAssertEqual(client.getOption(s, 6, 11, room: 1).value, [7])
    }

    func testApplicationCloseSendsFinAfterWhatItWrote() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let (_, _, socket, peer) = try client.acceptFromPeer()
        appWrite(socket.fd, Array("goodbye".utf8))
        client.close(socket)
        var received: [UInt8] = []
        XCTAssertTrue(h.run { received += h.peerReceive(peer); return h.peerSawEnd(peer) })
        XCTAssertEqual(received, Array("goodbye".utf8))
        XCTAssertEqual(h.service.counters.socketsClosedByApp, 1)
        // The record is gone: its handle is refused.
        XCTAssertEqual(client.name(socket, peer: false).result, -EBADF)
    }

    func testApplicationCloseWithUnreadDataResets() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let (_, _, socket, peer) = try client.acceptFromPeer()
        _ = h.peerSend(peer, Array("unread".utf8))
        XCTAssertTrue(h.run { (pending(socket.fd) ?? 0) > 0 })
        client.close(socket)
        XCTAssertTrue(h.run { h.peer.tcpTerminalError(peer) != nil })
        XCTAssertEqual(h.peer.tcpTerminalError(peer), .connectionReset)
    }

    func testListenerTakesNoConnectAndNoBind() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let listener = client.open()
        XCTAssertEqual(client.listen(listener), 0)
        XCTAssertEqual(client.connect(listener, ServiceHarness.peerAddress, 80).result, -EISCONN)
        XCTAssertEqual(client.bind(listener, .any, 81), -EINVAL)
        XCTAssertEqual(client.shutdown(listener, Int32(SHUT_RDWR)), -ENOTCONN)
        XCTAssertEqual(client.name(listener, peer: true).result, -ENOTCONN)
        // Listening again changes the backlog only.
        XCTAssertEqual(client.listen(listener, backlog: 4), 0)
        XCTAssertEqual(client.identify(listener.fd).state, LVLIP_STATE_LISTENING.rawValue)
    }

    /// The shim lets a TCP_NODELAY wait past a first write of at most LVLIP_MIN_MSS bytes
    /// (one segment, which Nagle's algorithm cannot hold back): the stack's floor must be it.
    func testTheShimsOneSegmentWriteIsTheStacksSmallestMSS() {
        XCTAssertEqual(Int(LVLIP_MIN_MSS), TCPConfiguration.minimumMSS)
    }
}

/// Bytes waiting to be read at `fd` (FIONREAD).
func pending(_ fd: Int32) -> Int? {
    var count: Int32 = 0
    return ioctl(fd, UInt(FIONREAD), &count) == 0 ? Int(count) : nil
}
