import Stack

/// IPv6 frames for tests, built byte by byte independently of the stack's emit code.
enum Frames6 {
    static let stackGlobal = IPv6Address("fd00::4")!
    static let stackLinkLocal = IPv6Address(linkLocalFor: Frames.stackMAC)
    static let peerGlobal = IPv6Address("fd00::5")!
    static let peerLinkLocal = IPv6Address("fe80::5")!

    static func bytes(_ a: IPv6Address) -> [UInt8] { a.groups.flatMap { Frames.be16($0) } }

    static func ipv6(from src: IPv6Address = peerGlobal, to dst: IPv6Address = stackGlobal, next: UInt8,
                     hopLimit: UInt8 = 64, payloadLength: Int? = nil, _ payload: [UInt8]) -> [UInt8] {
        [0x60, 0, 0, 0] + Frames.be16(UInt16(payloadLength ?? payload.count)) + [next, hopLimit] + bytes(src) + bytes(dst)
            + payload
    }

    /// An upper-layer message with its checksum over the IPv6 pseudo-header (RFC 8200 8.1).
    static func withChecksum(_ message: [UInt8], at field: Int, from src: IPv6Address, to dst: IPv6Address,
                             next: UInt8) -> [UInt8] {
        var m = message
        let pseudo = bytes(src) + bytes(dst) + Frames.be32(UInt32(m.count)) + [0, 0, 0, next]
        let c = Frames.checksum(pseudo + m)
        m[field] = UInt8(c >> 8)
        m[field + 1] = UInt8(c & 0xFF)
        return m
    }

    static func icmp6(type: UInt8, code: UInt8 = 0, body: [UInt8], from src: IPv6Address = peerGlobal,
                      to dst: IPv6Address = stackGlobal) -> [UInt8] {
        withChecksum([type, code, 0, 0] + body, at: 2, from: src, to: dst, next: 58)
    }

    static func frame(to mac: MACAddress = Frames.stackMAC, from peer: MACAddress = Frames.peerMAC, _ packet: [UInt8]) -> [UInt8] {
        Frames.ethernet(to: mac, from: peer, type: 0x86DD, packet)
    }

    static func echoRequest(from src: IPv6Address = peerGlobal, to dst: IPv6Address = stackGlobal, seq: UInt16 = 1,
                            data: [UInt8] = Array(0..<32)) -> [UInt8] {
        frame(to: dst.isMulticast ? dst.multicastMAC : Frames.stackMAC,
              ipv6(from: src, to: dst, next: 58, icmp6(type: 128, body: Frames.be16(0x4242) + Frames.be16(seq) + data, from: src, to: dst)))
    }

    static func linkLayerOption(_ type: UInt8, _ mac: MACAddress) -> [UInt8] { [type, 1] + Frames.mac(mac) }

    static func neighborSolicitation(target: IPv6Address, from src: IPv6Address = peerGlobal, to dst: IPv6Address? = nil,
                                     sourceLinkLayer: MACAddress? = Frames.peerMAC, hopLimit: UInt8 = 255) -> [UInt8] {
        let dst = dst ?? target.solicitedNode
        let option = sourceLinkLayer.map { linkLayerOption(1, $0) } ?? []
        return frame(to: dst.isMulticast ? dst.multicastMAC : Frames.stackMAC,
                     ipv6(from: src, to: dst, next: 58, hopLimit: hopLimit,
                          icmp6(type: 135, body: [0, 0, 0, 0] + bytes(target) + option, from: src, to: dst)))
    }

    static func neighborAdvertisement(target: IPv6Address, from src: IPv6Address? = nil, to dst: IPv6Address = stackGlobal,
                                      router: Bool = false, solicited: Bool = true, override: Bool = true,
                                      targetLinkLayer: MACAddress? = Frames.peerMAC) -> [UInt8] {
        let src = src ?? target
        let flags: UInt8 = (router ? 0x80 : 0) | (solicited ? 0x40 : 0) | (override ? 0x20 : 0)
        let option = targetLinkLayer.map { linkLayerOption(2, $0) } ?? []
        return frame(to: dst.isMulticast ? dst.multicastMAC : Frames.stackMAC,
                     ipv6(from: src, to: dst, next: 58, hopLimit: 255,
                          icmp6(type: 136, body: [flags, 0, 0, 0] + bytes(target) + option, from: src, to: dst)))
    }
}

/// Parsed view of an IPv6 output frame.
struct Parsed6 {
    let frame: [UInt8]
    init(_ frame: [UInt8]) { self.frame = frame }
    var ethernetType: UInt16 { UInt16(frame[12]) << 8 | UInt16(frame[13]) }
    var destinationMAC: MACAddress { frame.withUnsafeBytes { MACAddress($0, at: 0) } }
    var nextHeader: UInt8 { frame[20] }
    var hopLimit: UInt8 { frame[21] }
    var source: IPv6Address { frame.withUnsafeBytes { IPv6Address($0, at: 22) } }
    var destination: IPv6Address { frame.withUnsafeBytes { IPv6Address($0, at: 38) } }
    var payload: [UInt8] { Array(frame[54...]) }
    var icmpType: UInt8 { payload[0] }
    var icmpCode: UInt8 { payload[1] }
    var icmpParameter: UInt32 { UInt32(payload[4]) << 24 | UInt32(payload[5]) << 16 | UInt32(payload[6]) << 8 | UInt32(payload[7]) }
    /// NS/NA target.
    var target: IPv6Address { frame.withUnsafeBytes { IPv6Address($0, at: 54 + 8) } }
    var naFlags: UInt8 { payload[4] }
    /// The checksum over the pseudo-header verifies.
    var checksumValid: Bool {
        let pseudo = Frames6.bytes(source) + Frames6.bytes(destination) + Frames.be32(UInt32(payload.count)) + [0, 0, 0, nextHeader]
        return Frames.checksum(pseudo + payload) == 0
    }
}

extension Harness {
    /// A stack with IPv6 on, fd00::4/64 and the link-local address, DAD off unless asked.
    static func ipv6(dad: Int = 0, configure: (inout IPv6Configuration) -> Void = { _ in }) -> Harness {
        Harness { config in
            var v6 = IPv6Configuration(addresses: [IPv6Interface(cidr: "fd00::4/64")!])
            v6.dadTransmits = dad
            configure(&v6)
            config.ipv6 = v6
        }
    }

    /// Teaches the stack the peer's MAC by a solicitation from it, discarding the answer.
    func learnPeer6(_ ip: IPv6Address = Frames6.peerGlobal) {
        receive(Frames6.neighborSolicitation(target: Frames6.stackGlobal, from: ip))
        _ = output()
    }
}

extension Frames6 {
    /// A packet with a Fragment header (RFC 8200 4.5) before `data`.
    static func fragment(from src: IPv6Address = peerGlobal, to dst: IPv6Address = stackGlobal, next: UInt8 = 58,
                         id: UInt32, offset: Int, more: Bool, _ data: [UInt8]) -> [UInt8] {
        frame(ipv6(from: src, to: dst, next: 44,
                   [next, 0] + Frames.be16(UInt16(offset) | (more ? 1 : 0)) + Frames.be32(id) + data))
    }

    /// The fragments of an upper-layer message, `size` bytes of it each (a multiple of 8).
    static func fragments(of message: [UInt8], next: UInt8 = 58, id: UInt32, size: Int) -> [[UInt8]] {
        stride(from: 0, to: message.count, by: size).map { start in
            let end = min(start + size, message.count)
            return fragment(next: next, id: id, offset: start, more: end < message.count, Array(message[start..<end]))
        }
    }

    /// An echo request message (not framed) with `count` bytes of data.
    static func echoMessage(count: Int, seq: UInt16 = 1, from src: IPv6Address = peerGlobal,
                            to dst: IPv6Address = stackGlobal) -> [UInt8] {
        icmp6(type: 128, body: Frames.be16(0x4242) + Frames.be16(seq) + (0..<count).map { UInt8(truncatingIfNeeded: $0) },
              from: src, to: dst)
    }

    static let routerLinkLocal = IPv6Address("fe80::1")!
    static let routerMAC = MACAddress("02:00:00:00:00:01")!

    /// A Router Advertisement (RFC 4861 4.2) to all nodes with these options.
    static func routerAdvertisement(from src: IPv6Address = routerLinkLocal, lifetime: UInt16 = 1800, hopLimit: UInt8 = 255,
                                    code: UInt8 = 0, options: [UInt8] = linkLayerOption(1, routerMAC)) -> [UInt8] {
        frame(to: IPv6Address.allNodes.multicastMAC, from: routerMAC,
              ipv6(from: src, to: .allNodes, next: 58, hopLimit: hopLimit,
                   icmp6(type: 134, code: code, body: [64, 0] + Frames.be16(lifetime) + Frames.be32(0) + Frames.be32(0) + options,
                         from: src, to: .allNodes)))
    }

    static func prefixOption(_ prefix: IPv6Address, length: UInt8 = 64, onLink: Bool = true,
                             validLifetime: UInt32 = 86400) -> [UInt8] {
        [3, 4, length, onLink ? 0xC0 : 0x40] + Frames.be32(validLifetime) + Frames.be32(validLifetime) + Frames.be32(0)
            + bytes(prefix)
    }

    static func mtuOption(_ mtu: UInt32) -> [UInt8] { [5, 1, 0, 0] + Frames.be32(mtu) }

    /// A Packet Too Big (RFC 4443 3.2) from `router` about a packet `quoted` (an IPv6 packet).
    static func packetTooBig(mtu: UInt32, quoting quoted: [UInt8], from router: IPv6Address = IPv6Address("fd00::1")!) -> [UInt8] {
        frame(ipv6(from: router, to: stackGlobal, next: 58,
                   icmp6(type: 2, body: Frames.be32(mtu) + Array(quoted.prefix(1232)), from: router, to: stackGlobal)))
    }
}

extension Parsed6 {
    /// The Fragment header's fields when the packet has one right after the IPv6 header.
    var fragmentOffset: Int { Int(payload[2]) << 8 | Int(payload[3] & 0xF8) }
    var moreFragments: Bool { payload[3] & 1 != 0 }
    var fragmentIdentification: UInt32 {
        UInt32(payload[4]) << 24 | UInt32(payload[5]) << 16 | UInt32(payload[6]) << 8 | UInt32(payload[7])
    }
}

extension Harness {
    /// A second stack at the peer's addresses (fd00::5, the peer's MAC), to receive what the
    /// stack under test sends.
    static func ipv6Peer() -> Harness {
        Harness { config in
            config.mac = Frames.peerMAC
            config.interface = IPv4Interface(address: Frames.peerIP, prefixLength: 24)
            var v6 = IPv6Configuration(addresses: [IPv6Interface(address: Frames6.peerGlobal, prefixLength: 64)])
            v6.dadTransmits = 0
            config.ipv6 = v6
        }
    }
}
