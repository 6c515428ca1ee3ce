// Requests and replies on the control connection (docs/ipc.md), under ctl_lock. Most wait
// for their reply; SOCKET and SETOPT of an option lvlipd cannot refuse do not, and their
// replies, which lvlipd sends in order, are read ahead of the next request's ("settled").
//
// Some requests are not even sent at once: held (written into `held`), they go with the next
// request that is sent, in the same write, so that lvlipd wakes once for all of them
// (docs/ipc.md, "Requests held back"). Which ones may wait, and until when, the callers
// decide (socket.c, options.c, stream writes); whatever is held is sent before a request
// waits for a reply, before fork and exec, and before a descriptor is passed.
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

// Requests held back, in order, and the one descriptor that goes with them (a SOCKET's: a
// second SOCKET sends the first). The length is read without the lock by requests_held().
static char held[2048];
static _Atomic size_t held_length;
static int held_fd = -1;

int requests_held(void) { return atomic_load_explicit(&held_length, memory_order_relaxed) != 0; }

// Whether an outstanding request is the SOCKET still held (the only held request with a
// descriptor, and the only held one that waits for a reply).
static int still_held(const struct outstanding *o) { return held_fd >= 0 && o->sent_fd == held_fd; }

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

// Sends what is held, in one write with its descriptor. -1: the connection broke (dropped).
// `ready`: ctl_ready() has just been called.
static int send_held(int ready) {
    if (held_length == 0) return 0;
    if (!ready && ctl_ready() < 0) return -1;  // dropped, with what was held
    if (send_all(ctl_fd, held, held_length, held_fd) < 0) return connection_broke();
    held_length = 0;
    held_fd = -1;
    return 0;
}

int hold_request(const struct request *q, uint32_t *tag) {
    if (q->length > MAX_REQUEST_BODY || q->value_length > LVLIP_OPT_MAX_VALUE) return fail(EINVAL);
    int pass_fd = (q->flags & LVLIP_FLAG_FD) ? q->fd : -1;
    size_t length = sizeof(struct lvlip_msg_header) + q->length + q->value_length;
    if ((pass_fd >= 0 && held_fd >= 0) || held_length + length > sizeof held) {
        if (send_held(0) < 0) return -1;
    }
    struct lvlip_msg_header header = {q->length + q->value_length, q->type, q->flags, ++ctl_tag};
    size_t at = held_length;
    char *out = held + at;
    memcpy(out, &header, sizeof header);
    if (q->length) memcpy(out + sizeof header, q->body, q->length);
    if (q->about && q->length >= sizeof q->about->ref) memcpy(out + sizeof header, &q->about->ref, sizeof q->about->ref);
    if (q->value_length) memcpy(out + sizeof header + q->length, q->value, q->value_length);
    held_length = at + length;
    if (pass_fd >= 0) held_fd = pass_fd;
    *tag = header.tag;
    return 0;
}

int send_request(const struct request *q, uint32_t *tag) {
    // Connected first: a request made while there is no connection fails before it is held.
    if (ctl_ready() < 0 || hold_request(q, tag) < 0) return -1;
    return send_held(1);
}

void send_held_requests(void) {
    pthread_mutex_lock(&ctl_lock);
    send_held(0);  // a broken connection is dropped: the next call says so
    pthread_mutex_unlock(&ctl_lock);
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
    if (send_held(0) < 0) return -1;
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

void settle_due(void) {
    if (held_length || outstanding_count) settle_or_drop();
}

int send_and_settle(int wait) {
    if (wait) {
        pthread_mutex_lock(&ctl_lock);
    } else if (pthread_mutex_trylock(&ctl_lock) != 0) {
        return -1;
    }
    settle_due();
    pthread_mutex_unlock(&ctl_lock);
    return 0;
}

int settle_socket_made_here(uint64_t inode) {
    if (pthread_mutex_trylock(&ctl_lock) != 0) return -1;
    int found = 0;
    for (int i = 0; i < outstanding_count && !found; i++)
        found = still_held(&outstanding[i]) && outstanding[i].inode == inode;
    if (found) settle_or_drop();
    pthread_mutex_unlock(&ctl_lock);
    return found;
}

int requests_outstanding(void) { return outstanding_count; }

void requests_lost(void) {
    ctl_in_length = 0;
    // Sockets still unnamed are identified afresh by the marker on their pair (lvlipd
    // handled every request it received before the close); those whose SOCKET was still held
    // never reached it.
    for (int i = 0; i < outstanding_count; i++) {
        if (outstanding[i].type == LVLIP_MSG_SOCKET) socket_reply_lost(&outstanding[i], still_held(&outstanding[i]));
        if (outstanding[i].sent_fd >= 0) get_close()(outstanding[i].sent_fd);
    }
    outstanding_count = 0;
    held_length = 0;
    held_fd = -1;
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

int request_later(const struct request *q, int fd, uint64_t inode, uint32_t *tag, int held_back) {
    if (outstanding_count == MAX_OUTSTANDING && settle() < 0) return -1;
    if ((held_back ? hold_request(q, tag) : send_request(q, tag)) < 0) return -1;
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
