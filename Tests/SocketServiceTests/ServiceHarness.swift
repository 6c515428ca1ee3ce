import CLinux
import Glibc
import IPCServer
import Logging
import Reactor
import Stack
import Timing

/// lvlipd in miniature, for driving the socket service without a TAP or a namespace: a
/// service over a stack (10.0.0.1) whose link, a simulated wire without delay, leads to a
/// second stack (10.0.0.2) that tests drive through its API as the remote host. Both stacks
/// are driven by their `StackDriver`, the service being the local one's delegate, as in
/// lvlipd. The reactor is a real one (the pairs are real AF_UNIX socketpairs, in-memory kernel
/// objects) polled with a zero timeout; frames cross the wire at once, on the reactor's clock.
final class ServiceHarness {
    static let address = IPv4Address(10, 0, 0, 1)
    static let peerAddress = IPv4Address(10, 0, 0, 2)

    let reactor: Reactor
    let stack: NetworkStack
    let peer: NetworkStack
    let service: SocketService
    private let wire: SimulatedWire
    private let driver: StackDriver
    private let peerDriver: StackDriver
    private var changes: [SocketID] = []

    /// `wireDelayMicroseconds`: each frame's one-way delay (0: a handshake completes within
    /// the request that starts it).
    /// `configure` adjusts the service's stack (the peer keeps the defaults).
    init(limits: SocketService.Limits = SocketService.Limits(), wireDelayMicroseconds: UInt64 = 0,
         configure: (inout StackConfiguration) -> Void = { _ in }) throws {
        reactor = try Reactor()
        var local = StackConfiguration(mac: MACAddress(derivedFrom: Self.address),
                                       interface: IPv4Interface(address: Self.address, prefixLength: 24))
        local.seed = 3
        // IPv6 on, as lvlipd has it (its link-local address): AF_INET6 sockets bind [::].
        local.ipv6 = IPv6Configuration()
        configure(&local)
        var remote = StackConfiguration(mac: MACAddress(derivedFrom: Self.peerAddress),
                                        interface: IPv4Interface(address: Self.peerAddress, prefixLength: 24))
        remote.seed = 7
        stack = NetworkStack(configuration: local, now: reactor.now)
        peer = NetworkStack(configuration: remote, now: reactor.now)
        service = SocketService(stack: stack, reactor: reactor, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() },
                                limits: limits)
        wire = SimulatedWire(seed: 1, faults: SimulatedWire.Faults(delayMicroseconds: wireDelayMicroseconds), now: reactor.now,
                             frameSize: local.mtu + EthernetFrame.headerLength)
        driver = StackDriver(stack: stack)
        driver.delegate = service
        peerDriver = StackDriver(stack: peer)
    }

    deinit { service.shutdown() }

    var now: Instant { reactor.now }

    /// One wake-up of lvlipd: the pairs' events, then what follows every wake-up.
    func wake() {
        try! reactor.runOnce(timeoutMilliseconds: 0)
        afterWake()
    }

    /// As lvlipd after each wake-up (and after each request): each stack's driver polls its
    /// end of the wire until no frame is left in flight; released ends are closed.
    func afterWake() {
        wire.settle(driver, peerDriver, now: now)
        // The peer is driven by the tests; its readiness is read when they ask.
        peer.takeReadinessChanges(into: &changes)
        service.closeReleasedEnds()
    }

    /// Wakes until `done` holds; false if it does not within `seconds`.
    @discardableResult
    func run(seconds: Double = 5, until done: () -> Bool) -> Bool {
        let end = Syscall.monotonicNow().adding(nanoseconds: UInt64(seconds * 1e9))
        while !done() {
            guard Syscall.monotonicNow() < end else { return false }
            wake()
        }
        return true
    }

    /// A few wake-ups, for what needs no condition to settle.
    func settle() {
        for _ in 0..<8 { wake() }
    }

    // MARK: - The remote host

    /// Bytes the peer's connection has received, read out.
    func peerReceive(_ id: SocketID) -> [UInt8] {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while let n = try? buffer.withUnsafeMutableBytes({ try peer.tcpReceive(id, into: $0, now: now) }), n > 0 {
            bytes += buffer[0..<n]
        }
        return bytes
    }

    /// Whether the peer's connection has seen the end of the stream (FIN).
    func peerSawEnd(_ id: SocketID) -> Bool {
        var byte: UInt8 = 0
        return (try? withUnsafeMutableBytes(of: &byte) { try peer.tcpReceive(id, into: $0, peek: true, now: now) }) == 0
    }

    func peerSend(_ id: SocketID, _ bytes: [UInt8]) -> Int {
        (try? bytes.withUnsafeBytes { try peer.tcpSend(id, $0, now: now) }) ?? 0
    }

    /// A listening socket of the peer's on `port`.
    func peerListen(port: UInt16) throws -> SocketID {
        let id = peer.tcpOpen()
        try peer.tcpBind(id, port: port)
        try peer.tcpListen(id, backlog: 16)
        return id
    }
}
