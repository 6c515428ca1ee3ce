// Socket options: SETOPT and GETOPT, answered by lvlipd's option table as the socket's
// protocol would answer (docs/shim.md, "Socket options"), except the timeouts, which are the
// pair's own, and what the shim can answer or send without waiting.
#include "shim.h"

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

static int set_without_waiting(const struct entry *e, struct lvlip_opt_req *req, const void *value) {
    req->length = sizeof(int);
    struct request q = {.type = LVLIP_MSG_SETOPT, .flags = LVLIP_FLAG_NO_REPLY, .about = e, .body = req,
                        .length = sizeof *req, .value = value, .value_length = sizeof(int)};
    uint32_t tag;
    pthread_mutex_lock(&ctl_lock);
    int r = send_request(&q, &tag);
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
