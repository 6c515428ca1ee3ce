import CLinux
import Glibc
import IPCServer
import Stack
import XCTest

/// AF_INET6 sockets through the service (docs/ipc.md, "Addresses"): the family checks the
/// kernel makes on bind and connect, scope ids of link-local addresses, IPV6_V6ONLY against
/// IPv4 peers, v4-mapped names, and malformed addresses closing the client.
final class Inet6SocketTests: XCTestCase {
    static let linkLocal = IPAddress(IPv6Address(high: 0xFE80 << 48, low: 5))

    func testTheCallersFamilyMustBeTheSockets() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let s6 = client.open(family: AF_INET6)
        XCTAssertEqual(client.bind(s6, IPAddress(ServiceHarness.address), 80, family: AF_INET), -EAFNOSUPPORT)
        XCTAssertEqual(client.connect(s6, ServiceHarness.peerAddress, 81).result, -EAFNOSUPPORT)
        let s4 = client.open()
        XCTAssertEqual(client.bind(s4, .anyIPv6, 80, family: AF_INET6), -EAFNOSUPPORT)
    }

    func testALinkLocalPeerNeedsTheStacksScope() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        h.service.interfaceIndex = 7
        let s = client.open(family: AF_INET6)
        XCTAssertEqual(client.connect(s, Self.linkLocal, 80, family: AF_INET6).result, -EINVAL)
        XCTAssertEqual(client.bind(s, Self.linkLocal, 80, family: AF_INET6), -EINVAL)
        // lo exists and does not hold the address.
        let lo = UInt32(if_nametoindex("lo"))
        XCTAssertEqual(client.bind(s, Self.linkLocal, 80, family: AF_INET6, scope: lo), -EADDRNOTAVAIL)
        XCTAssertEqual(client.bind(s, Self.linkLocal, 80, family: AF_INET6, scope: 999_999), -ENODEV)
    }

    func testADualStackSocketReachesIPv4PeersAsMappedAndV6OnlyDoesNot() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let peer = h.peer.tcpOpen()
        try h.peer.tcpBind(peer, port: 81)
        try h.peer.tcpListen(peer, backlog: 4)
        let mapped = IPAddress(ServiceHarness.peerAddress)
        let v6only = client.open(family: AF_INET6)
        XCTAssertEqual(client.setOption(v6only, Int32(IPPROTO_IPV6), IPV6_V6ONLY, int: 1), 0)
        XCTAssertEqual(client.bind(v6only, IPAddress(ServiceHarness.address), 0, family: AF_INET6), -EINVAL)
        XCTAssertEqual(client.connect(v6only, mapped, 81, family: AF_INET6).result, -ENETUNREACH)
        let s = client.open(family: AF_INET6)
        XCTAssertEqual(client.connect(s, mapped, 81, filler: 1, family: AF_INET6).result, -EINPROGRESS)
        XCTAssertTrue(h.run { client.name(s, peer: true).result == 0 })
        let peerName = client.name(s, peer: true).addr
        XCTAssertEqual(peerName.ipAddress, mapped)
        XCTAssertEqual(Int32(peerName.family), AF_INET)
        XCTAssertEqual(peerName.port, 81)
        XCTAssertEqual(client.name(s, peer: false).addr.ipAddress, IPAddress(ServiceHarness.address))
        // An unbound AF_INET6 socket's name is [::]:0.
        XCTAssertEqual(client.name(client.open(family: AF_INET6), peer: false).addr.ipAddress, .anyIPv6)
    }

    func testMalformedAddressesAreProtocolViolations() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let s = client.open(family: AF_INET6)
        // AF_INET with an address that is not v4-mapped; an unknown family; reserved set.
        var req = lvlip_addr_req(ref: s.ref, addr: lvlip_addr(.anyIPv6, port: 80), filler: 0, flags: 0)
        req.addr.family = UInt16(AF_INET)
        XCTAssertNil(client.request(LVLIP_MSG_BIND, bytes(of: req)))
        req.addr.family = 99
        XCTAssertNil(client.request(LVLIP_MSG_CONNECT, bytes(of: req)))
        req.addr = lvlip_addr(.anyIPv6, port: 80)
        req.addr.reserved = 1
        XCTAssertNil(client.request(LVLIP_MSG_BIND, bytes(of: req)))
    }
}
