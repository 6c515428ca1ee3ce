import CLinux
import Glibc
import Timing

/// Readiness bits for `Reactor.register`, as epoll reports them.
public struct IOEvents: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let readable = IOEvents(rawValue: lvlip_EPOLLIN)
    public static let writable = IOEvents(rawValue: lvlip_EPOLLOUT)
    public static let error = IOEvents(rawValue: lvlip_EPOLLERR)
    public static let hangup = IOEvents(rawValue: lvlip_EPOLLHUP)
    public static let readHangup = IOEvents(rawValue: lvlip_EPOLLRDHUP)
    public static let edgeTriggered = IOEvents(rawValue: lvlip_EPOLLET)
}

/// A single-threaded event loop: one epoll set, one timerfd driving a timing wheel, and a
/// signalfd. Handlers run on the loop's thread; they must never block.
///
/// Each registration carries a generation number in `epoll_event.data`, so an event that
/// was already fetched for an fd that has since been closed and reused is recognised as stale
/// and dropped. The timerfd is re-armed only when the wheel's earliest deadline changes.
public final class Reactor {
    public typealias IOHandler = (IOEvents) -> Void
    public typealias TimerCallback = () -> Void

    private struct Registration {
        var generation: UInt32
        var handler: IOHandler
    }

    private let epollFD: Int32
    private let timerFD: Int32
    private var signalFD: Int32 = -1
    private var registrations: [Registration?] = []
    private var generation: UInt32 = 0
    private var wheel: TimingWheel<TimerCallback>
    private var armedDeadline: Instant?
    private var running = false
    private var afterWakeHooks: [() -> Void] = []
    private static let batch = 64
    private let eventBits = UnsafeMutablePointer<UInt32>.allocate(capacity: Reactor.batch)
    private let eventData = UnsafeMutablePointer<UInt64>.allocate(capacity: Reactor.batch)

    /// The loop's monotonic time, refreshed once per wake-up (before handlers run).
    public private(set) var now: Instant

    /// Number of epoll wake-ups so far (for statistics).
    public private(set) var wakeups: UInt64 = 0

    /// Busy polling: after a wake-up that had I/O, the loop looks for events without
    /// sleeping (epoll_wait with no timeout) for up to this long before it blocks. A peer
    /// that answers within the window is served without the loop having slept, so neither
    /// side pays for waking a sleeping thread on another CPU (an inter-processor interrupt,
    /// and in a virtual machine an exit to the hypervisor: ~20 µs each way measured on the
    /// 2-vCPU machine of docs/benchmarks.md, against ~2.5 µs on one CPU). 0: off (the
    /// default here; lvlipd chooses, `--busy-poll`). The price is CPU: up to this long per
    /// wake-up with I/O, while traffic flows; an idle loop sleeps at once.
    public var busyPollNanoseconds: UInt64 = 0
    /// Wake-ups whose events were found while busy polling (no sleep).
    public private(set) var busyPollHits: UInt64 = 0
    /// Time spent busy polling, in nanoseconds (found or not).
    public private(set) var busyPollTime: UInt64 = 0
    /// The last wake-up had an event besides the timer's: traffic is flowing.
    private var lastWakeHadIO = false
    /// A time at which the loop wakes with no callback of its own to run: for an owner that
    /// keeps its own timers and runs what is due in an after-wake hook (lvlipd's stack, whose
    /// next deadline moves at almost every wake-up). Setting it costs nothing; the timerfd is
    /// armed for the earlier of it (rounded up to the millisecond, as the wheel's deadlines
    /// are) and the wheel's next deadline, as lazily as for the wheel.
    public var wakeDeadline: Instant?
    /// Number of timerfd_settime calls so far: the timerfd is re-armed only for a deadline
    /// earlier than the one armed, or after the armed one has passed.
    public private(set) var timerFDSettings: UInt64 = 0
    /// Number of `modify` calls (epoll_ctl MOD) so far.
    public private(set) var interestChanges: UInt64 = 0

    public init() throws {
        epollFD = try Syscall.call("epoll_create1") { lvlip_epoll_create() }
        do {
            timerFD = try Syscall.call("timerfd_create") { lvlip_timerfd_create() }
        } catch {
            Syscall.close(epollFD)
            throw error
        }
        now = Syscall.monotonicNow()
        wheel = TimingWheel(start: now)
        try register(fd: timerFD, events: .readable) { [timerFD] _ in
            // Expired timers are run after every wake-up; here we only clear the fd.
            _ = lvlip_timerfd_drain(timerFD)
        }
    }

    deinit {
        Syscall.close(timerFD)
        if signalFD >= 0 { Syscall.close(signalFD) }
        Syscall.close(epollFD)
        eventBits.deallocate()
        eventData.deallocate()
    }

    // MARK: - File descriptors

    /// Watches `fd` for `events`; `handler` runs on the loop with the events that occurred.
    public func register(fd: Int32, events: IOEvents, handler: @escaping IOHandler) throws {
        precondition(fd >= 0)
        generation &+= 1
        let index = Int(fd)
        if index >= registrations.count {
            registrations.append(contentsOf: repeatElement(nil, count: index - registrations.count + 1))
        }
        try Syscall.call("epoll_ctl(ADD, \(fd))") {
            lvlip_epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, events.rawValue, Self.token(fd: fd, generation: generation))
        }
        registrations[index] = Registration(generation: generation, handler: handler)
    }

    /// Changes the events watched for a registered fd.
    public func modify(fd: Int32, events: IOEvents) throws {
        guard let registration = registrations[Int(fd)] else { return }
        interestChanges &+= 1
        try Syscall.call("epoll_ctl(MOD, \(fd))") {
            lvlip_epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, events.rawValue, Self.token(fd: fd, generation: registration.generation))
        }
    }

    /// Stops watching `fd`. Call before closing it.
    public func unregister(fd: Int32) {
        guard Int(fd) < registrations.count, registrations[Int(fd)] != nil else { return }
        registrations[Int(fd)] = nil
        _ = lvlip_epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, 0, 0)
    }

    private static func token(fd: Int32, generation: UInt32) -> UInt64 {
        UInt64(generation) << 32 | UInt64(UInt32(bitPattern: fd))
    }

    // MARK: - Timers

    /// Runs `callback` on the loop at or after `deadline` (1 ms resolution).
    @discardableResult
    public func schedule(at deadline: Instant, _ callback: @escaping TimerCallback) -> TimerHandle {
        wheel.schedule(at: deadline, callback)
    }

    @discardableResult
    public func cancel(_ handle: TimerHandle) -> Bool { wheel.cancel(handle) != nil }

    public func isArmed(_ handle: TimerHandle) -> Bool { wheel.isArmed(handle) }

    public var pendingTimers: Int { wheel.count }

    // MARK: - Signals

    /// Blocks `signals` for this thread and delivers them to `handler` on the loop.
    public func handleSignals(_ signals: [Int32], handler: @escaping (Int32) -> Void) throws {
        precondition(signalFD < 0, "signals are registered once")
        signalFD = try Syscall.call("signalfd") { signals.withUnsafeBufferPointer { lvlip_signalfd_create($0.baseAddress, Int32($0.count)) } }
        try register(fd: signalFD, events: .readable) { [signalFD] _ in
            while true {
                let signo = lvlip_signalfd_read(signalFD)
                if signo < 0 { break }
                handler(signo)
            }
        }
    }

    // MARK: - Running

    /// Runs `hook` at the end of every wake-up, after I/O handlers and timers: the place to
    /// flush output batched during the wake-up.
    public func addAfterWakeHook(_ hook: @escaping () -> Void) { afterWakeHooks.append(hook) }

    /// Runs until `stop()` is called from a handler.
    public func run() throws {
        running = true
        while running { try runOnce(timeoutMilliseconds: -1) }
    }

    /// Ends `run()` after the current wake-up.
    public func stop() { running = false }

    /// One wake-up: waits for I/O or the next timer (at most `timeoutMilliseconds`, -1 for
    /// no limit), runs handlers, fires due timers, then the after-wake hooks.
    public func runOnce(timeoutMilliseconds: Int32) throws {
        try armTimerFD()
        var n: Int32 = 0
        if busyPollNanoseconds > 0 && lastWakeHadIO && timeoutMilliseconds != 0 {
            n = try busyPoll()
        }
        if n == 0 {
            n = try Syscall.call("epoll_wait") {
                lvlip_epoll_wait(epollFD, eventBits, eventData, Int32(Self.batch), timeoutMilliseconds)
            }
        }
        wakeups &+= 1
        now = Syscall.monotonicNow()
        lastWakeHadIO = false
        for i in 0..<Int(n) {
            let fd = Int(UInt32(truncatingIfNeeded: eventData[i]))
            if fd != Int(timerFD) { lastWakeHadIO = true }
            let gen = UInt32(truncatingIfNeeded: eventData[i] >> 32)
            // A handler earlier in this batch may have unregistered or replaced this fd.
            guard fd < registrations.count, let registration = registrations[fd], registration.generation == gen else {
                continue
            }
            registration.handler(IOEvents(rawValue: eventBits[i]))
        }
        while let (_, callback) = wheel.popExpired(now: now) { callback() }
        for hook in afterWakeHooks { hook() }
    }

    /// Polls the epoll set without sleeping for up to `busyPollNanoseconds`; returns the
    /// number of events found (0: none in the window).
    private func busyPoll() throws -> Int32 {
        let start = Syscall.monotonicNow().nanoseconds
        var n: Int32
        repeat {
            n = try Syscall.call("epoll_wait") {
                lvlip_epoll_wait(epollFD, eventBits, eventData, Int32(Self.batch), 0)
            }
            // A thread of the programs we serve may be waiting for this CPU: let it run.
            if n == 0 { sched_yield() }
        } while n == 0 && Syscall.monotonicNow().nanoseconds &- start < busyPollNanoseconds
        busyPollTime &+= Syscall.monotonicNow().nanoseconds &- start
        if n > 0 { busyPollHits &+= 1 }
        return n
    }

    /// Programs the timerfd for the earliest deadline, lazily: only a deadline earlier than
    /// the one armed (or none armed) costs a timerfd_settime. A later one, after the earliest
    /// timer was cancelled (a retransmission timer stopped by its ACK, once per exchange), waits
    /// for the armed expiry, which wakes the loop once for nothing and re-arms then.
    private func armTimerFD() throws {
        // A one-shot timerfd whose time has come is disarmed (or fires at once).
        if let armed = armedDeadline, armed <= now { armedDeadline = nil }
        let deadline: Instant
        // The wake deadline is rounded up to the millisecond, as the wheel's timers are (one
        // wake-up per millisecond at most for timers moving within it).
        switch (wheel.nextDeadline, wakeDeadline.map { Instant.milliseconds($0.millisecondsRoundedUp) }) {
        case let (timer?, wake?): deadline = min(timer, wake)
        case let (timer?, nil): deadline = timer
        case let (nil, wake?): deadline = wake
        case (nil, nil): return
        }
        if let armed = armedDeadline, armed <= deadline { return }
        try Syscall.call("timerfd_settime") { lvlip_timerfd_set_absolute(timerFD, max(deadline.nanoseconds, 1)) }
        armedDeadline = deadline
        timerFDSettings &+= 1
    }
}
