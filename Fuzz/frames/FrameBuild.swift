import Stack

/// Frames as a peer builds them, with this file's own checksum code (RFC 1071), independent of
/// the stack's.
enum FrameBuild {
    static func mac(_ m: MACAddress) -> [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: m.value >> UInt64(40 - 8 * $0)) } }
    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    static func be32(_ v: UInt32) -> [UInt8] { be16(UInt16(v >> 16)) + be16(UInt16(v & 0xFFFF)) }

    static func sum(_ bytes: [UInt8], _ initial: UInt32 = 0) -> UInt32 {
        var s = initial
        var i = 0
        while i + 1 < bytes.count {
            s &+= UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < bytes.count { s &+= UInt32(bytes[i]) << 8 }
        return s
    }

    static func finish(_ s: UInt32) -> UInt16 {
        var s = s
        while s >> 16 != 0 { s = (s & 0xFFFF) + (s >> 16) }
        return ~UInt16(s)
    }

    static func pseudo(_ source: IPv4Address, _ destination: IPv4Address, _ proto: UInt8, _ length: Int) -> UInt32 {
        sum(be32(source.value) + be32(destination.value) + [0, proto] + be16(UInt16(truncatingIfNeeded: length)))
    }

    static func ethernet(to dst: MACAddress = FrameFuzzer.macA, from src: MACAddress = FrameFuzzer.macB,
                         type: UInt16 = 0x0800, _ payload: [UInt8]) -> [UInt8] {
        mac(dst) + mac(src) + be16(type) + payload
    }

    /// An IPv4 datagram (header and payload; no Ethernet header).
    static func ipv4(from source: IPv4Address, to destination: IPv4Address, proto: UInt8, ttl: UInt8 = 64,
                     fragment: UInt16 = 0x4000, options: [UInt8] = [], _ payload: [UInt8]) -> [UInt8] {
        let padded = options + [UInt8](repeating: 0, count: (4 - options.count % 4) % 4)
        let ihl = 20 + min(padded.count, 40)
        var h = [UInt8(0x40 | ihl / 4), 0] + be16(UInt16(truncatingIfNeeded: ihl + payload.count)) + be16(0x1234)
        h += be16(fragment) + [ttl, proto, 0, 0] + be32(source.value) + be32(destination.value) + padded.prefix(40)
        let c = finish(sum(h))
        h[10] = UInt8(c >> 8)
        h[11] = UInt8(c & 0xFF)
        return h + payload
    }

    static func tcp(from source: IPv4Address, _ sourcePort: UInt16, to destination: IPv4Address, _ port: UInt16,
                    seq: UInt32, ack: UInt32, flags: UInt8, window: UInt16, urgent: UInt16, options: [UInt8],
                    _ payload: [UInt8]) -> [UInt8] {
        let padded = Array((options + [UInt8](repeating: 0, count: (4 - options.count % 4) % 4)).prefix(40))
        var s = be16(sourcePort) + be16(port) + be32(seq) + be32(ack)
        s += [UInt8((20 + padded.count) / 4) << 4, flags] + be16(window) + [0, 0] + be16(urgent) + padded + payload
        let c = finish(sum(s, pseudo(source, destination, 6, s.count)))
        s[16] = UInt8(c >> 8)
        s[17] = UInt8(c & 0xFF)
        return s
    }

    static func udp(from source: IPv4Address, _ sourcePort: UInt16, to destination: IPv4Address, _ port: UInt16,
                    _ payload: [UInt8], zeroChecksum: Bool) -> [UInt8] {
        var d = be16(sourcePort) + be16(port) + be16(UInt16(truncatingIfNeeded: 8 + payload.count)) + [0, 0] + payload
        if !zeroChecksum {
            var c = finish(sum(d, pseudo(source, destination, 17, d.count)))
            if c == 0 { c = 0xFFFF }
            d[6] = UInt8(c >> 8)
            d[7] = UInt8(c & 0xFF)
        }
        return d
    }

    static func icmp(type: UInt8, code: UInt8, rest: UInt32, _ data: [UInt8]) -> [UInt8] {
        var m = [type, code, 0, 0] + be32(rest) + data
        let c = finish(sum(m))
        m[2] = UInt8(c >> 8)
        m[3] = UInt8(c & 0xFF)
        return m
    }

    static func arp(op: UInt16, senderMAC: MACAddress, senderIP: IPv4Address, targetIP: IPv4Address) -> [UInt8] {
        be16(1) + be16(0x0800) + [6, 4] + be16(op) + mac(senderMAC) + be32(senderIP.value) + [0, 0, 0, 0, 0, 0]
            + be32(targetIP.value)
    }
}

/// What every frame the stack emits must satisfy.
enum FrameCheck {
    static func verify(_ f: [UInt8]) {
        precondition(f.count >= 14, "frame of \(f.count) bytes")
        if f[12] == 0x86 && f[13] == 0xDD { return verifyIPv6(f) }
        guard f[12] == 0x08, f[13] == 0x00 else { return }
        precondition(f.count >= 34, "IPv4 frame of \(f.count) bytes")
        let ihl = Int(f[14] & 0x0F) * 4
        precondition(f[14] >> 4 == 4 && ihl >= 20, "IPv4 version/IHL byte \(f[14])")
        let total = Int(Bytes.be16(f, 16))
        precondition(total >= ihl && 14 + total <= f.count, "IPv4 total length \(total) in a \(f.count)-byte frame")
        precondition(FrameBuild.finish(FrameBuild.sum(Array(f[14..<14 + ihl]))) == 0, "bad IPv4 header checksum")
        let fragmentOffset = Bytes.be16(f, 20) & 0x1FFF
        guard fragmentOffset == 0, Bytes.be16(f, 20) & 0x2000 == 0 else { return }
        let payload = Array(f[14 + ihl..<14 + total])
        let source = IPv4Address(Bytes.be32(f, 26))
        let destination = IPv4Address(Bytes.be32(f, 30))
        switch f[23] {
        case 1:
            precondition(FrameBuild.finish(FrameBuild.sum(payload)) == 0, "bad ICMP checksum")
        case 6:
            precondition(payload.count >= 20, "TCP segment of \(payload.count) bytes")
            let offset = Int(payload[12] >> 4) * 4
            precondition(offset >= 20 && offset <= payload.count, "TCP data offset \(offset)")
            let s = FrameBuild.sum(payload, FrameBuild.pseudo(source, destination, 6, payload.count))
            precondition(FrameBuild.finish(s) == 0, "bad TCP checksum")
        case 17:
            precondition(payload.count >= 8 && Int(Bytes.be16(payload, 4)) == payload.count, "UDP length")
            if Bytes.be16(payload, 6) != 0 {
                let s = FrameBuild.sum(payload, FrameBuild.pseudo(source, destination, 17, payload.count))
                precondition(FrameBuild.finish(s) == 0, "bad UDP checksum")
            }
        default:
            break
        }
    }
}
