/// IPv6 on the interface: the addresses besides the link-local one (always formed from the
/// MAC, RFC 4862 5.3) and the neighbour discovery constants. Defaults are RFC 4861 section 10's
/// and Linux's.
public struct IPv6Configuration: Sendable {
    public var addresses: [IPv6Interface]
    /// Hop limit of packets we originate (Linux: hop_limit 64; NDP messages always use 255).
    public var hopLimit: UInt8 = 64
    /// BaseReachableTime; each entry's ReachableTime is drawn from 0.5 to 1.5 times it (6.3.2).
    public var baseReachableMilliseconds: UInt64 = 30_000
    /// RetransTimer: between solicitations (and DAD probes).
    public var retransmitMilliseconds: UInt64 = 1000
    /// DELAY_FIRST_PROBE_TIME.
    public var delayFirstProbeMilliseconds: UInt64 = 5000
    public var maxMulticastSolicit = 3
    public var maxUnicastSolicit = 3
    /// How long an unused STALE entry is kept (Linux: gc_stale_time 60 s).
    public var staleMilliseconds: UInt64 = 60_000
    /// DupAddrDetectTransmits (RFC 4862 5.1); 0 turns DAD off.
    public var dadTransmits = 1
    /// Bytes of packets queued per unresolved neighbour (Linux: unres_qlen_bytes).
    public var pendingBytesPerNeighbor = 212_992
    public var maxNeighbors = 1024

    public init(addresses: [IPv6Interface] = []) { self.addresses = addresses }
}
