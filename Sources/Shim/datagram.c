// UDP and ICMP sockets: their pair is SOCK_SEQPACKET, one message per datagram, each a
// struct lvlip_dgram_header and the payload (docs/ipc.md). The header carries the
// destination to lvlipd and the source, or an ICMP error, to the program.
#include "shim.h"

#include <signal.h>

#define MAX_UDP_PAYLOAD 65507
#define MAX_ICMP_MESSAGE 65515
// The program's buffers, one iovec fewer than UIO_MAXIOV: the header takes the first.
#define MAX_DGRAM_IOV 1023

int dgram_connect(struct entry *e, const struct sockaddr *addr, socklen_t len) {
    // A datagram socket only records (or with AF_UNSPEC forgets) its peer.
    struct lvlip_addr wire = {.family = AF_UNSPEC};
    if (!addr || len < sizeof(sa_family_t)) return fail(EINVAL);
    if (addr->sa_family != AF_UNSPEC) {
        int r = parse_peer(e, addr, len, 0, &wire);
        if (r < 0) return fail(-r);
    }
    int r = connect_request(e, &wire, 0, 0);
    if (r < 0) return fail(-r);
    if (wire.family == AF_UNSPEC) {
        e->flags &= ~F_STARTED;
    } else {
        e->flags |= F_STARTED;
    }
    return 0;
}

// What the kernel refuses at once about an IPv4 destination, refused at once (lvlipd would
// only drop it): 0 or the errno.
static int refused_destination(const struct entry *e, uint32_t a) {
    uint32_t subnet_broadcast = stack_address | ~stack_netmask;
    if ((a == 0xffffffffu || (stack_netmask && a == subnet_broadcast)) && !(e->flags & F_BROADCAST)) return EACCES;
    if (a == 0 || (a >> 28) == 0xe) return ENETUNREACH;
    // Off the subnet without a gateway; 127.0.0.0/8 is the stack's loopback (served by
    // lvlipd, never the kernel's).
    if (stack_netmask && (a & stack_netmask) != (stack_address & stack_netmask) && a != 0xffffffffu &&
        (a >> 24) != 127 && stack_gateway == 0)
        return ENETUNREACH;
    // A loopback source may reach only this host (Linux's route lookup: EINVAL).
    if ((e->flags & F_LOOPBACK_SOURCE) && (a >> 24) != 127 && a != stack_address) return EINVAL;
    return 0;
}

// The datagram's destination into its header: msg_name, or without one the connected peer.
// 0 or the errno.
static int address_datagram(const struct entry *e, const struct msghdr *msg, struct lvlip_dgram_header *h) {
    if (!msg->msg_name) return (e->flags & F_STARTED) ? 0 : EDESTADDRREQ;
    int r = parse_peer(e, msg->msg_name, msg->msg_namelen, 1, &h->addr);
    if (r < 0) return -r;
    if (h->addr.port == 0 && !e->icmp) return EINVAL;
    // An IPv6 destination is lvlipd's to judge (the link, NDP); an IPv4 one, v4-mapped on an
    // AF_INET6 socket, none for an IPv6-only socket (udpv6_sendmsg: ENETUNREACH).
    if (wire_is_v4(&h->addr)) {
        if (e->flags & F_V6ONLY) return ENETUNREACH;
        r = refused_destination(e, wire_v4(&h->addr));
        if (r) return r;
    }
    h->flags |= LVLIP_DGRAM_ADDRESSED;
    return 0;
}

// An error waiting at the head of a connected socket's pair fails the next send, as Linux's
// pending sk_err does.
static int take_queued_error(int fd) {
    struct lvlip_dgram_header h;
    ssize_t n = get_recv()(fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
    if (n != DGRAM_HEADER || !(h.flags & LVLIP_DGRAM_ERROR) || (h.flags & LVLIP_DGRAM_ERRQUEUE)) return 0;
    (void)get_recv()(fd, &h, sizeof h, MSG_DONTWAIT);
    return h.error > 0 ? h.error : EIO;
}

ssize_t dgram_send(int fd, struct entry *e, const struct msghdr *msg, int flags) {
    if (e->flags & F_WR_SHUT) {
        if (!(flags & MSG_NOSIGNAL)) raise(SIGPIPE);
        return fail(EPIPE);
    }
    size_t count = msg->msg_iovlen;
    if (count > MAX_DGRAM_IOV) return fail(EMSGSIZE);
    if (iov_length(msg->msg_iov, count) > (e->icmp ? MAX_ICMP_MESSAGE : MAX_UDP_PAYLOAD)) return fail(EMSGSIZE);
    struct lvlip_dgram_header h = {.magic = LVLIP_DGRAM_MAGIC};
    int err = address_datagram(e, msg, &h);
    if (!err && (e->flags & F_STARTED)) err = take_queued_error(fd);
    if (err) return fail(err);
    struct iovec parts[MAX_DGRAM_IOV + 1];
    parts[0] = (struct iovec){.iov_base = &h, .iov_len = sizeof h};
    for (size_t i = 0; i < count; i++) parts[i + 1] = msg->msg_iov[i];
    struct msghdr out = {.msg_iov = parts, .msg_iovlen = count + 1};
    ssize_t n = get_sendmsg()(fd, &out, MSG_NOSIGNAL | (flags & MSG_DONTWAIT));
    if (n < 0) return errno == EPIPE ? write_ended(e, flags) : -1;
    return n >= DGRAM_HEADER ? n - DGRAM_HEADER : 0;
}

ssize_t dgram_sendto(int fd, struct entry *e, const void *buf, size_t n, int flags, const struct sockaddr *to,
                     socklen_t tolen) {
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = n};
    struct msghdr msg = {.msg_name = (void *)to, .msg_namelen = to ? tolen : 0, .msg_iov = &iov, .msg_iovlen = 1};
    return dgram_send(fd, e, &msg, flags);
}

// One datagram delivered: its source, its flags, its header for the control messages.
static void deliver(const struct entry *e, struct msghdr *msg, const struct msghdr *in,
                       const struct lvlip_dgram_header *h, struct lvlip_dgram_header *got) {
    if (msg->msg_name) {
        format_address(e->family, &h->addr, msg->msg_name, &msg->msg_namelen);
    }
    msg->msg_flags = in->msg_flags & (MSG_TRUNC | MSG_CTRUNC);
    if (got) *got = *h;
}

ssize_t dgram_recv(int fd, struct entry *e, struct msghdr *msg, int flags, struct lvlip_dgram_header *got) {
    size_t count = msg->msg_iovlen;
    if (count > MAX_DGRAM_IOV) return fail(EMSGSIZE);
    for (;;) {
        struct lvlip_dgram_header h;
        struct iovec parts[MAX_DGRAM_IOV + 1];
        parts[0] = (struct iovec){.iov_base = &h, .iov_len = sizeof h};
        for (size_t i = 0; i < count; i++) parts[i + 1] = msg->msg_iov[i];
        struct msghdr in = {.msg_iov = parts, .msg_iovlen = count + 1};
        ssize_t n = get_recvmsg()(fd, &in, flags & (MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC));
        if (n < 0) return -1;
        if (n == 0) {
            msg->msg_flags = 0;
            return 0;  // shut down for reading (or lvlipd is gone)
        }
        if (n < DGRAM_HEADER) {
            // Cannot happen (lvlipd writes whole headers); a runt is dropped, by a peek too,
            // or the peek would find it again forever.
            if (flags & MSG_PEEK) (void)get_recv()(fd, &h, sizeof h, MSG_DONTWAIT);
            continue;
        }
        if (h.flags & LVLIP_DGRAM_ERRQUEUE) {
            // Not for this read: moved aside for MSG_ERRQUEUE; the next datagram is read.
            if (flags & MSG_PEEK) {
                errqueue_take_record(fd, e);
            } else {
                errqueue_keep_read(fd, e, h.error, msg, (size_t)(n - DGRAM_HEADER));
            }
            continue;
        }
        if (h.flags & LVLIP_DGRAM_ERROR) {
            if (flags & MSG_PEEK) (void)get_recv()(fd, &h, sizeof h, MSG_DONTWAIT);
            return fail(h.error > 0 ? h.error : EIO);
        }
        deliver(e, msg, &in, &h, got);
        return n - DGRAM_HEADER;
    }
}

ssize_t dgram_recvfrom(int fd, struct entry *e, void *buf, size_t n, int flags, struct sockaddr *from,
                       socklen_t *fromlen) {
    struct iovec iov = {.iov_base = buf, .iov_len = n};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (from && fromlen) {
        msg.msg_name = from;
        msg.msg_namelen = *fromlen;
    }
    ssize_t r = dgram_recv(fd, e, &msg, flags, NULL);
    if (msg.msg_name && r >= 0) *fromlen = msg.msg_namelen;
    return r;
}

ssize_t dgram_recvmsg(int fd, struct entry *e, struct msghdr *msg, int flags) {
    if (flags & MSG_ERRQUEUE) return errqueue_recvmsg(fd, e, msg);
    struct lvlip_dgram_header h = {0};
    ssize_t r = dgram_recv(fd, e, msg, flags, &h);
    if (r >= 0) fill_control(e, msg, &h);
    return r;
}

// The pair would count the headers and every queued message.
int dgram_next_size(int fd) {
    struct lvlip_dgram_header h;
    ssize_t n = get_recv()(fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC);
    return n >= DGRAM_HEADER && !(h.flags & LVLIP_DGRAM_ERROR) ? (int)(n - DGRAM_HEADER) : 0;
}
