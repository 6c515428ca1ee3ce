import CLinux
import Glibc

/// A blocking client of the daemon's IPC socket: lvlipctl's, and the unit tests'.
public struct IPCClient {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public let fd: Int32
    /// The daemon's HELLO_REPLY.
    public private(set) var hello: IPCHello
    private var nextTag: UInt32 = 1

    /// Connects to `path` and says HELLO.
    public init(path: String) throws {
        let fd = lvlip_unix_connect(path)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            throw Failure(description: "cannot connect to lvlipd at \(path): \(reason) (is lvlipd running? set --socket or LVLIP_SOCKET)")
        }
        self.fd = fd
        hello = IPCHello(pid: getpid())
        let reply = try request(type: IPCMessageType.hello, body: hello.encoded, expecting: IPCMessageType.helloReply)
        guard let answer = reply.withUnsafeBytes({ IPCHello($0) }), answer.interface != nil else {
            throw Failure(description: "lvlipd answered HELLO with a malformed reply")
        }
        hello = answer
    }

    public func close() { _ = Glibc.close(fd) }

    /// Sends one request and reads its reply; an ERROR reply throws with the daemon's reason.
    public mutating func request(type: UInt16, body: [UInt8] = [], expecting replyType: UInt16) throws -> [UInt8] {
        let tag = nextTag
        nextTag &+= 1
        try writeAll(IPCFrame.encode(type: type, tag: tag, body: body))
        let (header, reply) = try readMessage()
        if header.type == IPCMessageType.error {
            let reason = reply.withUnsafeBytes { IPCError($0)?.reason } ?? "malformed error"
            throw Failure(description: "lvlipd: \(reason)")
        }
        guard header.type == replyType, header.tag == tag else {
            throw Failure(description: "lvlipd sent reply type \(header.type) tag \(header.tag), expected \(replyType) tag \(tag)")
        }
        return reply
    }

    /// Reads one whole message.
    public func readMessage() throws -> (IPCHeader, [UInt8]) {
        let headerBytes = try readExactly(IPCHeader.size)
        let header = headerBytes.withUnsafeBytes { IPCHeader($0) }
        guard header.length <= IPCHeader.maxBody else { throw Failure(description: "lvlipd sent an oversized reply") }
        return (header, try readExactly(Int(header.length)))
    }

    public func writeAll(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "writing to lvlipd: \(String(cString: strerror(errno)))")
            }
            offset += n
        }
    }

    private func readExactly(_ count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + offset, count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "reading from lvlipd: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw Failure(description: "lvlipd closed the connection") }
            offset += n
        }
        return out
    }
}
