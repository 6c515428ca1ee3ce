/// Every counter the stack keeps, named after /proc/net/snmp (RFC 4293, RFC 2011) where such a
/// name exists. Every dropped frame increments exactly one drop reason.
public struct Counters: Sendable {
    // Link layer (Ethernet)
    public var linkInFrames: UInt64 = 0
    public var linkInTooShort: UInt64 = 0
    /// Unicast frames for another station's MAC address.
    public var linkInOtherHost: UInt64 = 0
    /// Multicast frames for groups the stack has not joined (it joins only ff02::1 and the
    /// solicited-node groups of its IPv6 addresses).
    public var linkInMulticast: UInt64 = 0
    /// Frames whose source MAC is a group address (invalid).
    public var linkInBadSource: UInt64 = 0
    public var linkInUnknownEtherType: UInt64 = 0
    /// IPv6 frames received while IPv6 is off.
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

    // IPv6 (RFC 8200), ICMPv6 (RFC 4443) and NDP (RFC 4861): /proc/net/snmp6 names where Linux has one
    public var ip6InReceives: UInt64 = 0
    public var ip6InHdrErrors: UInt64 = 0
    public var ip6InTruncatedPkts: UInt64 = 0
    public var ip6InAddrErrors: UInt64 = 0
    public var ip6InUnknownProtos: UInt64 = 0
    public var ip6InDelivers: UInt64 = 0
    /// Packets whose last header says No Next Header (RFC 8200 4.7): nothing to deliver.
    public var ip6InNoNextHeader: UInt64 = 0
    public var ip6InDiscards: UInt64 = 0
    public var ip6OutRequests: UInt64 = 0
    public var ip6OutNoRoutes: UInt64 = 0
    public var ip6OutDiscards: UInt64 = 0
    /// Fragments received (atomic ones too, which count in Ip6ReasmOKs at once, as on Linux).
    public var ip6ReasmReqds: UInt64 = 0
    public var ip6ReasmOKs: UInt64 = 0
    public var ip6ReasmFails: UInt64 = 0
    public var ip6ReasmTimeout: UInt64 = 0
    /// Packets of ours sent as fragments, the fragments made, and packets too large to send
    /// even in fragments.
    public var ip6FragOKs: UInt64 = 0
    public var ip6FragCreates: UInt64 = 0
    public var ip6FragFails: UInt64 = 0
    public var icmp6InMsgs: UInt64 = 0
    public var icmp6InErrors: UInt64 = 0
    public var icmp6InCsumErrors: UInt64 = 0
    public var icmp6InDestUnreachs: UInt64 = 0
    public var icmp6InPktTooBigs: UInt64 = 0
    public var icmp6InTimeExcds: UInt64 = 0
    public var icmp6InParmProblems: UInt64 = 0
    public var icmp6InEchos: UInt64 = 0
    public var icmp6InEchoReplies: UInt64 = 0
    public var icmp6InRouterSolicits: UInt64 = 0
    public var icmp6InRouterAdvertisements: UInt64 = 0
    public var icmp6InNeighborSolicits: UInt64 = 0
    public var icmp6InNeighborAdvertisements: UInt64 = 0
    public var icmp6InRedirects: UInt64 = 0
    public var icmp6InOther: UInt64 = 0
    public var icmp6OutMsgs: UInt64 = 0
    public var icmp6OutDestUnreachs: UInt64 = 0
    public var icmp6OutParmProblems: UInt64 = 0
    public var icmp6OutEchoReplies: UInt64 = 0
    public var icmp6OutNeighborSolicits: UInt64 = 0
    public var icmp6OutNeighborAdvertisements: UInt64 = 0
    public var icmp6OutTimeExcds: UInt64 = 0
    public var icmp6OutRouterSolicits: UInt64 = 0
    /// ICMPv6 errors not sent because of the rate limit (RFC 4443 2.4 (f)).
    public var icmp6OutRateLimitHost: UInt64 = 0
    /// Neighbor Solicitations and Advertisements failing RFC 4861 7.1.1 / 7.1.2 validation.
    public var ndp6InInvalid: UInt64 = 0
    public var ndp6ResolutionFailures: UInt64 = 0
    /// Packets dropped while waiting for resolution (queue full or resolution failed).
    public var ndp6PendingDrops: UInt64 = 0
    public var ndp6CacheFull: UInt64 = 0
    /// Our tentative addresses found in use by another node (RFC 4862 5.4.5).
    public var ndp6DADFailures: UInt64 = 0
    /// Advertisements from another node for one of our preferred addresses.
    public var ndp6AddressConflicts: UInt64 = 0
    /// Router Advertisements failing RFC 4861 6.1.2 validation.
    public var ndp6RouterAdvertisementsInvalid: UInt64 = 0
    /// Valid Router Advertisements not acted on: a default router was given (--gateway6).
    public var ndp6RouterAdvertisementsIgnored: UInt64 = 0
    /// Packet Too Big messages that lowered a path MTU (RFC 8201), and those ignored: about
    /// a packet we could not have sent (RFC 5927), or not lowering the estimate.
    public var pmtu6Decreases: UInt64 = 0
    public var pmtu6Ignored: UInt64 = 0

    // UDP over IPv6 (Linux /proc/net/snmp6 names): IPv4 datagrams a dual-stack IPv6 socket
    // receives count as IPv4's, as on Linux.
    public var udp6InDatagrams: UInt64 = 0
    public var udp6NoPorts: UInt64 = 0
    public var udp6InErrors: UInt64 = 0
    public var udp6OutDatagrams: UInt64 = 0
    public var udp6RcvbufErrors: UInt64 = 0
    public var udp6SndbufErrors: UInt64 = 0
    public var udp6InCsumErrors: UInt64 = 0

    // TCP (RFC 4022 names; Linux TcpExt names for the rest)
    public var tcpActiveOpens: UInt64 = 0
    public var tcpPassiveOpens: UInt64 = 0
    public var tcpAttemptFails: UInt64 = 0
    public var tcpEstabResets: UInt64 = 0
    public var tcpCurrEstab: UInt64 = 0
    public var tcpInSegs: UInt64 = 0
    public var tcpOutSegs: UInt64 = 0
    public var tcpRetransSegs: UInt64 = 0
    /// Flights sent again in a smaller MSS after the path MTU fell (tcpPathMTUDecreased;
    /// Linux counts none for its tcp_simple_retransmit).
    public var tcpPathMTURetransmits: UInt64 = 0
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
    public var tcpTimeWaitOverflow: UInt64 = 0
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
    /// In-order bytes taken by the `TCPDirectReceiver` straight from their segment, never
    /// stored in the receive ring (lvlip's own; Linux's nearest was TCPDirectCopyFromPrequeue).
    public var tcpDirectBytes: UInt64 = 0
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
        ("Ip6InReceives", \.ip6InReceives), ("Ip6InHdrErrors", \.ip6InHdrErrors), ("Ip6InTruncatedPkts", \.ip6InTruncatedPkts),
        ("Ip6InAddrErrors", \.ip6InAddrErrors), ("Ip6InUnknownProtos", \.ip6InUnknownProtos), ("Ip6InDelivers", \.ip6InDelivers),
        ("Ip6InNoNextHeader", \.ip6InNoNextHeader), ("Ip6InDiscards", \.ip6InDiscards), ("Ip6OutRequests", \.ip6OutRequests),
        ("Ip6OutNoRoutes", \.ip6OutNoRoutes), ("Ip6OutDiscards", \.ip6OutDiscards), ("Ip6ReasmReqds", \.ip6ReasmReqds),
        ("Ip6ReasmOKs", \.ip6ReasmOKs), ("Ip6ReasmFails", \.ip6ReasmFails), ("Ip6ReasmTimeout", \.ip6ReasmTimeout),
        ("Ip6FragOKs", \.ip6FragOKs), ("Ip6FragCreates", \.ip6FragCreates), ("Ip6FragFails", \.ip6FragFails), ("Icmp6InMsgs", \.icmp6InMsgs),
        ("Icmp6InErrors", \.icmp6InErrors), ("Icmp6InCsumErrors", \.icmp6InCsumErrors), ("Icmp6InDestUnreachs", \.icmp6InDestUnreachs),
        ("Icmp6InPktTooBigs", \.icmp6InPktTooBigs), ("Icmp6InTimeExcds", \.icmp6InTimeExcds), ("Icmp6InParmProblems", \.icmp6InParmProblems),
        ("Icmp6InEchos", \.icmp6InEchos), ("Icmp6InEchoReplies", \.icmp6InEchoReplies), ("Icmp6InRouterSolicits", \.icmp6InRouterSolicits),
        ("Icmp6InRouterAdvertisements", \.icmp6InRouterAdvertisements), ("Icmp6InNeighborSolicits", \.icmp6InNeighborSolicits), ("Icmp6InNeighborAdvertisements", \.icmp6InNeighborAdvertisements),
        ("Icmp6InRedirects", \.icmp6InRedirects), ("Icmp6InOther", \.icmp6InOther), ("Icmp6OutMsgs", \.icmp6OutMsgs),
        ("Icmp6OutDestUnreachs", \.icmp6OutDestUnreachs), ("Icmp6OutParmProblems", \.icmp6OutParmProblems), ("Icmp6OutEchoReplies", \.icmp6OutEchoReplies),
        ("Icmp6OutNeighborSolicits", \.icmp6OutNeighborSolicits), ("Icmp6OutNeighborAdvertisements", \.icmp6OutNeighborAdvertisements),
        ("Icmp6OutTimeExcds", \.icmp6OutTimeExcds), ("Icmp6OutRouterSolicits", \.icmp6OutRouterSolicits), ("Icmp6OutRateLimitHost", \.icmp6OutRateLimitHost),
        ("Ndp6InInvalid", \.ndp6InInvalid), ("Ndp6ResolutionFailures", \.ndp6ResolutionFailures), ("Ndp6PendingDrops", \.ndp6PendingDrops),
        ("Ndp6CacheFull", \.ndp6CacheFull), ("Ndp6DADFailures", \.ndp6DADFailures), ("Ndp6AddressConflicts", \.ndp6AddressConflicts),
        ("Ndp6RouterAdvertisementsInvalid", \.ndp6RouterAdvertisementsInvalid),
        ("Ndp6RouterAdvertisementsIgnored", \.ndp6RouterAdvertisementsIgnored),
        ("Pmtu6Decreases", \.pmtu6Decreases), ("Pmtu6Ignored", \.pmtu6Ignored),
        ("Udp6InDatagrams", \.udp6InDatagrams), ("Udp6NoPorts", \.udp6NoPorts), ("Udp6InErrors", \.udp6InErrors),
        ("Udp6OutDatagrams", \.udp6OutDatagrams), ("Udp6RcvbufErrors", \.udp6RcvbufErrors),
        ("Udp6SndbufErrors", \.udp6SndbufErrors), ("Udp6InCsumErrors", \.udp6InCsumErrors),
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
        ("TcpExtNoSocket", \.tcpNoSocket), ("TcpExtPathMTURetransmits", \.tcpPathMTURetransmits),
        ("TcpExtListenOverflows", \.tcpListenOverflows),
        ("TcpExtListenDrops", \.tcpListenDrops),
        ("TcpExtPAWSEstab", \.tcpPAWSDrops),
        ("TcpExtTCPChallengeACK", \.tcpChallengeAcks),
        ("TcpExtDelayedACKs", \.tcpDelayedAcks),
        ("TcpExtTCPFastRetrans", \.tcpFastRetransmits),
        ("TcpExtTCPTimeouts", \.tcpRTOs),
        ("TcpExtTCPAbortOnTimeout", \.tcpTimeouts),
        ("TcpExtTCPAbortOnClose", \.tcpAbortOnClose),
        ("TcpExtTCPTimeWaitOverflow", \.tcpTimeWaitOverflow),
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
        ("TcpExtTCPDirectBytes", \.tcpDirectBytes),
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
