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
    /// A default router given by the operator (link-local or on-link); when set, Router
    /// Advertisements are not acted on and no Router Solicitation is sent.
    public var gateway: IPv6Address?
    /// Routers and on-link prefixes learnt from Router Advertisements that are kept.
    public var maxDefaultRouters = 3
    public var maxOnLinkPrefixes = 16
    /// MAX_RTR_SOLICITATIONS and RTR_SOLICITATION_INTERVAL (RFC 4861 10); 0 sends none.
    public var routerSolicitations = 3
    public var routerSolicitationIntervalMilliseconds: UInt64 = 4000
    /// Lifetime of a datagram under reassembly (RFC 8200 4.5: 60 s); the other limits are
    /// the stack's `reassembly` ones, for a table of IPv6's own.
    public var reassemblyTimeoutMilliseconds: UInt64 = 60_000
    /// Path MTU entries kept, and how long one lasts before the link MTU is tried again
    /// (RFC 8201 5.3 suggests 10 minutes).
    public var maxPathMTUEntries = 1024
    public var pathMTULifetimeMilliseconds: UInt64 = 600_000

    public init(addresses: [IPv6Interface] = [], gateway: IPv6Address? = nil) {
        self.addresses = addresses
        self.gateway = gateway
    }
}
