import Stack
import Timing

/// Faults the simulated wire applies to each frame, decided by its seeded generator.
typealias Faults = SimulatedWire.Faults

/// Two stacks joined by an in-memory Ethernet wire, on a virtual clock, each driven by its
/// `StackDriver` as lvlipd drives its stack.
final class Simulation {
    let a: NetworkStack
    let b: NetworkStack
    let wire: SimulatedWire
    private let driverA: StackDriver
    private let driverB: StackDriver
    let seed: UInt64
    /// The last frames delivered, decoded, for failure reports.
    var trace: [String] = []
    var traceLimit = 0

    static let addressA = IPv4Address(10, 0, 0, 1)
    static let addressB = IPv4Address(10, 0, 0, 2)

    init(seed: UInt64 = 1, faults: Faults = Faults(), configure: (inout StackConfiguration) -> Void = { _ in }) {
        self.seed = seed
        let start = Instant.milliseconds(1_000_000)
        var ca = StackConfiguration(mac: MACAddress(derivedFrom: Self.addressA),
                                    interface: IPv4Interface(address: Self.addressA, prefixLength: 24))
        ca.seed = seed &* 3
        configure(&ca)
        var cb = StackConfiguration(mac: MACAddress(derivedFrom: Self.addressB),
                                    interface: IPv4Interface(address: Self.addressB, prefixLength: 24))
        cb.seed = seed &* 7
        configure(&cb)
        a = NetworkStack(configuration: ca, now: start)
        b = NetworkStack(configuration: cb, now: start)
        driverA = StackDriver(stack: a)
        driverB = StackDriver(stack: b)
        wire = SimulatedWire(seed: seed, faults: faults, now: start,
                             frameSize: max(ca.mtu, cb.mtu) + EthernetFrame.headerLength)
        wire.onDeliver = { [unowned self] towardA, frame in
            guard traceLimit > 0 else { return }
            trace.append("\(now) \(towardA ? "b->a" : "a->b") \(Self.describe(Array(frame)))")
            if trace.count > traceLimit { trace.removeFirst(trace.count - traceLimit) }
        }
    }

    var now: Instant {
        get { wire.now }
        set { wire.now = newValue }
    }

    var faults: Faults {
        get { wire.faults }
        set { wire.faults = newValue }
    }

    /// Moves time forward to the next event (an arrival or a timer) and polls both stacks.
    /// Returns false when nothing at all is pending.
    @discardableResult
    func step() -> Bool {
        // What the applications did since the last step leaves now.
        driverA.transmit(to: wire.a, now: now)
        driverB.transmit(to: wire.b, now: now)
        var next = wire.nextArrival
        for d in [a.nextDeadline, b.nextDeadline].compactMap({ $0 }) where next == nil || d < next! { next = d }
        guard let target = next else { return false }
        if target > now { now = target }
        driverA.poll(now: now, link: wire.a)
        driverB.poll(now: now, link: wire.b)
        return true
    }

    static func describe(_ frame: [UInt8]) -> String {
        guard frame.count >= 54, frame[12] == 8, frame[13] == 0, frame[23] == 6 else { return "non-TCP \(frame.count)" }
        let ihl = Int(frame[14] & 0xF) * 4
        let t = 14 + ihl
        guard ihl >= 20, frame.count >= t + 20 else { return "malformed \(frame.count)" }
        func be32(_ i: Int) -> UInt32 { UInt32(frame[i]) << 24 | UInt32(frame[i + 1]) << 16 | UInt32(frame[i + 2]) << 8 | UInt32(frame[i + 3]) }
        let total = Int(frame[16]) << 8 | Int(frame[17])
        let off = Int(frame[t + 12] >> 4) * 4
        let len = total - ihl - off
        guard len >= 0 else { return "malformed \(frame.count)" }
        let flags = TCPFlags(rawValue: frame[t + 13])
        let win = Int(frame[t + 14]) << 8 | Int(frame[t + 15])
        return "[\(flags)] seq \(be32(t + 4)) ack \(be32(t + 8)) len \(len) win \(win) opt \(off - 20)"
    }

    /// Steps until `done` holds or `limit` of virtual time passes; true if `done`.
    func run(for limit: UInt64 = 60_000, until done: () -> Bool) -> Bool {
        let end = now.adding(milliseconds: limit)
        while !done() {
            guard now < end else { return false }
            if !step() {
                // Idle: let virtual time pass so application-driven work can proceed.
                now = now.adding(milliseconds: 1)
            }
        }
        return true
    }
}
