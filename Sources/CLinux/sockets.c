// AF_UNIX plumbing for the socket service: socket pairs, descriptor passing, and Linux's
// struct tcp_info filled from the stack's figures.
#include "CLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <malloc.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

// lvlipd's end needs no O_NONBLOCK: lvlipd reads and writes it with MSG_DONTWAIT (the
// shim's pairs arrive with whatever flags their maker chose).
int lvlip_stream_pair(int *app_end, int *daemon_end) {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) return -1;
    *app_end = fds[0];
    *daemon_end = fds[1];
    return 0;
}

int lvlip_is_pair_end(int fd, int type) {
    int actual = 0;
    socklen_t len = sizeof actual;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &actual, &len) < 0 || actual != type) return 0;
    // The peer's address tells the domain too: an AF_UNIX peer without a name.
    struct sockaddr_un peer;
    len = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0) return 0;
    return len == sizeof(sa_family_t) && peer.sun_family == AF_UNIX;
}

// Writes `value` in decimal at `p`; returns the end. (snprintf took ~1,400 instructions for
// the name, once per connection.)
static char *put_decimal(char *p, uint32_t value) {
    char digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (n) *p++ = digits[--n];
    return p;
}

int lvlip_bind_pair_name(int fd, int daemon_pid, uint32_t slot, uint32_t generation) {
    struct sockaddr_un addr;
    addr.sun_family = AF_UNIX;
    // sun_path[0] == 0: the abstract namespace. The prefix and three numbers of at most 10
    // digits each fit in sun_path's 108 bytes.
    char *p = addr.sun_path;
    *p++ = 0;
    memcpy(p, LVLIP_PAIR_NAME_PREFIX, sizeof LVLIP_PAIR_NAME_PREFIX - 1);
    p += sizeof LVLIP_PAIR_NAME_PREFIX - 1;
    if (daemon_pid < 0) {
        errno = EINVAL;
        return -1;
    }
    p = put_decimal(p, (uint32_t)daemon_pid);
    *p++ = '-';
    p = put_decimal(p, slot);
    *p++ = '-';
    p = put_decimal(p, generation);
    return bind(fd, (struct sockaddr *)&addr, (socklen_t)(p - (char *)&addr));
}

ssize_t lvlip_send_with_fd(int sock, const void *buf, size_t len, int fd) {
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        char space[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.space;
        msg.msg_controllen = sizeof control.space;
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
    }
    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
}

ssize_t lvlip_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds,
                            struct lvlip_credentials *creds) {
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    union {
        char space[CMSG_SPACE(sizeof(int) * 8) + CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                         .msg_controllen = sizeof control.space};
    *nfds = 0;
    ssize_t n;
    do {
        n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return n;
    if (creds) creds->valid = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS && creds &&
            c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
            struct ucred u;
            memcpy(&u, CMSG_DATA(c), sizeof u);
            creds->pid = u.pid;
            creds->uid = u.uid;
            creds->gid = u.gid;
            creds->valid = 1;
            continue;
        }
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int received;
            memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof received);
            if (*nfds < max_fds) {
                fds[(*nfds)++] = received;
            } else {
                close(received);  // more than the caller can hold: never leak them
            }
        }
    }
    if (msg.msg_flags & MSG_CTRUNC) *nfds = -(*nfds) - 1;  // tell the caller fds were lost
    return n;
}

ssize_t lvlip_writev2(int fd, const void *a, size_t alen, const void *b, size_t blen) {
    struct iovec iov[2] = {{.iov_base = (void *)a, .iov_len = alen}, {.iov_base = (void *)b, .iov_len = blen}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = blen > 0 ? 2 : 1};
    ssize_t n;
    do {
        n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
}

ssize_t lvlip_writev_plain(int fd, const void *a, size_t alen, const void *b, size_t blen) {
    struct iovec iov[2] = {{.iov_base = (void *)a, .iov_len = alen}, {.iov_base = (void *)b, .iov_len = blen}};
    return writev(fd, iov, 2);
}

void lvlip_malloc_prefer_heap(int threshold) {
    mallopt(M_MMAP_THRESHOLD, threshold);
    // Fixing the mmap threshold also fixes the trim threshold at 128 KB: the heap's top
    // then moves up and down (brk) with every connection's allocations. Keep 8 MB of slack.
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    mallopt(M_TOP_PAD, 1 << 20);
}

int lvlip_usable_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) < 0) return 1;
    return CPU_COUNT(&set);
}

int lvlip_set_int_option(int fd, int level, int name, int value) {
    return setsockopt(fd, level, name, &value, sizeof value);
}

int lvlip_peer_abstract_name(int fd, char *name, size_t room) {
    struct sockaddr_un peer;
    socklen_t len = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0) return -1;
    size_t offset = offsetof(struct sockaddr_un, sun_path);
    if (peer.sun_family != AF_UNIX || len <= offset + 1 || peer.sun_path[0] != 0) return -1;
    size_t n = len - offset - 1;
    if (n + 1 > room) return -1;
    memcpy(name, peer.sun_path + 1, n);
    name[n] = 0;
    return 0;
}

int lvlip_shutdown_write(int fd) { return shutdown(fd, SHUT_WR); }

size_t lvlip_tcp_info_size(void) { return LVLIP_TCP_INFO_SIZE; }

size_t lvlip_fill_tcp_info(void *out, size_t room, const struct lvlip_tcp_info_source *src) {
    struct tcp_info info;
    memset(&info, 0, sizeof info);
    info.tcpi_state = src->state;
    info.tcpi_ca_state = src->ca_state;
    info.tcpi_retransmits = src->retransmits;
    info.tcpi_backoff = src->backoff;
    info.tcpi_options = src->options;
    info.tcpi_snd_wscale = src->snd_wscale & 0xf;
    info.tcpi_rcv_wscale = src->rcv_wscale & 0xf;
    info.tcpi_rto = src->rto_us;
    info.tcpi_ato = 40000;
    info.tcpi_snd_mss = src->snd_mss;
    info.tcpi_rcv_mss = src->rcv_mss;
    info.tcpi_unacked = src->unacked;
    info.tcpi_pmtu = src->pmtu;
    info.tcpi_rcv_ssthresh = src->rcv_wnd;
    info.tcpi_rtt = src->rtt_us;
    info.tcpi_rttvar = src->rttvar_us;
    info.tcpi_snd_ssthresh = src->snd_ssthresh;
    info.tcpi_snd_cwnd = src->snd_cwnd;
    info.tcpi_advmss = src->snd_mss;
    info.tcpi_reordering = 3;
    info.tcpi_rcv_space = src->rcv_wnd;
    info.tcpi_total_retrans = src->total_retrans;
    info.tcpi_lost = src->lost;
    info.tcpi_retrans = src->retrans;
    info.tcpi_dsack_dups = src->dsack_dups;
    info.tcpi_reord_seen = src->reord_seen;
    info.tcpi_bytes_retrans = src->bytes_retrans;
    info.tcpi_bytes_acked = src->bytes_acked;
    info.tcpi_bytes_received = src->bytes_received;
    info.tcpi_segs_out = src->segs_out;
    info.tcpi_segs_in = src->segs_in;
    info.tcpi_notsent_bytes = src->notsent_bytes;
    info.tcpi_snd_wnd = src->snd_wnd;
    // Linux 6.18's struct tcp_info is 280 bytes; this system's header stops at tcpi_snd_wnd
    // (232). The newer fields follow: tcpi_rcv_wnd (6.2) at 232, then tcpi_rehash, the RTO
    // totals (6.7) and the AccECN counters (6.18), which the stack has none of: 0.
    unsigned char full[LVLIP_TCP_INFO_SIZE];
    memset(full, 0, sizeof full);
    memcpy(full, &info, sizeof info);
    if (sizeof info <= 232) memcpy(full + 232, &src->rcv_wnd, sizeof src->rcv_wnd);
    size_t n = room < sizeof full ? room : sizeof full;
    memcpy(out, full, n);
    return n;
}
