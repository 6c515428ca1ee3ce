import Stack

/// A link that injects seeded faults into the link it wraps, for tests (off by default):
/// drops, duplicates, reorders (holds a frame back: a received one until the end of the
/// batch it came in, a sent one until the end of the burst) and corrupts (flips one bit past
/// the Ethernet header, so the IP or TCP checksum must catch it) frames in both directions.
/// Netem is not available on this kernel; nftables gives loss only.
public final class FaultInjector: Link {
    public struct Settings {
        public var drop = 0.0
        public var duplicate = 0.0
        public var reorder = 0.0
        public var corrupt = 0.0
        public var seed: UInt64 = 1

        public init(drop: Double = 0, duplicate: Double = 0, reorder: Double = 0, corrupt: Double = 0, seed: UInt64 = 1) {
            self.drop = drop
            self.duplicate = duplicate
            self.reorder = reorder
            self.corrupt = corrupt
            self.seed = seed
        }
    }

    public struct Counters {
        public var dropped: UInt64 = 0
        public var duplicated: UInt64 = 0
        public var reordered: UInt64 = 0
        public var corrupted: UInt64 = 0
    }

    private let inner: any Link
    private let settings: Settings
    private var rng: SplitMix64
    public private(set) var counters = Counters()
    private var heldIn: [[UInt8]] = []
    private var heldOut: [[UInt8]] = []

    public init(settings: Settings, wrapping inner: any Link) {
        self.inner = inner
        self.settings = settings
        rng = SplitMix64(state: settings.seed)
    }

    public func receive(limit: Int, _ deliver: (ReceivedFrame) -> Void) -> Int {
        var count = inner.receive(limit: limit) { frame in
            apply(frame.bytes, inbound: true) {
                deliver(ReceivedFrame(bytes: $0, checksumVerified: frame.checksumVerified, timestamp: frame.timestamp))
            }
        }
        let held = heldIn
        heldIn.removeAll()
        for f in held { f.withUnsafeBytes { deliver(ReceivedFrame(bytes: $0)) } }
        count += held.count
        return count
    }

    public func transmit(_ frame: UnsafeRawBufferPointer) {
        apply(frame, inbound: false) { inner.transmit($0) }
    }

    public var mayHaveAnswered: Bool { inner.mayHaveAnswered }

    /// Releases the sent frames held back for reordering.
    public func flush() {
        let held = heldOut
        heldOut.removeAll()
        for f in held { f.withUnsafeBytes { inner.transmit($0) } }
        inner.flush()
    }

    private func apply(_ frame: UnsafeRawBufferPointer, inbound: Bool, deliver: (UnsafeRawBufferPointer) -> Void) {
        if rng.chance(settings.drop) {
            counters.dropped &+= 1
            return
        }
        var bytes = Array(frame)
        if rng.chance(settings.corrupt), bytes.count > 14 {
            let bit = 14 * 8 + Int(rng.next() % UInt64((bytes.count - 14) * 8))
            bytes[bit / 8] ^= UInt8(1 << (bit % 8))
            counters.corrupted &+= 1
        }
        let copies = rng.chance(settings.duplicate) ? 2 : 1
        if copies == 2 { counters.duplicated &+= 1 }
        for _ in 0..<copies {
            if rng.chance(settings.reorder) {
                counters.reordered &+= 1
                if inbound { heldIn.append(bytes) } else { heldOut.append(bytes) }
            } else {
                bytes.withUnsafeBytes(deliver)
            }
        }
    }
}
