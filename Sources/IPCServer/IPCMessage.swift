import CLinux

/// Framing of the IPC protocol (docs/ipc.md; constants in CLinux/include/lvlip_ipc.h).
public struct IPCHeader: Equatable {
    public static let size = Int(LVLIP_IPC_HEADER_SIZE)
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
        precondition(bytes.count >= Self.size)
        length = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        type = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        flags = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        tag = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
    }

    public func append(to out: inout [UInt8]) {
        out.appendLE(length)
        out.appendLE(type)
        out.appendLE(flags)
        out.appendLE(tag)
    }
}

public enum IPCMessageType {
    public static let hello = UInt16(LVLIP_MSG_HELLO.rawValue)
    public static let helloReply = UInt16(LVLIP_MSG_HELLO_REPLY.rawValue)
    public static let error = UInt16(LVLIP_MSG_ERROR.rawValue)
    public static let stats = UInt16(LVLIP_MSG_STATS.rawValue)
    public static let statsReply = UInt16(LVLIP_MSG_STATS_REPLY.rawValue)
    public static let sockets = UInt16(LVLIP_MSG_SOCKETS.rawValue)
    public static let socketsReply = UInt16(LVLIP_MSG_SOCKETS_REPLY.rawValue)
}

/// The body of HELLO and HELLO_REPLY: magic, version, reserved zero, pid; HELLO_REPLY adds
/// the stack's interface (address, netmask, gateway or 0), so the shim can refuse what the
/// kernel refuses at once (a broadcast without SO_BROADCAST, a destination without a route).
public struct IPCHello: Equatable {
    public static let size = 12
    public static let replySize = 24
    public var magic: UInt32 = LVLIP_IPC_MAGIC
    public var version: UInt16 = UInt16(LVLIP_IPC_VERSION)
    public var pid: Int32
    public var interface: (address: UInt32, netmask: UInt32, gateway: UInt32)?

    public init(pid: Int32, interface: (address: UInt32, netmask: UInt32, gateway: UInt32)? = nil) {
        self.pid = pid
        self.interface = interface
    }

    public init?(_ body: UnsafeRawBufferPointer) {
        guard body.count == Self.size || body.count == Self.replySize else { return nil }
        magic = UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        version = UInt16(littleEndian: body.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        guard UInt16(littleEndian: body.loadUnaligned(fromByteOffset: 6, as: UInt16.self)) == 0 else { return nil }
        pid = Int32(littleEndian: body.loadUnaligned(fromByteOffset: 8, as: Int32.self))
        if body.count == Self.replySize {
            interface = (UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 12, as: UInt32.self)),
                         UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 16, as: UInt32.self)),
                         UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 20, as: UInt32.self)))
        }
    }

    public static func == (a: IPCHello, b: IPCHello) -> Bool {
        a.magic == b.magic && a.version == b.version && a.pid == b.pid && a.interface?.address == b.interface?.address
            && a.interface?.netmask == b.interface?.netmask && a.interface?.gateway == b.interface?.gateway
    }

    public var encoded: [UInt8] {
        var out: [UInt8] = []
        out.appendLE(magic)
        out.appendLE(version)
        out.appendLE(UInt16(0))
        out.appendLE(pid)
        if let interface {
            out.appendLE(interface.address)
            out.appendLE(interface.netmask)
            out.appendLE(interface.gateway)
        }
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

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}
