import FuzzSupport
import Stack

/// IPv6 input for the frame fuzzer: a packet to one of A's addresses or groups with a chain
/// of extension headers and an upper layer from the script; ICMPv6 messages (echo, neighbour
/// solicitations and advertisements for A's addresses, router advertisements, packet too
/// big) carry correct checksums so that they reach NDP, router discovery and path MTU
/// discovery, and so do UDP datagrams (mostly to the dual-stack socket's port 5300) and TCP
/// segments (mostly to the dual-stack listener's port 8080), so that they reach the sockets.
/// A packet may also be cut into fragments of one of a few identifications, delivered in
/// order, reversed or with one left out, so that reassembly completes, times out, overlaps
/// and mixes datagrams.
extension FrameFuzzer {
    static let address6A = IPv6Interface(cidr: "fd00::1/64")!
    static let address6B = IPv6Address("fd00::2")!

    func ipv6(_ r: inout Reader) {
        let control = r.u8()
        let ours = [Self.address6A.address, IPv6Address(linkLocalFor: Self.macA)]
        let destinations = [ours[0], ours[1], .allNodes, ours[Int(control >> 7)].solicitedNode,
                            IPv6Address(high: UInt64(r.u32()) << 32, low: UInt64(r.u32()))]
        let destination = destinations[Int(r.u8()) % destinations.count]
        let source = control & 1 == 0 ? Self.address6B : (control & 2 == 0 ? .unspecified : IPv6Address(linkLocalFor: Self.macB))
        // Extension headers: up to three, each a type and a body from the script.
        var chain: [(UInt8, [UInt8])] = []
        for _ in 0..<Int(r.u8() % 4) {
            let kinds: [UInt8] = [0, 43, 44, 60, r.u8()]
            let kind = kinds[Int(r.u8()) % kinds.count]
            chain.append((kind, r.bytes(6 + 8 * Int(r.u8() % 3))))
        }
        let upperKinds: [UInt8] = [58, 58, 17, 6, 59, r.u8()]
        let upper = upperKinds[Int(r.u8()) % upperKinds.count]
        var body = r.bytes(Int(r.u16() % (control & 64 == 0 ? 1400 : 4000)))
        if upper == 58 {
            let types: [UInt8] = [128, 135, 136, 1, 134, 2, r.u8()]
            let type = types[Int(r.u8()) % types.count]
            var message = [type, control & 4 == 0 ? 0 : r.u8(), 0, 0] + FrameBuild.be32(r.u32())
            if type == 135 || type == 136 { message += Frames6Build.bytes(ours[Int(r.u8() & 1)]) }
            message += body
            let c = FrameBuild.finish(FrameBuild.sum(message, Frames6Build.pseudo(source, destination, 58, message.count)))
            message[2] = UInt8(c >> 8)
            message[3] = UInt8(c & 0xFF)
            body = message
        } else if upper == 17 {
            let ports: [UInt16] = [5300, 5300, 53, r.u16()]
            var datagram = FrameBuild.be16(r.u16()) + FrameBuild.be16(ports[Int(r.u8()) % ports.count])
                + FrameBuild.be16(UInt16(truncatingIfNeeded: 8 + body.count)) + [0, 0] + body
            if control & 64 == 0 {
                let c = FrameBuild.finish(FrameBuild.sum(datagram, Frames6Build.pseudo(source, destination, 17, datagram.count)))
                datagram[6] = UInt8(c >> 8)
                datagram[7] = UInt8(c & 0xFF)
            }
            body = datagram
        } else if upper == 6 {
            // A segment with a right checksum to the dual-stack listener, the IPv4-only one or
            // anywhere: SYNs, stray ACKs and RSTs reach the listener, SYN cookies and RSTs.
            let ports: [UInt16] = [8080, 8080, 80, r.u16()]
            let flagChoices: [UInt8] = [0x02, 0x10, 0x12, 0x04, 0x11, 0x18, r.u8()]
            let options = r.bytes(4 * Int(r.u8() % 4))
            var segment = FrameBuild.be16(r.u16() | 0x8000) + FrameBuild.be16(ports[Int(r.u8()) % ports.count])
                + FrameBuild.be32(r.u32()) + FrameBuild.be32(r.u32())
                + [UInt8((5 + options.count / 4) << 4), flagChoices[Int(r.u8()) % flagChoices.count]]
                + FrameBuild.be16(r.u16()) + [0, 0, 0, 0] + options + body
            let c = FrameBuild.finish(FrameBuild.sum(segment, Frames6Build.pseudo(source, destination, 6, segment.count)))
            segment[16] = UInt8(c >> 8)
            segment[17] = UInt8(c & 0xFF)
            body = segment
        }
        var payload: [UInt8] = []
        let nexts = chain.map(\.0) + [upper]
        for (i, (_, header)) in chain.enumerated() {
            payload += [nexts[i + 1], UInt8(header.count / 8)] + header
        }
        payload += body
        let hopLimit: UInt8 = control & 8 == 0 ? 255 : r.u8()
        let mac = destination.isMulticast ? destination.multicastMAC : Self.macA
        func header(_ next: [UInt8], _ length: Int) -> [UInt8] {
            [0x60, 0, 0, 0] + FrameBuild.be16(UInt16(truncatingIfNeeded: length)) + next + [hopLimit]
                + Frames6Build.bytes(source) + Frames6Build.bytes(destination)
        }
        if control & 64 != 0 {
            fragments(of: payload, next: nexts[0], header: header, mac: mac, &r)
            return
        }
        var packet = header([nexts[0]], payload.count) + payload
        if control & 16 != 0, packet.count > 5 { packet[5] ^= r.u8() }  // a lying payload length
        deliver(FrameBuild.ethernet(to: mac, type: 0x86DD, packet), verified: control & 32 != 0)
    }

    /// `payload` (what follows the IPv6 header) in fragments of 8 to 512 bytes (sometimes not
    /// a multiple of 8), identification 0 to 3 (so that datagrams meet), offsets sometimes
    /// shifted into overlaps; delivered in order, reversed, or with one left out.
    private func fragments(of payload: [UInt8], next: UInt8, header: ([UInt8], Int) -> [UInt8], mac: MACAddress,
                           _ r: inout Reader) {
        let style = r.u8()
        let size = 8 * (1 + Int(r.u8() % 64)) + (style & 1 == 0 ? 0 : Int(r.u8() % 8))
        let identification = UInt32(r.u8() % 4)
        var frames: [[UInt8]] = []
        var start = 0
        repeat {
            let end = min(start + size, payload.count)
            let offset = style & 2 != 0 && start > 0 ? start - 8 : start
            let field = UInt16(truncatingIfNeeded: offset) & 0xFFF8 | (end < payload.count ? 1 : 0)
            let fragment = [next, 0] + FrameBuild.be16(field) + FrameBuild.be32(identification) + Array(payload[start..<end])
            frames.append(FrameBuild.ethernet(to: mac, type: 0x86DD, header([44], fragment.count) + fragment))
            start = end
        } while start < payload.count && frames.count < 64
        if style & 4 != 0 { frames.reverse() }
        if style & 8 != 0, frames.count > 1 { frames.remove(at: Int(r.u8()) % frames.count) }
        for frame in frames { deliver(frame) }
    }
}

enum Frames6Build {
    static func bytes(_ a: IPv6Address) -> [UInt8] { a.groups.flatMap { FrameBuild.be16($0) } }

    static func pseudo(_ source: IPv6Address, _ destination: IPv6Address, _ next: UInt8, _ length: Int) -> UInt32 {
        FrameBuild.sum(bytes(source) + bytes(destination) + FrameBuild.be32(UInt32(length)) + [0, 0, 0, next])
    }
}

extension FrameCheck {
    /// Every IPv6 frame the stack emits: a whole header, a payload length that matches, and,
    /// for ICMPv6, UDP and TCP, a valid checksum over the pseudo-header (UDP's never zero); a
    /// fragment (RFC 8200 4.5) within the MTU, its data a multiple of 8 unless it is the last,
    /// never an atomic fragment (RFC 8021).
    static func verifyIPv6(_ f: [UInt8]) {
        precondition(f.count >= 54 && f[14] >> 4 == 6, "IPv6 frame of \(f.count) bytes")
        let length = Int(Bytes.be16(f, 18))
        precondition(54 + length == f.count, "IPv6 payload length \(length) in a \(f.count)-byte frame")
        if f[20] == 44 {
            precondition(length >= 8 && f.count <= 1514, "IPv6 fragment of \(f.count) bytes")
            let field = Bytes.be16(f, 56)
            precondition(field & 1 == 0 || (length - 8) % 8 == 0, "fragment data of \(length - 8) bytes with M set")
            precondition(field != 0, "an atomic fragment")
            return
        }
        let next = f[20]
        guard next == 58 || next == 17 || next == 6 else { return }
        let source = f.withUnsafeBytes { IPv6Address($0, at: 22) }
        let destination = f.withUnsafeBytes { IPv6Address($0, at: 38) }
        let payload = Array(f[54...])
        precondition(FrameBuild.finish(FrameBuild.sum(payload, Frames6Build.pseudo(source, destination, next, payload.count))) == 0,
                     "bad ICMPv6 or UDP checksum")
        if next == 17 { precondition(payload.count >= 8 && Bytes.be16(f, 60) != 0, "zero UDP checksum over IPv6") }
    }
}
