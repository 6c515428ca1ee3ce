import Timing

/// Two links joined by an in-memory Ethernet wire on a virtual clock, with seeded faults:
/// loss, duplication, reordering (an extra delay), corruption (one flipped bit) and a
/// one-way delay. The same seed gives the same run. The deterministic simulation's wire
/// (Tests/StackTests/Simulation.swift) and, lossless and without delay, the memory
/// benchmark's (lvlip-membench).
public final class SimulatedWire {
    public struct Faults: Sendable {
        public var loss = 0.0
        public var duplicate = 0.0
        public var reorder = 0.0
        public var corrupt = 0.0
        /// One-way delay, and the extra delay a reordered frame gets.
        public var delayMicroseconds: UInt64 = 100
        public var reorderDelayMicroseconds: UInt64 = 500

        public init(loss: Double = 0, duplicate: Double = 0, reorder: Double = 0, corrupt: Double = 0,
                    delayMicroseconds: UInt64 = 100, reorderDelayMicroseconds: UInt64 = 500) {
            self.loss = loss
            self.duplicate = duplicate
            self.reorder = reorder
            self.corrupt = corrupt
            self.delayMicroseconds = delayMicroseconds
            self.reorderDelayMicroseconds = reorderDelayMicroseconds
        }
    }

    /// The time frames are sent at and arrive by; the owner moves it.
    public var now: Instant
    public var faults: Faults {
        didSet { faultless = Self.isFaultless(faults) }
    }
    /// No fault can happen: frames skip the generator (which `chance(0)` would not draw from
    /// either) and the reordering queues.
    private var faultless: Bool
    private var rng: SplitMix64
    /// Sees every frame as it is delivered (true: toward end `a`), for traces.
    public var onDeliver: ((_ towardA: Bool, _ frame: UnsafeRawBufferPointer) -> Void)?
    /// Frames in flight: per direction, one queue for the normal delay and one for the
    /// reordering delay. Delays are constant per queue, so each queue is in time order.
    /// Four rings in place (toward a, toward a reordered, toward b, toward b reordered),
    /// reached without reference counting.
    private let rings: UnsafeMutablePointer<TimedFrameRing>
    /// Without faults or delay, whole outboxes in flight, taken without a copy (toward a,
    /// toward b) and the next frame to deliver of each; frames in `rings` are newer.
    private var batches: [FrameQueue?] = [nil, nil]
    private var batchNext = [0, 0]
    private var order: UInt64 = 0
    public let a: End
    public let b: End

    /// `frameSize`: the largest frame either end sends (its MTU plus the Ethernet header).
    public init(seed: UInt64, faults: Faults = Faults(), now: Instant, frameSize: Int) {
        self.now = now
        self.faults = faults
        faultless = Self.isFaultless(faults)
        rng = SplitMix64(state: seed)
        rings = .allocate(capacity: 4)
        for i in 0..<4 { (rings + i).initialize(to: TimedFrameRing(slotSize: frameSize)) }
        a = End(towardA: true)
        b = End(towardA: false)
        a.wire = self
        b.wire = self
    }

    deinit {
        for i in 0..<4 { rings[i].deallocate() }
        rings.deallocate()
    }

    /// When the next frame in flight arrives; nil when none is.
    public var nextArrival: Instant? {
        if batchPending(towardA: true) || batchPending(towardA: false) { return now }
        var next: Instant?
        for i in 0..<4 { if let at = rings[i].headTime, next == nil || at < next! { next = at } }
        return next
    }

    /// Moves the wire's clock to `now` and polls the drivers of both ends (`a`'s, then `b`'s)
    /// until no frame is in flight that is due by then: what two stacks say to each other in
    /// one instant, with a wire without delay. Bounded by `rounds`.
    public func settle(_ driverA: StackDriver, _ driverB: StackDriver, now: Instant, rounds: Int = 16) {
        self.now = now
        for _ in 0..<rounds {
            driverA.poll(now: now, link: a)
            driverB.poll(now: now, link: b)
            guard let next = nextArrival, next <= now else { return }
        }
    }

    public var isEmpty: Bool {
        !batchPending(towardA: true) && !batchPending(towardA: false)
            && rings[0].isEmpty && rings[1].isEmpty && rings[2].isEmpty && rings[3].isEmpty
    }

    @inline(__always)
    private func batchPending(towardA: Bool) -> Bool {
        let i = towardA ? 0 : 1
        return batchNext[i] < (batches[i]?.count ?? 0)
    }

    /// Takes a whole outbox without copying it, when nothing else is in flight that way and
    /// no fault or delay applies; false when the frames must go one by one.
    fileprivate func take(_ batch: FrameQueue, towardA: Bool) -> Bool {
        guard faultless, faults.delayMicroseconds == 0, batch.offloadCount == 0, !batchPending(towardA: towardA),
              ring(towardA: towardA, reordered: false).pointee.isEmpty
        else { return false }
        let i = towardA ? 0 : 1
        let held: FrameQueue
        if let previous = batches[i], previous.hasSameGeometry(as: batch) {
            held = previous
        } else {
            held = FrameQueue(frameSize: batch.frameSize, capacity: batch.capacity, byteCapacity: batch.byteCapacity)
            batches[i] = held
        }
        held.removeAll()
        held.swapContents(with: batch)
        batchNext[i] = 0
        order += UInt64(held.count)
        return true
    }

    @inline(__always)
    private func ring(towardA: Bool, reordered: Bool) -> UnsafeMutablePointer<TimedFrameRing> {
        rings + (towardA ? 0 : 2) + (reordered ? 1 : 0)
    }

    private static func isFaultless(_ f: Faults) -> Bool {
        f.loss <= 0 && f.duplicate <= 0 && f.reorder <= 0 && f.corrupt <= 0
    }

    fileprivate func send(_ frame: UnsafeRawBufferPointer, towardA: Bool) {
        if faultless {
            order += 1
            ring(towardA: towardA, reordered: false).pointee
                .push(frame, at: now.adding(nanoseconds: faults.delayMicroseconds * 1000), order: order)
            return
        }
        if rng.chance(faults.loss) { return }
        let copies = rng.chance(faults.duplicate) ? 2 : 1
        for _ in 0..<copies {
            var flip: Int?
            if rng.chance(faults.corrupt) { flip = Int(rng.next() % UInt64(frame.count * 8)) }
            var delay = faults.delayMicroseconds
            let reordered = rng.chance(faults.reorder)
            if reordered { delay += faults.reorderDelayMicroseconds }
            order += 1
            let slot = ring(towardA: towardA, reordered: reordered).pointee
                .push(frame, at: now.adding(nanoseconds: delay * 1000), order: order)
            if let bit = flip { slot[bit / 8] ^= UInt8(1 << (bit % 8)) }
        }
    }

    /// Delivers frames due toward one end, in sending order.
    fileprivate func receive(towardA: Bool, limit: Int, _ deliver: (ReceivedFrame) -> Void) -> Int {
        let normal = ring(towardA: towardA, reordered: false)
        let reordered = ring(towardA: towardA, reordered: true)
        var delivered = 0
        let b = towardA ? 0 : 1
        if let batch = batches[b] {
            // Only the other direction's batch changes while these frames are delivered.
            var next = batchNext[b]
            while delivered < limit && next < batch.count {
                let frame = batch[next]
                next += 1
                delivered += 1
                onDeliver?(towardA, frame)
                deliver(ReceivedFrame(bytes: frame))
            }
            batchNext[b] = next
        }
        while delivered < limit {
            let q: UnsafeMutablePointer<TimedFrameRing>
            if reordered.pointee.isEmpty {
                guard !normal.pointee.isEmpty, normal.pointee.headArrival <= now else { return delivered }
                q = normal
            } else {
                switch (normal.pointee.headTime, reordered.pointee.headTime) {
                case (let n?, let r?) where n <= now || r <= now:
                    q = r > now || (n, normal.pointee.headOrder) < (r, reordered.pointee.headOrder) ? normal : reordered
                case (let n?, nil) where n <= now: q = normal
                case (nil, let r?) where r <= now: q = reordered
                default: return delivered
                }
            }
            let frame = q.pointee.oldest
            delivered += 1
            onDeliver?(towardA, frame)
            deliver(ReceivedFrame(bytes: frame))
            q.pointee.pop()
        }
        return delivered
    }

    /// One end of the wire, a link for the stack attached there.
    public final class End: Link {
        // unowned(unsafe): the wire owns its ends and outlives them; a checked reference
        // would cost a reference count operation per frame.
        fileprivate unowned(unsafe) var wire: SimulatedWire?
        private let towardA: Bool

        fileprivate init(towardA: Bool) { self.towardA = towardA }

        public func receive(limit: Int, _ deliver: (ReceivedFrame) -> Void) -> Int {
            wire.unsafelyUnwrapped.receive(towardA: towardA, limit: limit, deliver)
        }

        public func transmit(_ frame: UnsafeRawBufferPointer) { wire.unsafelyUnwrapped.send(frame, towardA: !towardA) }

        public func transmit(batch: FrameQueue) {
            if !wire.unsafelyUnwrapped.take(batch, towardA: !towardA) { transmitEach(of: batch) }
        }

        public func flush() {}
    }
}

/// Frames with their arrival times, oldest first: a ring of fixed-size slots that doubles
/// when full, so a frame in flight costs a copy and no allocation. Its owner deallocates it.
struct TimedFrameRing {
    private struct Entry {
        var length: Int
        var at: Instant
        var order: UInt64
    }

    private let slotSize: Int
    private var storage: UnsafeMutableRawBufferPointer
    private var entries: UnsafeMutablePointer<Entry>
    /// Slots, a power of two.
    private var capacity: Int
    private var head = 0
    private(set) var count = 0

    init(slotSize: Int, capacity: Int = 64) {
        self.slotSize = slotSize
        self.capacity = capacity
        storage = .allocate(byteCount: slotSize * capacity, alignment: 16)
        entries = .allocate(capacity: capacity)
    }

    func deallocate() {
        storage.deallocate()
        entries.deallocate()
    }

    var isEmpty: Bool { count == 0 }
    var headTime: Instant? { count > 0 ? entries[head].at : nil }
    var headOrder: UInt64 { entries[head].order }
    /// The oldest frame's arrival time; the ring must not be empty.
    var headArrival: Instant { entries[head].at }

    /// The oldest frame; valid until the next `pop` or `push`.
    var oldest: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage.baseAddress.unsafelyUnwrapped + head * slotSize, count: entries[head].length)
    }

    /// Appends a copy of `frame`; returns the copy, for faults to alter.
    @discardableResult
    mutating func push(_ frame: UnsafeRawBufferPointer, at: Instant, order: UInt64) -> UnsafeMutableRawBufferPointer {
        precondition(frame.count <= slotSize)
        if count == capacity { grow() }
        let i = (head + count) & (capacity - 1)
        let slot = UnsafeMutableRawBufferPointer(start: storage.baseAddress.unsafelyUnwrapped + i * slotSize,
                                                 count: frame.count)
        slot.baseAddress.unsafelyUnwrapped.copyMemory(from: frame.baseAddress.unsafelyUnwrapped, byteCount: frame.count)
        (entries + i).initialize(to: Entry(length: frame.count, at: at, order: order))
        count += 1
        return slot
    }

    mutating func pop() {
        head = (head + 1) & (capacity - 1)
        count -= 1
    }

    private mutating func grow() {
        let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: slotSize * capacity * 2, alignment: 16)
        let biggerEntries = UnsafeMutablePointer<Entry>.allocate(capacity: capacity * 2)
        for k in 0..<count {
            let i = (head + k) & (capacity - 1)
            bigger.slice(k * slotSize..<(k + 1) * slotSize)
                .copy(UnsafeRawBufferPointer(storage.slice(i * slotSize..<i * slotSize + entries[i].length)), to: 0)
            (biggerEntries + k).initialize(to: entries[i])
        }
        storage.deallocate()
        entries.deallocate()
        storage = bigger
        entries = biggerEntries
        capacity *= 2
        head = 0
    }
}
