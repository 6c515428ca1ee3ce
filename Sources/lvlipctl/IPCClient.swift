import CLinux
import Glibc
import IPCServer

/// A blocking client of the daemon's IPC socket, for the command-line tool.
struct IPCClient {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private let fd: Int32
    private var nextTag: UInt32 = 1

    init(path: String) throws {
        let fd = lvlip_unix_connect(path)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            throw Failure(description: "cannot connect to lvlipd at \(path): \(reason) (is lvlipd running? set --socket or LVLIP_SOCKET)")
        }
        self.fd = fd
        let reply = try request(type: IPCMessageType.hello, body: IPCHello(pid: getpid()).encoded, expecting: IPCMessageType.helloReply)
        guard reply.withUnsafeBytes({ IPCHello($0) }) != nil else {
            throw Failure(description: "lvlipd answered HELLO with a malformed reply")
        }
    }

    func close() { _ = Glibc.close(fd) }

    mutating func request(type: UInt16, body: [UInt8] = [], expecting replyType: UInt16) throws -> [UInt8] {
        let tag = nextTag
        nextTag &+= 1
        try writeAll(IPCFrame.encode(type: type, tag: tag, body: body))
        let headerBytes = try readExactly(IPCHeader.size)
        let header = headerBytes.withUnsafeBytes { IPCHeader($0) }
        guard header.length <= IPCHeader.maxBody else { throw Failure(description: "lvlipd sent an oversized reply") }
        let reply = try readExactly(Int(header.length))
        if header.type == IPCMessageType.error {
            let reason = reply.count > 4 ? String(decoding: reply[4...], as: UTF8.self) : "unknown error"
            throw Failure(description: "lvlipd: \(reason)")
        }
        guard header.type == replyType, header.tag == tag else {
            throw Failure(description: "lvlipd sent reply type \(header.type) tag \(header.tag), expected \(replyType) tag \(tag)")
        }
        return reply
    }

    private func writeAll(_ bytes: [UInt8]) throws {
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
