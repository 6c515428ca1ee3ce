/// Everything the stack is told at start; defaults follow Linux where Linux has a tunable.
public struct StackConfiguration: Sendable {
    public var mac: MACAddress
    public var interface: IPv4Interface
    public var gateway: IPv4Address?
    /// IPv6 (NetworkStack+IPv6); nil leaves it off, IPv6 frames counted and dropped.
    public var ipv6: IPv6Configuration?
    /// The link MTU: the largest IP datagram sent in one frame (RFC 894).
    public var mtu: Int
    /// TTL of datagrams we originate (RFC 1122 3.2.1.7: never 0; Linux's default is 64).
    public var defaultTTL: UInt8 = 64
    public var arp = ARPConfiguration()
    public var reassembly = ReassemblyConfiguration()
    public var tcp = TCPConfiguration()
    public var udp = UDPConfiguration()
    /// ICMP error rate limit (Linux: icmp_msgs_per_sec 1000, icmp_msgs_burst 50).
    public var icmpErrorsPerSecond: UInt64 = 1000
    public var icmpErrorBurst: UInt64 = 50
    /// Frames one wake-up may queue for the link before further output is dropped.
    public var outputQueueFrames = 1024
    /// Bytes of looped datagrams (to 127/8 or our own address) waiting to be received; a
    /// full queue holds TCP senders back as a full outbox does.
    public var loopbackQueueBytes = 4 * 1024 * 1024
    /// Seeds the IP identification sequence, so tests are reproducible.
    public var seed: UInt64 = 0
    /// What the link finishes for the stack on output; off, every frame leaves complete and
    /// within the MTU.
    public var offload = OutputOffload()

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

/// Work the link does for the stack's output (`FrameOffload`): lvlipd turns both on for a TAP
/// with a virtio-net header, whose kernel side then does them or, for local delivery, needs
/// not do them at all.
public struct OutputOffload: Sendable {
    /// The link completes TCP checksums: the stack writes only the pseudo-header's sum.
    public var checksum = false
    /// The link cuts TCP super-segments into MSS-sized segments (TSO), so one frame carries
    /// up to `maximumPacket` bytes of IP packet (headers included, either version). Needs
    /// `checksum`.
    public var tcpSegmentation = false
    /// The largest super-segment, as an IPv4 packet (Linux's gso_max_size for a TAP: 64 KB).
    public var maximumPacket = 65535
    public init(checksum: Bool = false, tcpSegmentation: Bool = false) {
        self.checksum = checksum || tcpSegmentation
        self.tcpSegmentation = tcpSegmentation
    }
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

public struct UDPConfiguration: Sendable {
    /// A socket's receive buffer (Linux: net.core.rmem_default).
    public var receiveBuffer = 212_992
    /// Ephemeral port range (Linux: ip_local_port_range 32768 60999, shared with TCP).
    public var ephemeralPorts: ClosedRange<UInt16> = 32768...60999
    public init() {}
}

public struct TCPConfiguration: Sendable {
    /// Initial send and receive buffers (bytes; rounded up to a power of two). Unless the
    /// application sets SO_SNDBUF/SO_RCVBUF, they grow up to `maximumBuffer` (autotuning).
    public var sendBuffer = 256 * 1024
    public var receiveBuffer = 256 * 1024
    /// Autotuning limit (Linux: tcp_rmem max 6 MB, tcp_wmem max 4 MB).
    public var maximumBuffer = 4 * 1024 * 1024
    /// The largest ring an application's SO_SNDBUF/SO_RCVBUF (forced ones up to 2 GB) makes
    /// the stack allocate, per direction. getsockopt still reports what was set, as Linux;
    /// Linux charges buffers as data arrives, lvlip's rings are allocated whole at once.
    public var largestSetBuffer = 64 * 1024 * 1024

    /// The send ring's capacity for a socket with these options.
    func sendRing(_ options: TCPSocketOptions) -> Int { min(options.sendBuffer ?? sendBuffer, largestSetBuffer) }
    /// The receive ring's capacity for a socket with these options.
    func receiveRing(_ options: TCPSocketOptions) -> Int {
        min(options.receiveBuffer ?? receiveBuffer, largestSetBuffer)
    }
    /// In-order data arriving while nothing waits in the receive ring is offered to the
    /// stack's `directReceiver` first (lvlipd: written to the application's socket pair from
    /// the frame it arrived in, not copied into the ring and out again) when a segment carries
    /// at least this many bytes. Smaller segments gather in the ring, so that one write to the
    /// application carries several of them.
    public var directDeliveryMinimum = 8192
    /// Ring storage kept for reuse after connections give it back (`RingStoragePool`).
    public var ringPoolBytes = 32 * 1024 * 1024
    /// The floor of the MSS data is sent with, whatever the peer announces or TCP_MAXSEG asks:
    /// a segment can always carry this many bytes. Not a setting: the shim counts on it
    /// (LVLIP_MIN_MSS: a first write this small is one segment, which Nagle's algorithm
    /// cannot hold back).
    public static let minimumMSS = 64
    /// Lower bound of the RTO (Linux: 200 ms; RFC 6298 says 1 s).
    public var minimumRTOMicroseconds: UInt64 = 200_000
    /// TIME-WAIT lasts 2 MSL (Linux: 60 s). Tests shorten it.
    public var timeWaitMilliseconds: UInt64 = 60_000
    /// At most this many connections wait out TIME-WAIT (Linux: net.ipv4.tcp_max_tw_buckets,
    /// 131,072 on a machine this size). A connection closing beyond it leaves TIME-WAIT at the
    /// next timer tick instead of after 2 MSL, counted in TcpExtTCPTimeWaitOverflow. Each one
    /// keeps its TCPConnection, about 2 KB: a client closing 12,000 connections a second
    /// would otherwise hold 1.4 GB of them.
    public var maximumTimeWait = 32_768
    /// How long an orphaned connection may sit in FIN-WAIT-2 (Linux: tcp_fin_timeout 60 s).
    public var finWait2Milliseconds: UInt64 = 60_000
    /// SYN retransmissions before connect fails (Linux: tcp_syn_retries 6).
    public var synRetries = 6
    /// SYN-ACK retransmissions (Linux: tcp_synack_retries 5).
    public var synAckRetries = 5
    /// Retransmissions before an established connection is given up (Linux: tcp_retries2 15).
    public var maxRetransmits = 15
    /// Delayed ACK timeout (RFC 1122 4.2.3.2 allows up to 500 ms; Linux uses 40 ms).
    public var delayedAckMilliseconds: UInt64 = 40
    /// Ephemeral port range (Linux: ip_local_port_range 32768 60999).
    public var ephemeralPorts: ClosedRange<UInt16> = 32768...60999
    /// Half-open connections a listener may hold (Linux: tcp_max_syn_backlog).
    public var maxSynBacklog = 256
    /// Challenge ACKs per second (RFC 5961 section 7; Linux: tcp_challenge_ack_limit 1000).
    public var challengeAcksPerSecond: UInt64 = 1000
    public init() {}
}
