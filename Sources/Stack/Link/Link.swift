import Timing

/// One frame a link has received, lent to the stack for the duration of one call.
public struct ReceivedFrame {
    public var bytes: UnsafeRawBufferPointer
    /// The link vouches for the transport checksum (a TAP with offloads: virtio-net
    /// NEEDS_CSUM or DATA_VALID); such frames may also exceed the MTU (TSO segments of up
    /// to 64 KB).
    public var checksumVerified: Bool
    /// When the frame arrived, where the link knows it better than the caller of
    /// `StackDriver.poll` (the TAP reads the clock per frame); nil: at the poll's `now`.
    public var timestamp: Instant?

    @inline(__always)
    public init(bytes: UnsafeRawBufferPointer, checksumVerified: Bool = false, timestamp: Instant? = nil) {
        self.bytes = bytes
        self.checksumVerified = checksumVerified
        self.timestamp = timestamp
    }
}

/// Where a stack's Ethernet frames come from and go to: the TAP in lvlipd, the simulated
/// wire of the tests and benchmarks. Anything that wraps a link is itself a link (the pcap
/// writer, the fault injector), as smoltcp's phy wrappers wrap any `Device`.
///
/// The stack never calls a link: `StackDriver` moves frames between the two. A link may do
/// I/O; the stack does none.
public protocol Link: AnyObject {
    /// Hands up to `limit` waiting frames to `deliver`, oldest first; returns how many.
    /// Each frame's bytes are valid only during its call.
    func receive(limit: Int, _ deliver: (ReceivedFrame) -> Void) -> Int

    /// Sends one complete frame; the bytes are valid only during the call.
    func transmit(_ frame: UnsafeRawBufferPointer)

    /// Sends one frame that asks the link to finish it (`FrameOffload`): a checksum to
    /// complete, a TCP super-segment to cut. A link with offloads hands the request on (the
    /// TAP's virtio-net header); by default it is done in software and the finished frames
    /// go to `transmit(_:)`. The stack asks only when configured to
    /// (`StackConfiguration.offload`).
    func transmit(_ frame: UnsafeRawBufferPointer, offload: FrameOffload)

    /// Sends every frame of `batch`, oldest first, and leaves it empty. A link may take the
    /// frames without copying them by exchanging the queue's contents for empty ones
    /// (`FrameQueue.swapContents(with:)`); by default each goes to `transmit(_:)`.
    func transmit(batch: FrameQueue)

    /// Ends a burst of `transmit` calls (the outbox is drained): a wrapper releases what it
    /// held back for reordering.
    func flush()

    /// Whether frames may be waiting that the caller was not told of: a peer may already
    /// have answered what this link sent (the TAP: the kernel runs its own stack inside our
    /// write and queues its reply before the write returns). `StackDriver.poll` receives
    /// again after transmitting while this holds, so the answer is taken in the same turn.
    var mayHaveAnswered: Bool { get }
}

extension Link {
    public func transmit(batch: FrameQueue) { transmitEach(of: batch) }

    /// A link is only read when its owner says so (a simulated wire delivers in its own
    /// time).
    public var mayHaveAnswered: Bool { false }

    /// Sends the frames of `batch` one by one, each through the `transmit` that fits it.
    public func transmitEach(of batch: FrameQueue) {
        batch.drain { frame, offload in
            if offload.isRequested { transmit(frame, offload: offload) } else { transmit(frame) }
        }
    }

    public func transmit(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) {
        offload.complete(frame) { transmit($0) }
    }
}
