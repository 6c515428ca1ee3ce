import CLinux
import Glibc
import IPCServer
import Stack
import XCTest

/// The registry: handles, per-user limits, tombstones, IDENTIFY, and what a SOCKET request
/// must bring.
final class SocketRegistryTests: XCTestCase {
    func testSocketReplyNamesTheSocketAndItsKind() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let (result, reply, stream) = client.socket()
        XCTAssertEqual(result, 0)
        XCTAssertEqual(reply.type, Int32(SOCK_STREAM.rawValue))
        XCTAssertEqual(reply.state, LVLIP_STATE_UNCONNECTED.rawValue)
        XCTAssertNotEqual(reply.ref.token, 0)
        let (_, datagram, _) = client.socket(type: Int32(SOCK_DGRAM.rawValue))
        XCTAssertEqual(datagram.type, Int32(SOCK_DGRAM.rawValue))
        XCTAssertEqual(h.service.socketCount, 2)
        XCTAssertEqual(h.service.counters.socketsCreated, 2)
        // IDENTIFY finds the socket from a descriptor of its pair (after exec, say).
        let identified = client.identify(try XCTUnwrap(stream).fd)
        XCTAssertEqual(identified.ref.index, reply.ref.index)
        XCTAssertEqual(identified.ref.token, reply.ref.token)
    }

    func testSocketRefusesWhatTheKernelRefuses() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        XCTAssertEqual(client.socket(family: AF_UNIX).result, -EAFNOSUPPORT)
        XCTAssertEqual(client.socket(type: 4).result, -ESOCKTNOSUPPORT)  // SOCK_RDM
        XCTAssertEqual(client.socket(protocol: 17).result, -EPROTONOSUPPORT)
        XCTAssertEqual(h.service.socketCount, 0)
    }

    func testSocketNeedsTheDaemonsEndOfAFreshPairOfItsType() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0, &fds), 0)
        defer { close(fds[0]) }
        let body = client.request(LVLIP_MSG_SOCKET, lvlip_socket_req(family: AF_INET, type: Int32(SOCK_STREAM.rawValue),
                                                                     protocol: 0, reserved: 0), fd: fds[1])
        XCTAssertEqual(ShimClient.decode(try XCTUnwrap(body), as: lvlip_socket_rep.self).result, -EINVAL)
        // Without a descriptor the request is malformed: the IPC server drops the client.
        XCTAssertNil(client.request(LVLIP_MSG_SOCKET, lvlip_socket_req(family: AF_INET, type: 1, protocol: 0, reserved: 0)))
        XCTAssertNil(client.request(LVLIP_MSG_BIND, [1, 2, 3]))
    }

    func testHandlesOfAnotherClientAreRefused() throws {
        let h = try ServiceHarness()
        let owner = ShimClient(h)
        let other = ShimClient(h)
        let s = owner.open()
        XCTAssertEqual(owner.bind(s, .any, 4000), 0)
        // A forged token, or a handle of a slot's earlier socket, is no handle.
        var forged = s
        forged.ref.token &+= 1
        XCTAssertEqual(other.listen(forged), -EBADF)
        var stale = s
        stale.ref.generation &+= 1
        XCTAssertEqual(other.name(stale, peer: false).result, -EBADF)
        // A pending handle (a SOCKET whose reply is not read yet) is the client's own.
        let pendingRef = ShimSocket(ref: lvlip_ref(index: LVLIP_REF_PENDING, generation: owner.tag - 1, token: 0), fd: -1)
        XCTAssertEqual(other.name(pendingRef, peer: false).result, -EBADF)
        XCTAssertEqual(owner.name(pendingRef, peer: false).addr.port, 4000)
    }

    func testSocketsBeyondTheUsersLimitAreRefusedWithEMFILE() throws {
        var limits = SocketService.Limits()
        limits.socketsPerUser = 2
        let h = try ServiceHarness(limits: limits)
        let client = ShimClient(h, uid: 4242)
        let first = client.open()
        XCTAssertEqual(client.socket().reply.headroom, 0)
        XCTAssertEqual(client.socket().result, -EMFILE)
        XCTAssertEqual(h.service.counters.limitRefusals, 1)
        // Another user has its own limit.
        let other = ShimClient(h, uid: 4243)
        XCTAssertEqual(other.socket().result, 0)
        // Closing one makes room again.
        client.close(first)
        XCTAssertTrue(h.run { h.service.socketCount == 2 })
        XCTAssertEqual(client.socket().result, 0)
    }

    func testConnectionsBeyondTheUsersLimitAreReset() throws {
        var limits = SocketService.Limits()
        limits.socketsPerUser = 2
        let h = try ServiceHarness(limits: limits)
        let client = ShimClient(h, uid: 4242)
        let listener = client.open()
        XCTAssertEqual(client.bind(listener, .any, 8080), 0)
        XCTAssertEqual(client.listen(listener), 0)
        let first = h.peer.tcpOpen()
        try h.peer.tcpConnect(first, to: IPAddress(ServiceHarness.address), port: 8080, now: h.now)
        XCTAssertTrue(h.run { client.accept(listener) != nil })
        let second = h.peer.tcpOpen()
        try h.peer.tcpConnect(second, to: IPAddress(ServiceHarness.address), port: 8080, now: h.now)
        XCTAssertTrue(h.run { h.peer.tcpTerminalError(second) != nil })
        XCTAssertEqual(h.peer.tcpTerminalError(second), .connectionReset)
        XCTAssertEqual(h.service.counters.limitRefusals, 1)
        XCTAssertEqual(h.peer.tcpState(first), .established)
    }

    func testTombstoneKeepsTheHandleAndNamesAfterTheConnectionEnds() throws {
        let h = try ServiceHarness()
        let client = ShimClient(h)
        let (_, _, socket, peer) = try client.acceptFromPeer()
        XCTAssertEqual(client.name(socket, peer: true).result, 0)
        h.peer.tcpAbort(peer, now: h.now)
        XCTAssertTrue(h.run { appRead(socket.fd) == .end })
        // The daemon's end is closed and the stack's socket gone; the record answers on.
        XCTAssertEqual(h.stack.tcpSocketIDs.count, 1)
        XCTAssertEqual(client.identify(socket.fd).state, LVLIP_STATE_CLOSED.rawValue)
        let local = client.name(socket, peer: false)
        XCTAssertEqual(local.result, 0)
        XCTAssertEqual(local.addr.port, 8080)
        // As Linux after a reset: no peer any more (CLOSE), but shutdown is no error.
        XCTAssertEqual(client.name(socket, peer: true).result, -ENOTCONN)
        XCTAssertEqual(client.shutdown(socket, Int32(SHUT_WR)), 0)
        XCTAssertEqual(client.intOption(socket, 1, 4), ECONNRESET)
    }
}
