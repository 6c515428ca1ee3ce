/// Every counter the stack keeps, named after /proc/net/snmp (RFC 4293, RFC 2011) where such a
/// name exists. Every dropped frame increments exactly one drop reason.
public struct Counters: Sendable {
    // Link layer (Ethernet)
    public var linkInFrames: UInt64 = 0
    public var linkInTooShort: UInt64 = 0
    /// Unicast frames for another station's MAC address.
    public var linkInOtherHost: UInt64 = 0
    /// Multicast frames (the stack joins no multicast group).
    public var linkInMulticast: UInt64 = 0
    /// Frames whose source MAC is a group address (invalid).
    public var linkInBadSource: UInt64 = 0
    public var linkInUnknownEtherType: UInt64 = 0
    /// IPv6 frames (the stack does not speak IPv6 yet).
    public var linkInIPv6: UInt64 = 0
    public var linkOutFrames: UInt64 = 0
    /// Frames dropped because the output queue of one wake-up was full.
    public var linkOutQueueFull: UInt64 = 0
    /// Datagrams sent to a local address (127/8, our own), received without the link.
    public var loopbackDatagrams: UInt64 = 0
    /// Looped datagrams dropped because the loopback queue was full.
    public var loopbackQueueFull: UInt64 = 0

    // ARP (RFC 826)
    public var arpInPackets: UInt64 = 0
    public var arpInTruncated: UInt64 = 0
    public var arpInUnsupported: UInt64 = 0
    public var arpInBadAddress: UInt64 = 0
    public var arpInRequests: UInt64 = 0
    public var arpInReplies: UInt64 = 0
    public var arpInUnknownOperation: UInt64 = 0
    /// Another station claims our address (RFC 5227).
    public var arpInConflicts: UInt64 = 0
    public var arpOutRequests: UInt64 = 0
    public var arpOutReplies: UInt64 = 0
    public var arpOutAnnouncements: UInt64 = 0
    public var arpResolutionFailures: UInt64 = 0
    /// Datagrams dropped while waiting for resolution (queue full or resolution failed).
    public var arpPendingDrops: UInt64 = 0
    public var arpCacheFull: UInt64 = 0

    // IPv4
    public var ipInReceives: UInt64 = 0
    public var ipInHdrErrors: UInt64 = 0
    public var ipInCsumErrors: UInt64 = 0
    public var ipInTruncatedPkts: UInt64 = 0
    public var ipInAddrErrors: UInt64 = 0
    /// Datagrams from the link whose source cannot be a host there: loopback, multicast,
    /// broadcast, or our own address (RFC 1122 3.2.1.3, RFC 1812 5.3.7 "martian" addresses).
    public var ipInMartianSources: UInt64 = 0
    public var ipInUnknownProtos: UInt64 = 0
    public var ipInDiscards: UInt64 = 0
    public var ipInDelivers: UInt64 = 0
    public var ipOutRequests: UInt64 = 0
    public var ipOutDiscards: UInt64 = 0
    public var ipOutNoRoutes: UInt64 = 0
    public var ipReasmTimeout: UInt64 = 0
    public var ipReasmReqds: UInt64 = 0
    public var ipReasmOKs: UInt64 = 0
    public var ipReasmFails: UInt64 = 0
    public var ipReasmOverlaps: UInt64 = 0
    public var ipReasmDuplicates: UInt64 = 0
    public var ipFragOKs: UInt64 = 0
    public var ipFragFails: UInt64 = 0
    public var ipFragCreates: UInt64 = 0

    // ICMP
    public var icmpInMsgs: UInt64 = 0
    public var icmpInErrors: UInt64 = 0
    public var icmpInCsumErrors: UInt64 = 0
    public var icmpInDestUnreachs: UInt64 = 0
    public var icmpInTimeExcds: UInt64 = 0
    public var icmpInEchos: UInt64 = 0
    public var icmpInEchoReps: UInt64 = 0
    /// Echo requests to a broadcast address, ignored as Linux does by default.
    public var icmpInBroadcastEchoIgnored: UInt64 = 0
    public var icmpInOther: UInt64 = 0
    public var icmpOutMsgs: UInt64 = 0
    public var icmpOutDestUnreachs: UInt64 = 0
    public var icmpOutTimeExcds: UInt64 = 0
    public var icmpOutEchos: UInt64 = 0
    public var icmpOutEchoReps: UInt64 = 0
    public var icmpOutRateLimited: UInt64 = 0

    // TCP (RFC 4022 names; Linux TcpExt names for the rest)
    public var tcpActiveOpens: UInt64 = 0
    public var tcpPassiveOpens: UInt64 = 0
    public var tcpAttemptFails: UInt64 = 0
    public var tcpEstabResets: UInt64 = 0
    public var tcpCurrEstab: UInt64 = 0
    public var tcpInSegs: UInt64 = 0
    public var tcpOutSegs: UInt64 = 0
    public var tcpRetransSegs: UInt64 = 0
    public var tcpInErrs: UInt64 = 0
    public var tcpOutRsts: UInt64 = 0
    public var tcpInCsumErrors: UInt64 = 0
    public var tcpNoSocket: UInt64 = 0
    public var tcpListenOverflows: UInt64 = 0
    public var tcpListenDrops: UInt64 = 0
    public var tcpPAWSDrops: UInt64 = 0
    public var tcpChallengeAcks: UInt64 = 0
    public var tcpDelayedAcks: UInt64 = 0
    public var tcpFastRetransmits: UInt64 = 0
    public var tcpRTOs: UInt64 = 0
    public var tcpTimeouts: UInt64 = 0
    public var tcpAbortOnClose: UInt64 = 0
    public var tcpDataAfterClose: UInt64 = 0
    public var tcpWindowProbes: UInt64 = 0
    public var tcpKeepAliveProbes: UInt64 = 0
    public var tcpInvalidAcksLimited: UInt64 = 0
    public var tcpSACKRecoveries: UInt64 = 0
    public var tcpRACKLost: UInt64 = 0
    public var tcpLossProbes: UInt64 = 0
    public var tcpICMPErrors: UInt64 = 0
    public var tcpSynCookiesSent: UInt64 = 0
    public var tcpReceiveBufferGrowths: UInt64 = 0
    public var tcpSendBufferGrowths: UInt64 = 0
    public var tcpSynCookiesReceived: UInt64 = 0
    public var tcpSynCookiesFailed: UInt64 = 0
    public var tcpICMPIgnored: UInt64 = 0
    public var tcpDSACKReceived: UInt64 = 0
    /// Congestion window cuts undone because every retransmission of the episode was D-SACKed.
    public var tcpDSACKUndo: UInt64 = 0
    public var tcpDSACKSent: UInt64 = 0
    /// Duplicate ACKs folded into a later ACK (SACK compression, as Linux's TCPAckCompressed).
    public var tcpAckCompressed: UInt64 = 0

    // UDP (RFC 4113 / Linux /proc/net/snmp names)
    public var udpInDatagrams: UInt64 = 0
    public var udpNoPorts: UInt64 = 0
    public var udpInErrors: UInt64 = 0
    public var udpOutDatagrams: UInt64 = 0
    public var udpRcvbufErrors: UInt64 = 0
    public var udpSndbufErrors: UInt64 = 0
    public var udpInCsumErrors: UInt64 = 0

    public init() {}

    /// Every counter with its display name, in a stable order.
    public static let fields: [(name: String, path: KeyPath<Counters, UInt64>)] = [
        ("LinkInFrames", \.linkInFrames), ("LinkInTooShort", \.linkInTooShort),
        ("LinkInOtherHost", \.linkInOtherHost), ("LinkInMulticast", \.linkInMulticast),
        ("LinkInBadSource", \.linkInBadSource), ("LinkInUnknownEtherType", \.linkInUnknownEtherType),
        ("LinkInIPv6", \.linkInIPv6), ("LinkOutFrames", \.linkOutFrames), ("LinkOutQueueFull", \.linkOutQueueFull),
        ("LoopbackDatagrams", \.loopbackDatagrams), ("LoopbackQueueFull", \.loopbackQueueFull),
        ("ArpInPackets", \.arpInPackets), ("ArpInTruncated", \.arpInTruncated),
        ("ArpInUnsupported", \.arpInUnsupported), ("ArpInBadAddress", \.arpInBadAddress),
        ("ArpInRequests", \.arpInRequests), ("ArpInReplies", \.arpInReplies),
        ("ArpInUnknownOperation", \.arpInUnknownOperation), ("ArpInConflicts", \.arpInConflicts),
        ("ArpOutRequests", \.arpOutRequests), ("ArpOutReplies", \.arpOutReplies),
        ("ArpOutAnnouncements", \.arpOutAnnouncements), ("ArpResolutionFailures", \.arpResolutionFailures),
        ("ArpPendingDrops", \.arpPendingDrops), ("ArpCacheFull", \.arpCacheFull),
        ("IpInReceives", \.ipInReceives), ("IpInHdrErrors", \.ipInHdrErrors),
        ("IpInCsumErrors", \.ipInCsumErrors), ("IpInTruncatedPkts", \.ipInTruncatedPkts),
        ("IpInAddrErrors", \.ipInAddrErrors), ("IpInMartianSources", \.ipInMartianSources), ("IpInUnknownProtos", \.ipInUnknownProtos),
        ("IpInDiscards", \.ipInDiscards), ("IpInDelivers", \.ipInDelivers),
        ("IpOutRequests", \.ipOutRequests), ("IpOutDiscards", \.ipOutDiscards), ("IpOutNoRoutes", \.ipOutNoRoutes),
        ("IpReasmTimeout", \.ipReasmTimeout), ("IpReasmReqds", \.ipReasmReqds), ("IpReasmOKs", \.ipReasmOKs),
        ("IpReasmFails", \.ipReasmFails), ("IpReasmOverlaps", \.ipReasmOverlaps),
        ("IpReasmDuplicates", \.ipReasmDuplicates),
        ("IpFragOKs", \.ipFragOKs), ("IpFragFails", \.ipFragFails), ("IpFragCreates", \.ipFragCreates),
        ("IcmpInMsgs", \.icmpInMsgs), ("IcmpInErrors", \.icmpInErrors), ("IcmpInCsumErrors", \.icmpInCsumErrors),
        ("IcmpInDestUnreachs", \.icmpInDestUnreachs), ("IcmpInTimeExcds", \.icmpInTimeExcds),
        ("IcmpInEchos", \.icmpInEchos), ("IcmpInEchoReps", \.icmpInEchoReps),
        ("IcmpInBroadcastEchoIgnored", \.icmpInBroadcastEchoIgnored), ("IcmpInOther", \.icmpInOther),
        ("IcmpOutMsgs", \.icmpOutMsgs), ("IcmpOutDestUnreachs", \.icmpOutDestUnreachs),
        ("IcmpOutTimeExcds", \.icmpOutTimeExcds), ("IcmpOutEchos", \.icmpOutEchos),
        ("IcmpOutEchoReps", \.icmpOutEchoReps),
        ("IcmpOutRateLimited", \.icmpOutRateLimited),
        ("TcpActiveOpens", \.tcpActiveOpens),
        ("TcpPassiveOpens", \.tcpPassiveOpens),
        ("TcpAttemptFails", \.tcpAttemptFails),
        ("TcpEstabResets", \.tcpEstabResets),
        ("TcpCurrEstab", \.tcpCurrEstab),
        ("TcpInSegs", \.tcpInSegs),
        ("TcpOutSegs", \.tcpOutSegs),
        ("TcpRetransSegs", \.tcpRetransSegs),
        ("TcpInErrs", \.tcpInErrs),
        ("TcpOutRsts", \.tcpOutRsts),
        ("TcpInCsumErrors", \.tcpInCsumErrors),
        ("TcpExtNoSocket", \.tcpNoSocket),
        ("TcpExtListenOverflows", \.tcpListenOverflows),
        ("TcpExtListenDrops", \.tcpListenDrops),
        ("TcpExtPAWSEstab", \.tcpPAWSDrops),
        ("TcpExtTCPChallengeACK", \.tcpChallengeAcks),
        ("TcpExtDelayedACKs", \.tcpDelayedAcks),
        ("TcpExtTCPFastRetrans", \.tcpFastRetransmits),
        ("TcpExtTCPTimeouts", \.tcpRTOs),
        ("TcpExtTCPAbortOnTimeout", \.tcpTimeouts),
        ("TcpExtTCPAbortOnClose", \.tcpAbortOnClose),
        ("TcpExtTCPAbortOnData", \.tcpDataAfterClose),
        ("TcpExtTCPWinProbe", \.tcpWindowProbes),
        ("TcpExtTCPKeepAlive", \.tcpKeepAliveProbes),
        ("TcpExtTCPACKSkippedSeq", \.tcpInvalidAcksLimited),
        ("TcpExtTCPSackRecovery", \.tcpSACKRecoveries),
        ("TcpExtTCPRACKLossDetections", \.tcpRACKLost),
        ("TcpExtTCPLossProbes", \.tcpLossProbes),
        ("TcpExtICMPErrors", \.tcpICMPErrors),
        ("TcpExtSyncookiesSent", \.tcpSynCookiesSent),
        ("TcpExtTCPRcvBufGrowths", \.tcpReceiveBufferGrowths),
        ("TcpExtTCPSndBufGrowths", \.tcpSendBufferGrowths),
        ("TcpExtSyncookiesRecv", \.tcpSynCookiesReceived),
        ("TcpExtSyncookiesFailed", \.tcpSynCookiesFailed),
        ("TcpExtOutOfWindowIcmps", \.tcpICMPIgnored),
        ("TcpExtTCPDSACKRecv", \.tcpDSACKReceived),
        ("TcpExtTCPDSACKUndo", \.tcpDSACKUndo),
        ("TcpExtTCPDSACKOldSent", \.tcpDSACKSent),
        ("TcpExtTCPAckCompressed", \.tcpAckCompressed),
        ("UdpInDatagrams", \.udpInDatagrams),
        ("UdpNoPorts", \.udpNoPorts),
        ("UdpInErrors", \.udpInErrors),
        ("UdpOutDatagrams", \.udpOutDatagrams),
        ("UdpRcvbufErrors", \.udpRcvbufErrors),
        ("UdpSndbufErrors", \.udpSndbufErrors),
        ("UdpInCsumErrors", \.udpInCsumErrors),
    ]

    public subscript(name: String) -> UInt64? {
        Self.fields.first { $0.name == name }.map { self[keyPath: $0.path] }
    }
}
