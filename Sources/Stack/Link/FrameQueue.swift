/// Frames the stack has produced and its driver must transmit: one preallocated region that
/// frames fill one after another during a poll, drained to the link (`StackDriver`). Emitting
/// a frame is writing at the end of the region: no allocation per packet.
///
/// Most frames are at most `frameSize` (the MTU plus the Ethernet header); on a link with
/// segmentation offload a TCP frame may be a super-segment of up to 64 KB that the link cuts
/// (`FrameOffload`), so frames are laid end to end rather than in fixed slots.
public final class FrameQueue {
    /// The largest ordinary frame: what `append` reserves unless told otherwise.
    public let frameSize: Int
    /// Frames at most.
    public let capacity: Int
    /// Bytes of frames at most.
    public let byteCapacity: Int
    private var storage: UnsafeMutableRawBufferPointer
    private var entries: [Entry]
    private var used = 0
    public private(set) var count = 0
    /// Frames queued with an offload request: while zero, every frame is complete as it lies.
    public private(set) var offloadCount = 0

    private struct Entry {
        var offset = 0
        var length = 0
        var offload = FrameOffload.none
    }

    /// `byteCapacity` defaults to `capacity` frames of `frameSize`.
    public init(frameSize: Int, capacity: Int, byteCapacity: Int? = nil) {
        precondition(frameSize > 0 && capacity > 0)
        self.frameSize = frameSize
        self.capacity = capacity
        self.byteCapacity = max(byteCapacity ?? frameSize * capacity, frameSize)
        storage = .allocate(byteCount: self.byteCapacity, alignment: 16)
        entries = Array(repeating: Entry(), count: capacity)
    }

    deinit { storage.deallocate() }

    public var isEmpty: Bool { count == 0 }
    /// Bytes the next frame may take.
    public var room: Int { count == capacity ? 0 : byteCapacity - used }
    /// No room for another ordinary frame.
    public var isFull: Bool { room < frameSize }

    /// Lets `write` fill the next frame, in a buffer of `reserving` bytes (default
    /// `frameSize`), and return its length (0 to abandon it). Returns false, without calling
    /// `write`, when that much room is not left.
    @inline(__always)
    public func append(reserving size: Int? = nil, offload: FrameOffload = .none,
                       _ write: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        let size = size ?? frameSize
        guard room >= size else { return false }
        let length = write(storage.slice(used..<used + size))
        precondition(length <= size)
        guard length > 0 else { return true }
        entries[count] = Entry(offset: used, length: length, offload: offload)
        if offload.isRequested { offloadCount += 1 }
        // Frames start 16-byte aligned, as the first does.
        used = min(used + (length + 15) & ~15, byteCapacity)
        count += 1
        return true
    }

    public subscript(index: Int) -> UnsafeRawBufferPointer {
        precondition(index < count)
        let e = entries[index]
        return UnsafeRawBufferPointer(storage.slice(e.offset..<e.offset + e.length))
    }

    /// What frame `index` asks of the link.
    public func offload(at index: Int) -> FrameOffload {
        precondition(index < count)
        return entries[index].offload
    }

    public func removeAll() {
        count = 0
        used = 0
        offloadCount = 0
    }

    /// Exchanges the frames of two queues of the same geometry: a batch changes hands
    /// without a copy (the simulated wire takes a whole outbox so).
    public func swapContents(with other: FrameQueue) {
        precondition(hasSameGeometry(as: other))
        swap(&storage, &other.storage)
        swap(&entries, &other.entries)
        swap(&used, &other.used)
        swap(&count, &other.count)
        swap(&offloadCount, &other.offloadCount)
    }

    public func hasSameGeometry(as other: FrameQueue) -> Bool {
        frameSize == other.frameSize && capacity == other.capacity && byteCapacity == other.byteCapacity
    }

    /// Hands every frame and its offload request to `body`, oldest first, then empties the
    /// queue.
    @inline(__always)
    public func drain(_ body: (UnsafeRawBufferPointer, FrameOffload) -> Void) {
        for i in 0..<count { body(self[i], entries[i].offload) }
        removeAll()
    }
}
