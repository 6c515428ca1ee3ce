// Socket options: SETOPT and GETOPT, answered by lvlipd's option table as the socket's
// protocol would answer (docs/shim.md, "Socket options"), except the timeouts, which are the
// pair's own, and what the shim can answer or send without waiting.
#include "shim.h"

#include <limits.h>
#include <netinet/tcp.h>
#include <string.h>

// Timeouts are the pair's own: blocking reads and writes happen on it, and an AF_UNIX socket
// answers them as a TCP or UDP socket does (the same sock_setsockopt code, socket(7)). Every
// other option goes to lvlipd, whose table answers as the socket's protocol would: the pair
// would answer SO_TYPE, SO_DOMAIN, SO_PROTOCOL, SO_PEERCRED, SO_SNDBUF... for AF_UNIX.
int native_option(int level, int name) {
    return level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO
#ifdef SO_RCVTIMEO_NEW
                                   || name == SO_RCVTIMEO_NEW || name == SO_SNDTIMEO_NEW
#endif
                                  );
}

// A timeout, set on the pair. Once SO_RCVTIMEO is, blocking reads are the pair's own
// (F_TIMED_READ: it times them out).
int set_native_option(int fd, struct entry *e, int level, int name, const void *value, socklen_t len) {
    int r = get_setsockopt()(fd, level, name, value, len);
    if (r == 0 && (name == SO_RCVTIMEO
#ifdef SO_RCVTIMEO_NEW
                   || name == SO_RCVTIMEO_NEW
#endif
                   ))
        e->flags |= F_TIMED_READ;
    return r;
}

// Options lvlipd accepts on any stream socket once the value is an int: set without a reply
// (LVLIP_FLAG_NO_REPLY; lvlipd applies requests in order, so later ones see the option).
static int option_cannot_fail(const struct entry *e, int level, int name, socklen_t len) {
    if (is_dgram(e) || len < sizeof(int) || e->error) return 0;
    if (level == IPPROTO_TCP) return name == TCP_NODELAY;
    return level == SOL_SOCKET && (name == SO_KEEPALIVE || name == SO_REUSEADDR || name == SO_REUSEPORT);
}

// Whether the option may be held back (docs/ipc.md, "Requests held back") rather than sent:
// on a socket neither connected nor listening, any of them (nothing happens to it before its
// next request, which carries the option); on a connected one that has not written yet,
// TCP_NODELAY, which only governs what the socket sends: it goes before the socket's next
// write that Nagle's algorithm could hold back (before_write). Once the socket has written,
// TCP_NODELAY goes at once: setting it sends what Nagle holds (programs set it to push a
// response's last segment, as nginx does on a keep-alive connection). A listener's options
// pass to the connections lvlipd accepts for it, and SO_KEEPALIVE starts a timer: those go
// now too.
static int may_hold(const struct entry *e, int level, int name) {
    if (e->flags & F_LISTENING) return 0;
    if (!(e->flags & F_STARTED)) return 1;
    return level == IPPROTO_TCP && name == TCP_NODELAY && !(e->flags & F_WRITTEN);
}

static int set_without_waiting(struct entry *e, struct lvlip_opt_req *req, const void *value) {
    req->length = sizeof(int);
    struct request q = {.type = LVLIP_MSG_SETOPT, .flags = LVLIP_FLAG_NO_REPLY, .about = e, .body = req,
                        .length = sizeof *req, .value = value, .value_length = sizeof(int)};
    uint32_t tag;
    int held = may_hold(e, req->level, req->name);
    pthread_mutex_lock(&ctl_lock);
    int r = held ? hold_request(&q, &tag) : send_request(&q, &tag);
    if (r == 0 && held && (e->flags & F_STARTED)) e->flags |= F_OPTION_HELD;
    pthread_mutex_unlock(&ctl_lock);
    return r < 0 ? fail(ENETDOWN) : 0;
}

// What the shim keeps of an option lvlipd accepted: broadcast permission and IPV6_V6ONLY
// (datagram sends are checked here), the control messages a datagram socket wants, and
// IPV6_ADDRFORM, after which the socket is AF_INET (its addresses sockaddr_in).
static void note_option(struct entry *e, int level, int name, const void *value, socklen_t len) {
    if (level == IPPROTO_IPV6 && name == IPV6_ADDRFORM) e->family = AF_INET;
    if (level == IPPROTO_IPV6 && name == IPV6_V6ONLY && len >= sizeof(int)) {
        int on;
        memcpy(&on, value, sizeof on);
        if (on) e->flags |= F_V6ONLY; else e->flags &= ~F_V6ONLY;
    }
    if (level == SOL_SOCKET && name == SO_BROADCAST && len >= sizeof(int)) {
        int on;
        memcpy(&on, value, sizeof on);
        if (on) e->flags |= F_BROADCAST; else e->flags &= ~F_BROADCAST;
    }
    if (is_dgram(e)) note_control_option(e, level, name, value, len);
}

// Whether the bytes `iov` describes fit in one segment of lvlipd's smallest MSS. A vector
// the kernel will refuse (more than IOV_MAX entries) counts as large, unread.
static int fits_one_segment(const struct iovec *iov, size_t count) {
    if (count > IOV_MAX) return 0;
    size_t total = 0;
    for (size_t i = 0; i < count && total <= LVLIP_MIN_MSS; i++) total += iov[i].iov_len;
    return total <= LVLIP_MIN_MSS;
}

void before_write(int fd, struct entry *e, const struct iovec *iov, size_t count) {
    if (e->flags & F_SMALL_BUFFER) restore_send_buffer(fd, e);
    // Nagle's algorithm holds back a segment smaller than the MSS while data is in flight. A
    // socket's first write has nothing in flight before it (the handshake is over or its
    // data waits for it), and if it fits in one segment of lvlipd's smallest MSS it goes
    // whole, TCP_NODELAY or not: the option held may wait past it.
    if ((e->flags & F_OPTION_HELD) && ((e->flags & F_WRITTEN) || !fits_one_segment(iov, count))) send_held_option(e);
    e->flags |= F_WRITTEN;
}

void send_held_option(struct entry *e) {
    e->flags &= (uint16_t)~F_OPTION_HELD;
    send_held_requests();
}

int set_option(struct entry *e, int level, int name, const void *value, socklen_t len) {
    if ((int)len < 0) return fail(EINVAL);
    if (len > 0 && !value) return fail(EFAULT);
    // No TCP, UDP or IP option reads past its struct, the largest (a group_source_req) 264
    // bytes; the kernel ignores the rest of a longer value (an int in 8 bytes is an int), so
    // only its start travels.
    if (len > LVLIP_OPT_MAX_VALUE) len = LVLIP_OPT_MAX_VALUE;
    struct lvlip_opt_req req = {.ref = e->ref, .level = level, .name = name, .length = len};
    if (option_cannot_fail(e, level, name, len)) return set_without_waiting(e, &req, value);
    struct lvlip_result rep;
    struct request q = {.type = LVLIP_MSG_SETOPT, .about = e, .body = &req, .length = sizeof req,
                        .value = value, .value_length = len};
    if (request(&q, &rep, sizeof rep) != (ssize_t)sizeof rep) return fail(ENETDOWN);
    if (rep.result < 0) return fail(-rep.result);
    note_option(e, level, name, value, len);
    return 0;
}

int get_option(int fd, struct entry *e, int level, int name, void *value, socklen_t *len) {
    if (!len || (!value && *len > 0)) return fail(EFAULT);
    if ((int)*len < 0) return fail(EINVAL);
    if (level == SOL_SOCKET && name == SO_ERROR && !is_dgram(e) && *len >= sizeof(int) && stream_healthy(fd, -1)) {
        // The common check after a non-blocking connect, answered without a round trip.
        int zero = 0;
        memcpy(value, &zero, sizeof zero);
        *len = sizeof zero;
        return 0;
    }
    struct lvlip_opt_req req = {.ref = e->ref, .level = level, .name = name,
                                .length = *len > LVLIP_OPT_MAX_VALUE ? LVLIP_OPT_MAX_VALUE : *len};
    struct {
        struct lvlip_opt_rep head;
        char value[LVLIP_OPT_MAX_VALUE];
    } rep;
    struct request q = {.type = LVLIP_MSG_GETOPT, .about = e, .body = &req, .length = sizeof req};
    ssize_t n = request(&q, &rep, sizeof rep);
    if (n < (ssize_t)sizeof rep.head) return fail(ENETDOWN);
    if (rep.head.result < 0) return fail(-rep.head.result);
    uint32_t got = rep.head.length;
    if (got > (uint32_t)n - sizeof rep.head) got = (uint32_t)n - sizeof rep.head;
    if (got > *len) got = *len;
    memcpy(value, rep.value, got);
    *len = got;
    return 0;
}
