import CLinux
import Glibc
import IPCProtocol
import Logging
import Reactor
import Stack

/// The daemon's AF_UNIX endpoint, served on the reactor.
///
/// Readiness: the socket is bound under a temporary name, listened on, given its mode, and
/// only then renamed to `path`, so the file exists exactly when the daemon serves.
/// A client that breaks the protocol is closed with a logged reason; others are unaffected.
public final class IPCServer {
    public struct Configuration {
        public var path: String
        /// Mode of the socket file (0660: owner and group may connect).
        public var mode: mode_t = 0o660
        /// Group owning the socket file, if not the daemon's.
        public var group: gid_t?
        public var maxClients = 4096
        public init(path: String) { self.path = path }
    }

    public enum StartError: Error, CustomStringConvertible {
        case inUse(String)
        case notASocket(String)
        case system(SyscallError)

        public var description: String {
            switch self {
            case .inUse(let path): "socket path \(path) is in use by a running lvlipd"
            case .notASocket(let path): "socket path \(path) exists and is not a socket"
            case .system(let error): "\(error)"
            }
        }
    }

    private let configuration: Configuration
    private let reactor: Reactor
    private let logger: Logger
    /// Queries answered with text: request type -> (reply type, text).
    private let queries: [UInt16: (reply: UInt16, text: () -> String)]
    private var listenFD: Int32 = -1
    private var clients: [Int32: Client] = [:]
    /// Accepts that failed in a row (out of descriptors or memory), each followed by a pause.
    private var acceptFailures = 0
    private let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    /// Descriptors that come with one read (at most one per message in practice).
    private let receivedFDs = UnsafeMutablePointer<Int32>.allocate(capacity: 4)

    private final class Client {
        let fd: Int32
        /// Who sent the last bytes read: SO_PEERCRED at first, then each read's
        /// SCM_CREDENTIALS. A connection can outlive its opener's identity (a fork child
        /// inherits it, a process drops privileges): every request is judged by its sender.
        var pid: Int32
        var uid: UInt32
        var input: [UInt8] = []
        /// Replies not yet written, back to back, and how much of them was. One buffer rather
        /// than one array per reply: what a client that does not read costs the daemon is then
        /// what `maxOutput` counts (a 12-byte reply held alone takes some 80 bytes of heap).
        var output: [UInt8] = []
        var outputSent = 0
        var outputBytes: Int { output.count - outputSent }
        /// Replies in `output` whose result is decided when they are written
        /// (SocketService.Reply.settle): where the result lies, and what decides it.
        var unsettled: [(offset: Int, settle: () -> Int32?)] = []
        /// Descriptors received and not yet claimed by a message flagged LVLIP_FLAG_FD.
        var fds: [Int32] = []
        var greeted = false
        var wantsWrite = false
        /// On the list of clients whose replies are written at the end of the wake-up.
        var flushQueued = false
        /// Still in `clients`: false once closed (checked where a handler may have closed
        /// it, without a lookup by descriptor, whose number a new client may already have).
        var isOpen = true
        var created = SocketService.Created()

        init(fd: Int32, pid: Int32, uid: UInt32) {
            self.fd = fd
            self.pid = pid
            self.uid = uid
        }
    }

    private let service: SocketService?
    /// Replies a client has not read beyond this close it: it is not reading.
    private static let maxOutput = 4 << 20
    private static let maxPendingFDs = 8
    /// An output buffer this small is kept for the next replies; a larger one is given back.
    private static let keptOutputCapacity = 64 << 10
    /// Replies are written at the end of the wake-up unless this many wait.
    private static let deferredOutput = 64 << 10
    /// Clients with replies to write at the end of this wake-up.
    private var unflushed: [Client] = []
    private static let acceptPauseMilliseconds: UInt64 = 100

    /// `stats` answers STATS (counters), `sockets` answers SOCKETS (one line per socket);
    /// `service` answers the socket operations of the shim.
    public init(configuration: Configuration, reactor: Reactor, logger: Logger, stats: @escaping () -> String,
                sockets: @escaping () -> String, service: SocketService? = nil) {
        self.configuration = configuration
        self.reactor = reactor
        self.logger = logger
        self.service = service
        queries = [IPCMessageType.stats: (IPCMessageType.statsReply, stats),
                   IPCMessageType.sockets: (IPCMessageType.socketsReply, sockets)]
    }

    deinit {
        readBuffer.deallocate()
        receivedFDs.deallocate()
    }

    public var clientCount: Int { clients.count }

    public func start() throws(StartError) {
        let path = configuration.path
        var info = stat()
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFSOCK else { throw .notASocket(path) }
            let probe = lvlip_unix_connect(path)
            if probe >= 0 {
                Syscall.close(probe)
                throw .inUse(path)
            }
            // Nobody answers: a stale file left by a daemon that died. Replace it.
            unlink(path)
        }
        let temporary = "\(path).\(getpid()).tmp"
        unlink(temporary)
        do {
            listenFD = try Syscall.call("bind/listen \(temporary)") { lvlip_unix_listen(temporary, 128) }
            try Syscall.call("chmod \(temporary)") { chmod(temporary, configuration.mode) }
            if let group = configuration.group {
                try Syscall.call("chown \(temporary)") { chown(temporary, getuid(), group) }
            }
            try reactor.register(fd: listenFD, events: .readable) { [unowned self] _ in acceptClients() }
            try Syscall.call("rename \(temporary) \(path)") { rename(temporary, path) }
            // After the hooks added before start (the daemon's stack poll).
            reactor.addAfterWakeHook { [weak self] in self?.flushReplies() }
        } catch let error as SyscallError {
            unlink(temporary)
            if listenFD >= 0 {
                reactor.unregister(fd: listenFD)
                Syscall.close(listenFD)
                listenFD = -1
            }
            throw .system(error)
        } catch {
            fatalError("unexpected error \(error)")
        }
    }

    /// Closes every client and the listening socket, and removes the socket file.
    public func shutdown() {
        for fd in Array(clients.keys) { close(fd, reason: nil) }
        if listenFD >= 0 {
            reactor.unregister(fd: listenFD)
            Syscall.close(listenFD)
            listenFD = -1
            unlink(configuration.path)
        }
    }

    private func acceptClients() {
        while true {
            let fd: Int32
            do {
                guard let accepted = try Syscall.nonBlocking("accept4", { lvlip_accept(listenFD) }) else { return }
                fd = accepted
                if acceptFailures > 0 {
                    logger.warning("IPC accept works again after \(acceptFailures) failed attempts")
                    acceptFailures = 0
                }
            } catch {
                pauseAccepting(after: error)
                return
            }
            var pid: Int32 = 0
            var uid: UInt32 = 0
            var gid: UInt32 = 0
            if lvlip_peer_credentials(fd, &pid, &uid, &gid) != 0 {
                logger.warning("IPC client without credentials refused")
                Syscall.close(fd)
                continue
            }
            guard clients.count < configuration.maxClients else {
                logger.warning("IPC client pid \(pid) refused: \(configuration.maxClients) clients connected")
                Syscall.close(fd)
                continue
            }
            // Credentials with every read: permission decisions use the sender's identity now.
            if lvlip_set_int_option(fd, SOL_SOCKET, SO_PASSCRED, 1) != 0 {
                logger.warning("IPC client pid \(pid) refused: SO_PASSCRED: \(String(cString: strerror(errno)))")
                Syscall.close(fd)
                continue
            }
            let client = Client(fd: fd, pid: pid, uid: uid)
            do {
                try reactor.register(fd: fd, events: [.readable, .readHangup]) { [unowned self] events in
                    handle(client, events: events)
                }
            } catch {
                logger.warning("IPC client pid \(pid): \(error)")
                Syscall.close(fd)
                continue
            }
            clients[fd] = client
            logger.debug("IPC client connected: pid \(pid) uid \(uid)")
        }
    }

    /// The listener stays readable while its connection waits, and epoll is level-triggered:
    /// retrying an accept that failed for want of descriptors (EMFILE, ENFILE) or memory at
    /// once would spin the CPU. Stop watching it for a moment instead; the waiting clients
    /// are served when descriptors come back.
    /// One warning per run of failures, not one per retry.
    private func pauseAccepting(after error: any Error) {
        if acceptFailures == 0 {
            logger.warning("IPC accept failed: \(error); retrying every \(Self.acceptPauseMilliseconds) ms")
        }
        acceptFailures += 1
        do {
            try reactor.modify(fd: listenFD, events: [])
        } catch {
            logger.error("IPC listener: \(error)")
            return
        }
        reactor.schedule(at: reactor.now.adding(milliseconds: Self.acceptPauseMilliseconds)) { [weak self] in
            guard let self, listenFD >= 0 else { return }
            do {
                try reactor.modify(fd: listenFD, events: .readable)
            } catch {
                logger.error("IPC listener: \(error)")
            }
        }
    }

    private func handle(_ client: Client, events: IOEvents) {
        if events.contains(.writable) { flush(client) }
        guard client.isOpen else { return }
        if events.contains(.readable) || events.contains(.hangup) || events.contains(.error) { read(client) }
    }

    private func read(_ client: Client) {
        // Bounded: a client that writes as fast as it is read waits for the next wake-up
        // (the descriptor is level-triggered).
        for _ in 0..<64 {
            let n: Int?
            var receivedCount: Int32 = 0
            var sender = lvlip_credentials()
            do {
                n = try Syscall.nonBlocking("recvmsg") {
                    lvlip_recv_with_fds(client.fd, readBuffer.baseAddress, readBuffer.count, receivedFDs, 4, &receivedCount,
                                        &sender)
                }
            } catch {
                close(client.fd, reason: Self.clientGone(error) ? nil : "\(error)")
                return
            }
            if receivedCount != 0 {
                let lost = receivedCount < 0
                let count = lost ? Int(-receivedCount - 1) : Int(receivedCount)
                client.fds.append(contentsOf: UnsafeBufferPointer(start: receivedFDs, count: count))
                if lost || client.fds.count > Self.maxPendingFDs {
                    close(client.fd, reason: lost ? "descriptors lost in transit (too many in one message)"
                                                   : "more than \(Self.maxPendingFDs) unclaimed descriptors")
                    return
                }
            }
            guard let count = n else { break }
            if count == 0 {
                close(client.fd, reason: nil)
                return
            }
            if sender.valid != 0 && (sender.uid != client.uid || sender.pid != client.pid) {
                // What was read before came from someone else: handle it as theirs. (The
                // kernel never returns bytes of two senders from one read.)
                processInput(client)
                guard client.isOpen else { return }
                client.pid = sender.pid
                client.uid = sender.uid
            }
            client.input.append(contentsOf: UnsafeRawBufferPointer(readBuffer.slice(0..<count)))
            // A short read took all there was (a stream socket): no need to hear EAGAIN. One
            // that brought descriptors stops where the write that sent them ended (the
            // shim's SOCKET, with the requests held back with it); anything written after it
            // is read at the next wake-up (the descriptor is level-triggered), which costs
            // as much as the read here would, and nothing when, as usual, there is none.
            if client.input.count > IPCHeader.size + IPCHeader.maxBody || count < readBuffer.count { break }
        }
        processInput(client)
    }

    private func processInput(_ client: Client) {
        var consumed = 0
        defer {
            if client.isOpen, consumed > 0 { client.input.removeFirst(consumed) }
        }
        while client.input.count - consumed >= IPCHeader.size {
            let header = client.input.withUnsafeBytes { IPCHeader($0.suffix(from: consumed)) }
            guard header.length <= IPCHeader.maxBody else {
                close(client.fd, reason: "message body of \(header.length) bytes exceeds \(IPCHeader.maxBody)")
                return
            }
            guard header.flags & ~UInt16(LVLIP_FLAG_FD | LVLIP_FLAG_NO_REPLY) == 0 else {
                close(client.fd, reason: "unknown message flags \(header.flags)")
                return
            }
            guard header.flags & UInt16(LVLIP_FLAG_NO_REPLY) == 0 || header.type == UInt16(LVLIP_MSG_SETOPT.rawValue) else {
                close(client.fd, reason: "message type \(header.type) flagged to need no reply (SETOPT only)")
                return
            }
            let total = IPCHeader.size + Int(header.length)
            guard client.input.count - consumed >= total else { return }
            var fd: Int32 = -1
            if header.flags & UInt16(LVLIP_FLAG_FD) != 0 {
                guard !client.fds.isEmpty else {
                    close(client.fd, reason: "message type \(header.type) flagged with a descriptor that did not come")
                    return
                }
                fd = client.fds.removeFirst()
            }
            let ok = client.input.withUnsafeBytes { bytes in
                dispatch(client, header: header, body: bytes.slice(consumed + IPCHeader.size..<consumed + total), fd: fd)
            }
            guard ok else { return }
            consumed += total
        }
    }

    /// Handles one message; false when the client was closed.
    private func dispatch(_ client: Client, header: IPCHeader, body: UnsafeRawBufferPointer, fd: Int32) -> Bool {
        if fd >= 0 && !(client.greeted && IPCMessageType.isSocketRequest(header.type)) {
            Syscall.close(fd)
            close(client.fd, reason: "message type \(header.type) cannot carry a descriptor")
            return false
        }
        guard client.greeted else {
            guard header.type == IPCMessageType.hello, body.count == IPCHello.size, let hello = IPCHello(body) else {
                close(client.fd, reason: "first message is not a valid HELLO (type \(header.type))")
                return false
            }
            guard hello.magic == LVLIP_IPC_MAGIC else {
                close(client.fd, reason: "bad HELLO magic \(hello.magic)")
                return false
            }
            guard hello.version == UInt16(LVLIP_IPC_VERSION) else {
                let error = IPCError(code: EPROTONOSUPPORT,
                                     reason: "protocol version \(hello.version) not supported; daemon speaks \(LVLIP_IPC_VERSION)")
                send(client, type: IPCMessageType.error, tag: header.tag, body: error.encoded)
                close(client.fd, reason: "unsupported protocol version \(hello.version)")
                return false
            }
            client.greeted = true
            let interface = service?.interface ?? IPCHello.Interface(address: 0, netmask: 0, gateway: 0)
            send(client, type: IPCMessageType.helloReply, tag: header.tag,
                 body: IPCHello(pid: getpid(), interface: interface).encoded)
            return client.isOpen
        }
        if IPCMessageType.isSocketRequest(header.type), let service {
            guard let reply = service.handle(type: header.type, tag: header.tag, body: body, fd: fd, pid: client.pid,
                                             uid: client.uid, created: &client.created) else {
                close(client.fd, reason: "malformed message type \(header.type) (\(body.count)-byte body)")
                return false
            }
            if header.flags & UInt16(LVLIP_FLAG_NO_REPLY) == 0 {
                send(client, type: header.type + 1, tag: header.tag, body: reply.body, settle: reply.settle)
            }
            return client.isOpen
        }
        guard let query = queries[header.type] else {
            close(client.fd, reason: "unknown message type \(header.type)")
            return false
        }
        guard body.isEmpty else {
            close(client.fd, reason: "query type \(header.type) with a \(body.count)-byte body")
            return false
        }
        send(client, type: query.reply, tag: header.tag, body: Array(query.text().utf8))
        return client.isOpen
    }

    /// A client that exited with replies unread (the shim does not wait for every reply):
    /// an ordinary end, not worth a warning.
    private static func clientGone(_ error: any Error) -> Bool {
        guard let e = error as? SyscallError else { return false }
        return e.errno == ECONNRESET || e.errno == EPIPE
    }

    /// Queues one message (header and body) straight into the client's output, written at the
    /// end of the wake-up: after the stack has exchanged this wake-up's frames (the daemon's
    /// hook runs first), so that a CONNECT's reply to a near peer goes out with the
    /// handshake done, and wakes the shim once rather than twice.
    private func send(_ client: Client, type: UInt16, tag: UInt32, body: [UInt8], settle: (() -> Int32?)? = nil) {
        IPCHeader(length: UInt32(body.count), type: type, tag: tag).append(to: &client.output)
        if let settle, body.count >= MemoryLayout<Int32>.size { client.unsettled.append((client.output.count, settle)) }
        client.output.append(contentsOf: body)
        guard client.outputBytes <= Self.maxOutput else {
            close(client.fd, reason: "not reading its replies (\(client.outputBytes) bytes waiting)")
            return
        }
        if client.outputBytes >= Self.deferredOutput {
            flush(client)
        } else if !client.flushQueued {
            client.flushQueued = true
            unflushed.append(client)
        }
    }

    private func flushReplies() {
        for client in unflushed {
            client.flushQueued = false
            if client.isOpen { flush(client) }
        }
        unflushed.removeAll(keepingCapacity: true)
    }

    private func flush(_ client: Client) {
        for (offset, settle) in client.unsettled {
            guard let code = settle() else { continue }
            withUnsafeBytes(of: code.littleEndian) { client.output.replaceSubrange(offset..<offset + 4, with: $0) }
        }
        client.unsettled.removeAll(keepingCapacity: true)
        while client.outputBytes > 0 {
            let n: Int?
            do {
                n = try client.output.withUnsafeBytes { b in
                    try Syscall.nonBlocking("sendmsg") {
                        lvlip_send_with_fd(client.fd, b.baseAddress! + client.outputSent, client.outputBytes, -1)
                    }
                }
            } catch {
                close(client.fd, reason: Self.clientGone(error) ? nil : "\(error)")
                return
            }
            guard let written = n else { break }
            client.outputSent += written
        }
        if client.outputBytes == 0 {
            client.output.removeAll(keepingCapacity: client.output.capacity <= Self.keptOutputCapacity)
            client.outputSent = 0
        } else if client.outputSent >= Self.keptOutputCapacity {
            client.output.removeFirst(client.outputSent)
            client.outputSent = 0
        }
        let want = !client.output.isEmpty
        if want != client.wantsWrite {
            client.wantsWrite = want
            do {
                try reactor.modify(fd: client.fd, events: want ? [.readable, .readHangup, .writable] : [.readable, .readHangup])
            } catch {
                close(client.fd, reason: "\(error)")
            }
        }
    }

    private func close(_ fd: Int32, reason: String?) {
        guard let client = clients.removeValue(forKey: fd) else { return }
        client.isOpen = false
        reactor.unregister(fd: fd)
        // What was queued (an ERROR that says why) goes first, as far as the socket takes it.
        if client.outputBytes > 0 {
            _ = client.output.withUnsafeBytes { b in
                lvlip_send_with_fd(fd, b.baseAddress! + client.outputSent, client.outputBytes, -1)
            }
        }
        Syscall.close(fd)
        for received in client.fds { Syscall.close(received) }
        client.fds.removeAll()
        client.output.removeAll()
        if let reason {
            logger.warning("IPC client pid \(client.pid) closed: \(reason)")
        } else {
            logger.debug("IPC client pid \(client.pid) disconnected")
        }
    }
}
