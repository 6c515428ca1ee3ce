import Stack
import Timing
import XCTest

/// A link to a peer stack that handles each frame inside `transmit` and queues its answers
/// at once, as the kernel does behind a TAP (its stack runs inside our write).
private final class AnsweringLink: Link {
    let peer: NetworkStack
    let now: Instant
    var inbox: [[UInt8]] = []
    var reads = 0
    private let peerOut = CollectingLink()

    init(peer: NetworkStack, now: Instant) {
        self.peer = peer
        self.now = now
    }

    func receive(limit: Int, _ deliver: (ReceivedFrame) -> Void) -> Int {
        reads += 1
        var count = 0
        while count < limit, !inbox.isEmpty {
            let frame = inbox.removeFirst()
            count += 1
            frame.withUnsafeBytes { deliver(ReceivedFrame(bytes: $0)) }
        }
        return count
    }

    func transmit(_ frame: UnsafeRawBufferPointer) {
        peer.receive(frame: frame, now: now)
        peer.poll(now: now)
        peer.outbox.drain { out, offload in
            if offload.isRequested { peerOut.transmit(out, offload: offload) } else { peerOut.transmit(out) }
        }
        inbox += peerOut.frames
        peerOut.frames.removeAll()
    }

    func flush() {}

    var mayHaveAnswered: Bool { !inbox.isEmpty }
}

private final class CollectingLink: Link {
    var frames: [[UInt8]] = []
    func receive(limit: Int, _ deliver: (ReceivedFrame) -> Void) -> Int { 0 }
    func transmit(_ frame: UnsafeRawBufferPointer) { frames.append(Array(frame)) }
    func flush() {}
}

/// `StackDriver.poll` takes a near peer's answers in the same poll (`Link.mayHaveAnswered`):
/// lvlipd's connect to a program on the host completes in one wake-up.
final class DriverAnswerTests: XCTestCase {
    private func stacks() -> (client: NetworkStack, server: NetworkStack, now: Instant) {
        let now = Instant.milliseconds(1_000_000)
        func stack(_ address: IPv4Address) -> NetworkStack {
            var c = StackConfiguration(mac: MACAddress(derivedFrom: address),
                                       interface: IPv4Interface(address: address, prefixLength: 24))
            c.seed = 7
            return NetworkStack(configuration: c, now: now)
        }
        return (stack(IPv4Address(10, 0, 0, 1)), stack(IPv4Address(10, 0, 0, 2)), now)
    }

    private func connectInOnePoll(answerTurns: Int) throws -> (state: TCPState?, reads: Int) {
        let (client, server, now) = stacks()
        let listener = server.tcpOpen()
        try server.tcpBind(listener, address: IPAddress(IPv4Address(10, 0, 0, 2)), port: 80)
        try server.tcpListen(listener, backlog: 4)
        let link = AnsweringLink(peer: server, now: now)
        let driver = StackDriver(stack: client)
        driver.answerTurns = answerTurns
        let id = client.tcpOpen()
        try client.tcpConnect(id, to: IPAddress(IPv4Address(10, 0, 0, 2)), port: 80, now: now)
        driver.poll(now: now, link: link)
        return (client.tcpState(id), link.reads)
    }

    func testConnectToAnAnsweringPeerCompletesInOnePoll() throws {
        // ARP request -> reply, SYN -> SYN-ACK, ACK: every answer taken in the same poll.
        let (state, reads) = try connectInOnePoll(answerTurns: 4)
        XCTAssertEqual(state, .established)
        XCTAssertLessThanOrEqual(reads, 4)
    }

    func testOneTurnLeavesTheAnswerForTheNextPoll() throws {
        let (state, _) = try connectInOnePoll(answerTurns: 1)
        XCTAssertNotEqual(state, .established)
    }

    func testTheTurnsAreBounded() {
        // A peer that answers every reply with another ping does not keep the poll for ever.
        let harness = Harness()
        // The peer's address is known (its ARP request), so each ping is answered at once.
        harness.receive(Frames.ethernet(to: .broadcast, type: 0x0806, Frames.arp(op: 1)))
        harness.driver.poll(now: harness.now, link: harness.link)
        let link = PingingLink()
        harness.driver.answerTurns = 3
        harness.driver.poll(now: harness.now, link: link)
        XCTAssertEqual(link.reads, 3)
        XCTAssertEqual(link.replies, 3)
    }
}

/// A peer that always has one more echo request waiting, and says so.
private final class PingingLink: Link {
    var reads = 0
    var replies = 0
    private var seq: UInt16 = 0

    func receive(limit: Int, _ deliver: (ReceivedFrame) -> Void) -> Int {
        reads += 1
        seq &+= 1
        let frame = Frames.ethernet(type: 0x0800, Frames.ipv4(proto: 1, Frames.echoRequest(seq: seq, data: [1, 2, 3, 4])))
        frame.withUnsafeBytes { deliver(ReceivedFrame(bytes: $0)) }
        return 1
    }

    func transmit(_ frame: UnsafeRawBufferPointer) { replies += 1 }
    func flush() {}
    var mayHaveAnswered: Bool { true }
}
