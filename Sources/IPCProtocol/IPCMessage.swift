import CLinux

/// The IPC protocol's messages as Swift values (docs/ipc.md). The layouts are the C structs of
/// CLinux/include/lvlip_ipc.h, the one definition the shim compiles against too: this file
/// reads and writes those structs and never spells out an offset of its own.
///
/// The peers share one host, so the structs travel in its byte order; lvlip runs on
/// little-endian Linux (docs/ipc.md says so for the tests' encoders).
public struct IPCHeader: Equatable {
    public static let size = MemoryLayout<lvlip_msg_header>.size
    public static let maxBody = Int(LVLIP_IPC_MAX_BODY)

    public var length: UInt32
    public var type: UInt16
    public var flags: UInt16
    public var tag: UInt32

    public init(length: UInt32, type: UInt16, flags: UInt16 = 0, tag: UInt32) {
        self.length = length
        self.type = type
        self.flags = flags
        self.tag = tag
    }

    /// Decodes a header from the first `size` bytes.
    public init(_ bytes: UnsafeRawBufferPointer) {
        let h = IPCBody.decode(lvlip_msg_header.self, bytes)
        self.init(length: h.length, type: h.type, flags: h.flags, tag: h.tag)
    }

    public func append(to out: inout [UInt8]) {
        IPCBody.append(lvlip_msg_header(length: length, type: type, flags: flags, tag: tag), to: &out)
    }
}

/// The message types the daemon answers outside the socket service.
public enum IPCMessageType {
    public static let hello = UInt16(LVLIP_MSG_HELLO.rawValue)
    public static let helloReply = UInt16(LVLIP_MSG_HELLO_REPLY.rawValue)
    public static let error = UInt16(LVLIP_MSG_ERROR.rawValue)
    public static let stats = UInt16(LVLIP_MSG_STATS.rawValue)
    public static let statsReply = UInt16(LVLIP_MSG_STATS_REPLY.rawValue)
    public static let sockets = UInt16(LVLIP_MSG_SOCKETS.rawValue)
    public static let socketsReply = UInt16(LVLIP_MSG_SOCKETS_REPLY.rawValue)

    /// Whether `type` is a socket request (SOCKET ... STATUS, even numbers; each is answered by
    /// the type + 1).
    public static func isSocketRequest(_ type: UInt16) -> Bool {
        type >= UInt16(LVLIP_MSG_SOCKET.rawValue) && type <= UInt16(LVLIP_MSG_STATUS.rawValue) && type % 2 == 0
    }
}

/// Message bodies are the header's C structs, byte for byte.
public enum IPCBody {
    /// The struct at the start of `bytes`; the caller has checked the length.
    @inlinable public static func decode<T>(_ type: T.Type, _ bytes: UnsafeRawBufferPointer) -> T {
        precondition(bytes.count >= MemoryLayout<T>.size)
        return bytes.loadUnaligned(as: T.self)
    }

    /// The struct at the start of `bytes` if `bytes` holds exactly one.
    @inlinable public static func decodeExactly<T>(_ type: T.Type, _ bytes: UnsafeRawBufferPointer) -> T? {
        bytes.count == MemoryLayout<T>.size ? bytes.loadUnaligned(as: T.self) : nil
    }

    @inlinable public static func append<T>(_ value: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: value) { out.append(contentsOf: $0) }
    }

    @inlinable public static func encode<T>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value) { Array($0) }
    }
}

/// The body of HELLO (`lvlip_hello`) and of HELLO_REPLY (`lvlip_hello_reply_body`): magic,
/// version, reserved zero, pid; HELLO_REPLY adds the stack's interface (address, netmask,
/// gateway or 0), so the shim can refuse what the kernel refuses at once (a broadcast without
/// SO_BROADCAST, a destination without a route).
public struct IPCHello: Equatable {
    public static let size = MemoryLayout<lvlip_hello>.size
    public static let replySize = MemoryLayout<lvlip_hello_reply_body>.size

    public struct Interface: Equatable {
        public var address: UInt32
        public var netmask: UInt32
        public var gateway: UInt32

        public init(address: UInt32, netmask: UInt32, gateway: UInt32) {
            self.address = address
            self.netmask = netmask
            self.gateway = gateway
        }
    }

    public var magic: UInt32 = LVLIP_IPC_MAGIC
    public var version: UInt16 = UInt16(LVLIP_IPC_VERSION)
    public var pid: Int32
    public var interface: Interface?

    public init(pid: Int32, interface: Interface? = nil) {
        self.pid = pid
        self.interface = interface
    }

    /// A HELLO or HELLO_REPLY body; nil if its length fits neither or its reserved field is set.
    public init?(_ body: UnsafeRawBufferPointer) {
        if let hello = IPCBody.decodeExactly(lvlip_hello.self, body) {
            guard hello.zero == 0 else { return nil }
            magic = hello.magic
            version = hello.version
            pid = hello.pid
        } else if let reply = IPCBody.decodeExactly(lvlip_hello_reply_body.self, body) {
            guard reply.zero == 0 else { return nil }
            magic = reply.magic
            version = reply.version
            pid = reply.pid
            interface = Interface(address: reply.address, netmask: reply.netmask, gateway: reply.gateway)
        } else {
            return nil
        }
    }

    public var encoded: [UInt8] {
        guard let interface else {
            return IPCBody.encode(lvlip_hello(magic: magic, version: version, zero: 0, pid: pid))
        }
        return IPCBody.encode(lvlip_hello_reply_body(magic: magic, version: version, zero: 0, pid: pid,
                                                     address: interface.address, netmask: interface.netmask,
                                                     gateway: interface.gateway))
    }
}

/// The body of ERROR: an errno and a reason.
public struct IPCError: Equatable {
    public var code: Int32
    public var reason: String

    public init(code: Int32, reason: String) {
        self.code = code
        self.reason = reason
    }

    public init?(_ body: UnsafeRawBufferPointer) {
        let header = MemoryLayout<lvlip_error>.size
        guard body.count >= header else { return nil }
        code = IPCBody.decode(lvlip_error.self, body).error
        reason = String(decoding: body[header...], as: UTF8.self)
    }

    public var encoded: [UInt8] {
        var out = IPCBody.encode(lvlip_error(error: code))
        out.append(contentsOf: reason.utf8)
        return out
    }
}

public enum IPCFrame {
    /// A whole message: header then body.
    public static func encode(type: UInt16, tag: UInt32, body: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(IPCHeader.size + body.count)
        IPCHeader(length: UInt32(body.count), type: type, tag: tag).append(to: &out)
        out.append(contentsOf: body)
        return out
    }
}
