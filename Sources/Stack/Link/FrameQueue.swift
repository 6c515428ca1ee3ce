/// Frames the stack has produced and its driver must transmit: one preallocated region of
/// fixed-size slots, filled during a poll and drained to the link (`StackDriver`). Emitting
/// a frame is writing into the next slot: no allocation per packet.
public final class FrameQueue {
    public let slotSize: Int
    public let capacity: Int
    private var storage: UnsafeMutableRawBufferPointer
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

    /// Exchanges the frames of two queues of the same geometry: a batch changes hands
    /// without a copy (the simulated wire takes a whole outbox so).
    public func swapContents(with other: FrameQueue) {
        precondition(slotSize == other.slotSize && capacity == other.capacity)
        swap(&storage, &other.storage)
        swap(&lengths, &other.lengths)
        swap(&count, &other.count)
    }

    /// Hands every frame to `body`, oldest first, then empties the queue.
    @inline(__always)
    public func drain(_ body: (UnsafeRawBufferPointer) -> Void) {
        for i in 0..<count { body(self[i]) }
        count = 0
    }
}
