import CLinux
import Glibc
import Stack

/// `lvlip_addr`, the IPC's socket address of either family (docs/ipc.md), to and from the
/// stack's `IPAddress`: the 16 bytes are the address in network byte order, IPv4 as
/// ::ffff:a.b.c.d, which is `IPAddress`'s own form.
extension lvlip_addr {
    /// A name for the shim: `family` AF_INET for an IPv4 (v4-mapped) address, else AF_INET6.
    public init(_ address: IPAddress, port: UInt16, scope: UInt32 = 0) {
        self.init()
        var bits = (address.bits.high.bigEndian, address.bits.low.bigEndian)
        withUnsafeMutableBytes(of: &self.addr) { out in withUnsafeBytes(of: &bits) { out.copyMemory(from: $0) } }
        self.port = port
        family = UInt16(address.isIPv4 ? AF_INET : AF_INET6)
        scope_id = scope
    }

    public var ipAddress: IPAddress {
        withUnsafeBytes(of: addr) { IPAddress(IPv6Address($0, at: 0)) }
    }

    /// Whether the shim's address is well formed: a known family, an AF_INET address in
    /// v4-mapped form, the reserved field 0. Anything else is a protocol violation.
    var isWellFormed: Bool {
        guard reserved == 0 else { return false }
        switch Int32(family) {
        case AF_INET: return ipAddress.isIPv4 && flowinfo == 0 && scope_id == 0
        case AF_INET6, AF_UNSPEC: return true
        default: return false
        }
    }
}

extension SocketService {
    /// The scope id a name carries: the TAP's index for a link-local address (the stack has
    /// one interface), as the kernel's getsockname and getpeername give it.
    func scope(of address: IPAddress) -> UInt32 {
        !address.isIPv4 && address.bits.isLinkLocal ? UInt32(interfaceIndex) : 0
    }

    func wireName(_ address: IPAddress, _ port: UInt16) -> lvlip_addr {
        lvlip_addr(address, port: port, scope: scope(of: address))
    }
}
