// Stack sockets: which sockets lvlip serves, making one (an AF_UNIX pair whose other end goes
// to lvlipd with SOCKET), and the calls every stack socket answers with one request: bind,
// listen, shutdown, getsockname, getpeername.
//
// While the user is far from its socket limit, socket() does not wait for SOCKET's reply:
// the socket's first request names it by the SOCKET request's tag (lvlipd handles requests
// in order), and the reply is read with that request's.
#include "shim.h"

#include <fcntl.h>
#include <string.h>

// Sockets the user may still open, from the last SOCKET reply. socket() waits for its
// reply while few are left, so that the limit's EMFILE comes from socket() itself.
static uint32_t socket_headroom;
#define ASYNC_SOCKET_HEADROOM 256u

static int base_type(int type) { return type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC); }

// ICMP: ping sockets (SOCK_DGRAM) and raw ICMP sockets, IPv4; served as datagram sockets.
static int is_icmp(int domain, int base, int protocol) {
    return domain == AF_INET && protocol == IPPROTO_ICMP && (base == SOCK_DGRAM || base == SOCK_RAW);
}

int socket_served(int domain, int type, int protocol) {
    int base = base_type(type);
    int stream = base == SOCK_STREAM && (protocol == 0 || protocol == IPPROTO_TCP);
    int dgram = (base == SOCK_DGRAM && (protocol == 0 || protocol == IPPROTO_UDP)) || is_icmp(domain, base, protocol);
    return (domain == AF_INET || domain == AF_INET6) && (stream || dgram);
}

// An IP socket lvlip does not serve (other raw protocols, ICMPv6, SCTP; packet sockets) goes to the kernel's stack,
// which is not the stack the user asked about: say so, once per process.
static void warn_unserved(int domain, int type, int protocol) {
    static int said;
    if (__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED)) return;
    const char *family = domain == AF_INET ? "AF_INET" : domain == AF_INET6 ? "AF_INET6" : "AF_PACKET";
    const char *kind = type == SOCK_RAW ? "SOCK_RAW" : type == SOCK_DGRAM ? "SOCK_DGRAM" : type == SOCK_STREAM ? "SOCK_STREAM" : "other";
    say("lvlip: %s %s sockets with protocol %d are not served by lvlip: this one uses the kernel's network stack\n",
        family, kind, protocol);
}

int kernel_socket(int domain, int type, int protocol) {
    if (domain == AF_INET || domain == AF_INET6 || domain == AF_PACKET) warn_unserved(domain, base_type(type), protocol);
    return get_socket()(domain, type, protocol);
}

// fds[0] is the program's end, fds[1] lvlipd's: close-on-exec until it has gone, so that no
// child started meanwhile keeps a copy.
static int make_pair(int dgram, int type, int fds[2]) {
    if (socketpair(AF_UNIX, (dgram ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC | (type & SOCK_NONBLOCK), 0, fds) < 0)
        return -1;
    if (!(type & SOCK_CLOEXEC)) fcntl(fds[0], F_SETFD, 0);
    if (dgram) {
        // Room for the largest datagrams, and for bursts lvlipd then sends together. (A
        // stream end is sized at connect: it starts minimal there.)
        int size = LVLIP_APP_SEND_BUFFER;
        if (get_setsockopt()(fds[0], SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
            get_setsockopt()(fds[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    }
    return 0;
}

static struct lvlip_ref pending_ref(uint32_t tag) {
    return (struct lvlip_ref){.index = LVLIP_REF_PENDING, .generation = tag};
}

// With ctl_lock held: SOCKET without waiting; the entry is named by the request's tag.
//
// A stream socket's SOCKET is held back for the next request (docs/ipc.md, "Requests held
// back"): nothing happens to a stream socket until a request about it (bind, listen,
// connect, an option), which then carries its SOCKET in the same write. A datagram socket's
// goes now: sendto needs no request before the datagram is in the pair for lvlipd.
static int socket_later(struct entry *e, const struct request *q, int fd, uint64_t inode) {
    uint32_t tag;
    if (request_later(q, fd, inode, &tag, !is_dgram(e)) < 0) {
        get_close()(q->fd);
        return -1;
    }
    e->ref = pending_ref(tag);
    return 0;
}

// With ctl_lock held: SOCKET and its reply; -1 if lvlipd refused (e->error) or is gone.
static int socket_now(struct entry *e, const struct request *q, int fd, uint64_t inode) {
    uint32_t tag;
    struct lvlip_socket_rep rep;
    int r = send_request(q, &tag);
    ssize_t n = r == 0 && settle() == 0 ? read_reply(LVLIP_MSG_SOCKET, tag, &rep, sizeof rep) : -1;
    if (n < 0) {
        r = -1;
    } else {
        e->ref = pending_ref(tag);
        socket_named(&(struct outstanding){tag, LVLIP_MSG_SOCKET, fd, inode, -1}, &rep, n);
        if (e->error) r = -1;
    }
    get_close()(q->fd);
    return r;
}

static void init_entry(struct entry *e, int domain, uint64_t inode, int dgram, int icmp) {
    memset(e, 0, sizeof *e);
    e->kind = FD_STACK;
    e->family = (uint16_t)domain;
    e->inode = inode;
    e->flags = F_PENDING | (dgram ? F_DGRAM : 0);
    e->icmp = (uint8_t)icmp;
}

int make_socket(int domain, int type, int protocol) {
    int base = base_type(type);
    int icmp = is_icmp(domain, base, protocol);
    int dgram = base != SOCK_STREAM;
    int fds[2];
    if (make_pair(dgram, type, fds) < 0) return -1;
    uint64_t inode = inode_of(fds[0]);
    struct entry *e = slot_create(fds[0]);
    if (!e || !inode) {
        get_close()(fds[0]);
        get_close()(fds[1]);
        return fail(ENOMEM);
    }
    init_entry(e, domain, inode, dgram, icmp);
    struct lvlip_socket_req req = {.family = domain, .type = base, .protocol = protocol};
    struct request q = {.type = LVLIP_MSG_SOCKET, .flags = LVLIP_FLAG_FD, .fd = fds[1], .body = &req, .length = sizeof req};
    pthread_mutex_lock(&ctl_lock);
    // An ICMP socket waits for its reply: lvlipd decides who may have one (EACCES, EPERM),
    // and programs fall back on that answer (ping tries a ping socket, then a raw one).
    int r = !icmp && socket_headroom > ASYNC_SOCKET_HEADROOM + (uint32_t)requests_outstanding()
                ? socket_later(e, &q, fds[0], inode)
                : socket_now(e, &q, fds[0], inode);
    pthread_mutex_unlock(&ctl_lock);
    if (r < 0) {
        int err = e->error ? e->error : ENETDOWN;
        memset(e, 0, sizeof *e);
        get_close()(fds[0]);
        return fail(err);
    }
    return fds[0];
}

// The entry waiting for this SOCKET reply, if the descriptor still holds that socket.
static struct entry *waiting_entry(const struct outstanding *o) {
    struct entry *e = slot(o->fd);
    if (!e || e->kind != FD_STACK || e->inode != o->inode || !(e->flags & F_PENDING) ||
        e->ref.index != LVLIP_REF_PENDING || e->ref.generation != o->tag)
        return NULL;
    return e;
}

// The copy of lvlipd's end is closed only now: closing an AF_UNIX socket while descriptors
// are in flight (ours, until lvlipd reads the request) makes the kernel run its garbage
// collector.
void socket_named(const struct outstanding *o, const struct lvlip_socket_rep *rep, ssize_t n) {
    if (o->sent_fd >= 0) get_close()(o->sent_fd);
    if (n == (ssize_t)sizeof *rep && rep->result >= 0) socket_headroom = rep->headroom;
    struct entry *e = waiting_entry(o);
    if (!e) return;  // closed meanwhile (lvlipd sees its end close)
    if (n != (ssize_t)sizeof *rep || rep->result < 0) {
        e->error = n != (ssize_t)sizeof *rep ? EPROTO : -rep->result;
    } else {
        e->ref = rep->ref;
    }
    e->flags &= (uint16_t)~F_PENDING;
}

void socket_reply_lost(const struct outstanding *o, int held) {
    struct entry *e = waiting_entry(o);
    if (!e) return;
    if (!held) {
        e->kind = FD_UNKNOWN;
        return;
    }
    e->error = ENETDOWN;
    e->flags &= (uint16_t)~F_PENDING;
}

// MARK: - The calls every stack socket answers alike

int socket_bind(struct entry *e, const struct sockaddr *addr, socklen_t len) {
    struct lvlip_addr_req req = {.ref = e->ref};
    int r = parse_address(e->family, addr, len, &req.addr);
    if (r < 0) return fail(-r);
    struct lvlip_result rep;
    struct request q = {.type = LVLIP_MSG_BIND, .about = e, .body = &req, .length = sizeof req};
    if (request(&q, &rep, sizeof rep) != (ssize_t)sizeof rep) return fail(ENETDOWN);
    if (rep.result < 0) return fail(-rep.result);
    if (wire_is_v4(&req.addr) && (wire_v4(&req.addr) >> 24) == 127) e->flags |= F_LOOPBACK_SOURCE;
    return 0;
}

int socket_listen(struct entry *e, int backlog) {
    int r = int_request(LVLIP_MSG_LISTEN, e, backlog);
    if (r < 0) return fail(-r);
    e->flags |= F_LISTENING;
    return 0;
}

int socket_shutdown(struct entry *e, int how) {
    int r = int_request(LVLIP_MSG_SHUTDOWN, e, how);
    if (r < 0) return fail(-r);
    if (how == SHUT_WR || how == SHUT_RDWR) e->flags |= F_WR_SHUT;
    if (how == SHUT_RD || how == SHUT_RDWR) e->flags |= F_RD_SHUT;
    return 0;
}

int socket_name(struct entry *e, struct sockaddr *addr, socklen_t *len, int peer) {
    if (!addr || !len) return fail(EFAULT);
    if ((int)*len < 0) return fail(EINVAL);
    struct lvlip_int_req req = {.ref = e->ref, .value = peer};
    struct lvlip_name_rep rep;
    struct request q = {.type = LVLIP_MSG_NAME, .about = e, .body = &req, .length = sizeof req};
    if (request(&q, &rep, sizeof rep) != (ssize_t)sizeof rep) return fail(ENETDOWN);
    if (rep.result < 0) return fail(-rep.result);
    format_address(e->family, &rep.addr, addr, len);
    return 0;
}
