import FuzzSupport
import Stack
import Timing

/// The stack under hostile frames: each input is a script of operations run against a fresh
/// stack (A, 10.0.0.1) that already has live sockets in several states, set up with a peer
/// stack (B, 10.0.0.2) over an in-memory link that is cut before the script starts:
///
/// - a listener on A:80 with an accepted connection from B, with data A sent still unacked;
/// - a dual-stack listener on A's [::]:8080 with an accepted connection from B over IPv6;
/// - a connection from A to B:81 with B's data waiting unread in A's receive queue;
/// - UDP sockets (bound to :53, connected to B:5353, a dual-stack IPv6 one bound to [::]:5300)
///   and an ICMP echo socket.
///
/// The script's operations craft frames the way a hostile peer would: raw bytes, IPv4 with
/// any payload, TCP segments on a live connection's tuple with sequence and acknowledgement
/// numbers near the real ones (so that they are in or near the window and reach the state
/// machine, options, SACK and reassembly), UDP, ICMP errors quoting a live connection, ARP;
/// and IPv6 (FrameFuzzer+IPv6); and it moves time and acts as the application. Checksums are right unless the script
/// says otherwise, so the input reaches past the checksum test.
///
/// Oracle: besides crashes (and AddressSanitizer's findings in the unsafe code), every frame
/// the stack emits must be well formed: a valid IPv4 header checksum and total length, and a
/// valid TCP/UDP/ICMP checksum.
final class FrameFuzzer {
    static let addressA = IPv4Address(10, 0, 0, 1)
    static let addressB = IPv4Address(10, 0, 0, 2)
    static let macA = MACAddress(derivedFrom: addressA)
    static let macB = MACAddress(derivedFrom: addressB)

    /// A TCP connection of A, as its own frames show it.
    struct Flow {
        var localPort: UInt16
        var remote: IPv4Address
        var remotePort: UInt16
        /// The next sequence number A will send, and the next A expects.
        var sendNext: UInt32 = 0
        var receiveNext: UInt32 = 0
    }

    let stack: NetworkStack
    private let peer: NetworkStack
    private let driver: StackDriver
    private let peerDriver: StackDriver
    private let wire: SimulatedWire
    /// A's link: the wire to B during set-up, then the script's frames.
    private let link: ScriptLink
    private(set) var now = Instant.milliseconds(1_000_000)
    private(set) var flows: [Flow] = []
    private var sockets: [SocketID] = []
    private var udpSockets: [SocketID] = []
    private var listener: SocketID?
    private var scratch = [UInt8](repeating: 0, count: 65536)

    init() {
        var ca = StackConfiguration(mac: Self.macA, interface: IPv4Interface(address: Self.addressA, prefixLength: 24))
        ca.seed = 1
        // Small queues: the fixture is rebuilt for every input, and a full-size outbox is a
        // megabyte and a half to clear each time.
        ca.outputQueueFrames = 128
        // A asks for offloads as lvlipd does on a TAP: its super-segments and partial
        // checksums reach the oracle finished by the link's software path (FrameOffload).
        ca.offload = OutputOffload(checksum: true, tcpSegmentation: true)
        // IPv6 on A, its addresses preferred at once (the fixture never runs DAD's timers).
        var v6 = IPv6Configuration(addresses: [Self.address6A])
        v6.dadTransmits = 0
        ca.ipv6 = v6
        var cb = StackConfiguration(mac: Self.macB, interface: IPv4Interface(address: Self.addressB, prefixLength: 24))
        cb.seed = 2
        var v6B = IPv6Configuration(addresses: [IPv6Interface(address: Self.address6B, prefixLength: 64)])
        v6B.dadTransmits = 0
        cb.ipv6 = v6B
        cb.outputQueueFrames = 128
        stack = NetworkStack(configuration: ca, now: now)
        peer = NetworkStack(configuration: cb, now: now)
        driver = StackDriver(stack: stack)
        peerDriver = StackDriver(stack: peer)
        wire = SimulatedWire(seed: 1, faults: SimulatedWire.Faults(delayMicroseconds: 0), now: now,
                             frameSize: ca.mtu + EthernetFrame.headerLength)
        link = ScriptLink(wire: wire.a)
        link.watch = { [unowned self] frame in
            let bytes = Array(frame)
            FrameCheck.verify(bytes)
            learn(bytes)
        }
        setUp()
    }

    // MARK: - The fixture

    private func setUp() {
        let listen = stack.tcpOpen()
        try? stack.tcpBind(listen, port: 80)
        try? stack.tcpListen(listen, backlog: 8)
        listener = listen
        let fromB = peer.tcpOpen()
        try? peer.tcpConnect(fromB, to: IPAddress(Self.addressA), port: 80, now: now)
        let peerListener = peer.tcpOpen()
        try? peer.tcpBind(peerListener, port: 81)
        try? peer.tcpListen(peerListener, backlog: 8)
        let toB = stack.tcpOpen()
        try? stack.tcpConnect(toB, to: IPAddress(Self.addressB), port: 81, now: now)
        // A dual-stack listener, and a connection to it from B over IPv6.
        let listen6 = stack.tcpOpen(family: .ipv6)
        try? stack.tcpBind(listen6, address: .anyIPv6, port: 8080)
        try? stack.tcpListen(listen6, backlog: 8)
        let fromB6 = peer.tcpOpen(family: .ipv6)
        try? peer.tcpConnect(fromB6, to: IPAddress(Self.address6A.address), port: 8080, now: now)
        exchange()
        if let accepted6 = try? stack.tcpAccept(listen6) {
            sockets.append(accepted6)
            send(accepted6, 3000)
        }
        if let accepted = try? stack.tcpAccept(listen) {
            sockets.append(accepted)
            send(accepted, 3000)
        }
        sockets.append(toB)
        if let served = try? peer.tcpAccept(peerListener) {
            _ = [UInt8](repeating: 0x42, count: 2000).withUnsafeBytes { try? peer.tcpSend(served, $0, now: now) }
        }
        exchange()
        // The wire is cut: what A sends from now on goes nowhere, so data in flight is never
        // acknowledged by B and retransmission and loss recovery have work.
        link.wire = nil
        if let first = sockets.first { send(first, 5000) }
        let bound = stack.udpOpen()
        try? stack.udpBind(bound, address: nil, port: 53)
        let connected = stack.udpOpen()
        try? stack.udpConnect(connected, to: (IPAddress(Self.addressB), 5353))
        let dual = stack.udpOpen(family: .ipv6)
        try? stack.udpBind(dual, address: .anyIPv6, port: 5300)
        udpSockets = [bound, connected, stack.icmpOpen(raw: false), dual]
        driver.transmit(to: link, now: now)
    }

    /// Runs the wire between A and B until nothing is in flight (bounded), 100 µs a round.
    private func exchange() {
        for _ in 0..<64 {
            wire.now = now
            driver.transmit(to: link, now: now)
            peerDriver.transmit(to: wire.b, now: now)
            driver.poll(now: now, link: link)
            peerDriver.poll(now: now, link: wire.b)
            if wire.isEmpty { break }
            now = now.adding(nanoseconds: 100_000)
        }
    }

    private func learn(_ f: [UInt8]) {
        guard f.count >= 54, f[12] == 0x08, f[13] == 0x00, f[23] == 6 else { return }
        let ihl = Int(f[14] & 0x0F) * 4
        let t = 14 + ihl
        guard f.count >= t + 20 else { return }
        let remote = IPv4Address(Bytes.be32(f, 30))
        let localPort = Bytes.be16(f, t)
        let remotePort = Bytes.be16(f, t + 2)
        let seq = Bytes.be32(f, t + 4)
        let ack = Bytes.be32(f, t + 8)
        let flags = f[t + 13]
        let total = Int(Bytes.be16(f, 16))
        let length = UInt32(max(0, total - ihl - Int(f[t + 12] >> 4) * 4)) + UInt32(flags & 0x03 != 0 ? 1 : 0)
        var index = flows.firstIndex { $0.localPort == localPort && $0.remote == remote && $0.remotePort == remotePort }
        if index == nil, flows.count < 16 {
            flows.append(Flow(localPort: localPort, remote: remote, remotePort: remotePort))
            index = flows.count - 1
        }
        guard let i = index else { return }
        let end = seq &+ length
        if Int32(bitPattern: end &- flows[i].sendNext) > 0 || flows[i].sendNext == 0 { flows[i].sendNext = end }
        if flags & 0x10 != 0 { flows[i].receiveNext = ack }
    }

    /// Frames the scripts have delivered in this process, reported when it exits.
    nonisolated(unsafe) static var framesDelivered = 0
    /// IPv6 packets A reassembled (atomic fragments included): shows that fragments reach it.
    nonisolated(unsafe) static var ipv6Reassembled = 0

    /// One frame from the script, taken as lvlipd takes one from the TAP: the driver's poll.
    func deliver(_ frame: [UInt8], verified: Bool = false) {
        Self.framesDelivered += 1
        link.queued.append((frame, verified))
        driver.poll(now: now, link: link)
    }

    private func send(_ id: SocketID, _ count: Int) {
        let bytes = [UInt8](repeating: 0x61, count: count)
        _ = bytes.withUnsafeBytes { try? stack.tcpSend(id, $0, now: now) }
    }

    // MARK: - The script

    /// Runs one input.
    func run(_ input: UnsafeRawBufferPointer) {
        var r = Reader(input)
        var steps = 0
        while !r.atEnd, steps < 256 {
            steps += 1
            switch r.u8() % 10 {
            case 0: rawFrame(&r)
            case 1: ipv4(&r)
            case 2, 3: tcp(&r)
            case 4: udp(&r)
            case 5: icmpError(&r)
            case 6: advance(&r)
            case 7: application(&r)
            case 8: ipv6(&r)
            default: arp(&r)
            }
        }
        Self.ipv6Reassembled += Int(stack.counters.ip6ReasmOKs)
    }

    private func rawFrame(_ r: inout Reader) {
        let count = Int(r.u16() % 1600)
        deliver(r.bytes(count), verified: r.u8() & 1 == 1)
    }

    /// An IPv4 datagram with any protocol and payload; a few header fields from the script.
    private func ipv4(_ r: inout Reader) {
        let proto = r.u8()
        let control = r.u8()
        let fragment = r.u16()
        let options = r.bytes(Int(r.u8() % 41))
        let payload = r.bytes(Int(r.u16() % 1500))
        let source = control & 1 == 0 ? Self.addressB : IPv4Address(r.u32())
        let destination = control & 2 == 0 ? Self.addressA : IPv4Address(r.u32())
        var frame = FrameBuild.ipv4(from: source, to: destination, proto: proto, ttl: control >> 4 == 0 ? 1 : 64,
                                    fragment: fragment, options: options, payload)
        if control & 4 != 0, frame.count > 17 { frame[17] ^= r.u8() }  // a lying total length
        deliver(frame, verified: control & 8 != 0)
    }

    /// A TCP segment on a live tuple (or to the listener from a new source port), numbered
    /// near what A expects.
    private func tcp(_ r: inout Reader) {
        let choice = Int(r.u8())
        var flow: Flow
        if flows.isEmpty || choice % (flows.count + 1) == flows.count {
            flow = Flow(localPort: 80, remote: Self.addressB, remotePort: 40000 &+ UInt16(r.u8()))
        } else {
            flow = flows[choice % flows.count]
        }
        let seq = flow.receiveNext &+ UInt32(bitPattern: Int32(Int16(bitPattern: r.u16())) &* Int32(r.u8() % 4 + 1))
        let ack = flow.sendNext &+ UInt32(bitPattern: Int32(Int16(bitPattern: r.u16())))
        let flags = r.u8()
        let window = r.u16()
        let options = r.bytes(Int(r.u8() % 41))
        let control = r.u8()
        let length = Int(r.u16()) % (control & 1 == 0 ? 1500 : 9000)
        let payload = [UInt8](repeating: r.u8(), count: length)
        var segment = FrameBuild.tcp(from: flow.remote, flow.remotePort, to: Self.addressA, flow.localPort, seq: seq,
                                     ack: ack, flags: flags, window: window, urgent: control & 2 != 0 ? r.u16() : 0,
                                     options: options, payload)
        if control & 4 != 0, segment.count > 16 { segment[16] ^= 0x5a }  // a wrong checksum
        deliver(FrameBuild.ethernet(FrameBuild.ipv4(from: flow.remote, to: Self.addressA, proto: 6, segment)),
                verified: control & 1 != 0)
    }

    private func udp(_ r: inout Reader) {
        let ports: [UInt16] = [53, 5353, 7, 5300, r.u16()]
        let port = ports[Int(r.u8()) % ports.count]
        let source = r.u8() & 1 == 0 ? UInt16(5353) : r.u16()
        let payload = r.bytes(Int(r.u16() % 1472))
        let zeroChecksum = r.u8() & 1 == 1
        let datagram = FrameBuild.udp(from: Self.addressB, source, to: Self.addressA, port, payload, zeroChecksum: zeroChecksum)
        deliver(FrameBuild.ethernet(FrameBuild.ipv4(from: Self.addressB, to: Self.addressA, proto: 17, datagram)))
    }

    /// An ICMP message, often an error quoting a live connection's or socket's header.
    private func icmpError(_ r: inout Reader) {
        let type = [3, 3, 11, 12, 4, 5, 0, 8, r.u8()][Int(r.u8() % 9)]
        let code = r.u8() % 16
        let rest = r.u32()
        var quote: [UInt8]
        if !flows.isEmpty, r.u8() & 1 == 0 {
            let flow = flows[Int(r.u8()) % flows.count]
            let segment = FrameBuild.tcp(from: Self.addressA, flow.localPort, to: flow.remote, flow.remotePort,
                                         seq: flow.sendNext &- UInt32(r.u16()), ack: flow.receiveNext, flags: 0x10,
                                         window: 1000, urgent: 0, options: [], [])
            quote = FrameBuild.ipv4(from: Self.addressA, to: flow.remote, proto: 6, segment)
        } else {
            let datagram = FrameBuild.udp(from: Self.addressA, r.u16(), to: Self.addressB, 5353, [1, 2, 3, 4], zeroChecksum: false)
            quote = FrameBuild.ipv4(from: Self.addressA, to: Self.addressB, proto: 17, datagram)
        }
        quote = Array(quote.prefix(Int(r.u8())))
        let source = r.u8() & 1 == 0 ? Self.addressB : IPv4Address(10, 0, 0, r.u8())
        let message = FrameBuild.icmp(type: type, code: code, rest: rest, quote)
        deliver(FrameBuild.ethernet(FrameBuild.ipv4(from: source, to: Self.addressA, proto: 1, message)))
    }

    private func arp(_ r: inout Reader) {
        let operation = UInt16(r.u8() % 3)
        let senderIP = r.u8() & 1 == 0 ? Self.addressB : IPv4Address(10, 0, 0, r.u8())
        let sender = MACAddress(UInt64(r.u32()) | 0x0200_0000_0000)
        let target = r.u8() & 1 == 0 ? Self.addressA : IPv4Address(r.u32())
        let body = FrameBuild.arp(op: operation, senderMAC: sender, senderIP: senderIP, targetIP: target)
        deliver(FrameBuild.ethernet(to: r.u8() & 1 == 0 ? Self.macA : .broadcast, from: sender, type: 0x0806, body))
    }

    /// Time passes: up to a second in small steps, or minutes at once (TIME_WAIT, keepalive,
    /// reassembly and ARP ageing).
    private func advance(_ r: inout Reader) {
        let amount = UInt64(r.u8())
        let milliseconds = r.u8() & 1 == 0 ? amount * 4 : amount * 1000
        now = now.adding(nanoseconds: milliseconds * 1_000_000)
        driver.poll(now: now, link: link)
    }

    /// The application acts on one of A's sockets.
    private func application(_ r: inout Reader) {
        let action = r.u8() % 9
        let ids = sockets + stack.tcpSocketIDs
        guard !ids.isEmpty else { return }
        let id = ids[Int(r.u8()) % ids.count]
        switch action {
        case 0: send(id, Int(r.u16()))
        case 1: scratch.withUnsafeMutableBytes { _ = try? stack.tcpReceive(id, into: $0, now: now) }
        case 2: try? stack.tcpShutdown(id, .write, now: now)
        case 3: stack.tcpClose(id, now: now)
        case 4: stack.tcpAbort(id, now: now)
        case 5: if let listener, let accepted = try? stack.tcpAccept(listener) { sockets.append(accepted) }
        case 6:
            let fresh = stack.tcpOpen()
            try? stack.tcpConnect(fresh, to: IPAddress(r.u8() & 1 == 0 ? Self.addressB : IPv4Address(r.u32())), port: r.u16(), now: now)
        case 7:
            let target = udpSockets[Int(r.u8()) % udpSockets.count]
            let payload = r.bytes(Int(r.u16() % 2000))
            let to = r.u8() & 1 == 0 ? IPAddress(Self.addressB) : IPAddress(Self.address6B)
            _ = payload.withUnsafeBytes { try? stack.udpSend(target, to: (to, 5353), $0, now: now) }
        default:
            for target in udpSockets { while stack.udpReceive(target) != nil {} }
        }
        driver.poll(now: now, link: link)
    }
}

/// A's link in the fuzzer: the wire to B during set-up; afterwards frames the script queued
/// come in and what A sends goes nowhere. Every frame A sends is watched (checked and learnt
/// from) on its way.
final class ScriptLink: Link {
    var wire: SimulatedWire.End?
    var queued: [(bytes: [UInt8], verified: Bool)] = []
    var watch: (UnsafeRawBufferPointer) -> Void = { _ in }

    init(wire: SimulatedWire.End) { self.wire = wire }

    func receive(limit: Int, _ deliver: (ReceivedFrame) -> Void) -> Int {
        if let wire { return wire.receive(limit: limit, deliver) }
        let taken = queued.prefix(limit)
        queued.removeFirst(taken.count)
        for frame in taken {
            frame.bytes.withUnsafeBytes { deliver(ReceivedFrame(bytes: $0, checksumVerified: frame.verified)) }
        }
        return taken.count
    }

    func transmit(_ frame: UnsafeRawBufferPointer) {
        watch(frame)
        wire?.transmit(frame)
    }

    func flush() { wire?.flush() }
}

enum Bytes {
    static func be16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) << 8 | UInt16(b[i + 1]) }
    static func be32(_ b: [UInt8], _ i: Int) -> UInt32 { UInt32(be16(b, i)) << 16 | UInt32(be16(b, i + 2)) }
}
