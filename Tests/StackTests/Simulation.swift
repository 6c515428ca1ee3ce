import Stack
import Timing

/// Faults the simulated link applies to each frame, decided by a seeded generator.
struct Faults {
    var loss = 0.0
    var duplicate = 0.0
    var reorder = 0.0
    var corrupt = 0.0
    /// One-way delay, and the extra delay a reordered frame gets.
    var delayMicroseconds: UInt64 = 100
    var reorderDelayMicroseconds: UInt64 = 500
}

/// Two stacks joined by an in-memory Ethernet link, on a virtual clock.
final class Simulation {
    let a: NetworkStack
    let b: NetworkStack
    var now = Instant.milliseconds(1_000_000)
    var faults: Faults
    var rng: SplitMix64
    let seed: UInt64
    /// Frames on the wire: per direction, one FIFO for the normal delay and one for the
    /// reordering delay. Delays are constant per queue, so each queue is in time order.
    private var queues = [FrameFIFO(), FrameFIFO(), FrameFIFO(), FrameFIFO()]
    private var order: UInt64 = 0
    var framesCorrupted = 0
    var framesDelivered = 0
    /// The last frames delivered, decoded, for failure reports.
    var trace: [String] = []
    var traceLimit = 0

    static let addressA = IPv4Address(10, 0, 0, 1)
    static let addressB = IPv4Address(10, 0, 0, 2)

    init(seed: UInt64 = 1, faults: Faults = Faults(), configure: (inout StackConfiguration) -> Void = { _ in }) {
        self.seed = seed
        self.faults = faults
        rng = SplitMix64(state: seed)
        var ca = StackConfiguration(mac: MACAddress(derivedFrom: Self.addressA),
                                    interface: IPv4Interface(address: Self.addressA, prefixLength: 24))
        ca.seed = seed &* 3
        configure(&ca)
        var cb = StackConfiguration(mac: MACAddress(derivedFrom: Self.addressB),
                                    interface: IPv4Interface(address: Self.addressB, prefixLength: 24))
        cb.seed = seed &* 7
        configure(&cb)
        a = NetworkStack(configuration: ca, now: now)
        b = NetworkStack(configuration: cb, now: now)
    }

    private func chance(_ p: Double) -> Bool { rng.chance(p) }

    private func collect(_ stack: NetworkStack, toA: Bool) {
        let out = stack.outbox
        for i in 0..<out.count {
            let frame = Array(out[i])
            if chance(faults.loss) { continue }
            let copies = chance(faults.duplicate) ? 2 : 1
            for _ in 0..<copies {
                var f = frame
                if chance(faults.corrupt) {
                    let bit = Int(rng.next() % UInt64(f.count * 8))
                    f[bit / 8] ^= UInt8(1 << (bit % 8))
                    framesCorrupted += 1
                }
                var delay = faults.delayMicroseconds
                let reordered = chance(faults.reorder)
                if reordered { delay += faults.reorderDelayMicroseconds }
                order += 1
                queues[(toA ? 0 : 2) + (reordered ? 1 : 0)].push(at: now.adding(nanoseconds: delay * 1000), order: order, frame: f)
            }
        }
        out.removeAll()
        stack.resumeOutput(now: now)
        if !out.isEmpty { collect(stack, toA: toA) }
    }

    /// Moves time forward to the next event (delivery or timer) and handles it.
    /// Returns false when nothing at all is pending.
    @discardableResult
    func step() -> Bool {
        collect(a, toA: false)
        collect(b, toA: true)
        var next: Instant?
        for q in queues { if let at = q.headTime, next == nil || at < next! { next = at } }
        for d in [a.nextDeadline, b.nextDeadline].compactMap({ $0 }) where next == nil || d < next! { next = d }
        guard let target = next else { return false }
        if target > now { now = target }
        // Deliver every frame due now, in sending order.
        while true {
            var best: Int?
            for i in queues.indices {
                guard let at = queues[i].headTime, at <= now else { continue }
                if best == nil || (at, queues[i].headOrder!) < (queues[best!].headTime!, queues[best!].headOrder!) { best = i }
            }
            guard let i = best else { break }
            let frame = queues[i].pop()
            let toA = i < 2
            framesDelivered += 1
            if traceLimit > 0 {
                trace.append("\(now) \(toA ? "b->a" : "a->b") \(Self.describe(frame))")
                if trace.count > traceLimit { trace.removeFirst(trace.count - traceLimit) }
            }
            frame.withUnsafeBytes { (toA ? a : b).receive(frame: $0, now: now) }
        }
        a.poll(now: now)
        b.poll(now: now)
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

/// A FIFO of frames with their delivery times.
struct FrameFIFO {
    private var items: [(at: Instant, order: UInt64, frame: [UInt8])] = []
    private var head = 0

    var headTime: Instant? { head < items.count ? items[head].at : nil }
    var headOrder: UInt64? { head < items.count ? items[head].order : nil }

    mutating func push(at: Instant, order: UInt64, frame: [UInt8]) { items.append((at, order, frame)) }

    mutating func pop() -> [UInt8] {
        let frame = items[head].frame
        head += 1
        if head > 4096 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return frame
    }
}
