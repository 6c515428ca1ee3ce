// Receive control messages of datagram sockets (ip(7), ipv6(7), socket(7) SO_TIMESTAMP):
// which ones a socket asked for, and each datagram's, built from its header on the pair.
#include "shim.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/time.h>

void note_control_option(struct entry *e, int level, int name, const void *value, socklen_t len) {
    int bit = 0;
    if (level == IPPROTO_IP) bit = name == IP_PKTINFO ? W_PKTINFO : name == IP_RECVTTL ? W_TTL : name == IP_RECVTOS ? W_TOS : 0;
    if (level == SOL_SOCKET) bit = name == SO_TIMESTAMP_OLD ? W_TIMESTAMP : name == SO_TIMESTAMPNS_OLD ? W_TIMESTAMPNS : 0;
    if (level == IPPROTO_IPV6 && e->family == AF_INET6)
        bit = name == IPV6_RECVPKTINFO ? W6_PKTINFO : name == IPV6_RECVHOPLIMIT ? W6_HOPLIMIT
            : name == IPV6_RECVTCLASS ? W6_TCLASS : 0;
    if (!bit || !value || len < 1) return;
    int on = 0;
    if (len >= sizeof on) memcpy(&on, value, sizeof on); else on = *(const unsigned char *)value;
    if (on) e->wants |= (uint8_t)bit; else e->wants &= (uint8_t)~bit;
}

int add_control(struct msghdr *msg, size_t *used, int level, int type, const void *data, size_t length) {
    if (!msg->msg_control || *used + CMSG_SPACE(length) > msg->msg_controllen) return 0;
    struct cmsghdr *c = (struct cmsghdr *)((char *)msg->msg_control + *used);
    memset(c, 0, CMSG_SPACE(length));
    c->cmsg_level = level;
    c->cmsg_type = type;
    c->cmsg_len = CMSG_LEN(length);
    memcpy(CMSG_DATA(c), data, length);
    *used += CMSG_SPACE(length);
    return 1;
}

// The time the shim read the datagram from its pair, not the time it reached the TAP.
static int add_timestamps(const struct entry *e, struct msghdr *msg, size_t *used) {
    int fitted = 1;
    if (e->wants & W_TIMESTAMP) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        fitted &= add_control(msg, used, SOL_SOCKET, SO_TIMESTAMP_OLD, &tv, sizeof tv);
    }
    if (e->wants & W_TIMESTAMPNS) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        fitted &= add_control(msg, used, SOL_SOCKET, SO_TIMESTAMPNS_OLD, &ts, sizeof ts);
    }
    return fitted;
}

// IPv4 datagrams only, on either family's socket (ip6_datagram_recv_ctl hands an IPv4
// packet's to ip_cmsg_recv).
static int add_ip(const struct entry *e, struct msghdr *msg, size_t *used, const struct lvlip_dgram_header *h) {
    int fitted = 1;
    if (!IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)h->local)) return fitted;
    if (e->wants & W_PKTINFO) {
        // An IPv4 datagram's destination is the v4-mapped address's last four bytes.
        struct in_pktinfo info = {.ipi_ifindex = h->ifindex};
        memcpy(&info.ipi_spec_dst.s_addr, &h->local[12], 4);
        info.ipi_addr = info.ipi_spec_dst;
        fitted &= add_control(msg, used, IPPROTO_IP, IP_PKTINFO, &info, sizeof info);
    }
    if (e->wants & W_TTL) {
        int ttl = h->ttl;
        fitted &= add_control(msg, used, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl);
    }
    if (e->wants & W_TOS) fitted &= add_control(msg, used, IPPROTO_IP, IP_TOS, &h->tos, 1);
    return fitted;
}

// IPV6_PKTINFO comes with either family's datagrams (an IPv4 one's v4-mapped);
// IPV6_HOPLIMIT and IPV6_TCLASS with IPv6 ones only (ip6_datagram_recv_specific_ctl).
static int add_ipv6(const struct entry *e, struct msghdr *msg, size_t *used, const struct lvlip_dgram_header *h) {
    int fitted = 1;
    if (e->wants & W6_PKTINFO) {
        struct in6_pktinfo info = {.ipi6_ifindex = h->ifindex};
        memcpy(&info.ipi6_addr, h->local, 16);
        fitted &= add_control(msg, used, IPPROTO_IPV6, IPV6_PKTINFO, &info, sizeof info);
    }
    if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)h->local)) return fitted;
    if (e->wants & W6_HOPLIMIT) {
        int hops = h->ttl;
        fitted &= add_control(msg, used, IPPROTO_IPV6, IPV6_HOPLIMIT, &hops, sizeof hops);
    }
    if (e->wants & W6_TCLASS) {
        int tclass = h->tos;
        fitted &= add_control(msg, used, IPPROTO_IPV6, IPV6_TCLASS, &tclass, sizeof tclass);
    }
    return fitted;
}

void fill_control(const struct entry *e, struct msghdr *msg, const struct lvlip_dgram_header *h) {
    size_t used = 0;
    int fitted = add_timestamps(e, msg, &used);
    fitted &= add_ip(e, msg, &used, h);
    fitted &= add_ipv6(e, msg, &used, h);
    msg->msg_controllen = used;
    if (!fitted) msg->msg_flags |= MSG_CTRUNC;
}
