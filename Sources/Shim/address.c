// Addresses between the caller's sockaddr_in/sockaddr_in6 and the wire's struct lvlip_addr.
// The stack speaks IPv4: an AF_INET6 socket's addresses are IPv4 ones as ::ffff:a.b.c.d, and
// `kind` tells lvlipd how other IPv6 addresses were spelled (:: or unreachable).
#include "shim.h"

#include <arpa/inet.h>
#include <string.h>

static int parse_v4(int family, const struct sockaddr_in *in, socklen_t len, struct lvlip_addr *out) {
    if (len < sizeof(struct sockaddr_in)) return -EINVAL;
    if (family == AF_INET6) return -EAFNOSUPPORT;
    out->addr = ntohl(in->sin_addr.s_addr);
    out->port = ntohs(in->sin_port);
    out->kind = LVLIP_ADDR_V4;
    return 0;
}

static int parse_v6(int family, const struct sockaddr_in6 *in6, socklen_t len, struct lvlip_addr *out) {
    if (family != AF_INET6) return -EAFNOSUPPORT;
    if (len < sizeof(struct sockaddr_in6)) return -EINVAL;
    out->port = ntohs(in6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
        memcpy(&out->addr, &in6->sin6_addr.s6_addr[12], 4);
        out->addr = ntohl(out->addr);
        out->kind = LVLIP_ADDR_V4;
    } else if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) {
        out->kind = LVLIP_ADDR_V6_ANY;
    } else {
        out->kind = LVLIP_ADDR_V6_OTHER;
    }
    return 0;
}

int parse_address(int family, const struct sockaddr *sa, socklen_t len, struct lvlip_addr *out) {
    memset(out, 0, sizeof *out);
    if (!sa || len < sizeof(sa_family_t)) return -EINVAL;
    if (sa->sa_family == AF_INET) return parse_v4(family, (const struct sockaddr_in *)sa, len, out);
    if (sa->sa_family == AF_INET6) return parse_v6(family, (const struct sockaddr_in6 *)sa, len, out);
    return -EAFNOSUPPORT;
}

void v4_mapped(struct in6_addr *out, uint32_t v4) {
    out->s6_addr[10] = 0xff;
    out->s6_addr[11] = 0xff;
    uint32_t net = htonl(v4);
    memcpy(&out->s6_addr[12], &net, 4);
}

void format_address(int family, const struct lvlip_addr *a, struct sockaddr *sa, socklen_t *len) {
    if (!sa || !len) return;
    union {
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } u;
    memset(&u, 0, sizeof u);
    socklen_t full;
    if (family == AF_INET6) {
        u.in6.sin6_family = AF_INET6;
        u.in6.sin6_port = htons(a->port);
        // Any address: "::" for an AF_INET6 socket (bound to [::], or not bound).
        if (a->kind != LVLIP_ADDR_V6_ANY && a->addr != 0) v4_mapped(&u.in6.sin6_addr, a->addr);
        full = sizeof u.in6;
    } else {
        u.in.sin_family = AF_INET;
        u.in.sin_port = htons(a->port);
        u.in.sin_addr.s_addr = htonl(a->addr);
        full = sizeof u.in;
    }
    memcpy(sa, &u, *len < full ? *len : full);
    *len = full;
}
