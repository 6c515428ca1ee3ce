import CLinux
import Foundation
import Glibc
import Reactor
import Timing
import XCTest

final class ReactorTests: XCTestCase {
    private func makePipe() -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        for fd in fds { _ = fcntl(fd, F_SETFL, O_NONBLOCK) }
        return (fds[0], fds[1])
    }

    private func write(_ fd: Int32, _ text: String) {
        var text = text
        let n = text.withUTF8 { Glibc.write(fd, $0.baseAddress, $0.count) }
        XCTAssertGreaterThan(n, 0)
    }

    func testPipeReadableInvokesHandler() throws {
        let reactor = try Reactor()
        let p = makePipe()
        defer { close(p.read); close(p.write) }
        var seen: [IOEvents] = []
        try reactor.register(fd: p.read, events: .readable) { seen.append($0) }
        try reactor.runOnce(timeoutMilliseconds: 0)
        XCTAssertTrue(seen.isEmpty, "nothing to read yet")
        write(p.write, "x")
        try reactor.runOnce(timeoutMilliseconds: 1000)
        XCTAssertEqual(seen.count, 1)
        XCTAssertTrue(seen[0].contains(.readable))
    }

    // MARK: - Busy polling

    private static func drain(_ fd: Int32) {
        var byte: UInt8 = 0
        while Glibc.read(fd, &byte, 1) == 1 {}
    }

    func testBusyPollingFindsWhatArrivesAfterAWakeUpWithIO() throws {
        let reactor = try Reactor()
        reactor.busyPollNanoseconds = 200_000_000  // far longer than the writer's delay
        let p = makePipe()
        defer { close(p.read); close(p.write) }
        var reads = 0
        try reactor.register(fd: p.read, events: .readable) { _ in
            Self.drain(p.read)
            reads += 1
        }
        write(p.write, "a")
        try reactor.runOnce(timeoutMilliseconds: 1000)  // I/O: the next wait polls first
        XCTAssertEqual(reads, 1)
        XCTAssertEqual(reactor.busyPollHits, 0, "the first wait had no I/O before it")
        let writer = p.write
        let thread = Thread { usleep(2_000); var b: UInt8 = 0x62; _ = Glibc.write(writer, &b, 1) }
        thread.start()
        try reactor.runOnce(timeoutMilliseconds: 5000)
        XCTAssertEqual(reads, 2)
        XCTAssertEqual(reactor.busyPollHits, 1, "found while polling, without sleeping")
        XCTAssertGreaterThan(reactor.busyPollTime, 0)
    }

    func testBusyPollingGivesUpAfterItsWindowAndSleeps() throws {
        let reactor = try Reactor()
        reactor.busyPollNanoseconds = 1_000_000
        let p = makePipe()
        defer { close(p.read); close(p.write) }
        try reactor.register(fd: p.read, events: .readable) { _ in Self.drain(p.read) }
        write(p.write, "a")
        try reactor.runOnce(timeoutMilliseconds: 1000)
        try reactor.runOnce(timeoutMilliseconds: 20)  // nothing comes
        XCTAssertEqual(reactor.busyPollHits, 0)
        XCTAssertGreaterThanOrEqual(reactor.busyPollTime, 1_000_000, "polled its whole window")
        XCTAssertLessThan(reactor.busyPollTime, 20_000_000, "then slept")
    }

    func testNoBusyPollingAfterATimerOnlyWakeUpOrWhenOff() throws {
        let reactor = try Reactor()
        reactor.busyPollNanoseconds = 1_000_000
        var fired = 0
        reactor.schedule(at: reactor.now.adding(milliseconds: 1)) { fired += 1 }
        try reactor.runOnce(timeoutMilliseconds: 1000)
        reactor.schedule(at: reactor.now.adding(milliseconds: 1)) { fired += 1 }
        try reactor.runOnce(timeoutMilliseconds: 1000)
        XCTAssertEqual(fired, 2)
        XCTAssertEqual(reactor.busyPollTime, 0, "only timers woke the loop: it sleeps at once")

        let off = try Reactor()
        let p = makePipe()
        defer { close(p.read); close(p.write) }
        try off.register(fd: p.read, events: .readable) { _ in Self.drain(p.read) }
        write(p.write, "a")
        try off.runOnce(timeoutMilliseconds: 1000)
        write(p.write, "b")
        try off.runOnce(timeoutMilliseconds: 1000)
        XCTAssertEqual(off.busyPollHits, 0)
        XCTAssertEqual(off.busyPollTime, 0)
    }

    func testHangupIsReported() throws {
        let reactor = try Reactor()
        let p = makePipe()
        defer { close(p.read) }
        var seen: IOEvents = []
        try reactor.register(fd: p.read, events: .readable) { seen = $0 }
        close(p.write)
        try reactor.runOnce(timeoutMilliseconds: 1000)
        XCTAssertTrue(seen.contains(.hangup))
    }

    func testUnregisteredFdIsSilent() throws {
        let reactor = try Reactor()
        let p = makePipe()
        defer { close(p.read); close(p.write) }
        var calls = 0
        try reactor.register(fd: p.read, events: .readable) { _ in calls += 1 }
        reactor.unregister(fd: p.read)
        write(p.write, "x")
        try reactor.runOnce(timeoutMilliseconds: 50)
        XCTAssertEqual(calls, 0)
    }

    /// Two fds ready in one batch; whichever handler runs first unregisters the other, whose
    /// already-fetched event must then be dropped (the generation check).
    func testStaleEventInSameBatchIsDropped() throws {
        let reactor = try Reactor()
        let a = makePipe()
        let b = makePipe()
        defer { [a.read, a.write, b.read, b.write].forEach { close($0) } }
        var calls = 0
        try reactor.register(fd: a.read, events: .readable) { _ in calls += 1; reactor.unregister(fd: b.read) }
        try reactor.register(fd: b.read, events: .readable) { _ in calls += 1; reactor.unregister(fd: a.read) }
        write(a.write, "x")
        write(b.write, "y")
        try reactor.runOnce(timeoutMilliseconds: 1000)
        XCTAssertEqual(calls, 1)
    }

    func testReRegisteredFdGetsNewHandlerOnly() throws {
        let reactor = try Reactor()
        let p = makePipe()
        defer { close(p.read); close(p.write) }
        var old = 0
        var new = 0
        try reactor.register(fd: p.read, events: .readable) { _ in old += 1 }
        reactor.unregister(fd: p.read)
        try reactor.register(fd: p.read, events: .readable) { _ in new += 1 }
        write(p.write, "x")
        try reactor.runOnce(timeoutMilliseconds: 1000)
        XCTAssertEqual(old, 0)
        XCTAssertEqual(new, 1)
    }

    func testTimerFiresNotBeforeDeadlineAndCancelWorks() throws {
        let reactor = try Reactor()
        let start = Syscall.monotonicNow()
        var firedAt: Instant?
        var cancelledFired = false
        reactor.schedule(at: start.adding(milliseconds: 30)) { firedAt = Syscall.monotonicNow() }
        let cancelled = reactor.schedule(at: start.adding(milliseconds: 10)) { cancelledFired = true }
        XCTAssertTrue(reactor.cancel(cancelled))
        let limit = start.adding(milliseconds: 2000)
        while firedAt == nil && Syscall.monotonicNow() < limit { try reactor.runOnce(timeoutMilliseconds: 500) }
        let fired = try XCTUnwrap(firedAt)
        XCTAssertGreaterThanOrEqual(fired.nanoseconds(since: start), 30_000_000)
        XCTAssertLessThan(fired.nanoseconds(since: start), 1_000_000_000)
        XCTAssertFalse(cancelledFired)
        XCTAssertEqual(reactor.pendingTimers, 0)
    }

    /// The timerfd is programmed only when the earliest deadline changes: arming later
    /// timers behind an earlier one costs no timerfd_settime.
    func testTimerFDReArmedOnlyWhenEarliestDeadlineChanges() throws {
        let reactor = try Reactor()
        let now = Syscall.monotonicNow()
        reactor.schedule(at: now.adding(milliseconds: 10_000)) {}
        try reactor.runOnce(timeoutMilliseconds: 0)
        let afterFirst = reactor.timerFDSettings
        for i in 1...100 { reactor.schedule(at: now.adding(milliseconds: 10_000 + UInt64(i) * 64)) {} }
        try reactor.runOnce(timeoutMilliseconds: 0)
        XCTAssertEqual(reactor.timerFDSettings, afterFirst, "later deadlines leave the timerfd alone")
        // A timer due now is earlier than whatever is armed: the wheel reports a far timer's
        // deadline coarsely, as the tick where its level cascades, which may come before a
        // nearer timer's own deadline (a 10 s timer crossing a 262 s boundary), so a nearer
        // timer does not always move the deadline.
        reactor.schedule(at: now) {}
        try reactor.runOnce(timeoutMilliseconds: 0)
        XCTAssertEqual(reactor.timerFDSettings, afterFirst + 1, "an earlier deadline re-arms it once")
    }

    /// Cancelling the earliest timer leaves the timerfd armed for it (no timerfd_settime per
    /// stopped retransmission timer): its expiry wakes the loop once, which then arms the
    /// next deadline, and the later timer still runs on time.
    func testCancelledEarliestTimerCostsOneSpuriousExpiry() throws {
        // Both deadlines in one 64 ms block of the wheel's first level, whose deadlines it
        // reports exactly (a timer beyond the block is reported at the block's end, where it
        // cascades, which would be one more arming).
        while Syscall.monotonicNow().milliseconds % 64 > 2 { usleep(500) }
        let reactor = try Reactor()
        let start = Syscall.monotonicNow()
        let early = reactor.schedule(at: start.adding(milliseconds: 10)) { XCTFail("cancelled timer ran") }
        var lateAt: Instant?
        reactor.schedule(at: start.adding(milliseconds: 40)) { lateAt = Syscall.monotonicNow() }
        try reactor.runOnce(timeoutMilliseconds: 0)
        let armed = reactor.timerFDSettings
        XCTAssertTrue(reactor.cancel(early))
        try reactor.runOnce(timeoutMilliseconds: 0)
        XCTAssertEqual(reactor.timerFDSettings, armed, "a later earliest deadline leaves the timerfd alone")
        let limit = start.adding(milliseconds: 2000)
        while lateAt == nil && Syscall.monotonicNow() < limit { try reactor.runOnce(timeoutMilliseconds: 1000) }
        let fired = try XCTUnwrap(lateAt, "the later timer ran")
        XCTAssertGreaterThanOrEqual(fired.nanoseconds(since: start), 40_000_000)
        XCTAssertLessThan(fired.nanoseconds(since: start), 1_000_000_000)
        XCTAssertEqual(reactor.timerFDSettings, armed + 1, "re-armed once, after the stale expiry")
        XCTAssertEqual(reactor.pendingTimers, 0)
    }

    /// A wake deadline wakes a loop that has nothing else to do, with no callback; moving it
    /// later costs no timerfd_settime, and clearing it lets the loop sleep.
    func testWakeDeadlineWakesTheLoopWithoutATimer() throws {
        let reactor = try Reactor()
        let start = Syscall.monotonicNow()
        reactor.wakeDeadline = start.adding(milliseconds: 10_000)
        try reactor.runOnce(timeoutMilliseconds: 0)
        let armed = reactor.timerFDSettings
        reactor.wakeDeadline = start.adding(milliseconds: 20_000)
        try reactor.runOnce(timeoutMilliseconds: 0)
        XCTAssertEqual(reactor.timerFDSettings, armed, "a later wake deadline leaves the timerfd alone")
        reactor.wakeDeadline = start.adding(milliseconds: 30)
        try reactor.runOnce(timeoutMilliseconds: 2000)
        let woke = Syscall.monotonicNow().nanoseconds(since: start)
        XCTAssertGreaterThanOrEqual(woke, 30_000_000)
        XCTAssertLessThan(woke, 1_000_000_000, "woken by the deadline, not the 2 s limit")
        XCTAssertEqual(reactor.timerFDSettings, armed + 1)
        XCTAssertEqual(reactor.pendingTimers, 0)
        reactor.wakeDeadline = nil
        let before = Syscall.monotonicNow()
        try reactor.runOnce(timeoutMilliseconds: 100)
        XCTAssertGreaterThanOrEqual(Syscall.monotonicNow().nanoseconds(since: before), 90_000_000, "nothing to wake for")
    }

    func testTimersScheduledFromTimersRun() throws {
        let reactor = try Reactor()
        var order: [Int] = []
        reactor.schedule(at: reactor.now.adding(milliseconds: 2)) {
            order.append(1)
            reactor.schedule(at: reactor.now.adding(milliseconds: 2)) { order.append(2); reactor.stop() }
        }
        let watchdog = reactor.now.adding(milliseconds: 3000)
        reactor.schedule(at: watchdog) { reactor.stop() }
        try reactor.run()
        XCTAssertEqual(order, [1, 2])
    }

    /// A signal delivered through the signalfd stops the loop in order.
    func testSignalStopsRun() throws {
        let reactor = try Reactor()
        var received: Int32 = 0
        try reactor.handleSignals([SIGUSR2]) { signo in
            received = signo
            reactor.stop()
        }
        reactor.schedule(at: reactor.now.adding(milliseconds: 20)) { pthread_kill(pthread_self(), SIGUSR2) }
        reactor.schedule(at: reactor.now.adding(milliseconds: 3000)) { reactor.stop() }
        let start = Syscall.monotonicNow()
        try reactor.run()
        XCTAssertEqual(received, SIGUSR2)
        XCTAssertLessThan(Syscall.monotonicNow().nanoseconds(since: start), 1_000_000_000)
    }

    func testSyscallErrorNamesTheCall() {
        XCTAssertThrowsError(try Syscall.call("close(-1)") { Glibc.close(-1) }) { error in
            let e = error as? SyscallError
            XCTAssertEqual(e?.errno, EBADF)
            XCTAssertTrue(e?.description.hasPrefix("close(-1): ") ?? false)
        }
    }

    func testNonBlockingReportsWouldBlockAsNil() throws {
        let p = makePipe()
        defer { close(p.read); close(p.write) }
        var byte: UInt8 = 0
        let result = try Syscall.nonBlocking("read") { Glibc.read(p.read, &byte, 1) }
        XCTAssertNil(result)
    }
}
