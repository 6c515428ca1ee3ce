/// Frames the stack has produced and the owner of the link must transmit: one preallocated
/// region of fixed-size slots, filled during a wake-up and drained by the daemon after it.
/// Emitting a frame is writing into the next slot: no allocation per packet.
public final class FrameQueue {
    public let slotSize: Int
    public let capacity: Int
    private let storage: UnsafeMutableRawBufferPointer
    private var lengths: [Int]
    public private(set) var count = 0

    public init(slotSize: Int, capacity: Int) {
        self.slotSize = slotSize
        self.capacity = capacity
        storage = .allocate(byteCount: slotSize * capacity, alignment: 16)
        lengths = Array(repeating: 0, count: capacity)
    }

    deinit { storage.deallocate() }

    public var isEmpty: Bool { count == 0 }
    public var isFull: Bool { count == capacity }

    /// Lets `write` fill the next slot and return the frame's length (0 to abandon it).
    /// Returns false, without calling `write`, when the queue is full.
    @inline(__always)
    public func append(_ write: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        guard count < capacity else { return false }
        let slot = storage.slice(count * slotSize..<(count + 1) * slotSize)
        let length = write(slot)
        precondition(length <= slotSize)
        guard length > 0 else { return true }
        lengths[count] = length
        count += 1
        return true
    }

    public subscript(index: Int) -> UnsafeRawBufferPointer {
        precondition(index < count)
        return UnsafeRawBufferPointer(storage.slice(index * slotSize..<index * slotSize + lengths[index]))
    }

    public func removeAll() { count = 0 }
}
