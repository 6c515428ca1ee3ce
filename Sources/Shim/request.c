// Requests and replies on the control connection (docs/ipc.md), under ctl_lock. Most wait
// for their reply; SOCKET and SETOPT of an option lvlipd cannot refuse do not, and their
// replies, which lvlipd sends in order, are read ahead of the next request's ("settled").
#include "shim.h"
#include "rights.h"

#include <string.h>

// The largest request body: struct lvlip_addr_req and lvlip_opt_req (32 bytes) with room.
#define MAX_REQUEST_BODY 64
#define MAX_OUTSTANDING 32

static uint32_t ctl_tag;

// Requests sent without waiting for their replies, oldest first; their replies come ahead
// of any later request's.
static struct outstanding outstanding[MAX_OUTSTANDING];
static int outstanding_count;

// Bytes read from the control connection and not yet taken: replies to requests sent
// without waiting arrive back to back, and one read may bring several.
static char ctl_in[4096];
static size_t ctl_in_length;

// The connection failed mid-request: dropped, said once on stderr, ENETDOWN.
static int connection_broke(void) {
    ctl_drop();
    warn_unreachable("the connection broke: ", errno);
    return fail(ENETDOWN);
}

int send_request(const struct request *q, uint32_t *tag) {
    if (ctl_ready() < 0) return -1;
    struct lvlip_msg_header header = {q->length + q->value_length, q->type, q->flags, ++ctl_tag};
    char out[sizeof header + MAX_REQUEST_BODY + LVLIP_OPT_MAX_VALUE];
    if (q->length > MAX_REQUEST_BODY || q->value_length > LVLIP_OPT_MAX_VALUE) return fail(EINVAL);
    memcpy(out, &header, sizeof header);
    if (q->length) memcpy(out + sizeof header, q->body, q->length);
    if (q->about && q->length >= sizeof q->about->ref) memcpy(out + sizeof header, &q->about->ref, sizeof q->about->ref);
    if (q->value_length) memcpy(out + sizeof header + q->length, q->value, q->value_length);
    int pass_fd = (q->flags & LVLIP_FLAG_FD) ? q->fd : -1;
    if (send_all(ctl_fd, out, sizeof header + q->length + q->value_length, pass_fd) < 0) return connection_broke();
    *tag = header.tag;
    return 0;
}

// Reads until `need` bytes wait in ctl_in. -1: the connection broke.
static int buffer_input(size_t need) {
    while (ctl_in_length < need) {
        ssize_t n = recv_some(ctl_fd, ctl_in + ctl_in_length, sizeof ctl_in - ctl_in_length, 1);
        if (n < 0) return -1;
        ctl_in_length += (size_t)n;
    }
    return 0;
}

ssize_t read_reply(uint16_t type, uint32_t tag, void *reply, size_t room) {
    struct lvlip_msg_header in;
    if (buffer_input(sizeof in) < 0) return connection_broke();
    memcpy(&in, ctl_in, sizeof in);
    if (in.type != type + 1 || in.tag != tag || in.length > room || in.length > sizeof ctl_in - sizeof in ||
        buffer_input(sizeof in + in.length) < 0)
        return connection_broke();
    memcpy(reply, ctl_in + sizeof in, in.length);
    ctl_in_length -= sizeof in + in.length;
    memmove(ctl_in, ctl_in + sizeof in + in.length, ctl_in_length);
    return in.length;
}

int settle(void) {
    for (int i = 0; i < outstanding_count; i++) {
        struct lvlip_socket_rep rep;  // room for SETOPT's struct lvlip_result too
        ssize_t n = read_reply(outstanding[i].type, outstanding[i].tag, &rep, sizeof rep);
        if (n < 0) return -1;  // dropped, with what was left
        if (outstanding[i].type == LVLIP_MSG_SOCKET) socket_named(&outstanding[i], &rep, n);
        outstanding[i].sent_fd = -1;
    }
    outstanding_count = 0;
    return 0;
}

void settle_or_drop(void) {
    if (settle() < 0) ctl_drop();
}

int requests_outstanding(void) { return outstanding_count; }

void requests_lost(void) {
    ctl_in_length = 0;
    // Sockets still unnamed are identified afresh by the marker on their pair (lvlipd
    // handled every request it received before the close).
    for (int i = 0; i < outstanding_count; i++) {
        if (outstanding[i].type == LVLIP_MSG_SOCKET) socket_reply_lost(&outstanding[i]);
        if (outstanding[i].sent_fd >= 0) get_close()(outstanding[i].sent_fd);
    }
    outstanding_count = 0;
}

ssize_t request(const struct request *q, void *reply, size_t room) {
    pthread_mutex_lock(&ctl_lock);
    uint32_t tag;
    ssize_t n = -1;
    if (send_request(q, &tag) == 0 && settle() == 0) n = read_reply(q->type, tag, reply, room);
    if (n >= (ssize_t)sizeof(int32_t) && q->about && q->about->error) {
        int32_t refused = -q->about->error;
        memcpy(reply, &refused, sizeof refused);
    }
    pthread_mutex_unlock(&ctl_lock);
    if (n < 0) errno = ENETDOWN;
    return n;
}

int request_later(const struct request *q, int fd, uint64_t inode, uint32_t *tag) {
    if (outstanding_count == MAX_OUTSTANDING && settle() < 0) return -1;
    if (send_request(q, tag) < 0) return -1;
    int sent_fd = (q->flags & LVLIP_FLAG_FD) ? q->fd : -1;
    outstanding[outstanding_count++] = (struct outstanding){*tag, q->type, fd, inode, sent_fd};
    return 0;
}

// MARK: - Requests by body

int int_request(uint16_t type, const struct entry *e, int32_t value) {
    struct lvlip_int_req req = {.ref = e->ref, .value = value};
    struct lvlip_result rep;
    struct request q = {.type = type, .about = e, .body = &req, .length = sizeof req};
    if (request(&q, &rep, sizeof rep) != (ssize_t)sizeof rep) return -ENETDOWN;
    return rep.result;
}

int connect_request(const struct entry *e, const struct lvlip_addr *addr, uint32_t filler, uint32_t flags) {
    struct lvlip_addr_req req = {.ref = e->ref, .addr = *addr, .filler = filler, .flags = flags};
    struct lvlip_name_rep rep;
    struct request q = {.type = LVLIP_MSG_CONNECT, .about = e, .body = &req, .length = sizeof req};
    if (request(&q, &rep, sizeof rep) != (ssize_t)sizeof rep) return -ENETDOWN;
    return rep.result;
}
