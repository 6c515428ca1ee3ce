import Glibc
import Stack
import Timing

/// In-memory TCP throughput: two stacks in one thread, each driven by its `StackDriver`,
/// joined by a lossless zero-delay `SimulatedWire`. Reports the protocol processing rate of
/// both ends together on one core. Used by scripts/bench/tcp-memory.
///
///     lvlip-membench [MEGABYTES] [MTU]
let arguments = CommandLine.arguments
let megabytes = arguments.count > 1 ? Int(arguments[1]) ?? 1000 : 1000
let mtu = arguments.count > 2 ? Int(arguments[2]) ?? 1500 : 1500
let total = megabytes << 20

func configuration(_ last: UInt8, seed: UInt64) -> StackConfiguration {
    let address = IPv4Address(10, 0, 0, last)
    var c = StackConfiguration(mac: MACAddress(derivedFrom: address), interface: IPv4Interface(address: address, prefixLength: 24), mtu: mtu)
    c.seed = seed
    // A zero-delay link needs little buffering; small rings stay in cache.
    c.tcp.sendBuffer = 256 << 10
    c.tcp.receiveBuffer = 256 << 10
    c.tcp.maximumBuffer = 256 << 10
    return c
}

var now = Instant.milliseconds(1_000_000)
let a = NetworkStack(configuration: configuration(1, seed: 1), now: now)
let b = NetworkStack(configuration: configuration(2, seed: 2), now: now)
let driverA = StackDriver(stack: a)
let driverB = StackDriver(stack: b)
// The wire takes whole outboxes without copying them; frame by frame it would copy each.
driverA.transmitsPerFrame = false
driverB.transmitsPerFrame = false
let wire = SimulatedWire(seed: 1, faults: SimulatedWire.Faults(delayMicroseconds: 0), now: now,
                         frameSize: mtu + EthernetFrame.headerLength)

/// Polls both stacks until nothing is in flight.
func pump() {
    repeat {
        driverA.poll(now: now, link: wire.a)
        driverB.poll(now: now, link: wire.b)
    } while !wire.isEmpty
}

/// Moves virtual time; the next pump runs the timers then due.
func tick(_ microseconds: UInt64) {
    now = now.adding(nanoseconds: microseconds * 1000)
    wire.now = now
}

let listener = b.tcpOpen()
try! b.tcpBind(listener, port: 5001)
try! b.tcpListen(listener, backlog: 1)
let client = a.tcpOpen()
try! a.tcpConnect(client, to: IPAddress(IPv4Address(10, 0, 0, 2)), port: 5001, now: now)
var server: SocketID?
for _ in 0..<100 where server == nil {
    pump()
    tick(100)
    server = try? b.tcpAccept(listener)
}
guard let server else { fatalError("no connection") }

let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 64)
chunk.initializeMemory(as: UInt8.self, repeating: 0x5A)
let sink = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 64)
var sent = 0
var received = 0
var start = timespec()
clock_gettime(CLOCK_MONOTONIC, &start)
while received < total {
    while sent < total, let n = try? a.tcpSend(client, UnsafeRawBufferPointer(rebasing: chunk[0..<min(chunk.count, total - sent)]), now: now) {
        sent += n
    }
    pump()
    while let n = try? b.tcpReceive(server, into: sink, now: now), n > 0 { received += n }
    pump()
    // Virtual time advances only a little per round, so timers (delayed ACKs) still fire.
    tick(10)
}
var end = timespec()
clock_gettime(CLOCK_MONOTONIC, &end)
let seconds = Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
let info = a.tcpInfo(client)!
func fixed(_ v: Double, _ places: Int) -> String {
    let scale = pow(10, Double(places))
    return String((v * scale).rounded() / scale)
}
print("transferred \(received) bytes in \(fixed(seconds, 3)) s: \(fixed(Double(received) * 8 / seconds / 1e9, 2)) Gbit/s (MTU \(mtu), MSS \(info.sendMSS), segments \(info.segmentsOut), retransmits \(info.retransmits))")
