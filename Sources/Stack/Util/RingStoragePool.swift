/// Storage of connections' rings, kept when a connection gives its rings back (at TIME-WAIT
/// or when it is freed) and handed to the next connection that needs the same size.
///
/// Without it, a stream of short connections made the heap grow: each connection's freed
/// 256 KB rings were carved up by small objects that outlive them (connections waiting out
/// TIME-WAIT), so the next connection's rings came from fresh heap, and every one touched new
/// pages (about 130 KB of address space and 4 KB of RSS per connection in TIME-WAIT). Reused
/// storage is already resident. The pool holds at most `maximumBytes`; what does not fit is
/// freed. Only sizes of at least `minimumSize` are kept (TIME-WAIT's one-byte rings are not).
/// One pool per stack, used on the stack's thread.
public final class RingStoragePool {
    public let maximumBytes: Int
    static let minimumSize = 4096
    /// Kept storage by size. Sizes are powers of two (ByteRing rounds up) and a stack uses a
    /// handful, so a short list searched in order beats a dictionary: no hashing, and the
    /// buffers' array is modified in place (a take and a give per ring per connection).
    private var free: [(capacity: Int, buffers: [UnsafeMutableRawBufferPointer])] = []
    public private(set) var bytes = 0

    public init(maximumBytes: Int) { self.maximumBytes = maximumBytes }

    deinit {
        for size in free { for b in size.buffers { b.deallocate() } }
    }

    private func sizeIndex(_ capacity: Int) -> Int? {
        for i in free.indices where free[i].capacity == capacity { return i }
        return nil
    }

    /// Storage of `capacity` bytes: a kept one if there is one.
    func take(capacity: Int) -> UnsafeMutableRawBufferPointer {
        if capacity >= Self.minimumSize, let i = sizeIndex(capacity), let buffer = free[i].buffers.popLast() {
            bytes -= capacity
            return buffer
        }
        return .allocate(byteCount: capacity, alignment: 64)
    }

    /// Takes back storage from `take`; keeps it while there is room, else frees it.
    func give(_ buffer: UnsafeMutableRawBufferPointer) {
        let capacity = buffer.count
        guard capacity >= Self.minimumSize, bytes + capacity <= maximumBytes else {
            buffer.deallocate()
            return
        }
        if let i = sizeIndex(capacity) {
            free[i].buffers.append(buffer)
        } else {
            free.append((capacity, [buffer]))
        }
        bytes += capacity
    }
}
