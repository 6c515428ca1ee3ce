import FuzzSupport
import CLinux
import Glibc
import IPCProtocol
import IPCServer
import Logging
import Reactor
import Stack
import Timing

/// The socket service under hostile requests: each input is a script run against a fresh
/// service (over a stack at 10.0.0.1 and fd00::1 whose in-memory link leads to a peer stack at
/// 10.0.0.2 and fd00::2, listening on :81 in both families), as one client connection of the
/// IPC server would present it. The script makes sockets (with real socketpair ends, as the
/// shim does, or the wrong kind of pair, or none), sends every socket request with struct
/// bodies built from its bytes (references to its own sockets, forged and stale ones,
/// addresses that matter in either family: the peer, loopback, our own listener), truncates
/// and extends bodies, writes into and reads from the application's ends (datagram headers
/// included), closes them, and lets the peer connect and talk.
///
/// Oracle: no crash; every reply has its type's size (a GETOPT value no longer than the room
/// asked for); and when the script is done and every application end is closed, the service
/// holds no descriptor: the process has as many open as before the input.
final class IPCFuzzer {
    static let address = IPv4Address(10, 0, 0, 1)
    static let peerAddress = IPv4Address(10, 0, 0, 2)
    static let requests: [lvlip_msg_type] = [LVLIP_MSG_SOCKET, LVLIP_MSG_IDENTIFY, LVLIP_MSG_BIND, LVLIP_MSG_LISTEN,
                                            LVLIP_MSG_CONNECT, LVLIP_MSG_SHUTDOWN, LVLIP_MSG_NAME, LVLIP_MSG_SETOPT,
                                            LVLIP_MSG_GETOPT, LVLIP_MSG_STATUS]
    static let optionLevels: [Int32] = [1, 0, 6, 41, 255, 17]
    private static let logger = Logger(label: "fuzz") { _ in SwiftLogNoOpLogHandler() }

    private let reactor: Reactor
    private let stack: NetworkStack
    private let peer: NetworkStack
    private let service: SocketService
    private let wire: SimulatedWire
    private let driver: StackDriver
    private let peerDriver: StackDriver
    private var created = SocketService.Created()
    private var refs: [lvlip_ref] = []
    private var ends: [Int32] = []
    private var peerSockets: [SocketID] = []
    private var tag: UInt32 = 0
    private var changes: [SocketID] = []
    private var buffer = [UInt8](repeating: 0, count: 65536)

    init() {
        reactor = try! Reactor()
        var local = StackConfiguration(mac: MACAddress(derivedFrom: Self.address),
                                       interface: IPv4Interface(address: Self.address, prefixLength: 24))
        local.seed = 3
        local.outputQueueFrames = 128
        // IPv6 too, without DAD so the addresses are usable at once: fd00::1 and fd00::2.
        local.ipv6 = Self.ipv6(1)
        var remote = StackConfiguration(mac: MACAddress(derivedFrom: Self.peerAddress),
                                        interface: IPv4Interface(address: Self.peerAddress, prefixLength: 24))
        remote.seed = 7
        remote.outputQueueFrames = 128
        remote.ipv6 = Self.ipv6(2)
        stack = NetworkStack(configuration: local, now: reactor.now)
        peer = NetworkStack(configuration: remote, now: reactor.now)
        var limits = SocketService.Limits()
        limits.socketsPerUser = 24
        service = SocketService(stack: stack, reactor: reactor, logger: Self.logger, limits: limits)
        wire = SimulatedWire(seed: 1, faults: SimulatedWire.Faults(delayMicroseconds: 0), now: reactor.now,
                             frameSize: local.mtu + EthernetFrame.headerLength)
        driver = StackDriver(stack: stack)
        driver.delegate = service
        peerDriver = StackDriver(stack: peer)
        // Dual-stack: 10.0.0.2:81 and [fd00::2]:81.
        let listener = peer.tcpOpen(family: .ipv6)
        try? peer.tcpBind(listener, address: .anyIPv6, port: 81)
        try? peer.tcpListen(listener, backlog: 16)
        peerSockets.append(listener)
    }

    static func openDescriptors() -> Int {
        guard let dir = opendir("/proc/self/fd") else { return -1 }
        defer { closedir(dir) }
        var count = 0
        while readdir(dir) != nil { count += 1 }
        return count
    }

    /// Runs one input against a fresh service, and checks that it leaves no descriptor behind.
    static func runOne(_ input: UnsafeRawBufferPointer) {
        let before = openDescriptors()
        do {
            let fuzzer = IPCFuzzer()
            fuzzer.run(input)
            fuzzer.finish()
        }
        let after = openDescriptors()
        precondition(after == before, "descriptors open: \(before) before the input, \(after) after")
    }

    func run(_ input: UnsafeRawBufferPointer) {
        var r = Reader(input)
        var steps = 0
        while !r.atEnd, steps < 128 {
            steps += 1
            switch r.u8() % 8 {
            case 0: socket(&r)
            case 1, 2: request(&r)
            case 3: appWrite(&r)
            case 4: appRead(&r)
            case 5: appClose(&r)
            case 6: peerAction(&r)
            default: wake()
            }
        }
    }

    /// The client goes away: its ends close, lvlipd notices and tears down.
    private func finish() {
        for fd in ends { Glibc.close(fd) }
        ends.removeAll()
        for _ in 0..<4 { wake() }
        service.shutdown()
        service.closeReleasedEnds()
    }

    // MARK: - Requests

    /// Requests the scripts have sent in this process, reported when it exits.
    nonisolated(unsafe) static var requestsSent = 0

    private func send(_ type: lvlip_msg_type, _ body: [UInt8], fd: Int32 = -1) -> [UInt8]? {
        Self.requestsSent += 1
        tag &+= 1
        let reply = body.withUnsafeBytes {
            service.handle(type: UInt16(type.rawValue), tag: tag, body: $0, fd: fd, pid: getpid(), uid: getuid(),
                           created: &created)
        }
        afterWake()
        guard let body = reply?.body else { return nil }
        check(type, body)
        return body
    }

    private func check(_ type: lvlip_msg_type, _ body: [UInt8]) {
        switch type {
        case LVLIP_MSG_SOCKET, LVLIP_MSG_IDENTIFY:
            precondition(body.count == MemoryLayout<lvlip_socket_rep>.size, "\(type) reply of \(body.count) bytes")
        case LVLIP_MSG_CONNECT, LVLIP_MSG_NAME:
            precondition(body.count == MemoryLayout<lvlip_name_rep>.size, "\(type) reply of \(body.count) bytes")
        case LVLIP_MSG_GETOPT:
            let header = MemoryLayout<lvlip_opt_rep>.size
            precondition(body.count >= header, "GETOPT reply of \(body.count) bytes")
            let rep = body.withUnsafeBytes { IPCBody.decode(lvlip_opt_rep.self, $0) }
            precondition(Int(rep.length) == body.count - header, "GETOPT reply says \(rep.length), carries \(body.count - header)")
        default:
            precondition(body.count == MemoryLayout<lvlip_result>.size, "\(type) reply of \(body.count) bytes")
        }
    }

    private func socket(_ r: inout Reader) {
        let families: [Int32] = [AF_INET, AF_INET6, AF_INET, Int32(r.u8())]
        let types: [Int32] = [1, 2, 3, 1, 2, Int32(r.u8())]
        let family = families[Int(r.u8() % 4)]
        let type = types[Int(r.u8()) % types.count]
        let proto: [Int32] = [0, 6, 17, 1, Int32(r.u8())]
        let p = proto[Int(r.u8() % 5)]
        let control = r.u8()
        var fds: [Int32] = [-1, -1]
        let pairType = (type == 1) != (control & 1 == 1) ? SOCK_STREAM : SOCK_SEQPACKET
        guard socketpair(AF_UNIX, Int32(pairType.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else { return }
        ends.append(fds[0])
        let attach = control & 2 == 0
        if !attach { Glibc.close(fds[1]) }
        let body = IPCBody.encode(lvlip_socket_req(family: family, type: type, protocol: p, reserved: control & 4 == 0 ? 0 : 1))
        if let reply = send(LVLIP_MSG_SOCKET, body, fd: attach ? fds[1] : -1) {
            let rep = reply.withUnsafeBytes { IPCBody.decode(lvlip_socket_rep.self, $0) }
            if rep.result == 0 { refs.append(rep.ref) }
        }
    }

    private func ref(_ r: inout Reader) -> lvlip_ref {
        let choice = r.u8()
        switch choice % 8 {
        case 0: return lvlip_ref(index: LVLIP_REF_PENDING, generation: tag &- UInt32(r.u8() % 4), token: 0)
        case 1: return lvlip_ref(index: UInt32(r.u8() % 32), generation: UInt32(r.u8() % 4), token: UInt64(r.u32()))
        default:
            guard !refs.isEmpty else { return lvlip_ref(index: 0, generation: 0, token: 0) }
            var ref = refs[Int(r.u8()) % refs.count]
            if choice & 0x80 != 0 { ref.token ^= 1 << UInt64(r.u8() % 64) }
            return ref
        }
    }

    private static func ipv6(_ host: UInt64) -> IPv6Configuration {
        var c = IPv6Configuration(addresses: [IPv6Interface(address: IPv6Address(high: 0xFD00 << 48, low: host), prefixLength: 64)])
        c.dadTransmits = 0
        return c
    }

    private func address(_ r: inout Reader) -> lvlip_addr {
        let hosts = [Self.peerAddress.value, IPv4Address(127, 0, 0, 1).value, Self.address.value, 0,
                     IPv4Address(10, 0, 0, 99).value, 0xFFFF_FFFF, IPv4Address(10, 0, 0, 255).value, r.u32()]
        let ports: [UInt16] = [81, 80, 0, 53, r.u16()]
        // The same bytes read as before version 4 of the protocol, so the seed corpus still
        // reaches as deep: IPv4 as the shim sends it (v4-mapped), then AF_INET6 spellings:
        // the IPv6 any, a link-local address (with and without a scope id), a global one
        // (fd00::1 and fd00::2 are the stacks'), AF_UNSPEC, and a malformed family.
        let raw = r.u16()
        let host = hosts[Int(r.u8() % 8)]
        let port = ports[Int(r.u8() % 5)]
        var a = lvlip_addr(IPAddress(IPv4Address(host)), port: port)
        switch r.u8() % 7 {
        case 0, 1: break
        case 2: a.family = UInt16(AF_INET6)
        case 3: a = lvlip_addr(.anyIPv6, port: port)
        case 4: a = lvlip_addr(IPAddress(IPv6Address(high: 0xFE80 << 48, low: UInt64(host & 0xFF))), port: port, scope: UInt32(raw % 4))
        case 5: a.family = UInt16(AF_UNSPEC)
        default:
            a = lvlip_addr(IPAddress(IPv6Address(high: 0xFD00 << 48, low: UInt64(host & 0xFF))), port: port)
            // Mostly well formed (AF_INET6), else any family.
            a.family = raw & 0x8000 == 0 ? UInt16(AF_INET6) : raw
        }
        return a
    }

    private func request(_ r: inout Reader) {
        let type = Self.requests[Int(r.u8()) % Self.requests.count]
        var body: [UInt8]
        var fd: Int32 = -1
        switch type {
        case LVLIP_MSG_SOCKET:
            return socket(&r)
        case LVLIP_MSG_IDENTIFY:
            body = []
            if !ends.isEmpty, r.u8() & 1 == 0 {
                fd = dup(ends[Int(r.u8()) % ends.count])
            } else {
                var pipeFDs: [Int32] = [-1, -1]
                if pipe(&pipeFDs) == 0 {
                    Glibc.close(pipeFDs[1])
                    fd = pipeFDs[0]
                }
            }
        case LVLIP_MSG_BIND, LVLIP_MSG_CONNECT:
            // LVLIP_CONNECT_WAITS, LVLIP_CONNECT_FILLER, both or neither.
            let flags = type == LVLIP_MSG_CONNECT ? UInt32(r.u8() & 3) : 0
            body = IPCBody.encode(lvlip_addr_req(ref: ref(&r), addr: address(&r), filler: UInt32(r.u8() % 4) * UInt32(r.u8()),
                                                 flags: flags))
        case LVLIP_MSG_SETOPT:
            let value = r.bytes(Int(r.u8() % 24))
            body = IPCBody.encode(lvlip_opt_req(ref: ref(&r), level: Self.optionLevels[Int(r.u8()) % Self.optionLevels.count],
                                                name: Int32(r.u8() % 80), length: UInt32(value.count), reserved: 0)) + value
        case LVLIP_MSG_GETOPT:
            body = IPCBody.encode(lvlip_opt_req(ref: ref(&r), level: Self.optionLevels[Int(r.u8()) % Self.optionLevels.count],
                                                name: Int32(r.u8() % 80), length: UInt32(r.u16() % 300), reserved: 0))
        default:
            let values: [Int32] = [0, 1, 2, 3, -1, 128, Int32(bitPattern: r.u32())]
            body = IPCBody.encode(lvlip_int_req(ref: ref(&r), value: values[Int(r.u8() % 7)], reserved: 0))
        }
        let mangle = r.u8()
        if mangle & 0xF0 == 0xF0 {
            body = mangle & 1 == 0 ? Array(body.prefix(Int(r.u8()) % max(1, body.count))) : body + r.bytes(Int(r.u8() % 16))
        }
        _ = send(type, body, fd: fd)
    }

    // MARK: - The application's ends

    private func appWrite(_ r: inout Reader) {
        guard !ends.isEmpty else { return }
        let fd = ends[Int(r.u8()) % ends.count]
        var bytes: [UInt8] = []
        if r.u8() & 1 == 0 {
            let flags: [UInt16] = [0, 0, UInt16(LVLIP_DGRAM_ADDRESSED), UInt16(LVLIP_DGRAM_ERROR), r.u16()]
            let to = address(&r)
            var header = lvlip_dgram_header()
            header.addr = to
            header.flags = flags[Int(r.u8() % 5)]
            header.magic = r.u8() & 3 == 0 ? 0 : LVLIP_DGRAM_MAGIC
            bytes = IPCBody.encode(header)
        }
        bytes += [UInt8](repeating: r.u8(), count: Int(r.u16() % 9000))
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
        wake()
    }

    private func appRead(_ r: inout Reader) {
        guard !ends.isEmpty else { return }
        let fd = ends[Int(r.u8()) % ends.count]
        // Accept records bring the accepted connection's end: keep it as the shim would.
        var received: Int32 = -1
        var count: Int32 = 0
        var sender = lvlip_credentials()
        let n = buffer.withUnsafeMutableBytes {
            lvlip_recv_with_fds(fd, $0.baseAddress, $0.count, &received, 1, &count, &sender)
        }
        if count > 0, received >= 0 { ends.append(received) }
        if n > 0 { wake() }
    }

    private func appClose(_ r: inout Reader) {
        guard !ends.isEmpty else { return }
        let i = Int(r.u8()) % ends.count
        if r.u8() & 1 == 0 {
            Glibc.close(ends.remove(at: i))
        } else {
            shutdown(ends[i], Int32(r.u8() % 3))
        }
        wake()
    }

    private func peerAction(_ r: inout Reader) {
        let now = reactor.now
        switch r.u8() % 4 {
        case 0:
            let id = peer.tcpOpen()
            try? peer.tcpConnect(id, to: IPAddress(Self.address), port: [80, 81, r.u16()][Int(r.u8() % 3)], now: now)
            peerSockets.append(id)
        case 1:
            if let accepted = try? peer.tcpAccept(peerSockets[0]) { peerSockets.append(accepted) }
        case 2:
            let id = peerSockets[Int(r.u8()) % peerSockets.count]
            let bytes = [UInt8](repeating: 0x70, count: Int(r.u16() % 20000))
            _ = bytes.withUnsafeBytes { try? peer.tcpSend(id, $0, now: now) }
        default:
            let id = peerSockets[Int(r.u8()) % peerSockets.count]
            if r.u8() & 1 == 0 { peer.tcpClose(id, now: now) } else { peer.tcpAbort(id, now: now) }
        }
        afterWake()
    }

    // MARK: - lvlipd's loop, in miniature

    private func wake() {
        try? reactor.runOnce(timeoutMilliseconds: 0)
        afterWake()
    }

    /// As lvlipd after a wake-up: both drivers poll their ends of the wire until nothing is in
    /// flight; released ends are closed.
    private func afterWake() {
        wire.settle(driver, peerDriver, now: reactor.now)
        peer.takeReadinessChanges(into: &changes)
        service.closeReleasedEnds()
    }
}
