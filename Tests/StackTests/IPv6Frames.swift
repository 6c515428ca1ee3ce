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
