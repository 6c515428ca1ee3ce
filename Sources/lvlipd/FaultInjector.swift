import Stack

/// A seeded fault injector on lvlipd's link, for tests (off by default): drops, duplicates,
/// reorders (holds a frame back until the end of the wake-up) and corrupts (flips one bit
/// past the Ethernet header, so the IP or TCP checksum must catch it) frames in both
/// directions. Netem is not available on this kernel; nftables gives loss only.
final class FaultInjector {
    struct Settings {
        var drop = 0.0
        var duplicate = 0.0
        var reorder = 0.0
        var corrupt = 0.0
        var seed: UInt64 = 1
    }

    struct Counters {
        var dropped: UInt64 = 0
        var duplicated: UInt64 = 0
        var reordered: UInt64 = 0
        var corrupted: UInt64 = 0
    }

    private let settings: Settings
    private var rng: SplitMix64
    private(set) var counters = Counters()
    private var heldIn: [[UInt8]] = []
    private var heldOut: [[UInt8]] = []

    init(settings: Settings) {
        self.settings = settings
        rng = SplitMix64(state: settings.seed)
    }

    func receive(_ frame: UnsafeRawBufferPointer, deliver: (UnsafeRawBufferPointer) -> Void) {
        apply(frame, held: &heldIn, deliver: deliver)
    }

    func transmit(_ frame: UnsafeRawBufferPointer, deliver: (UnsafeRawBufferPointer) -> Void) {
        apply(frame, held: &heldOut, deliver: deliver)
    }

    /// Releases the frames held back for reordering.
    func flush(receive: (UnsafeRawBufferPointer) -> Void, transmit: (UnsafeRawBufferPointer) -> Void) {
        let inbound = heldIn
        let outbound = heldOut
        heldIn.removeAll()
        heldOut.removeAll()
        for f in inbound { f.withUnsafeBytes(receive) }
        for f in outbound { f.withUnsafeBytes(transmit) }
    }

    private func apply(_ frame: UnsafeRawBufferPointer, held: inout [[UInt8]], deliver: (UnsafeRawBufferPointer) -> Void) {
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
                held.append(bytes)
            } else {
                bytes.withUnsafeBytes(deliver)
            }
        }
    }
}
