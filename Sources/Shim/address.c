// Addresses between the caller's sockaddr_in/sockaddr_in6 and the wire's struct lvlip_addr,
// whose 16 bytes hold either family (IPv4 as ::ffff:a.b.c.d, docs/ipc.md). The checks are
// the kernel's, made before anything reaches lvlipd (inet_bind, inet6_bind, the connects).
#include "shim.h"

#include <arpa/inet.h>
#include <string.h>

static void parse_v4(const struct sockaddr_in *in, struct lvlip_addr *out) {
    v4_mapped((struct in6_addr *)out->addr, ntohl(in->sin_addr.s_addr));
    out->port = ntohs(in->sin_port);
    out->family = AF_INET;
}

// 24 bytes (RFC 2133's sockaddr_in6, without sin6_scope_id) are taken, with scope id 0.
static void parse_v6(const struct sockaddr_in6 *in6, socklen_t len, struct lvlip_addr *out) {
    memcpy(out->addr, &in6->sin6_addr, 16);
    out->port = ntohs(in6->sin6_port);
    out->family = AF_INET6;
    out->flowinfo = in6->sin6_flowinfo;
    out->scope_id = len >= sizeof(struct sockaddr_in6) ? in6->sin6_scope_id : 0;
}

int parse_address(int family, const struct sockaddr *sa, socklen_t len, struct lvlip_addr *out) {
    memset(out, 0, sizeof *out);
    if (!sa || len < sizeof(sa_family_t)) return -EINVAL;
    // The length of the socket's own sockaddr first, then the family (inet_bind,
    // inet6_bind, tcp_v4_connect, tcp_v6_connect): an AF_INET6 socket takes IPv4 addresses
    // only v4-mapped (ipv6(7)).
    if (family == AF_INET6) {
        if (len < 24) return -EINVAL;
        if (sa->sa_family != AF_INET6) return -EAFNOSUPPORT;
        parse_v6((const struct sockaddr_in6 *)sa, len, out);
        return 0;
    }
    if (len < sizeof(struct sockaddr_in)) return -EINVAL;
    if (sa->sa_family != AF_INET) return -EAFNOSUPPORT;
    parse_v4((const struct sockaddr_in *)sa, out);
    return 0;
}

int parse_peer(const struct entry *e, const struct sockaddr *sa, socklen_t len, int sending, struct lvlip_addr *out) {
    if (e->family != AF_INET6 || !sa || len < sizeof(sa_family_t) || sa->sa_family != AF_INET)
        return parse_address(e->family, sa, len, out);
    // An AF_INET6 datagram socket takes an AF_INET peer as well (__ip6_datagram_connect,
    // udpv6_sendmsg), unless it is IPv6-only.
    memset(out, 0, sizeof *out);
    if (len < sizeof(struct sockaddr_in)) return -EINVAL;
    if (e->flags & F_V6ONLY) return sending ? -ENETUNREACH : -EAFNOSUPPORT;
    parse_v4((const struct sockaddr_in *)sa, out);
    return 0;
}

void v4_mapped(struct in6_addr *out, uint32_t v4) {
    memset(out->s6_addr, 0, 10);
    out->s6_addr[10] = 0xff;
    out->s6_addr[11] = 0xff;
    uint32_t net = htonl(v4);
    memcpy(&out->s6_addr[12], &net, 4);
}

uint32_t wire_v4(const struct lvlip_addr *a) {
    uint32_t net;
    memcpy(&net, &a->addr[12], 4);
    return ntohl(net);
}

int wire_is_v4(const struct lvlip_addr *a) { return IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a->addr); }

void format_address(int family, const struct lvlip_addr *a, struct sockaddr *sa, socklen_t *len) {
    if (!sa || !len) return;
    union {
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } u;
    memset(&u, 0, sizeof u);
    socklen_t full;
    if (family == AF_INET6) {
        // The address as the stack names it: IPv4 peers of a dual-stack socket v4-mapped,
        // as Linux shows them; the scope id of a link-local address is the TAP's index.
        u.in6.sin6_family = AF_INET6;
        u.in6.sin6_port = htons(a->port);
        memcpy(&u.in6.sin6_addr, a->addr, 16);
        u.in6.sin6_flowinfo = a->flowinfo;
        u.in6.sin6_scope_id = a->scope_id;
        full = sizeof u.in6;
    } else {
        u.in.sin_family = AF_INET;
        u.in.sin_port = htons(a->port);
        u.in.sin_addr.s_addr = htonl(wire_v4(a));
        full = sizeof u.in;
    }
    memcpy(sa, &u, *len < full ? *len : full);
    *len = full;
}
