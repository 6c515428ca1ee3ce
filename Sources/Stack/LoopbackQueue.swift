/// IPv4 datagrams the stack sends to itself, waiting to be received: the stack's `lo`.
///
/// Two preallocated byte regions of variable-length entries (a length word, then the
/// datagram, padded to 8 bytes). Entries are appended to one region while the other is being
/// delivered, so a delivery that sends (an ACK, a reply) never recurses into the receive path
/// and never disturbs the entries being read. The regions are allocated on first use: a stack
/// that never talks to itself pays nothing.
final class LoopbackQueue {
    /// Bytes each region holds.
    let capacity: Int
    private var filling: UnsafeMutableRawBufferPointer?
    private var draining: UnsafeMutableRawBufferPointer?
    private var used = 0
    private(set) var count = 0
    private var isDraining = false

    static let entryHeader = 8
    /// Room an entry of the largest datagram takes.
    static let largestEntry = entryHeader + (IPv4Packet.maximumLength + 7) & ~7

    init(capacity: Int) {
        precondition(capacity >= Self.largestEntry)
        self.capacity = capacity
    }

    deinit {
        filling?.deallocate()
        draining?.deallocate()
    }

    var isEmpty: Bool { count == 0 }
    /// Whether a datagram of the largest size might not fit (senders then wait, as for the outbox).
    var isFull: Bool { capacity - used < Self.largestEntry }

    /// Lets `write` fill `length` bytes of a new entry. False, without calling `write`, when
    /// there is no room.
    @inline(__always)
    func append(length: Int, _ write: (UnsafeMutableRawBufferPointer) -> Void) -> Bool {
        let size = Self.entryHeader + (length + 7) & ~7
        guard length <= IPv4Packet.maximumLength, capacity - used >= size else { return false }
        if filling == nil { filling = .allocate(byteCount: capacity, alignment: 16) }
        let region = filling!
        region.storeBytes(of: UInt32(length), toByteOffset: used, as: UInt32.self)
        write(region.slice(used + Self.entryHeader..<used + Self.entryHeader + length))
        used += size
        count += 1
        return true
    }

    /// Hands every queued datagram to `receive`, in order. Datagrams appended meanwhile wait
    /// for the next call.
    func drain(_ receive: (UnsafeRawBufferPointer) -> Void) {
        precondition(!isDraining, "loopback delivery must not recurse")
        guard count > 0, let region = filling else { return }
        isDraining = true
        defer { isDraining = false }
        let end = used
        swap(&filling, &draining)
        used = 0
        count = 0
        var at = 0
        while at < end {
            let length = Int(region.load(fromByteOffset: at, as: UInt32.self))
            receive(UnsafeRawBufferPointer(region.slice(at + Self.entryHeader..<at + Self.entryHeader + length)))
            at += Self.entryHeader + (length + 7) & ~7
        }
    }
}
