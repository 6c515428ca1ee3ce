import Logging
import Stack
import Timing

/// Applications built into lvlipd that drive the stack's socket API directly, so TCP can be
/// tested against the kernel before the LD_PRELOAD shim exists. Each is selected by a
/// `--test-*` flag; none runs by default. Data is a PatternStream (see docs/testing.md): a
/// 64-bit little-endian seed followed by the seeded stream, verified byte for byte.
final class TestApplications {
    enum ListenKind: String {
        /// Echoes everything back; half-closes after the peer does.
        case echo
        /// Reads "seed, stream", checks it, answers "OK <bytes>\n" or "MISMATCH <offset>\n".
        case sink
        /// Reads a 16-byte request (seed, length) and sends that much of the stream.
        case source
    }

    enum ClientKind {
        /// Sends the stream (seed first) and reads the server's verdict.
        case upload
        /// Sends a (seed, length) request and checks the stream it gets back.
        case download
    }

    struct ClientSpec {
        var kind: ClientKind
        var address: IPv4Address
        var port: UInt16
        var bytes: UInt64
        var seed: UInt64
    }

    private final class Connection {
        let id: SocketID
        let role: String
        var started: Instant
        var header: [UInt8] = []
        var headerNeeded = 0
        var pattern: PatternStream?
        var toSend: UInt64 = 0
        var received: UInt64 = 0
        var mismatch: UInt64?
        var pending: [UInt8] = []
        var pendingOffset = 0
        var finished = false
        var readClosed = false
        var shutdownSent = false
        var verdict: [UInt8] = []
        var client: ClientSpec?

        init(id: SocketID, role: String, now: Instant) {
            self.id = id
            self.role = role
            started = now
        }
    }

    private let stack: NetworkStack
    private let logger: Logger
    private var listeners: [SocketID: ListenKind] = [:]
    private var connections: [SocketID: Connection] = [:]
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)

    init(stack: NetworkStack, logger: Logger) {
        self.stack = stack
        self.logger = logger
    }

    deinit {
        buffer.deallocate()
        scratch.deallocate()
    }

    var isEmpty: Bool { listeners.isEmpty && connections.isEmpty }

    func listen(_ kind: ListenKind, port: UInt16) throws {
        let id = stack.tcpOpen()
        do {
            try stack.tcpBind(id, port: port)
            try stack.tcpListen(id, backlog: 1024)
        } catch {
            throw DaemonError("--test-\(kind.rawValue) \(port): \(error)")
        }
        listeners[id] = kind
        logger.info("test application \(kind.rawValue) listening on port \(port)")
    }

    func connect(_ spec: ClientSpec, now: Instant) {
        let id = stack.tcpOpen()
        let c = Connection(id: id, role: spec.kind == .upload ? "upload" : "download", now: now)
        c.client = spec
        connections[id] = c
        do {
            try stack.tcpConnect(id, to: spec.address, port: spec.port, now: now)
        } catch {
            report(c, status: "ERROR", detail: "connect: \(error) (errno \(error.errno))")
            stack.tcpClose(id, now: now)
            connections[id] = nil
        }
    }

    /// Acts on every socket whose readiness changed.
    func readinessChanged(_ ids: [SocketID], now: Instant) {
        for id in ids {
            if let kind = listeners[id] {
                acceptAll(id, kind: kind, now: now)
            } else if let c = connections[id] {
                drive(c, now: now)
            }
        }
    }

    private func acceptAll(_ listener: SocketID, kind: ListenKind, now: Instant) {
        while let child = try? stack.tcpAccept(listener) {
            let c = Connection(id: child, role: kind.rawValue, now: now)
            switch kind {
            case .echo: break
            case .sink: c.headerNeeded = 8
            case .source: c.headerNeeded = 16
            }
            connections[child] = c
            drive(c, now: now)
        }
    }

    private func drive(_ c: Connection, now: Instant) {
        guard !c.finished, let readiness = stack.tcpReadiness(c.id) else { return }
        if readiness.contains(.error), let error = stack.tcpTakeError(c.id) {
            finish(c, status: "ERROR", detail: "\(error) (errno \(error.errno))", now: now)
            return
        }
        if let spec = c.client, c.header.isEmpty && c.headerNeeded == 0 && c.pattern == nil {
            // A client: once connected, send the seed (and the length for a download).
            guard stack.tcpState(c.id) == .established || stack.tcpState(c.id) == .closeWait else {
                if stack.tcpState(c.id) == .closed {
                    finish(c, status: "ERROR", detail: "connection closed before it was established", now: now)
                }
                return
            }
            c.started = now
            var request = withUnsafeBytes(of: spec.seed.littleEndian) { Array($0) }
            if spec.kind == .download { request += withUnsafeBytes(of: spec.bytes.littleEndian) { Array($0) } }
            c.pending = request
            c.pattern = PatternStream(seed: spec.seed)
            if spec.kind == .upload { c.toSend = spec.bytes }
        }
        flushPending(c, now: now)
        if c.role == "echo" || c.role == "sink" || c.role == "source" || c.client != nil { readAvailable(c, now: now) }
        guard !c.finished else { return }
        sendPattern(c, now: now)
        maybeComplete(c, now: now)
    }

    private func flushPending(_ c: Connection, now: Instant) {
        while c.pendingOffset < c.pending.count {
            let n = c.pending.withUnsafeBytes { bytes in
                try? stack.tcpSend(c.id, UnsafeRawBufferPointer(rebasing: bytes[c.pendingOffset...]), now: now)
            }
            guard let sent = n, sent > 0 else { return }
            c.pendingOffset += sent
        }
        c.pending.removeAll(keepingCapacity: true)
        c.pendingOffset = 0
    }

    private func readAvailable(_ c: Connection, now: Instant) {
        while !c.readClosed {
            // Echo: do not read more than can be sent back (backpressure).
            if c.role == "echo" && !c.pending.isEmpty { return }
            let n: Int
            do {
                n = try stack.tcpReceive(c.id, into: buffer, now: now)
            } catch .wouldBlock {
                return
            } catch {
                finish(c, status: "ERROR", detail: "receive: \(error) (errno \(error.errno))", now: now)
                return
            }
            if n == 0 {
                c.readClosed = true
                return
            }
            consume(c, UnsafeRawBufferPointer(rebasing: buffer[0..<n]), now: now)
            if c.finished { return }
        }
    }

    private func consume(_ c: Connection, _ data: UnsafeRawBufferPointer, now: Instant) {
        var data = data
        if c.role == "echo" {
            c.received += UInt64(data.count)
            c.pending.append(contentsOf: data)
            flushPending(c, now: now)
            return
        }
        if c.client?.kind == .upload {
            c.verdict.append(contentsOf: data)
            return
        }
        if c.headerNeeded > 0 {
            let take = min(c.headerNeeded, data.count)
            c.header.append(contentsOf: data[0..<take])
            c.headerNeeded -= take
            data = UnsafeRawBufferPointer(rebasing: data[take...])
            if c.headerNeeded == 0 {
                let seed = c.header.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
                c.pattern = PatternStream(seed: seed)
                if c.role == "source" {
                    c.toSend = c.header.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
                    c.started = now
                }
            }
        }
        guard !data.isEmpty else { return }
        if c.role == "sink" || c.client?.kind == .download {
            if c.mismatch == nil, var pattern = c.pattern {
                c.mismatch = pattern.verify(data, scratch: scratch)
                c.pattern = pattern
            }
            c.received += UInt64(data.count)
        }
    }

    private func sendPattern(_ c: Connection, now: Instant) {
        guard c.pending.isEmpty, c.toSend > 0, var pattern = c.pattern, c.headerNeeded == 0 else { return }
        // A download client's pattern is for checking, not sending.
        if c.client?.kind == .download { return }
        while c.toSend > 0 {
            let n = Int(min(UInt64(scratch.count), c.toSend))
            // Generate into the scratch buffer, then send what fits; keep the rest pending.
            pattern.fill(UnsafeMutableRawBufferPointer(rebasing: scratch[0..<n]))
            c.toSend -= UInt64(n)
            let sent = (try? stack.tcpSend(c.id, UnsafeRawBufferPointer(rebasing: scratch[0..<n]), now: now)) ?? 0
            if sent < n {
                c.pending = Array(UnsafeRawBufferPointer(rebasing: scratch[sent..<n]))
                break
            }
        }
        c.pattern = pattern
    }

    private func maybeComplete(_ c: Connection, now: Instant) {
        let allSent = c.pending.isEmpty && c.toSend == 0
        switch (c.role, c.client?.kind) {
        case ("echo", _):
            if c.readClosed && allSent { finish(c, status: "OK", detail: "echoed \(c.received) bytes", now: now) }
        case ("sink", _):
            if c.readClosed && c.verdict.isEmpty {
                let text = c.mismatch.map { "MISMATCH \($0)\n" } ?? "OK \(c.received)\n"
                c.verdict = Array(text.utf8)
                c.pending = c.verdict
                flushPending(c, now: now)
                finish(c, status: c.mismatch == nil ? "OK" : "MISMATCH", detail: "received \(c.received) bytes", now: now)
            }
        case ("source", _):
            if c.headerNeeded == 0 && allSent && c.pattern != nil {
                finish(c, status: "OK", detail: "sent the stream", now: now)
            }
        case (_, .upload?):
            if allSent && c.pattern != nil && !c.shutdownSent {
                c.shutdownSent = true
                try? stack.tcpShutdown(c.id, .write, now: now)
            }
            if c.readClosed {
                var verdict = String(decoding: c.verdict, as: UTF8.self)
                while verdict.hasSuffix("\n") { verdict.removeLast() }
                finish(c, status: verdict.hasPrefix("OK") ? "OK" : "FAILED",
                       detail: "sent \(c.client!.bytes) bytes; server says '\(verdict)'", now: now)
            }
        case (_, .download?):
            if c.readClosed {
                let complete = c.received == c.client!.bytes && c.mismatch == nil
                finish(c, status: complete ? "OK" : "FAILED",
                       detail: "received \(c.received) of \(c.client!.bytes) bytes" + (c.mismatch.map { ", mismatch at \($0)" } ?? ""),
                       now: now)
            }
        default:
            break
        }
    }

    private func finish(_ c: Connection, status: String, detail: String, now: Instant) {
        c.finished = true
        report(c, status: status, detail: detail, elapsed: Double(now.nanoseconds(since: c.started)) / 1e9)
        stack.tcpClose(c.id, now: now)
        connections[c.id] = nil
    }

    private func report(_ c: Connection, status: String, detail: String, elapsed: Double = 0) {
        var where_ = ""
        if let names = stack.tcpNames(c.id) { where_ = " peer=\(names.remote):\(names.remotePort) local-port=\(names.localPort)" }
        let seconds = (elapsed * 1000).rounded() / 1000
        logger.notice("test-result app=\(c.role) status=\(status)\(where_) seconds=\(seconds) \(detail)")
    }
}

