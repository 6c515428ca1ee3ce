import Stack
import Timing
import XCTest

final class TimingWheelTests: XCTestCase {
    private func drain(_ wheel: inout TimingWheel<Int>, now: Instant) -> [Int] {
        var fired: [Int] = []
        while let (_, value) = wheel.popExpired(now: now) { fired.append(value) }
        return fired
    }

    func testFiresInDeadlineOrderAndNotBefore() {
        var wheel = TimingWheel<Int>()
        wheel.schedule(at: .milliseconds(30), 30)
        wheel.schedule(at: .milliseconds(10), 10)
        wheel.schedule(at: .milliseconds(20), 20)
        wheel.schedule(at: .milliseconds(10), 11)
        XCTAssertEqual(drain(&wheel, now: .milliseconds(9)), [])
        XCTAssertEqual(drain(&wheel, now: .milliseconds(10)), [10, 11])
        XCTAssertEqual(drain(&wheel, now: .milliseconds(100)), [20, 30])
        XCTAssertTrue(wheel.isEmpty)
        XCTAssertNil(wheel.nextDeadline)
    }

    func testSubMillisecondDeadlineRoundsUp() {
        var wheel = TimingWheel<Int>()
        wheel.schedule(at: Instant(nanoseconds: 1_500_000), 1)
        XCTAssertEqual(drain(&wheel, now: Instant(nanoseconds: 1_900_000)), [])
        XCTAssertEqual(drain(&wheel, now: .milliseconds(2)), [1])
    }

    func testPastDeadlineFiresAtNextPoll() {
        var wheel = TimingWheel<Int>(start: .milliseconds(1000))
        wheel.schedule(at: .milliseconds(5), 5)
        XCTAssertEqual(wheel.nextDeadline, .milliseconds(1000))
        XCTAssertEqual(drain(&wheel, now: .milliseconds(1000)), [5])
    }

    func testCancel() {
        var wheel = TimingWheel<Int>()
        let a = wheel.schedule(at: .milliseconds(50), 1)
        let b = wheel.schedule(at: .milliseconds(5000), 2)
        XCTAssertTrue(wheel.isArmed(a))
        XCTAssertEqual(wheel.cancel(a), 1)
        XCTAssertFalse(wheel.isArmed(a))
        XCTAssertNil(wheel.cancel(a), "a second cancel of the same handle does nothing")
        XCTAssertEqual(wheel.nextDeadline.map { $0 <= .milliseconds(5000) }, true)
        XCTAssertEqual(wheel.cancel(b), 2)
        XCTAssertNil(wheel.nextDeadline)
        XCTAssertEqual(drain(&wheel, now: .seconds(10)), [])
    }

    func testStaleHandleDoesNotCancelReusedSlot() {
        var wheel = TimingWheel<Int>()
        let a = wheel.schedule(at: .milliseconds(1), 1)
        XCTAssertEqual(drain(&wheel, now: .milliseconds(1)), [1])
        let b = wheel.schedule(at: .milliseconds(10), 2)
        XCTAssertNil(wheel.cancel(a), "the fired timer's handle is stale")
        XCTAssertTrue(wheel.isArmed(b))
        XCTAssertEqual(drain(&wheel, now: .milliseconds(10)), [2])
    }

    func testRearmMovesNextDeadline() {
        var wheel = TimingWheel<Int>()
        let far = wheel.schedule(at: .milliseconds(10_000), 1)
        let firstDeadline = wheel.nextDeadline!
        XCTAssertLessThanOrEqual(firstDeadline, .milliseconds(10_000))
        wheel.schedule(at: .milliseconds(3), 2)
        XCTAssertEqual(wheel.nextDeadline, .milliseconds(3), "an earlier timer moves the deadline")
        XCTAssertEqual(drain(&wheel, now: .milliseconds(3)), [2])
        wheel.cancel(far)
        wheel.schedule(at: .milliseconds(20_000), 3)
        XCTAssertEqual(drain(&wheel, now: .milliseconds(19_999)), [])
        XCTAssertEqual(drain(&wheel, now: .milliseconds(20_000)), [3])
    }

    /// The next deadline never lies after the earliest armed timer, and advancing to it makes
    /// progress (either fires or cascades), so a reactor that sleeps until it cannot miss a timer.
    func testNextDeadlineNeverAfterEarliestTimer() {
        var rng = SplitMix64(state: 7)
        var wheel = TimingWheel<Int>(start: .milliseconds(12_345))
        var deadlines: [Int: UInt64] = [:]
        for i in 0..<2000 {
            let d = 12_345 + UInt64.random(in: 1...(1 << 33), using: &rng) >> UInt64.random(in: 0...32, using: &rng)
            wheel.schedule(at: .milliseconds(d), i)
            deadlines[i] = d
        }
        var now: UInt64 = 12_345
        var wakeups = 0
        while let next = wheel.nextDeadline {
            XCTAssertLessThanOrEqual(next.milliseconds, deadlines.values.min()!)
            XCTAssertGreaterThanOrEqual(next.milliseconds, now)
            now = next.milliseconds
            for fired in drain(&wheel, now: .milliseconds(now)) {
                XCTAssertEqual(deadlines.removeValue(forKey: fired), now, "fired exactly at its deadline")
            }
            wakeups += 1
        }
        XCTAssertTrue(deadlines.isEmpty)
        XCTAssertLessThan(wakeups, 2000 * 7, "cascades cost at most one wake-up per level per timer")
    }

    func testHundredThousandTimersRandomStepsFireInOrderNeverEarlyNeverLate() {
        let seed: UInt64 = 0x5EED_0001
        var rng = SplitMix64(state: seed)
        var wheel = TimingWheel<Int>()
        let count = 100_000
        var deadline = [UInt64](repeating: 0, count: count)
        var handles: [TimerHandle] = []
        handles.reserveCapacity(count)
        for i in 0..<count {
            deadline[i] = UInt64.random(in: 1...3_600_000, using: &rng)
            handles.append(wheel.schedule(at: .milliseconds(deadline[i]), i))
        }
        var cancelled = Set<Int>()
        for _ in 0..<10_000 {
            let i = Int.random(in: 0..<count, using: &rng)
            if cancelled.insert(i).inserted { XCTAssertEqual(wheel.cancel(handles[i]), i) }
        }
        XCTAssertEqual(wheel.count, count - cancelled.count)
        var now: UInt64 = 0
        var lastFiredDeadline: UInt64 = 0
        var fired = 0
        while now < 3_700_000 {
            let previous = now
            now += UInt64.random(in: 1...5000, using: &rng)
            while let (_, i) = wheel.popExpired(now: .milliseconds(now)) {
                XCTAssertFalse(cancelled.contains(i), "seed \(seed): cancelled timer \(i) fired")
                XCTAssertLessThanOrEqual(deadline[i], now, "seed \(seed): fired early")
                XCTAssertGreaterThan(deadline[i], previous, "seed \(seed): fired late")
                XCTAssertGreaterThanOrEqual(deadline[i], lastFiredDeadline, "seed \(seed): out of order")
                lastFiredDeadline = deadline[i]
                fired += 1
            }
        }
        XCTAssertEqual(fired, count - cancelled.count)
        XCTAssertTrue(wheel.isEmpty)
    }

    /// Arming, cancelling and polling interleaved, at steps from a millisecond to hours, as a
    /// stack does: every poll returns exactly the armed timers due by then (the wheel's
    /// shortcut for polls before its next slot must never hide one).
    func testInterleavedArmCancelAndPollMatchAPlainList() {
        let seed: UInt64 = 0x5EED_0002
        var rng = SplitMix64(state: seed)
        var wheel = TimingWheel<Int>()
        var armed: [Int: (deadline: UInt64, handle: TimerHandle)] = [:]
        var now: UInt64 = 0
        var next = 0
        for round in 0..<20_000 {
            for _ in 0..<Int.random(in: 0...3, using: &rng) {
                let span: UInt64 = [1, 64, 4096, 300_000, 20_000_000].randomElement(using: &rng)!
                let deadline = now + UInt64.random(in: 0...span, using: &rng)
                armed[next] = (deadline, wheel.schedule(at: .milliseconds(deadline), next))
                next += 1
            }
            if Bool.random(using: &rng), let victim = armed.keys.randomElement(using: &rng) {
                XCTAssertEqual(wheel.cancel(armed[victim]!.handle), victim)
                armed[victim] = nil
            }
            let step: UInt64 = [0, 1, 3, 70, 5000, 400_000].randomElement(using: &rng)!
            now += UInt64.random(in: 0...step, using: &rng)
            var fired = Set<Int>()
            while let (_, i) = wheel.popExpired(now: .milliseconds(now)) {
                XCTAssertNotNil(armed[i], "seed \(seed) round \(round): timer \(i) fired twice or after cancel")
                fired.insert(i)
                armed[i] = nil
            }
            let due = armed.filter { $0.value.deadline <= now }.map(\.key)
            XCTAssertTrue(due.isEmpty, "seed \(seed) round \(round): due at \(now) but not fired: \(due)")
            if !due.isEmpty { return }
        }
        XCTAssertEqual(wheel.count, armed.count)
    }

    func testFarFutureTimers() {
        var wheel = TimingWheel<Int>()
        let hours6: UInt64 = 6 * 3_600_000
        let years3: UInt64 = 3 * 365 * 24 * 3_600_000  // beyond the wheel's 2^36 ms span
        wheel.schedule(at: .milliseconds(hours6), 1)
        wheel.schedule(at: .milliseconds(years3), 2)
        wheel.schedule(at: .milliseconds(UInt64.max / 1_000_000), 3)
        XCTAssertEqual(drain(&wheel, now: .milliseconds(hours6 - 1)), [])
        XCTAssertEqual(drain(&wheel, now: .milliseconds(hours6)), [1])
        // Step through wake-ups as a reactor would; the far timer must fire at its deadline.
        var wakeups = 0
        while let next = wheel.nextDeadline, next.milliseconds <= years3 {
            let fired = drain(&wheel, now: next)
            if !fired.isEmpty {
                XCTAssertEqual(fired, [2])
                XCTAssertEqual(next.milliseconds, years3)
                break
            }
            wakeups += 1
            XCTAssertLessThan(wakeups, 1000)
        }
        XCTAssertEqual(wheel.count, 1)
    }

    func testTimersArmedWhileDrainingAreHonoured() {
        var wheel = TimingWheel<Int>()
        wheel.schedule(at: .milliseconds(5), 1)
        var fired: [Int] = []
        while let (_, v) = wheel.popExpired(now: .milliseconds(10)) {
            fired.append(v)
            if v == 1 {
                wheel.schedule(at: .milliseconds(7), 2)  // already due: fires in this drain
                wheel.schedule(at: .milliseconds(11), 3)  // not yet due
            }
        }
        XCTAssertEqual(fired, [1, 2])
        XCTAssertEqual(drain(&wheel, now: .milliseconds(11)), [3])
    }
}
