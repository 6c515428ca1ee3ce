import CLinux
import Glibc
import IPCServer
import Stack
import XCTest

/// Datagram sockets through the service: one message per datagram in a SOCK_SEQPACKET pair,
/// each led by a `lvlip_dgram_header`.
final class DatagramSocketTests: XCTestCase {
    let dgram = Int32(SOCK_DGRAM.rawValue)

    func header(to address: IPv4Address, _ port: UInt16) -> [UInt8] {
        var h = lvlip_dgram_header()
        h.addr = lvlip_addr(IPAddress(address), port: port)
        h.magic = LVLIP_DGRAM_MAGIC
        return bytes(of: h)
    }

    func testDatagramsBothWaysCarryTheirHeader() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let s = client.open(type: dgram)
        XCTAssertEqual(client.bind(s, .any, 5000), 0)
        let peer = h.peer.udpOpen()
        try h.peer.udpBind(peer, address: nil, port: 6000)

        appWrite(s.fd, header(to: ServiceHarness.peerAddress, 6000) + Array("query".utf8))
        var got: UDPDatagram?
        XCTAssertTrue(h.run { got = h.peer.udpReceive(peer); return got != nil })
        XCTAssertEqual(got?.payload, Array("query".utf8))
        XCTAssertEqual(got?.source, IPAddress(ServiceHarness.address))
        XCTAssertEqual(got?.sourcePort, 5000)

        _ = try Array("answer".utf8).withUnsafeBytes {
            try h.peer.udpSend(peer, to: (IPAddress(ServiceHarness.address), 5000), $0, now: h.now)
        }
        var message: [UInt8] = []
        XCTAssertTrue(h.run {
            if case .bytes(let b) = appRead(s.fd) { message = b }
            return !message.isEmpty
        })
        let size = MemoryLayout<lvlip_dgram_header>.size
        let received = ShimClient.decode(message, as: lvlip_dgram_header.self)
        XCTAssertEqual(received.magic, LVLIP_DGRAM_MAGIC)
        XCTAssertEqual(received.addr.ipAddress, IPAddress(ServiceHarness.peerAddress))
        XCTAssertEqual(received.addr.port, 6000)
        XCTAssertEqual(withUnsafeBytes(of: received.local) { IPAddress(IPv6Address($0, at: 0)) }, IPAddress(ServiceHarness.address))
        XCTAssertEqual(received.flags, 0)
        XCTAssertEqual(Array(message[size...]), Array("answer".utf8))
        XCTAssertEqual(client.name(s, peer: false).addr.port, 5000)
        XCTAssertEqual(client.name(s, peer: true).result, -ENOTCONN)
    }

    func testConnectedSocketHearsItsPortUnreachableAsAnErrorRecord() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let s = client.open(type: dgram)
        XCTAssertEqual(client.connect(s, ServiceHarness.peerAddress, 6001).result, 0)
        XCTAssertEqual(client.identify(s.fd).state, LVLIP_STATE_CONNECTED.rawValue)
        XCTAssertEqual(client.name(s, peer: true).addr.port, 6001)
        // Port 0 in the header: to the connected peer.
        appWrite(s.fd, header(to: IPv4Address(0), 0) + [1, 2, 3])
        var message: [UInt8] = []
        XCTAssertTrue(h.run {
            if case .bytes(let b) = appRead(s.fd) { message = b }
            return !message.isEmpty
        })
        let record = ShimClient.decode(message, as: lvlip_dgram_header.self)
        XCTAssertEqual(record.flags & UInt16(LVLIP_DGRAM_ERROR), UInt16(LVLIP_DGRAM_ERROR))
        XCTAssertEqual(record.error, ECONNREFUSED)
    }

    func testShutdownOfReadsIsEndOfStreamAndListenIsRefused() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let s = client.open(type: dgram)
        XCTAssertEqual(client.shutdown(s, Int32(SHUT_RD)), -ENOTCONN)
        XCTAssertEqual(client.listen(s), -EOPNOTSUPP)
        XCTAssertEqual(client.connect(s, ServiceHarness.peerAddress, 6000).result, 0)
        XCTAssertEqual(client.shutdown(s, Int32(SHUT_RD)), 0)
        XCTAssertEqual(appRead(s.fd), .end)
        // Dissolving the association (AF_UNSPEC) leaves it unconnected.
        XCTAssertEqual(client.connect(s, IPv4Address(0), 0, family: AF_UNSPEC).result, 0)
        XCTAssertEqual(client.identify(s.fd).state, LVLIP_STATE_UNCONNECTED.rawValue)
    }

    func testApplicationCloseSendsWhatItWroteThenForgetsTheSocket() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let s = client.open(type: dgram)
        let peer = h.peer.udpOpen()
        try h.peer.udpBind(peer, address: nil, port: 6000)
        for i in 0..<3 { appWrite(s.fd, header(to: ServiceHarness.peerAddress, 6000) + [UInt8(i)]) }
        client.close(s)
        var payloads: [[UInt8]] = []
        XCTAssertTrue(h.run {
            while let d = h.peer.udpReceive(peer) { payloads.append(d.payload) }
            return payloads.count == 3 && h.service.socketCount == 0
        })
        XCTAssertEqual(payloads, [[0], [1], [2]])
        XCTAssertEqual(h.service.counters.socketsClosedByApp, 1)
    }
}
