import Stack
import Timing
import XCTest

/// Builds frames for tests, independently of the stack's own emit code.
enum Frames {
    static let stackMAC = MACAddress(0x0200_0A00_0004)
    static let peerMAC = MACAddress(0x0200_0A00_0005)
    static let stackIP = IPv4Address(10, 0, 0, 4)
    static let peerIP = IPv4Address(10, 0, 0, 5)

    static func mac(_ m: MACAddress) -> [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: m.value >> UInt64(40 - 8 * $0)) } }
    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

    /// RFC 1071 reference checksum, byte by byte.
    static func checksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var i = 0
        while i + 1 < bytes.count {
            sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        return ~UInt16(sum)
    }

    static func ethernet(to dst: MACAddress = stackMAC, from src: MACAddress = peerMAC, type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        mac(dst) + mac(src) + be16(type) + payload
    }

    static func ipv4(
        from src: IPv4Address = peerIP, to dst: IPv4Address = stackIP, proto: UInt8, id: UInt16 = 1,
        moreFragments: Bool = false, offset: Int = 0, ttl: UInt8 = 64, options: [UInt8] = [], _ payload: [UInt8]
    ) -> [UInt8] {
        let ihl = 20 + options.count
        var h: [UInt8] = [UInt8(0x40 | ihl / 4), 0] + be16(UInt16(ihl + payload.count)) + be16(id)
        h += be16((moreFragments ? 0x2000 : 0) | UInt16(offset / 8))
        h += [ttl, proto, 0, 0] + be32(src.value) + be32(dst.value) + options
        let c = checksum(h)
        h[10] = UInt8(c >> 8)
        h[11] = UInt8(c & 0xFF)
        return h + payload
    }

    static func icmp(type: UInt8, code: UInt8 = 0, rest: [UInt8], _ data: [UInt8] = []) -> [UInt8] {
        var m = [type, code, 0, 0] + rest + data
        let c = checksum(m)
        m[2] = UInt8(c >> 8)
        m[3] = UInt8(c & 0xFF)
        return m
    }

    static func echoRequest(id: UInt16 = 0x1234, seq: UInt16 = 1, data: [UInt8]) -> [UInt8] {
        icmp(type: 8, rest: be16(id) + be16(seq), data)
    }

    static func arp(op: UInt16, senderMAC: MACAddress = peerMAC, senderIP: IPv4Address = peerIP,
                    targetMAC: MACAddress = .zero, targetIP: IPv4Address = stackIP) -> [UInt8] {
        be16(1) + be16(0x0800) + [6, 4] + be16(op) + mac(senderMAC) + be32(senderIP.value) + mac(targetMAC) + be32(targetIP.value)
    }

    /// Splits an IP payload into fragments of `size` bytes (a multiple of 8) as frames.
    static func fragments(proto: UInt8, id: UInt16, payload: [UInt8], size: Int) -> [[UInt8]] {
        stride(from: 0, to: payload.count, by: size).map { start in
            let end = min(start + size, payload.count)
            return ethernet(type: 0x0800, ipv4(proto: proto, id: id, moreFragments: end < payload.count, offset: start,
                                               Array(payload[start..<end])))
        }
    }
}

/// The link of a scripted test: it receives nothing on its own (the test hands the stack
/// its frames) and keeps what the stack transmits. A frame that asks for offloads is kept
/// as it came (`offloaded`) and, finished in software, among the others.
final class CapturingLink: Link {
    var transmitted: [[UInt8]] = []
    var offloaded: [([UInt8], FrameOffload)] = []

    func receive(limit: Int, _ deliver: (ReceivedFrame) -> Void) -> Int { 0 }
    func transmit(_ frame: UnsafeRawBufferPointer) { transmitted.append(Array(frame)) }
    func transmit(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) {
        offloaded.append((Array(frame), offload))
        offload.complete(frame) { transmit($0) }
    }
    func flush() {}
}

/// A stack on a virtual clock, driven by its `StackDriver` as lvlipd drives its stack, with
/// helpers to feed frames and collect its output.
final class Harness {
    var now = Instant.milliseconds(1_000_000)
    let stack: NetworkStack
    let driver: StackDriver
    let link = CapturingLink()

    init(configure: (inout StackConfiguration) -> Void = { _ in }) {
        var config = StackConfiguration(
            mac: Frames.stackMAC, interface: IPv4Interface(address: Frames.stackIP, prefixLength: 24))
        config.seed = 42
        configure(&config)
        stack = NetworkStack(configuration: config, now: now)
        driver = StackDriver(stack: stack)
    }

    func receive(_ frame: [UInt8]) { frame.withUnsafeBytes { stack.receive(frame: $0, now: now) } }

    /// Advances virtual time, polling at each deadline on the way as a reactor would.
    func advance(milliseconds: UInt64) {
        let target = now.adding(milliseconds: milliseconds)
        while let deadline = stack.nextDeadline, deadline <= target {
            now = max(now, deadline)
            driver.poll(now: now, link: link)
        }
        now = target
        driver.poll(now: now, link: link)
    }

    /// Takes every frame the stack has sent.
    func output() -> [[UInt8]] {
        driver.transmit(to: link, now: now)
        defer { link.transmitted.removeAll() }
        return link.transmitted
    }

    /// Teaches the stack the peer's MAC through an ARP request for it, discarding the reply.
    func learnPeer(ip: IPv4Address = Frames.peerIP, mac: MACAddress = Frames.peerMAC) {
        receive(Frames.ethernet(to: .broadcast, from: mac, type: 0x0806, Frames.arp(op: 1, senderMAC: mac, senderIP: ip)))
        _ = output()
    }
}

/// Parsed view of an output frame, for assertions.
struct Parsed {
    let frame: [UInt8]
    var ethernetType: UInt16 { UInt16(frame[12]) << 8 | UInt16(frame[13]) }
    var destinationMAC: MACAddress { frame.withUnsafeBytes { MACAddress($0, at: 0) } }
    var ip: [UInt8] { Array(frame[14...]) }
    var ipTotalLength: Int { Int(ip[2]) << 8 | Int(ip[3]) }
    var ipHeaderLength: Int { Int(ip[0] & 0x0F) * 4 }
    var ipPayload: [UInt8] { Array(ip[ipHeaderLength..<ipTotalLength]) }
    var ipProto: UInt8 { ip[9] }
    var ipSource: IPv4Address { IPv4Address(UInt32(ip[12]) << 24 | UInt32(ip[13]) << 16 | UInt32(ip[14]) << 8 | UInt32(ip[15])) }
    var ipDestination: IPv4Address { IPv4Address(UInt32(ip[16]) << 24 | UInt32(ip[17]) << 16 | UInt32(ip[18]) << 8 | UInt32(ip[19])) }
    var ipID: UInt16 { UInt16(ip[4]) << 8 | UInt16(ip[5]) }
    var moreFragments: Bool { ip[6] & 0x20 != 0 }
    var fragmentOffset: Int { (Int(ip[6] & 0x1F) << 8 | Int(ip[7])) * 8 }
    var ipHeaderValid: Bool { Frames.checksum(Array(ip[0..<ipHeaderLength])) == 0 }
    var arpOperation: UInt16 { UInt16(frame[20]) << 8 | UInt16(frame[21]) }
    var arpTargetIP: IPv4Address { IPv4Address(UInt32(frame[38]) << 24 | UInt32(frame[39]) << 16 | UInt32(frame[40]) << 8 | UInt32(frame[41])) }
    var arpSenderIP: IPv4Address { IPv4Address(UInt32(frame[28]) << 24 | UInt32(frame[29]) << 16 | UInt32(frame[30]) << 8 | UInt32(frame[31])) }
}
