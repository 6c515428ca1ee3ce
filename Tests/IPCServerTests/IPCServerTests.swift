import CLinux
import Glibc
import IPCProtocol
import Logging
import Reactor
import XCTest

import IPCServer

/// The IPC server on a real reactor and a real AF_UNIX socket in a private directory, pumped
/// on the test's thread: framing, the handshake, queries, and every way a client can break the
/// protocol (each closes that client alone, with a logged reason).
final class IPCServerTests: XCTestCase {
    private var directory = ""
    private var reactor: Reactor!
    private var server: IPCServer!
    private var log: LogRecorder!
    private var statsText = "IpInReceives 1\n"
    private var clients: [Int32] = []

    override func setUpWithError() throws {
        var template = Array("/tmp/lvlip-ipc-test.XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw XCTSkip("mkdtemp failed") }
        directory = String(cString: template)
        // Writes to a client the server closed must fail with EPIPE, as they do in lvlipd.
        signal(SIGPIPE, SIG_IGN)
        reactor = try Reactor()
        log = LogRecorder()
        try startServer()
    }

    override func tearDown() {
        for fd in clients { Glibc.close(fd) }
        server?.shutdown()
        server = nil
        reactor = nil
        rmdir(directory)
    }

    private var path: String { "\(directory)/lvlipd.sock" }

    private func startServer(maxClients: Int = 4096) throws {
        var configuration = IPCServer.Configuration(path: path)
        configuration.maxClients = maxClients
        let recorder = log!
        let logger = Logger(label: "test") { _ in recorder }
        server = IPCServer(configuration: configuration, reactor: reactor, logger: logger,
                           stats: { [unowned self] in statsText }, sockets: { "socket one\n" })
        try server.start()
    }

    /// Lets the server handle whatever is pending.
    private func pump(_ rounds: Int = 4) throws {
        for _ in 0..<rounds { try reactor.runOnce(timeoutMilliseconds: 0) }
    }

    private func connect() throws -> Int32 {
        let fd = lvlip_unix_connect(path)
        XCTAssertGreaterThanOrEqual(fd, 0)
        clients.append(fd)
        try pump()
        return fd
    }

    private func write(_ fd: Int32, _ bytes: [UInt8]) {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        XCTAssertEqual(n, bytes.count)
    }

    private func hello(version: UInt16 = UInt16(LVLIP_IPC_VERSION), magic: UInt32 = LVLIP_IPC_MAGIC, tag: UInt32 = 7) -> [UInt8] {
        var body = IPCHello(pid: getpid())
        body.version = version
        body.magic = magic
        return IPCFrame.encode(type: IPCMessageType.hello, tag: tag, body: body.encoded)
    }

    /// Every whole message the server has written so far; `closed` when it closed the connection.
    private func replies(_ fd: Int32) throws -> (messages: [(IPCHeader, [UInt8])], closed: Bool) {
        try pump()
        var bytes: [UInt8] = []
        var closed = false
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 {
                bytes += buffer[..<n]
                continue
            }
            closed = n == 0 || (n < 0 && errno == ECONNRESET)
            break
        }
        var messages: [(IPCHeader, [UInt8])] = []
        var offset = 0
        while bytes.count - offset >= IPCHeader.size {
            let header = bytes.withUnsafeBytes { IPCHeader(UnsafeRawBufferPointer(rebasing: $0[offset...])) }
            let end = offset + IPCHeader.size + Int(header.length)
            guard end <= bytes.count else { break }
            messages.append((header, Array(bytes[offset + IPCHeader.size..<end])))
            offset = end
        }
        XCTAssertEqual(offset, bytes.count, "a partial message")
        return (messages, closed)
    }

    private func greeted() throws -> Int32 {
        let fd = try connect()
        write(fd, hello())
        let (messages, closed) = try replies(fd)
        XCTAssertFalse(closed)
        XCTAssertEqual(messages.map(\.0.type), [IPCMessageType.helloReply])
        return fd
    }

    private func assertClosed(_ fd: Int32, reason: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (_, closed) = try replies(fd)
        XCTAssertTrue(closed, "the server kept the client", file: file, line: line)
        XCTAssertTrue(log.warnings.contains { $0.contains(reason) }, "no warning saying \"\(reason)\" in \(log.warnings)",
                      file: file, line: line)
        XCTAssertEqual(server.clientCount, clients.count - 1 - closedBefore, file: file, line: line)
        closedBefore += 1
    }

    private var closedBefore = 0

    // MARK: - Handshake and queries

    func testHelloIsAnsweredWithTheDaemonsHelloAndTag() throws {
        let fd = try connect()
        write(fd, hello(tag: 99))
        let (messages, closed) = try replies(fd)
        XCTAssertFalse(closed)
        XCTAssertEqual(messages.count, 1)
        let (header, body) = messages[0]
        XCTAssertEqual(header.type, IPCMessageType.helloReply)
        XCTAssertEqual(header.tag, 99)
        XCTAssertEqual(body.count, IPCHello.replySize)
        let reply = try XCTUnwrap(body.withUnsafeBytes { IPCHello($0) })
        XCTAssertEqual(reply.magic, LVLIP_IPC_MAGIC)
        XCTAssertEqual(reply.version, UInt16(LVLIP_IPC_VERSION))
        XCTAssertEqual(reply.pid, getpid())
        XCTAssertNotNil(reply.interface)
    }

    func testRepliesAreWrittenAfterTheHooksAddedBeforeTheServerStarted() throws {
        // lvlipd adds its stack poll before starting the server: a reply then goes out with
        // what the stack did in the same wake-up (a CONNECT's handshake with a near peer).
        server.shutdown()
        reactor = try Reactor()
        var watched: Int32 = -1
        var replyBeforeStackHook: [Bool] = []
        reactor.addAfterWakeHook {
            guard watched >= 0 else { return }
            var byte: UInt8 = 0
            replyBeforeStackHook.append(Glibc.recv(watched, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) > 0)
        }
        try startServer()
        let fd = try connect()
        watched = fd
        write(fd, hello())
        try reactor.runOnce(timeoutMilliseconds: 1000)
        XCTAssertEqual(replyBeforeStackHook, [false])
        let (messages, closed) = try replies(fd)
        XCTAssertFalse(closed)
        XCTAssertEqual(messages.map(\.0.type), [IPCMessageType.helloReply])
    }

    func testQueriesAnswerTextInOrderWithTheirTags() throws {
        let fd = try greeted()
        write(fd, IPCFrame.encode(type: IPCMessageType.stats, tag: 1, body: [])
            + IPCFrame.encode(type: IPCMessageType.sockets, tag: 2, body: []))
        let (messages, closed) = try replies(fd)
        XCTAssertFalse(closed)
        XCTAssertEqual(messages.map(\.0.type), [IPCMessageType.statsReply, IPCMessageType.socketsReply])
        XCTAssertEqual(messages.map(\.0.tag), [1, 2])
        XCTAssertEqual(String(decoding: messages[0].1, as: UTF8.self), statsText)
        XCTAssertEqual(String(decoding: messages[1].1, as: UTF8.self), "socket one\n")
    }

    func testAMessageArrivingByteByByteIsReassembled() throws {
        let fd = try connect()
        for byte in hello() + IPCFrame.encode(type: IPCMessageType.stats, tag: 3, body: []) {
            write(fd, [byte])
            try pump(1)
        }
        let (messages, closed) = try replies(fd)
        XCTAssertFalse(closed)
        XCTAssertEqual(messages.map(\.0.type), [IPCMessageType.helloReply, IPCMessageType.statsReply])
    }

    func testTheBlockingClientTalksToTheServer() throws {
        // The client blocks for each reply: serve it from another thread's reactor.
        server.shutdown()
        let thread = ServerThread(path: path)
        defer { thread.stop() }
        var client = try IPCClient(path: path)
        defer { client.close() }
        XCTAssertEqual(client.hello.pid, getpid())
        let text = try client.request(type: IPCMessageType.stats, expecting: IPCMessageType.statsReply)
        XCTAssertEqual(String(decoding: text, as: UTF8.self), "Thread 1\n")
    }

    // MARK: - Clients that break the protocol

    func testAFirstMessageOtherThanHelloClosesTheClient() throws {
        let fd = try connect()
        write(fd, IPCFrame.encode(type: IPCMessageType.stats, tag: 1, body: []))
        try assertClosed(fd, reason: "first message is not a valid HELLO")
    }

    func testABadMagicClosesTheClient() throws {
        let fd = try connect()
        write(fd, hello(magic: 0xdeadbeef))
        try assertClosed(fd, reason: "bad HELLO magic")
    }

    func testAnotherVersionGetsAnErrorThenTheClientIsClosed() throws {
        let fd = try connect()
        write(fd, hello(version: 99))
        let (messages, closed) = try replies(fd)
        XCTAssertTrue(closed)
        XCTAssertEqual(messages.count, 1)
        XCTAssertEqual(messages[0].0.type, IPCMessageType.error)
        let error = try XCTUnwrap(messages[0].1.withUnsafeBytes { IPCError($0) })
        XCTAssertEqual(error.code, EPROTONOSUPPORT)
        XCTAssertTrue(error.reason.contains("version 99"), error.reason)
    }

    func testAnAbsurdLengthClosesTheClientWithoutWaitingForTheBody() throws {
        let fd = try greeted()
        var bytes: [UInt8] = []
        IPCHeader(length: UInt32.max, type: IPCMessageType.stats, tag: 1).append(to: &bytes)
        write(fd, bytes)
        try assertClosed(fd, reason: "exceeds")
    }

    func testUnknownFlagsCloseTheClient() throws {
        let fd = try greeted()
        var bytes: [UInt8] = []
        IPCHeader(length: 0, type: IPCMessageType.stats, flags: 0x8000, tag: 1).append(to: &bytes)
        write(fd, bytes)
        try assertClosed(fd, reason: "unknown message flags")
    }

    func testAnUnknownTypeClosesOnlyThatClient() throws {
        let good = try greeted()
        let bad = try greeted()
        write(bad, IPCFrame.encode(type: 999, tag: 1, body: []))
        try assertClosed(bad, reason: "unknown message type 999")
        write(good, IPCFrame.encode(type: IPCMessageType.stats, tag: 2, body: []))
        let (messages, closed) = try replies(good)
        XCTAssertFalse(closed)
        XCTAssertEqual(messages.map(\.0.type), [IPCMessageType.statsReply])
    }

    func testAQueryWithABodyClosesTheClient() throws {
        let fd = try greeted()
        write(fd, IPCFrame.encode(type: IPCMessageType.stats, tag: 1, body: [1, 2, 3]))
        try assertClosed(fd, reason: "with a 3-byte body")
    }

    func testSocketRequestsWithoutAServiceCloseTheClient() throws {
        let fd = try greeted()
        write(fd, IPCFrame.encode(type: UInt16(LVLIP_MSG_BIND.rawValue), tag: 1, body: []))
        try assertClosed(fd, reason: "unknown message type \(LVLIP_MSG_BIND.rawValue)")
    }

    func testAFlaggedDescriptorThatDidNotComeClosesTheClient() throws {
        let fd = try greeted()
        var bytes: [UInt8] = []
        IPCHeader(length: 0, type: UInt16(LVLIP_MSG_IDENTIFY.rawValue), flags: UInt16(LVLIP_FLAG_FD), tag: 1).append(to: &bytes)
        write(fd, bytes)
        try assertClosed(fd, reason: "did not come")
    }

    func testADescriptorOnAQueryIsClosedWithTheClient() throws {
        let fd = try greeted()
        var pair: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair), 0)
        defer { Glibc.close(pair[0]) }
        var bytes: [UInt8] = []
        IPCHeader(length: 0, type: IPCMessageType.stats, flags: UInt16(LVLIP_FLAG_FD), tag: 1).append(to: &bytes)
        XCTAssertEqual(bytes.withUnsafeBytes { lvlip_send_with_fd(fd, $0.baseAddress, $0.count, pair[1]) }, bytes.count)
        Glibc.close(pair[1])
        try assertClosed(fd, reason: "cannot carry a descriptor")
        // The server closed its copy too: the pair's other end sees end of stream.
        var byte: UInt8 = 0
        XCTAssertEqual(Glibc.recv(pair[0], &byte, 1, Int32(MSG_DONTWAIT)), 0)
    }

    func testAClientThatDoesNotReadItsRepliesIsClosed() throws {
        statsText = String(repeating: "x", count: 60_000)
        let fd = try greeted()
        // 100 replies of 60 KB: far more than the socket buffers and the 4 MB the server keeps.
        // Once the server gives up, the writes fail (EPIPE).
        var sent = 0
        for tag in 0..<100 {
            let request = IPCFrame.encode(type: IPCMessageType.stats, tag: UInt32(tag), body: [])
            guard request.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == request.count else { break }
            sent += 1
            try pump(1)
        }
        XCTAssertGreaterThan(sent, 4 << 20 / 60_000, "closed before it held 4 MB of replies")
        try pump()
        XCTAssertTrue(log.warnings.contains { $0.contains("not reading its replies") }, "\(log.warnings)")
        XCTAssertEqual(server.clientCount, 0)
    }

    func testClientsBeyondTheLimitAreRefused() throws {
        server.shutdown()
        try startServer(maxClients: 2)
        _ = try greeted()
        _ = try greeted()
        let third = try connect()
        let (_, closed) = try replies(third)
        XCTAssertTrue(closed)
        XCTAssertTrue(log.warnings.contains { $0.contains("2 clients connected") }, "\(log.warnings)")
        XCTAssertEqual(server.clientCount, 2)
    }

    // MARK: - The socket file

    func testShutdownRemovesTheSocketFileAndClosesClients() throws {
        let fd = try greeted()
        server.shutdown()
        XCTAssertNotEqual(access(path, F_OK), 0)
        let (_, closed) = try replies(fd)
        XCTAssertTrue(closed)
    }

    func testASecondServerOnALivePathIsRefused() throws {
        let other = IPCServer(configuration: .init(path: path), reactor: reactor, logger: Logger(label: "other"),
                              stats: { "" }, sockets: { "" })
        XCTAssertThrowsError(try other.start()) { error in
            guard case IPCServer.StartError.inUse = error else { return XCTFail("\(error)") }
        }
    }

    func testAStaleSocketFileIsReplacedAndAPlainFileIsNot() throws {
        server.shutdown()
        // A socket file nobody listens on: what a daemon killed with -9 leaves.
        let stale = lvlip_unix_listen(path, 1)
        XCTAssertGreaterThanOrEqual(stale, 0)
        Glibc.close(stale)
        try startServer()
        _ = try greeted()
        server.shutdown()
        let file = creat(path, 0o600)
        Glibc.close(file)
        defer { unlink(path) }
        let other = IPCServer(configuration: .init(path: path), reactor: reactor, logger: Logger(label: "other"),
                              stats: { "" }, sockets: { "" })
        XCTAssertThrowsError(try other.start()) { error in
            guard case IPCServer.StartError.notASocket = error else { return XCTFail("\(error)") }
        }
    }
}

/// Collects what the server logs.
final class LogRecorder: LogHandler, @unchecked Sendable {
    var warnings: [String] = []
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        if event.level >= .warning { warnings.append("\(event.message)") }
    }
}

/// A server with its own reactor on its own thread, for the blocking client.
final class ServerThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let path: String
    private let ready = DispatchSemaphoreLite()
    private var stopFD: [Int32] = [-1, -1]

    init(path: String) {
        self.path = path
        pipe(&stopFD)
        let box = Unmanaged.passRetained(self)
        pthread_create(&thread, nil, { raw in
            let me = Unmanaged<ServerThread>.fromOpaque(raw!).takeRetainedValue()
            me.serve()
            return nil
        }, box.toOpaque())
        ready.wait()
    }

    private func serve() {
        guard let reactor = try? Reactor() else { return ready.signal() }
        let server = IPCServer(configuration: .init(path: path), reactor: reactor, logger: Logger(label: "thread"),
                               stats: { "Thread 1\n" }, sockets: { "" })
        var running = true
        do {
            try server.start()
            try reactor.register(fd: stopFD[0], events: .readable) { _ in running = false }
        } catch {
            running = false
        }
        ready.signal()
        while running { _ = try? reactor.runOnce(timeoutMilliseconds: 100) }
        reactor.unregister(fd: stopFD[0])
        server.shutdown()
    }

    func stop() {
        var byte: UInt8 = 1
        _ = Glibc.write(stopFD[1], &byte, 1)
        pthread_join(thread, nil)
        Glibc.close(stopFD[0])
        Glibc.close(stopFD[1])
    }
}

/// A one-shot signal between two threads (Foundation's semaphore without Foundation).
final class DispatchSemaphoreLite: @unchecked Sendable {
    private var fds: [Int32] = [-1, -1]
    init() { pipe(&fds) }
    deinit {
        Glibc.close(fds[0])
        Glibc.close(fds[1])
    }
    func signal() {
        var byte: UInt8 = 1
        _ = Glibc.write(fds[1], &byte, 1)
    }
    func wait() {
        var byte: UInt8 = 0
        _ = Glibc.read(fds[0], &byte, 1)
    }
}
