/// A fixed-capacity ring of bytes: the send buffer of a connection, and the storage of its
/// receive buffer. One allocation per connection; no allocation per segment.
public final class ByteRing {
    public private(set) var capacity: Int
    private var storage: UnsafeMutableRawBufferPointer
    private var mask: Int
    /// Where the storage came from and goes back to; nil: the heap.
    private let pool: RingStoragePool?
    /// Index of the first byte.
    private(set) var head = 0
    /// Bytes held from `head`.
    public private(set) var count = 0

    /// Capacity is rounded up to a power of two. With `pool`, the storage is taken from it
    /// and given back to it.
    public init(capacity requested: Int, pool: RingStoragePool? = nil) {
        var c = 1
        while c < max(requested, 1) { c <<= 1 }
        capacity = c
        mask = c - 1
        self.pool = pool
        // Cache-line aligned when it spans lines; a small ring (TIME-WAIT's one byte) comes
        // from plain malloc, which an alignment above 16 would make a memalign (~400
        // instructions more, once per connection entering TIME-WAIT, callgrind).
        storage = pool?.take(capacity: c) ?? .allocate(byteCount: c, alignment: c >= 64 ? 64 : 1)
    }

    deinit { giveBackStorage() }

    private func giveBackStorage() {
        guard capacity > 0 else { return }
        if let pool { pool.give(storage) } else { storage.deallocate() }
    }

    /// Gives the storage back (to the pool, or the heap) and leaves the ring empty with no
    /// room: a connection in TIME-WAIT keeps its rings without their bytes, for no
    /// allocation (a replacement one-byte ring cost two, then two frees). The caller
    /// guarantees that nothing is held, in order or beyond (`count == 0`, no out-of-order
    /// data).
    public func releaseStorage() {
        precondition(count == 0)
        giveBackStorage()
        storage = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        capacity = 0
        mask = 0
        head = 0
    }

    public var free: Int { capacity - count }

    /// Appends up to `free` bytes of `bytes`; returns how many.
    @discardableResult
    public func append(_ bytes: UnsafeRawBufferPointer) -> Int {
        let n = min(bytes.count, free)
        write(bytes.slice(0..<n), at: count)
        count += n
        return n
    }

    /// Writes bytes at `offset` from the head (which may lie past `count`, for out-of-order
    /// data); the caller guarantees `offset + bytes.count <= capacity`.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        guard bytes.count > 0 else { return }
        precondition(offset >= 0 && offset + bytes.count <= capacity)
        let start = (head + offset) & mask
        let first = min(bytes.count, capacity - start)
        storage.copy(bytes.slice(0..<first), to: start)
        if first < bytes.count { storage.copy(bytes.slice(first..<bytes.count), to: 0) }
    }

    /// The free space after the held bytes where it lies (one or two pieces), at most
    /// `limit` bytes: somewhere to read into without a copy; `commit` then holds them.
    @inline(__always)
    public func freeRegions(limit: Int) -> (UnsafeMutableRawBufferPointer, UnsafeMutableRawBufferPointer) {
        let length = min(limit, free)
        let start = (head + count) & mask
        let first = min(length, capacity - start)
        return (storage.slice(start..<start + first), storage.slice(0..<length - first))
    }

    /// Marks `n` more bytes after `count` as held (they were written with `write(_:at:)`).
    public func commit(_ n: Int) {
        precondition(count + n <= capacity)
        count += n
    }

    /// Copies `length` bytes starting `offset` bytes from the head into `destination`.
    public func copy(from offset: Int, length: Int, into destination: UnsafeMutableRawBufferPointer) {
        precondition(offset >= 0 && length >= 0 && offset + length <= capacity && length <= destination.count)
        guard length > 0 else { return }
        let start = (head + offset) & mask
        let first = min(length, capacity - start)
        destination.copy(UnsafeRawBufferPointer(storage.slice(start..<start + first)), to: 0)
        if first < length {
            destination.copy(UnsafeRawBufferPointer(storage.slice(0..<length - first)), to: first)
        }
    }

    /// The contiguous pieces (one or two) of `length` bytes at `offset` from the head.
    @inline(__always)
    public func regions(from offset: Int, length: Int) -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer) {
        let start = (head + offset) & mask
        let first = min(length, capacity - start)
        let a = UnsafeRawBufferPointer(storage.slice(start..<start + first))
        let b = UnsafeRawBufferPointer(storage.slice(0..<length - first))
        return (a, b)
    }

    /// A larger ring holding the same bytes at the same offsets from the head, including
    /// the `extra` bytes past `count` (out-of-order data).
    public func grown(to capacity: Int, extra: Int) -> ByteRing {
        let bigger = ByteRing(capacity: capacity, pool: pool)
        let keep = min(count + extra, self.capacity)
        let (a, b) = regions(from: 0, length: keep)
        bigger.write(a, at: 0)
        bigger.write(b, at: a.count)
        bigger.count = count
        return bigger
    }

    /// Drops `n` bytes from the head.
    public func consume(_ n: Int) {
        precondition(n >= 0 && n <= count)
        // The head is not reset when the ring empties: out-of-order data may be waiting at
        // offsets past `count`.
        head = (head + n) & mask
        count -= n
    }
}
