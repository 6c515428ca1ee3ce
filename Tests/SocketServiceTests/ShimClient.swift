import CLinux
import Glibc
import IPCServer
import Stack
import XCTest

/// A stack socket as a test's shim holds it: the handle and the application's end of the pair.
struct ShimSocket {
    var ref: lvlip_ref
    let fd: Int32
}

/// What the shim does, in requests: each builds the lvlip_* request struct of the wire format,
/// hands it to `SocketService.handle` as the IPC server would for one client connection, and
/// decodes the reply. After each request the harness does what lvlipd does after a wake-up.
final class ShimClient {
    let harness: ServiceHarness
    let pid: Int32
    let uid: UInt32
    var created = SocketService.Created()
    private(set) var tag: UInt32 = 0
    /// Application ends to close when the test ends.
    private var ends: [Int32] = []

    init(_ harness: ServiceHarness, uid: UInt32 = getuid()) {
        self.harness = harness
        pid = getpid()
        self.uid = uid
    }

    deinit { for fd in ends { Glibc.close(fd) } }

    /// The raw request: the reply's body, or nil for a malformed request.
    func request(_ type: lvlip_msg_type, _ body: [UInt8], fd: Int32 = -1) -> [UInt8]? {
        tag += 1
        let reply = body.withUnsafeBytes {
            harness.service.handle(type: UInt16(type.rawValue), tag: tag, body: $0, fd: fd, pid: pid, uid: uid, created: &created)
        }
        harness.afterWake()
        // As lvlipd's IPC server writes a reply at the end of the wake-up.
        guard var body = reply?.body else { return nil }
        if let code = reply?.settle?() { withUnsafeBytes(of: code) { body.replaceSubrange(0..<4, with: $0) } }
        return body
    }

    func request<Request>(_ type: lvlip_msg_type, _ value: Request, fd: Int32 = -1) -> [UInt8]? {
        var value = value
        return request(type, withUnsafeBytes(of: &value) { Array($0) }, fd: fd)
    }

    // MARK: - Requests

    /// SOCKET with the daemon's end of a fresh pair (SOCK_SEQPACKET for datagram sockets).
    func socket(family: Int32 = AF_INET, type: Int32 = Int32(SOCK_STREAM.rawValue), protocol: Int32 = 0)
        -> (result: Int32, reply: lvlip_socket_rep, socket: ShimSocket?) {
        var fds: [Int32] = [-1, -1]
        let pairType = type == Int32(SOCK_STREAM.rawValue) ? SOCK_STREAM : SOCK_SEQPACKET
        precondition(socketpair(AF_UNIX, Int32(pairType.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
        ends.append(fds[0])
        let body = request(LVLIP_MSG_SOCKET, lvlip_socket_req(family: family, type: type, protocol: `protocol`, reserved: 0),
                           fd: fds[1])!
        let reply = Self.decode(body, as: lvlip_socket_rep.self)
        return (reply.result, reply, reply.result == 0 ? ShimSocket(ref: reply.ref, fd: fds[0]) : nil)
    }

    /// A new socket that must succeed.
    func open(family: Int32 = AF_INET, type: Int32 = Int32(SOCK_STREAM.rawValue)) -> ShimSocket {
        let (result, _, socket) = self.socket(family: family, type: type)
        precondition(result == 0, "SOCKET failed: \(result)")
        return socket!
    }

    func bind(_ s: ShimSocket, _ address: IPv4Address, _ port: UInt16) -> Int32 {
        bind(s, IPAddress(address), port, family: AF_INET)
    }

    /// BIND as the shim sends it: the address in the stack's form, spelled in `family`.
    func bind(_ s: ShimSocket, _ address: IPAddress, _ port: UInt16, family: Int32, scope: UInt32 = 0) -> Int32 {
        result(request(LVLIP_MSG_BIND, addressRequest(s, address, port, family: family, scope: scope)))
    }

    func listen(_ s: ShimSocket, backlog: Int32 = 16) -> Int32 {
        result(request(LVLIP_MSG_LISTEN, lvlip_int_req(ref: s.ref, value: backlog, reserved: 0)))
    }

    /// CONNECT; `filler` bytes are written into the application's end first, as the shim does.
    func connect(_ s: ShimSocket, _ address: IPv4Address, _ port: UInt16, filler: Int = 0,
                 family: Int32 = AF_INET, waits: Bool = false, flags: UInt32? = nil) -> (result: Int32, local: lvlip_addr) {
        connect(s, IPAddress(address), port, filler: filler, family: family, waits: waits, flags: flags)
    }

    /// `waits`: LVLIP_CONNECT_WAITS, as the shim's connect on a blocking socket; `flags`, if
    /// given, instead.
    func connect(_ s: ShimSocket, _ address: IPAddress, _ port: UInt16, filler: Int = 0, family: Int32,
                 scope: UInt32 = 0, waits: Bool = false, flags: UInt32? = nil) -> (result: Int32, local: lvlip_addr) {
        if filler > 0 { precondition(write(s.fd, [UInt8](repeating: 0xFF, count: filler), filler) == filler) }
        var req = addressRequest(s, address, port, family: family, scope: scope)
        req.filler = UInt32(filler)
        req.flags = flags ?? (waits ? UInt32(LVLIP_CONNECT_WAITS) : 0)
        let reply = Self.decode(request(LVLIP_MSG_CONNECT, req)!, as: lvlip_name_rep.self)
        return (reply.result, reply.addr)
    }

    /// CONNECT with LVLIP_CONNECT_FILLER: `count` bytes of filler, written already.
    func tellFiller(_ s: ShimSocket, _ address: IPv4Address, _ port: UInt16, count: Int) -> Int32 {
        var req = addressRequest(s, IPAddress(address), port, family: AF_INET, scope: 0)
        req.filler = UInt32(count)
        req.flags = UInt32(LVLIP_CONNECT_FILLER)
        return Self.decode(request(LVLIP_MSG_CONNECT, req)!, as: lvlip_name_rep.self).result
    }

    func shutdown(_ s: ShimSocket, _ how: Int32) -> Int32 {
        result(request(LVLIP_MSG_SHUTDOWN, lvlip_int_req(ref: s.ref, value: how, reserved: 0)))
    }

    func name(_ s: ShimSocket, peer: Bool) -> (result: Int32, addr: lvlip_addr) {
        let reply = Self.decode(request(LVLIP_MSG_NAME, lvlip_int_req(ref: s.ref, value: peer ? 1 : 0, reserved: 0))!,
                                as: lvlip_name_rep.self)
        return (reply.result, reply.addr)
    }

    func status(_ s: ShimSocket, _ kind: lvlip_status_kind) -> Int32 {
        result(request(LVLIP_MSG_STATUS, lvlip_int_req(ref: s.ref, value: Int32(kind.rawValue), reserved: 0)))
    }

    func setOption(_ s: ShimSocket, _ level: Int32, _ name: Int32, _ value: [UInt8]) -> Int32 {
        var req = lvlip_opt_req(ref: s.ref, level: level, name: name, length: UInt32(value.count), reserved: 0)
        return result(request(LVLIP_MSG_SETOPT, withUnsafeBytes(of: &req) { Array($0) } + value))
    }

    func setOption(_ s: ShimSocket, _ level: Int32, _ name: Int32, int value: Int32) -> Int32 {
        setOption(s, level, name, withUnsafeBytes(of: value) { Array($0) })
    }

    func getOption(_ s: ShimSocket, _ level: Int32, _ name: Int32, room: Int = 4) -> (result: Int32, value: [UInt8]) {
        let req = lvlip_opt_req(ref: s.ref, level: level, name: name, length: UInt32(room), reserved: 0)
        let body = request(LVLIP_MSG_GETOPT, req)!
        let reply = Self.decode(body, as: lvlip_opt_rep.self)
        return (reply.result, Array(body.dropFirst(MemoryLayout<lvlip_opt_rep>.size)))
    }

    /// An int option's value, or the negative errno.
    func intOption(_ s: ShimSocket, _ level: Int32, _ name: Int32) -> Int32 {
        let (result, value) = getOption(s, level, name)
        guard result == 0 else { return result }
        return value.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
    }

    func identify(_ fd: Int32) -> lvlip_socket_rep {
        Self.decode(request(LVLIP_MSG_IDENTIFY, [], fd: dup(fd))!, as: lvlip_socket_rep.self)
    }

    // MARK: - Wire helpers

    private func addressRequest(_ s: ShimSocket, _ address: IPAddress, _ port: UInt16, family: Int32,
                                scope: UInt32) -> lvlip_addr_req {
        var addr = lvlip_addr(address, port: port, scope: scope)
        addr.family = UInt16(family)
        return lvlip_addr_req(ref: s.ref, addr: addr, filler: 0, flags: 0)
    }

    private func result(_ body: [UInt8]?) -> Int32 { Self.decode(body!, as: lvlip_result.self).result }

    static func decode<T>(_ body: [UInt8], as type: T.Type) -> T {
        precondition(body.count >= MemoryLayout<T>.size, "reply of \(body.count) bytes for \(T.self)")
        return body.withUnsafeBytes { $0.loadUnaligned(as: T.self) }
    }

    // MARK: - The application's end

    /// Takes an accepted connection's record and descriptor from a listener's end.
    func accept(_ listener: ShimSocket) -> (record: lvlip_accept_record, socket: ShimSocket)? {
        var record = lvlip_accept_record()
        var fd: Int32 = -1
        var count: Int32 = 0
        var credentials = lvlip_credentials()
        let n = withUnsafeMutableBytes(of: &record) {
            lvlip_recv_with_fds(listener.fd, $0.baseAddress, $0.count, &fd, 1, &count, &credentials)
        }
        guard n == MemoryLayout<lvlip_accept_record>.size, count == 1 else { return nil }
        ends.append(fd)
        return (record, ShimSocket(ref: record.ref, fd: fd))
    }

    /// A listener on `port` (`configure` runs before bind), a connection to it from the peer,
    /// and the connection as accepted from the listener's end.
    func acceptFromPeer(port: UInt16 = 8080, configure: (ShimSocket) -> Void = { _ in }) throws
        -> (listener: ShimSocket, record: lvlip_accept_record, socket: ShimSocket, peer: SocketID) {
        let listener = open()
        configure(listener)
        XCTAssertEqual(bind(listener, .any, port), 0)
        XCTAssertEqual(listen(listener), 0)
        let peer = harness.peer.tcpOpen()
        try harness.peer.tcpConnect(peer, to: IPAddress(ServiceHarness.address), port: port, now: harness.now)
        var accepted: (record: lvlip_accept_record, socket: ShimSocket)?
        XCTAssertTrue(harness.run { accepted = accept(listener); return accepted != nil })
        let (record, socket) = try XCTUnwrap(accepted)
        return (listener, record, socket, peer)
    }

    /// Closes the application's end (its last descriptor).
    func close(_ s: ShimSocket) {
        if let i = ends.firstIndex(of: s.fd) { ends.remove(at: i) }
        Glibc.close(s.fd)
    }
}

/// What the application's end has to read now: bytes, end of stream, or an error.
enum AppRead: Equatable {
    case bytes([UInt8])
    case end
    case error(Int32)
}

func appRead(_ fd: Int32, max: Int = 1 << 20) -> AppRead {
    var buffer = [UInt8](repeating: 0, count: max)
    let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
    if n > 0 { return .bytes(Array(buffer[0..<n])) }
    return n == 0 ? .end : .error(errno)
}

/// Everything the application's end has to read now (a stream: across several reads).
func appReadAll(_ fd: Int32) -> [UInt8] {
    var bytes: [UInt8] = []
    while case .bytes(let chunk) = appRead(fd) { bytes += chunk }
    return bytes
}

@discardableResult
func appWrite(_ fd: Int32, _ bytes: [UInt8]) -> Int {
    bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
}

func bytes<T>(of value: T) -> [UInt8] {
    var value = value
    return withUnsafeBytes(of: &value) { Array($0) }
}
