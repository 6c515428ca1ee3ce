// The error queue of datagram sockets (IP_RECVERR, recvmsg(MSG_ERRQUEUE); ip(7)).
//
// lvlipd writes an ICMP error about a datagram of a socket with IP_RECVERR as two records: a
// plain error (Linux's pending sk_err: the next read or send fails with it) and an error
// queue record with the details (struct lvlip_dgram_error, then the quoted payload). The
// latter keeps the pair readable, as the error queue keeps a kernel socket in POLLERR, until
// recvmsg(MSG_ERRQUEUE) takes it; a plain read that meets it moves it aside, here.
#include "shim.h"

#include <linux/errqueue.h>
#include <string.h>

#define ERROR_QUOTE 576
#define ERROR_SLOTS 32

struct queued_error {
    int fd;
    uint64_t inode;
    int32_t error;
    size_t length;  // of data: struct lvlip_dgram_error and the quote
    char data[sizeof(struct lvlip_dgram_error) + ERROR_QUOTE];
};

// Guards the errors moved aside, for every socket of the process.
static pthread_mutex_t error_queue_lock = PTHREAD_MUTEX_INITIALIZER;
static struct queued_error error_queue[ERROR_SLOTS];
static int error_queue_count;

static void keep_error(int fd, const struct entry *e, int32_t error, const void *data, size_t length) {
    if (length < sizeof(struct lvlip_dgram_error)) return;
    pthread_mutex_lock(&error_queue_lock);
    if (error_queue_count == ERROR_SLOTS) {
        memmove(&error_queue[0], &error_queue[1], sizeof error_queue[0] * (ERROR_SLOTS - 1));
        error_queue_count--;
    }
    struct queued_error *q = &error_queue[error_queue_count++];
    q->fd = fd;
    q->inode = e->inode;
    q->error = error;
    q->length = length < sizeof q->data ? length : sizeof q->data;
    memcpy(q->data, data, q->length);
    pthread_mutex_unlock(&error_queue_lock);
}

static int take_kept_error(int fd, const struct entry *e, struct queued_error *out) {
    int found = 0;
    pthread_mutex_lock(&error_queue_lock);
    for (int i = 0; i < error_queue_count; i++) {
        if (error_queue[i].fd != fd || error_queue[i].inode != e->inode) continue;
        *out = error_queue[i];
        memmove(&error_queue[i], &error_queue[i + 1], sizeof error_queue[0] * (size_t)(error_queue_count - i - 1));
        error_queue_count--;
        found = 1;
        break;
    }
    pthread_mutex_unlock(&error_queue_lock);
    return found;
}

void errqueue_take_record(int fd, const struct entry *e) {
    struct {
        struct lvlip_dgram_header h;
        char data[sizeof(struct lvlip_dgram_error) + ERROR_QUOTE];
    } record;
    ssize_t n = get_recv()(fd, &record, sizeof record, MSG_DONTWAIT);
    if (n > DGRAM_HEADER) keep_error(fd, e, record.h.error, record.data, (size_t)(n - DGRAM_HEADER));
}

void errqueue_keep_read(int fd, const struct entry *e, int32_t error, const struct msghdr *msg, size_t length) {
    char details[sizeof(struct lvlip_dgram_error) + ERROR_QUOTE];
    size_t have = 0;
    for (size_t i = 0; i < msg->msg_iovlen && have < length && have < sizeof details; i++) {
        size_t take = msg->msg_iov[i].iov_len;
        if (take > length - have) take = length - have;
        if (take > sizeof details - have) take = sizeof details - have;
        memcpy(details + have, msg->msg_iov[i].iov_base, take);
        have += take;
    }
    keep_error(fd, e, error, details, have);
}

// The oldest error for this socket: one a read moved aside, or the record at the head of
// the pair. 0: none.
static int next_error(int fd, const struct entry *e, struct queued_error *q) {
    if (take_kept_error(fd, e, q)) return 1;
    // Taking the error queue's entry clears the pending error (Linux's
    // sock_dequeue_err_skb): a plain error record before it goes too.
    struct lvlip_dgram_header h;
    ssize_t n = get_recv()(fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
    if (n == DGRAM_HEADER && (h.flags & LVLIP_DGRAM_ERROR) && !(h.flags & LVLIP_DGRAM_ERRQUEUE)) {
        (void)get_recv()(fd, &h, sizeof h, MSG_DONTWAIT);
        n = get_recv()(fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
    }
    if (n != DGRAM_HEADER || !(h.flags & LVLIP_DGRAM_ERRQUEUE)) return 0;
    errqueue_take_record(fd, e);
    return take_kept_error(fd, e, q);
}

static size_t copy_quote(struct msghdr *msg, const char *quote, size_t quoted) {
    size_t copied = 0;
    for (size_t i = 0; i < msg->msg_iovlen && copied < quoted; i++) {
        size_t take = msg->msg_iov[i].iov_len < quoted - copied ? msg->msg_iov[i].iov_len : quoted - copied;
        memcpy(msg->msg_iov[i].iov_base, quote + copied, take);
        copied += take;
    }
    return copied;
}

// The IP_RECVERR (IPV6_RECVERR) control message: struct sock_extended_err, then the
// offender's address in the socket's family.
static void add_extended_error(const struct entry *e, struct msghdr *msg, int32_t error,
                               const struct lvlip_dgram_error *d) {
    struct {
        struct sock_extended_err ee;
        union {
            struct sockaddr_in in;
            struct sockaddr_in6 in6;
        } offender;
    } payload;
    memset(&payload, 0, sizeof payload);
    payload.ee.ee_errno = (uint32_t)error;
    payload.ee.ee_origin = d->origin;
    payload.ee.ee_type = d->type;
    payload.ee.ee_code = d->code;
    payload.ee.ee_info = d->info;
    socklen_t offender_length = sizeof payload.offender;
    format_address(e->family, &d->offender, (struct sockaddr *)&payload.offender, &offender_length);
    size_t used = 0;
    int v6 = e->family == AF_INET6;
    if (!add_control(msg, &used, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_RECVERR : IP_RECVERR, &payload,
                     sizeof payload.ee + offender_length))
        msg->msg_flags |= MSG_CTRUNC;
    msg->msg_controllen = used;
}

// The oldest ICMP error, as ip(7) describes: the quoted payload as data, the datagram's
// destination as the name, and the extended error as a control message.
ssize_t errqueue_recvmsg(int fd, struct entry *e, struct msghdr *msg) {
    struct queued_error q;
    if (!next_error(fd, e, &q)) return fail(EAGAIN);
    struct lvlip_dgram_error d;
    memcpy(&d, q.data, sizeof d);
    size_t quoted = q.length - sizeof d;
    size_t copied = copy_quote(msg, q.data + sizeof d, quoted);
    msg->msg_flags = MSG_ERRQUEUE | (copied < quoted ? MSG_TRUNC : 0);
    if (msg->msg_name) {
        format_address(e->family, &d.destination, msg->msg_name, &msg->msg_namelen);
    }
    add_extended_error(e, msg, q.error, &d);
    return (ssize_t)copied;
}

void errqueue_after_fork_child(void) { pthread_mutex_init(&error_queue_lock, NULL); }
