import Timing

/// The owner of a stack's sockets (lvlipd's socket service), told by the driver when to look
/// at them.
public protocol StackDriverDelegate: AnyObject {
    /// Sockets' readiness may have changed (`NetworkStack.takeReadinessChanges(into:)`).
    func readinessMayHaveChanged(now: Instant)
    /// The outbox was drained to the link: senders that waited for room may go on.
    func outputDrained(now: Instant)
}

/// Drives one stack over one link: the sequence every owner runs (lvlipd, the simulation,
/// the frame tests, the memory benchmark), as smoltcp's `Interface::poll` is.
///
/// `poll(now:link:)` ingests what the link has (a bounded batch), runs the timers that are
/// due and flushes the outbox to the link; the caller polls again when the link has frames
/// or when `nextDeadline` passes.
public final class StackDriver {
    public let stack: NetworkStack
    /// unowned(unsafe): the delegate owns the driver (lvlipd's daemon); a weak reference
    /// would cost a load and a reference count operation per dispatch.
    public unowned(unsafe) var delegate: StackDriverDelegate?
    /// Frames received per poll before the caller may serve others (the daemon's IPC).
    public var receiveBatch = 256
    /// The owner hears of received data, and owed duplicate ACKs go out, every this many
    /// MTU frames of a batch (or after each large TSO segment, which fills a receive window
    /// fast), not after every frame: one write into an application's socket pair then
    /// carries several segments.
    public var dispatchFrames = 8
    /// Rounds of loopback delivery and owner wake-ups per poll. Bounded: what is left keeps
    /// the stack's deadline due, so the next poll goes on at once.
    public var loopbackRounds = 16
    /// Sends what each received frame produced before taking the next: on the TAP each
    /// frame costs one write either way, and a reply should not wait for the end of the
    /// batch. A link that takes a batch for less than its frames (the simulated wire without
    /// faults) turns it off.
    public var transmitsPerFrame = true
    private var framesSinceDispatch = 0

    public init(stack: NetworkStack) {
        self.stack = stack
    }

    /// Turns per poll while the link may hold answers to what was just sent
    /// (`Link.mayHaveAnswered`). Bounded, so that the owner's other work (lvlipd's IPC) is
    /// served between two polls even while a near peer answers every frame.
    public var answerTurns = 4

    /// One poll of the stack: receive, run timers, send; again while the link may already
    /// hold the answers to what was sent (a peer on the same host answers a SYN within our
    /// write: its SYN-ACK is taken now, and a connect completes in one wake-up).
    public func poll<L: Link>(now: Instant, link: L) {
        var turn = 0
        repeat {
            turn += 1
            let received = ingest(from: link, now: now)
            if turn > 1 && received == 0 { break }
            stack.poll(now: now)
            // Loopback traffic is received in transmit(to:now:), in rounds: what one round
            // delivers wakes sockets whose owners answer, which makes the next.
            for _ in 0..<loopbackRounds {
                stack.flushDeferredAcks(now: now)
                delegate?.readinessMayHaveChanged(now: now)
                transmit(to: link, now: now)
                delegate?.readinessMayHaveChanged(now: now)
                if !stack.hasLoopbackPending { break }
            }
        } while turn < answerTurns && link.mayHaveAnswered
    }

    /// When to poll again at the latest; nil: only when the link has frames. (Not returned
    /// by `poll`: callers that drive the clock themselves need not pay for it.)
    public var nextDeadline: Instant? { stack.nextDeadline }

    private func ingest<L: Link>(from link: L, now: Instant) -> Int {
        link.receive(limit: receiveBatch) { frame in
            let at = frame.timestamp ?? now
            stack.receive(frame: frame.bytes, checksumVerified: frame.checksumVerified, now: at)
            framesSinceDispatch += frame.bytes.count > 16384 ? dispatchFrames : 1
            if framesSinceDispatch >= dispatchFrames {
                framesSinceDispatch = 0
                stack.flushDeferredAcks(now: at)
                delegate?.readinessMayHaveChanged(now: at)
            }
            // The loopback and the senders held back are served after the batch.
            if transmitsPerFrame && !stack.outbox.isEmpty { drainOutbox(to: link) }
        }
    }

    /// Sends the outbox through the link and receives what the stack sent itself (its
    /// loopback); connections held back by a full queue then send on, until none waits.
    public func transmit<L: Link>(to link: L, now: Instant) {
        repeat {
            drainOutbox(to: link)
            stack.deliverLoopback(now: now)
            stack.resumeOutput(now: now)
            delegate?.outputDrained(now: now)
        } while !stack.outbox.isEmpty
    }

    @inline(__always)
    private func drainOutbox<L: Link>(to link: L) {
        if !stack.outbox.isEmpty { link.transmit(batch: stack.outbox) }
        link.flush()
    }
}
