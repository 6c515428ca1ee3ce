// The descriptor table: which descriptors are stack sockets, and what the shim keeps of each
// (struct entry, shim.h). It is only a cache: a descriptor it does not know (inherited
// across exec, received with SCM_RIGHTS) is recognised by its pair's peer, lvlipd's end named
// LVLIP_PAIR_NAME_PREFIX... in the abstract namespace, and identified with IDENTIFY; every
// socket call checks that the same file is still under the number (its inode).
#include "shim.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

_Atomic(struct entry *) fd_pages[PAGES];
// Guards the making of pages; entries are read and written without it.
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

struct entry *slot_create(int fd) {
    struct entry *e = slot(fd);
    if (e || fd < 0 || ((unsigned)fd >> PAGE_BITS) >= PAGES) return e;
    unsigned page = (unsigned)fd >> PAGE_BITS;
    pthread_mutex_lock(&table_lock);
    struct entry *p = atomic_load_explicit(&fd_pages[page], memory_order_relaxed);
    if (!p) {
        p = calloc(PAGE_SIZE_ENTRIES, sizeof *p);
        atomic_store_explicit(&fd_pages[page], p, memory_order_release);
    }
    pthread_mutex_unlock(&table_lock);
    return p ? &p[(unsigned)fd & (PAGE_SIZE_ENTRIES - 1)] : NULL;
}

void forget(int fd) {
    struct entry *e = slot(fd);
    if (e) memset(e, 0, sizeof *e);
}

void forget_range(unsigned int first, unsigned int last) {
    for (unsigned page = first >> PAGE_BITS; page < PAGES && page <= (last >> PAGE_BITS); page++) {
        struct entry *p = atomic_load_explicit(&fd_pages[page], memory_order_acquire);
        if (!p) continue;
        for (unsigned i = 0; i < PAGE_SIZE_ENTRIES; i++) {
            unsigned fd = (page << PAGE_BITS) | i;
            if (fd >= first && fd <= last) memset(&p[i], 0, sizeof p[i]);
        }
    }
}

uint64_t inode_of(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) return 0;
    return (uint64_t)st.st_ino;
}

// Whether the descriptor's peer is lvlipd's end of a stack socket's pair.
static int peer_is_lvlipd(int fd) {
    struct sockaddr_un peer;
    socklen_t len = sizeof peer;
    size_t prefix = strlen(LVLIP_PAIR_NAME_PREFIX);
    return get_getpeername()(fd, (struct sockaddr *)&peer, &len) == 0 && peer.sun_family == AF_UNIX &&
           len >= offsetof(struct sockaddr_un, sun_path) + 1 + prefix && peer.sun_path[0] == 0 &&
           memcmp(peer.sun_path + 1, LVLIP_PAIR_NAME_PREFIX, prefix) == 0;
}

// The entry of a stack socket as IDENTIFY describes it.
static void fill_identified(struct entry *e, uint64_t inode, const struct lvlip_socket_rep *rep) {
    e->kind = FD_STACK;
    e->family = (uint16_t)rep->family;
    e->inode = inode;
    e->ref = rep->ref;
    e->error = 0;
    // Made elsewhere: a receive timeout may be set on it (the pair would tell, but reads
    // should not have to ask).
    e->flags = F_TIMED_READ;
    if (rep->state == LVLIP_STATE_CONNECTING || rep->state == LVLIP_STATE_CONNECTED || rep->state == LVLIP_STATE_CLOSED)
        e->flags |= F_STARTED;
    if (rep->state == LVLIP_STATE_LISTENING) e->flags |= F_LISTENING;
    e->icmp = rep->protocol == IPPROTO_ICMP;
    if (rep->type == SOCK_DGRAM || rep->type == SOCK_RAW) {
        e->flags |= F_DGRAM;
        if (rep->state != LVLIP_STATE_CONNECTED) e->flags &= ~F_STARTED;
    }
}

// Fills the entry of a descriptor the table does not know.
static struct entry *identify(int fd, uint64_t inode) {
    struct entry *e = slot_create(fd);
    if (!e) return NULL;
    int ours = inode && peer_is_lvlipd(fd);
    if (inode && !ours && requests_held()) {
        // Perhaps a copy (dup, F_DUPFD) of a socket this process just made, whose SOCKET is
        // held: lvlipd names its end when it takes the request. If another thread is sending
        // one, the answer is not final: looked at again at the next call.
        int settled = settle_socket_made_here(inode);
        if (settled < 0) {
            memset(e, 0, sizeof *e);  // FD_UNKNOWN
            return NULL;
        }
        if (settled) ours = peer_is_lvlipd(fd);
    }
    struct lvlip_socket_rep rep;
    struct request q = {.type = LVLIP_MSG_IDENTIFY, .flags = LVLIP_FLAG_FD, .fd = fd};
    if (!ours || request(&q, &rep, sizeof rep) != (ssize_t)sizeof rep || rep.result < 0) {
        e->kind = FD_OTHER;
        e->inode = inode;
        return NULL;
    }
    fill_identified(e, inode, &rep);
    return e;
}

struct entry *stack_socket(int fd) {
    uint64_t inode = inode_of(fd);
    if (inode == 0) return NULL;
    struct entry *e = slot(fd);
    if (e && e->kind != FD_UNKNOWN && e->inode == inode) return e->kind == FD_STACK ? e : NULL;
    return identify(fd, inode);
}

struct entry *classify(int fd) {
    if (fd < 0) return NULL;
    return identify(fd, inode_of(fd));
}

int forget_if_stale(int fd) {
    if (errno != ENOTSOCK) return 0;
    forget(fd);
    return 1;
}

void copy_entry(int from, int to) {
    struct entry *src = slot(from);
    struct entry *dst = slot_create(to);
    if (!dst) return;
    if (src && src->kind == FD_STACK) {
        if (src->flags & F_PENDING) {
            // Named now: the reply fills in only the entry it was made for.
            pthread_mutex_lock(&ctl_lock);
            settle_or_drop();
            pthread_mutex_unlock(&ctl_lock);
        }
        *dst = *src;
    } else {
        memset(dst, 0, sizeof *dst);
    }
}

void fdtable_after_fork_child(void) { pthread_mutex_init(&table_lock, NULL); }
