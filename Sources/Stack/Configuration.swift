/// Everything the stack is told at start; defaults follow Linux where Linux has a tunable.
public struct StackConfiguration: Sendable {
    public var mac: MACAddress
    public var interface: IPv4Interface
    public var gateway: IPv4Address?
    /// The link MTU: the largest IP datagram sent in one frame (RFC 894).
    public var mtu: Int
    /// TTL of datagrams we originate (RFC 1122 3.2.1.7: never 0; Linux's default is 64).
    public var defaultTTL: UInt8 = 64
    public var arp = ARPConfiguration()
    public var reassembly = ReassemblyConfiguration()
    /// ICMP error rate limit (Linux: icmp_msgs_per_sec 1000, icmp_msgs_burst 50).
    public var icmpErrorsPerSecond: UInt64 = 1000
    public var icmpErrorBurst: UInt64 = 50
    /// Frames one wake-up may queue for the link before further output is dropped.
    public var outputQueueFrames = 1024
    /// Seeds the IP identification sequence, so tests are reproducible.
    public var seed: UInt64 = 0

    public init(mac: MACAddress, interface: IPv4Interface, gateway: IPv4Address? = nil, mtu: Int = 1500) {
        self.mac = mac
        self.interface = interface
        self.gateway = gateway
        self.mtu = mtu
    }

    /// The smallest MTU an IPv4 link may have (RFC 791: every host must accept 68-byte datagrams).
    public static let minimumMTU = 68
    /// Frames up to this size are handled whatever the MTU (IP's limit plus an Ethernet header).
    public static let maximumMTU = 65535
}

public struct ARPConfiguration: Sendable {
    /// How long a confirmed entry is used before it is re-confirmed (Linux: base_reachable_time 30 s).
    public var reachableMilliseconds: UInt64 = 30_000
    /// How long an unused stale entry is kept (Linux: gc_stale_time 60 s).
    public var staleMilliseconds: UInt64 = 60_000
    /// Interval between requests while resolving (Linux: retrans_time 1 s).
    public var retransmitMilliseconds: UInt64 = 1000
    /// Requests sent before resolution fails (Linux: mcast_solicit 3).
    public var maxRequests = 3
    /// Bytes of datagrams queued per unresolved neighbour (Linux: unres_qlen_bytes 212992).
    public var pendingBytesPerNeighbor = 212_992
    public var maxEntries = 1024
    /// Announcements at start (RFC 5227 section 2.3: ANNOUNCE_NUM 2, ANNOUNCE_INTERVAL 2 s).
    public var announcements = 2
    public var announceIntervalMilliseconds: UInt64 = 2000
    public init() {}
}

public struct ReassemblyConfiguration: Sendable {
    /// Lifetime of an incomplete datagram (Linux: ipfrag_time 30 s; RFC 791 suggests 15 s).
    public var timeoutMilliseconds: UInt64 = 30_000
    /// Memory for all incomplete datagrams together (Linux: ipfrag_high_thresh 4 MB).
    public var memoryLimit = 4 * 1024 * 1024
    public var maxDatagrams = 1024
    public var maxFragmentsPerDatagram = 256
    public init() {}
}
