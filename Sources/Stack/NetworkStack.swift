import Timing

/// The protocol stack of one interface: Ethernet, ARP, IPv4 (with fragmentation,
/// reassembly and the loopback), ICMP, UDP and TCP, and the sockets over them; IPv6 with
/// ICMPv6, neighbour and router discovery, fragmentation, reassembly and path MTU discovery,
/// under the same UDP and TCP (dual-stack sockets take IPv4 peers as v4-mapped).
///
/// Pure: it performs no I/O and reads no clock. `StackDriver` runs it over a `Link`: it hands
/// it received frames with `receive(frame:now:)`, calls `poll(now:)` for the timers due, and
/// transmits what accumulates in `outbox` (then empties it). Everything runs on the caller's
/// thread. The protocols live in extensions, one file each (NetworkStack+ARP, +IPv4, +ICMP,
/// +UDP, +TCPDemux...).
public final class NetworkStack {
    public let configuration: StackConfiguration
    public internal(set) var counters = Counters()
    /// Frames to transmit, in order.
    public let outbox: FrameQueue
    /// Datagrams to local addresses, received by `deliverLoopback(now:)` (NetworkStack+Loopback).
    let loopback: LoopbackQueue
    var loopbackQueuedAt = Instant(nanoseconds: 0)

    var wheel: TimingWheel<StackTimer>
    /// The latest time any entry point was given. Callers' clocks may step back between
    /// calls (lvlipd stamps each received frame with its own read of the clock, but serves
    /// its sockets with the wake-up's earlier one); the stack runs on this instead, so time
    /// never goes backwards inside it: TCP timestamps stay monotonic (RFC 7323 5.4; a peer's
    /// PAWS check drops a segment whose TSval is older than one it has seen) and RACK's
    /// send times stay in send order (RFC 8985).
    public private(set) var clock: Instant
    /// Neighbour (ARP) table; `neighborGeneration` moves on every change of a MAC or state, so
    /// caches of it (in connections) know when to look again.
    var neighbors: [IPv4Address: Neighbor] = [:] {
        didSet { neighborGeneration &+= 1 }
    }
    var neighborGeneration: UInt64 = 1
    var reassembly: FragmentTable<FragmentKey>
    var icmpErrorBucket: TokenBucket
    /// IPv6 addresses, neighbour cache and error limit (NetworkStack+IPv6, +NDP); nil when off.
    var ip6: IPv6State?
    var tcp = TCPTables()
    var udp = UDPTables()
    var nextIdentification: UInt16
    /// Scratch space for building one IP payload (up to the IPv4 maximum).
    let scratch: UnsafeMutableRawBufferPointer
    /// Connections' ring storage, reused from one connection to the next.
    public let ringPool: RingStoragePool
    /// Takes large in-order segments' data before the receive ring does
    /// (`TCPConfiguration.directDeliveryMinimum`); nil: everything goes through the ring.
    /// unowned(unsafe): the receiver owns the stack and sets this back to nil when it goes (a
    /// weak reference would give the receiver a side table, and every retain and release of
    /// it, many per connection, the slow path: 2,800 instructions per connection in callgrind).
    public unowned(unsafe) var directReceiver: TCPDirectReceiver?

    var mac: MACAddress { configuration.mac }
    var address: IPv4Address { configuration.interface.address }

    public init(configuration: StackConfiguration, now: Instant) {
        precondition(configuration.mtu >= StackConfiguration.minimumMTU && configuration.mtu <= StackConfiguration.maximumMTU)
        self.configuration = configuration
        outbox = FrameQueue(frameSize: configuration.mtu + EthernetFrame.headerLength, capacity: configuration.outputQueueFrames)
        loopback = LoopbackQueue(capacity: configuration.loopbackQueueBytes)
        wheel = TimingWheel(start: now)
        clock = now
        reassembly = FragmentTable(limits: configuration.reassembly, remembersDiscarded: false, timer: StackTimer.reassembly)
        icmpErrorBucket = TokenBucket(ratePerSecond: configuration.icmpErrorsPerSecond, burst: configuration.icmpErrorBurst, now: now)
        nextIdentification = UInt16(truncatingIfNeeded: configuration.seed ^ (configuration.seed >> 16))
        ip6 = configuration.ipv6.map {
            IPv6State(configuration: $0, mac: configuration.mac, seed: configuration.seed,
                      errorsPerSecond: configuration.icmpErrorsPerSecond, burst: configuration.icmpErrorBurst,
                      reassembly: configuration.reassembly, now: now)
        }
        scratch = .allocate(byteCount: IPv4Packet.maximumLength, alignment: 16)
        ringPool = RingStoragePool(maximumBytes: configuration.tcp.ringPoolBytes)
        tcp.challengeAckBucket = TokenBucket(ratePerSecond: configuration.tcp.challengeAcksPerSecond,
                                             burst: configuration.tcp.challengeAcksPerSecond, now: now)
    }

    deinit { scratch.deallocate() }

    /// Moves `clock` forward to `now` if it is later; returns the time to act on.
    @inline(__always)
    func advanceClock(_ now: Instant) -> Instant {
        if clock < now { clock = now }
        return clock
    }

    /// Announces our address (RFC 5227 section 2.3) so peers' caches learn or refresh it,
    /// starts duplicate address detection of our IPv6 addresses (RFC 4862 5.4) and, once the
    /// link-local one may be used, solicits routers (RFC 4861 6.3.7).
    public func start(now: Instant) {
        let now = advanceClock(now)
        startDuplicateAddressDetection(now: now)
        startRouterSolicitation(now: now)
        guard configuration.arp.announcements > 0 else { return }
        sendAnnouncement()
        if configuration.arp.announcements > 1 {
            wheel.schedule(at: now.adding(milliseconds: configuration.arp.announceIntervalMilliseconds),
                           .announce(remaining: configuration.arp.announcements - 1))
        }
    }

    /// Entries in the stack's timer wheel (lazily cleared TCP timers included until they
    /// come due or their connection is done).
    public var pendingTimers: Int { wheel.count }

    /// The earliest time `poll(now:)` has work; nil when no timer is armed and nothing waits
    /// on the loopback.
    public var nextDeadline: Instant? {
        guard let looped = loopbackDeadline else { return wheel.nextDeadline }
        return min(looped, wheel.nextDeadline ?? looped)
    }

    /// Runs every timer due at `now`, and receives what was sent to local addresses.
    public func poll(now: Instant) {
        let now = advanceClock(now)
        defer { deliverLoopback(now: now) }
        flushDeferredAcks(now: now)
        while let (_, timer) = wheel.popExpired(now: now) {
            switch timer {
            case .announce(let remaining):
                sendAnnouncement()
                if remaining > 1 {
                    wheel.schedule(at: now.adding(milliseconds: configuration.arp.announceIntervalMilliseconds),
                                   .announce(remaining: remaining - 1))
                }
            case .neighbor(let ip):
                neighborTimerFired(ip, now: now)
            case .neighbor6(let ip):
                neighbor6TimerFired(ip, now: now)
            case .duplicateAddressDetection(let ip):
                duplicateAddressDetectionTimerFired(ip, now: now)
            case .reassembly(let key):
                reassemblyTimedOut(key, now: now)
            case .reassembly6(let key):
                reassembly6TimedOut(key, now: now)
            case .routerSolicitation(let remaining):
                routerSolicitationTimerFired(remaining: remaining, now: now)
            case .tcp(let id, let kind):
                if let c = tcpSocket(id), c.timerEntryFired(kind, now: now, in: self) {
                    c.timerFired(kind, now: now, in: self)
                }
            }
        }
    }

    /// Processes one received Ethernet frame. Malformed input is counted and dropped.
    public func receive(frame bytes: UnsafeRawBufferPointer, now: Instant) {
        receive(frame: bytes, checksumVerified: false, now: now)
    }

    /// `checksumVerified`: the link vouches for the transport checksum (virtio-net
    /// VIRTIO_NET_HDR_F_NEEDS_CSUM or DATA_VALID on a TAP with offloads); such frames may also
    /// be larger than the MTU (TSO segments of up to 64 KB).
    public func receive(frame bytes: UnsafeRawBufferPointer, checksumVerified: Bool, now: Instant) {
        let now = advanceClock(now)
        counters.linkInFrames &+= 1
        guard let frame = EthernetFrame(bytes) else {
            counters.linkInTooShort &+= 1
            return
        }
        let destination = frame.destination
        let linkBroadcast = destination.isBroadcast
        // IPv6's groups (ff02::1, our solicited-node groups) are joined for IPv6 frames only.
        if destination != mac && !linkBroadcast
            && !(frame.etherType == .ipv6 && ip6?.acceptsLink(destination) == true) {
            if destination.isGroup { counters.linkInMulticast &+= 1 } else { counters.linkInOtherHost &+= 1 }
            return
        }
        let source = frame.source
        guard !source.isGroup else {
            counters.linkInBadSource &+= 1
            return
        }
        switch frame.etherType {
        case .ipv4:
            receiveIPv4(frame.payload, linkBroadcast: linkBroadcast, checksumVerified: checksumVerified, now: now)
        case .arp:
            receiveARP(frame.payload, now: now)
        case .ipv6:
            if ip6 == nil { counters.linkInIPv6 &+= 1 } else { receiveIPv6(frame.payload, checksumVerified: checksumVerified, now: now) }
        default:
            counters.linkInUnknownEtherType &+= 1
        }
    }

    /// A snapshot of the neighbour (ARP) table, for display.
    public var neighborTable: [(address: IPv4Address, mac: MACAddress?, state: String)] {
        neighbors.sorted { $0.key < $1.key }.map { ($0.key, $0.value.mac, $0.value.state.name) }
    }
}

/// What a stack timer is for. Timers are values in the wheel, never callbacks.
enum StackTimer {
    case announce(remaining: Int)
    case neighbor(IPv4Address)
    case neighbor6(IPv6Address)
    case duplicateAddressDetection(IPv6Address)
    case reassembly(FragmentKey)
    case reassembly6(Fragment6Key)
    case routerSolicitation(remaining: Int)
    case tcp(SocketID, TCPTimerKind)
}
