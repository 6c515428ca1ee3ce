import Timing

/// Names a socket in the stack: a slab index and a generation, so a stale ID (of a socket
/// that has been freed and whose slot was reused) is recognised and refused.
public struct SocketID: Hashable, Sendable, CustomStringConvertible {
    public let index: Int32
    public let generation: UInt32
    public var description: String { "#\(index).\(generation)" }
}

/// RFC 9293 section 3.3.2 connection states.
public enum TCPState: String, Sendable {
    case closed = "CLOSED"
    case listen = "LISTEN"
    case synSent = "SYN-SENT"
    case synReceived = "SYN-RECEIVED"
    case established = "ESTABLISHED"
    case finWait1 = "FIN-WAIT-1"
    case finWait2 = "FIN-WAIT-2"
    case closeWait = "CLOSE-WAIT"
    case closing = "CLOSING"
    case lastAck = "LAST-ACK"
    case timeWait = "TIME-WAIT"

    /// States in which the connection is synchronized (RFC 9293 3.5.2).
    var isSynchronized: Bool {
        switch self {
        case .closed, .listen, .synSent, .synReceived: false
        default: true
        }
    }
}

/// Errors of socket operations, each the errno a kernel socket would give.
public enum SocketError: Error, Equatable, Sendable {
    case wouldBlock
    case connectionRefused
    case connectionReset
    case connectionAborted
    case timedOut
    case hostUnreachable
    case networkUnreachable
    case notConnected
    case alreadyConnected
    case inProgress
    case alreadyInProgress
    case addressInUse
    case addressNotAvailable
    case invalidArgument
    case brokenPipe
    case badSocket
    case noBufferSpace
    case notSupported
    case protocolOption
    case destinationRequired
    case messageTooLong
    case permissionDenied
    case hostDown
    case noNetwork
    case protocolError

    /// The Linux errno value.
    public var errno: Int32 {
        switch self {
        case .wouldBlock: 11  // EAGAIN
        case .connectionRefused: 111
        case .connectionReset: 104
        case .connectionAborted: 103
        case .timedOut: 110
        case .hostUnreachable: 113
        case .networkUnreachable: 101
        case .notConnected: 107
        case .alreadyConnected: 106
        case .inProgress: 115
        case .alreadyInProgress: 114
        case .addressInUse: 98
        case .addressNotAvailable: 99
        case .invalidArgument: 22
        case .brokenPipe: 32
        case .badSocket: 9  // EBADF
        case .noBufferSpace: 105
        case .notSupported: 95  // EOPNOTSUPP
        case .protocolOption: 92  // ENOPROTOOPT
        case .hostDown: 112  // EHOSTDOWN
        case .noNetwork: 64  // ENONET
        case .protocolError: 71  // EPROTO
        case .destinationRequired: 89  // EDESTADDRREQ
        case .messageTooLong: 90  // EMSGSIZE
        case .permissionDenied: 13  // EACCES
        }
    }
}

/// Readiness of a socket, as poll(2) reports it.
public struct SocketReadiness: OptionSet, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let readable = SocketReadiness(rawValue: 0x001)  // POLLIN
    public static let writable = SocketReadiness(rawValue: 0x004)  // POLLOUT
    public static let error = SocketReadiness(rawValue: 0x008)  // POLLERR
    public static let hangup = SocketReadiness(rawValue: 0x010)  // POLLHUP
    public static let readHangup = SocketReadiness(rawValue: 0x2000)  // POLLRDHUP
}

/// Which direction `shutdown` closes.
public enum ShutdownHow: Sendable {
    case read, write, both
}

/// TCP_INFO-style statistics of one connection.
/// Where the sender stands in loss recovery, as Linux's tcpi_ca_state.
public enum TCPCongestionState: UInt8, Sendable {
    /// Nothing amiss.
    case open = 0
    /// Duplicate ACKs or SACKs seen, no recovery yet.
    case disorder = 1
    /// Fast recovery (RFC 6675 / RFC 6582).
    case recovery = 3
    /// After a retransmission timeout, until it is answered.
    case loss = 4
}

public struct TCPInfo: Sendable {
    public var state: TCPState
    /// The socket's family (socket(2)'s domain), kept after its application closed it.
    public var family: AddressFamily
    public var localAddress: IPAddress
    public var localPort: UInt16
    public var remoteAddress: IPAddress
    public var remotePort: UInt16
    /// Smoothed RTT and its variation, microseconds.
    public var rtt: UInt32
    public var rttVariance: UInt32
    /// Retransmission timeout, microseconds.
    public var rto: UInt32
    public var sendMSS: Int
    public var receiveMSS: Int
    public var congestionWindow: Int
    public var slowStartThreshold: Int
    public var sendWindow: Int
    public var receiveWindow: Int
    public var unacked: Int
    public var retransmits: UInt64
    /// Bytes sent again, D-SACK blocks received, and acknowledgments that showed the path
    /// reordering (tcpi_bytes_retrans, tcpi_dsack_dups, tcpi_reord_seen).
    public var bytesRetransmitted: UInt64
    public var dsackBlocks: UInt64
    public var reorderingEvents: UInt64
    /// Segments now deemed lost and not yet resent, and resent segments not yet
    /// acknowledged (tcpi_lost, tcpi_retrans).
    public var lostSegments: Int
    public var retransmittedInFlight: Int
    public var congestionState: TCPCongestionState
    public var backoff: Int
    public var bytesAcked: UInt64
    public var bytesReceived: UInt64
    public var segmentsIn: UInt64
    public var segmentsOut: UInt64
    public var sendQueue: Int
    public var receiveQueue: Int
    public var congestionControl: String
    /// For a listener: connections waiting to be accepted, and the backlog.
    public var acceptQueue: Int
    public var backlog: Int
    public var sack: Bool
    public var timestamps: Bool
    public var windowScale: (send: UInt8, receive: UInt8)?
}

/// Per-socket options (setsockopt), with Linux's defaults.
public struct TCPSocketOptions: Sendable {
    /// TCP_NODELAY: disable Nagle (RFC 1122 4.2.3.4).
    public var noDelay = false
    /// IPV6_V6ONLY on an IPv6 socket: IPv6 peers only, and `::` does not take IPv4 (RFC 3493
    /// 5.3); Linux's default (net.ipv6.bindv6only) is off. Fixed once the socket is bound.
    public var v6Only = false
    /// TCP_CORK: hold partial segments until uncorked, at most 200 ms (as Linux).
    public var cork = false
    /// SO_KEEPALIVE and TCP_KEEPIDLE/KEEPINTVL/KEEPCNT (seconds, count).
    public var keepAlive = false
    public var keepIdle: UInt64 = 7200
    public var keepInterval: UInt64 = 75
    public var keepCount = 9
    /// TCP_USER_TIMEOUT in milliseconds; 0 means the retransmission limit applies.
    public var userTimeout: UInt64 = 0
    /// SO_SNDBUF / SO_RCVBUF in bytes; nil means autotuned. They size the buffers when set
    /// before connect or listen; afterwards they only stop autotuning.
    public var sendBuffer: Int?
    public var receiveBuffer: Int?
    /// SO_LINGER with a zero timeout: close aborts with RST.
    public var lingerZero = false
    /// TCP_CONGESTION.
    public var congestionControl = "cubic"
    /// TCP_MAXSEG: upper bound on the MSS we send and announce; nil for the MTU's.
    public var maxSegment: Int?
    public init() {}
}
