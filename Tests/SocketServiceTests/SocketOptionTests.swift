import CLinux
import Glibc
import IPCServer
import Stack
import XCTest

/// Options through SETOPT and GETOPT: the table's rows as a socket of each kind answers them
/// (Tests/integration/test_socket_options.py compares every row with the kernel's).
final class SocketOptionTests: XCTestCase {
    let SOL_SOCKET: Int32 = 1, IPPROTO_TCP: Int32 = 6, IPPROTO_IPV6: Int32 = 41
    let SO_REUSEADDR: Int32 = 2, SO_TYPE: Int32 = 3, SO_ACCEPTCONN: Int32 = 30, SO_PROTOCOL: Int32 = 38
    let TCP_NODELAY: Int32 = 1, TCP_MAXSEG: Int32 = 2, TCP_INFO: Int32 = 11, TCP_CONGESTION: Int32 = 13
    let IPV6_V6ONLY: Int32 = 26

    func testValuesSetAreReadBack() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let s = client.open()
        XCTAssertEqual(client.intOption(s, IPPROTO_TCP, TCP_NODELAY), 0)
        XCTAssertEqual(client.setOption(s, IPPROTO_TCP, TCP_NODELAY, int: 5), 0)
        XCTAssertEqual(client.intOption(s, IPPROTO_TCP, TCP_NODELAY), 1)
        XCTAssertEqual(client.setOption(s, IPPROTO_TCP, TCP_MAXSEG, int: 10), -EINVAL)
        XCTAssertEqual(client.setOption(s, IPPROTO_TCP, TCP_CONGESTION, Array("reno".utf8)), 0)
        XCTAssertEqual(client.getOption(s, IPPROTO_TCP, TCP_CONGESTION, room: 16).value.prefix(5), Array("reno\0".utf8)[...])
        // The level's rule before the name: an int option needs 4 bytes.
        XCTAssertEqual(client.setOption(s, IPPROTO_TCP, TCP_NODELAY, [1]), -EINVAL)
        XCTAssertEqual(client.getOption(s, SOL_SOCKET, 9999).result, -ENOPROTOOPT)
        XCTAssertEqual(client.setOption(s, SOL_SOCKET, SO_TYPE, int: 1), -ENOPROTOOPT)
    }

    func testAnswersFollowTheSocketsKind() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let stream = client.open()
        let datagram = client.open(type: Int32(SOCK_DGRAM.rawValue))
        XCTAssertEqual(client.intOption(stream, SOL_SOCKET, SO_TYPE), Int32(SOCK_STREAM.rawValue))
        XCTAssertEqual(client.intOption(datagram, SOL_SOCKET, SO_TYPE), Int32(SOCK_DGRAM.rawValue))
        XCTAssertEqual(client.intOption(datagram, SOL_SOCKET, SO_PROTOCOL), 17)
        // TCP options on a UDP socket: EOPNOTSUPP to read, ENOPROTOOPT to write.
        XCTAssertEqual(client.getOption(datagram, IPPROTO_TCP, TCP_NODELAY).result, -EOPNOTSUPP)
        XCTAssertEqual(client.setOption(datagram, IPPROTO_TCP, TCP_NODELAY, int: 1), -ENOPROTOOPT)
        // listen() makes a stream a listener: the table sees the new kind.
        XCTAssertEqual(client.intOption(stream, SOL_SOCKET, SO_ACCEPTCONN), 0)
        XCTAssertEqual(client.listen(stream), 0)
        XCTAssertEqual(client.intOption(stream, SOL_SOCKET, SO_ACCEPTCONN), 1)
        XCTAssertEqual(client.getOption(stream, IPPROTO_TCP, TCP_INFO, room: 1).value, [10])  // LISTEN
    }

    func testV6OnlyIsForAnUnboundInet6SocketAndAV6OnlyListenerTakesNoPort() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let inet = client.open()
        XCTAssertEqual(client.getOption(inet, IPPROTO_IPV6, IPV6_V6ONLY).result, -EOPNOTSUPP)
        let s = client.open(family: AF_INET6)
        XCTAssertEqual(client.setOption(s, IPPROTO_IPV6, IPV6_V6ONLY, int: 1), 0)
        XCTAssertEqual(client.intOption(s, IPPROTO_IPV6, IPV6_V6ONLY), 1)
        XCTAssertEqual(client.bind(s, .anyIPv6, 8080, family: AF_INET6), 0)
        XCTAssertEqual(client.listen(s), 0)
        XCTAssertEqual(client.setOption(s, IPPROTO_IPV6, IPV6_V6ONLY, int: 0), -EINVAL)
        let name = client.name(s, peer: false)
        XCTAssertEqual(name.addr.ipAddress, .anyIPv6)
        XCTAssertEqual(name.addr.port, 8080)
        XCTAssertEqual(client.intOption(s, SOL_SOCKET, SO_ACCEPTCONN), 1)
        // The IPv4 port stays free.
        let v4 = client.open()
        XCTAssertEqual(client.bind(v4, .any, 8080), 0)
    }

    func testAcceptedConnectionInheritsTheListenersOptions() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let (_, _, socket, _) = try client.acceptFromPeer { listener in
            XCTAssertEqual(client.setOption(listener, SOL_SOCKET, SO_REUSEADDR, int: 1), 0)
            XCTAssertEqual(client.setOption(listener, IPPROTO_TCP, TCP_NODELAY, int: 1), 0)
        }
        XCTAssertEqual(client.intOption(socket, SOL_SOCKET, SO_REUSEADDR), 1)
        XCTAssertEqual(client.intOption(socket, IPPROTO_TCP, TCP_NODELAY), 1)
        XCTAssertEqual(client.intOption(socket, SOL_SOCKET, SO_ACCEPTCONN), 0)
        XCTAssertEqual(client.getOption(socket, IPPROTO_TCP, TCP_INFO, room: 1).value, [1])  // ESTABLISHED
    }
}
