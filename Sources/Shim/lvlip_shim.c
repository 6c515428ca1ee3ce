// liblvlip.so: the LD_PRELOAD shim that gives a program's TCP sockets to lvlipd.
//
// A stack socket is a real descriptor: one end of an AF_UNIX stream pair whose other end
// lvlipd holds (docs/ipc.md, "Socket service"). Payload is plain bytes in the pair, so
// read/write/poll/select/epoll, fork, dup and exec work on it through the kernel; this file
// only turns the socket calls (socket, connect, bind, listen, accept, names, options,
// shutdown) into requests on a per-process control connection, and keeps the kernel's errno
// where a pair would answer differently (end of stream after a reset, EPIPE, SIGPIPE).
// Descriptors that are not stack sockets go to libc untouched.
//
// Needs only libc: built with `cc -shared -fPIC` (scripts/build).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "lvlip_ipc.h"

#define EXPORT __attribute__((visibility("default")))
#define DEFAULT_SOCKET "/run/lvlip/lvlipd.sock"
#define MARKER "lvlip-"

// MARK: - The real functions

#define REAL(name, ret, ...)                                                  \
    static ret (*real_##name)(__VA_ARGS__);                                   \
    static ret (*get_##name(void))(__VA_ARGS__) {                             \
        if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name);              \
        return real_##name;                                                   \
    }

REAL(socket, int, int, int, int)
REAL(connect, int, int, const struct sockaddr *, socklen_t)
REAL(bind, int, int, const struct sockaddr *, socklen_t)
REAL(listen, int, int, int)
REAL(accept, int, int, struct sockaddr *, socklen_t *)
REAL(accept4, int, int, struct sockaddr *, socklen_t *, int)
REAL(shutdown, int, int, int)
REAL(close, int, int)
REAL(close_range, int, unsigned int, unsigned int, int)
REAL(dup2, int, int, int)
REAL(dup3, int, int, int, int)
REAL(getsockname, int, int, struct sockaddr *, socklen_t *)
REAL(getpeername, int, int, struct sockaddr *, socklen_t *)
REAL(setsockopt, int, int, int, int, const void *, socklen_t)
REAL(getsockopt, int, int, int, int, void *, socklen_t *)
REAL(read, ssize_t, int, void *, size_t)
REAL(readv, ssize_t, int, const struct iovec *, int)
REAL(recv, ssize_t, int, void *, size_t, int)
REAL(recvfrom, ssize_t, int, void *, size_t, int, struct sockaddr *, socklen_t *)
REAL(recvmsg, ssize_t, int, struct msghdr *, int)
REAL(write, ssize_t, int, const void *, size_t)
REAL(writev, ssize_t, int, const struct iovec *, int)
REAL(send, ssize_t, int, const void *, size_t, int)
REAL(sendto, ssize_t, int, const void *, size_t, int, const struct sockaddr *, socklen_t)
REAL(sendmsg, ssize_t, int, const struct msghdr *, int)
REAL(sendfile, ssize_t, int, int, off_t *, size_t)
REAL(sendfile64, ssize_t, int, int, off64_t *, size_t)
REAL(recvmmsg, int, int, struct mmsghdr *, unsigned int, int, struct timespec *)
REAL(sendmmsg, int, int, struct mmsghdr *, unsigned int, int)
REAL(ioctl, int, int, unsigned long, void *)
REAL(syscall, long, long, ...)

// MARK: - Descriptor table

enum { FD_UNKNOWN = 0, FD_OTHER = 1, FD_STACK = 2 };
enum {
    F_STARTED = 1,      // connect started, or accepted: writes go to the stream
    F_LISTENING = 2,
    F_WR_SHUT = 4,
    F_RD_SHUT = 8,
    F_DGRAM = 16,       // a UDP socket: SOCK_SEQPACKET pair, a header before each datagram
    F_SMALL_BUFFER = 32,  // the send buffer is still the connect's minimum: restore before writing
    F_BROADCAST = 64,   // SO_BROADCAST set on a datagram socket
    F_PENDING = 128,    // SOCKET's reply not read yet: `ref` is the pending form (the tag)
    F_LOOPBACK_SOURCE = 256,  // a datagram socket bound to a 127/8 address: it cannot reach the link
};

// Receive control messages a datagram socket asked for (setsockopt), built from what lvlipd
// tells of each datagram (struct lvlip_dgram_header).
enum {
    W_PKTINFO = 1,          // IP_PKTINFO
    W_TTL = 2,              // IP_RECVTTL
    W_TOS = 4,              // IP_RECVTOS
    W_TIMESTAMP = 8,        // SO_TIMESTAMP_OLD: struct timeval
    W_TIMESTAMPNS = 16,     // SO_TIMESTAMPNS_OLD: struct timespec
    W6_PKTINFO = 32,        // IPV6_RECVPKTINFO
};

struct entry {
    uint8_t kind;
    uint8_t wants;         // W_* above
    uint16_t family;
    uint32_t send_buffer;  // the send buffer to restore after connect (F_SMALL_BUFFER)
    uint64_t inode;
    struct lvlip_ref ref;
    int32_t error;         // lvlipd refused to make the socket: every request fails with this
    uint16_t flags;
    uint8_t icmp;          // an ICMP socket (ping or raw): datagrams are ICMP messages, no ports
    uint8_t reserved;
};

#define PAGE_BITS 10
#define PAGE_SIZE_ENTRIES (1u << PAGE_BITS)
#define PAGES 4096  // 4M descriptors
static _Atomic(struct entry *) pages[PAGES];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

static struct entry *slot(int fd, int create) {
    if (fd < 0) return NULL;
    unsigned page = (unsigned)fd >> PAGE_BITS;
    if (page >= PAGES) return NULL;
    struct entry *p = atomic_load_explicit(&pages[page], memory_order_acquire);
    if (!p) {
        if (!create) return NULL;
        pthread_mutex_lock(&table_lock);
        p = atomic_load_explicit(&pages[page], memory_order_relaxed);
        if (!p) {
            p = calloc(PAGE_SIZE_ENTRIES, sizeof *p);
            atomic_store_explicit(&pages[page], p, memory_order_release);
        }
        pthread_mutex_unlock(&table_lock);
        if (!p) return NULL;
    }
    return &p[(unsigned)fd & (PAGE_SIZE_ENTRIES - 1)];
}

static void forget(int fd) {
    struct entry *e = slot(fd, 0);
    if (e) memset(e, 0, sizeof *e);
}

static uint64_t inode_of(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) return 0;
    return (uint64_t)st.st_ino;
}

// MARK: - Control connection

static pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER;
// Guards the datagram sockets' kept ICMP errors (below, "The error queue").
static pthread_mutex_t error_queue_lock = PTHREAD_MUTEX_INITIALIZER;
static int ctl_fd = -1;
// The stack's interface, from HELLO_REPLY (host byte order; gateway 0: none).
static uint32_t stack_address, stack_netmask, stack_gateway;
static uint64_t ctl_inode;
static uint32_t ctl_tag;
static int warned;
static int ctl_greeted;  // HELLO_REPLY read on ctl_fd
static int ctl_lost;     // the program closed ctl_fd (we could not keep it open)
static int child_ctl_fd = -1;  // opened for the child of a fork under way

// Read once at load: programs clear their environment (nginx workers keep only TZ) and
// still open their control connection after fork.
static char socket_path_copy[4096];

static void load_socket_path(void) {
    const char *p = getenv("LVLIP_SOCKET");
    if (!p || !*p) p = DEFAULT_SOCKET;
    snprintf(socket_path_copy, sizeof socket_path_copy, "%s", p);
}

static const char *socket_path(void) {
    if (!socket_path_copy[0]) load_socket_path();
    return socket_path_copy;
}

static void warn_unreachable(const char *why, int err) {
    if (__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED)) return;
    char line[512];
    int n = snprintf(line, sizeof line, "lvlip: cannot reach lvlipd at %s: %s%s\n", socket_path(), why,
                     err ? strerror(err) : "");
    if (n > 0) (void)!get_write()(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

// An IP socket lvlip does not serve (raw, ICMP, SCTP, packet sockets) goes to the kernel's
// stack, which is not the stack the user asked about: say so, once per process.
static void warn_unserved(int domain, int type, int protocol) {
    static int said;
    if (__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED)) return;
    const char *family = domain == AF_INET ? "AF_INET" : domain == AF_INET6 ? "AF_INET6" : "AF_PACKET";
    const char *kind = type == SOCK_RAW ? "SOCK_RAW" : type == SOCK_DGRAM ? "SOCK_DGRAM" : type == SOCK_STREAM ? "SOCK_STREAM" : "other";
    char line[256];
    int n = snprintf(line, sizeof line,
                     "lvlip: %s %s sockets with protocol %d are not served by lvlip: this one uses the kernel's network stack\n",
                     family, kind, protocol);
    if (n > 0) (void)!get_write()(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

// Writes all of buf; `pass_fd` (if >= 0) goes with its first byte.
static int write_all(int fd, const void *buf, size_t len, int pass_fd) {
    const char *p = buf;
    while (len > 0) {
        struct iovec iov = {.iov_base = (void *)p, .iov_len = len};
        union {
            char space[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } control;
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        if (pass_fd >= 0) {
            memset(&control, 0, sizeof control);
            msg.msg_control = control.space;
            msg.msg_controllen = sizeof control.space;
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &pass_fd, sizeof pass_fd);
        }
        ssize_t n = get_sendmsg()(fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        pass_fd = -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

// Reads at least `least` and at most `most` bytes. No reply carries a descriptor: any that
// comes is closed. Returns the count, or -1.
static ssize_t read_some(int fd, void *buf, size_t most, size_t least) {
    size_t have = 0;
    while (have < least) {
        struct iovec iov = {.iov_base = (char *)buf + have, .iov_len = most - have};
        union {
            char space[CMSG_SPACE(sizeof(int) * 4)];
            struct cmsghdr align;
        } control;
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                             .msg_controllen = sizeof control.space};
        ssize_t n = get_recvmsg()(fd, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) {
            errno = ECONNRESET;
            return -1;
        }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < count; i++) {
                int received;
                memcpy(&received, CMSG_DATA(c) + (size_t)i * sizeof(int), sizeof received);
                get_close()(received);
            }
        }
        have += (size_t)n;
    }
    return (ssize_t)have;
}

// Reads exactly len bytes.
static int read_all(int fd, void *buf, size_t len) {
    return len == 0 || read_some(fd, buf, len, len) == (ssize_t)len ? 0 : -1;
}

// Requests sent without waiting for their replies, oldest first; their replies come ahead
// of any later request's. SOCKET (the reply names the socket: filled into its entry) and
// SETOPT of an option lvlipd cannot refuse (the reply says nothing new).
#define MAX_OUTSTANDING 32
static struct outstanding {
    uint32_t tag;
    uint16_t type;
    int fd;          // SOCKET: the descriptor whose entry waits for the name
    uint64_t inode;
    int sent_fd;     // SOCKET: our copy of the descriptor sent, closed once lvlipd has it
} outstanding[MAX_OUTSTANDING];
static int outstanding_count;
// Sockets the user may still open, from the last SOCKET reply. socket() waits for its
// reply while few are left, so that the limit's EMFILE comes from socket() itself.
static uint32_t socket_headroom;
#define ASYNC_SOCKET_HEADROOM 256u

// The entry waiting for this SOCKET reply, if the descriptor still holds that socket.
static struct entry *waiting_entry(const struct outstanding *o) {
    struct entry *e = slot(o->fd, 0);
    if (!e || e->kind != FD_STACK || e->inode != o->inode || !(e->flags & F_PENDING) ||
        e->ref.index != LVLIP_REF_PENDING || e->ref.generation != o->tag)
        return NULL;
    return e;
}

static size_t ctl_in_length;

static void ctl_drop(void) {
    if (ctl_fd >= 0) get_close()(ctl_fd);
    ctl_fd = -1;
    ctl_greeted = 0;
    ctl_in_length = 0;
    // Replies lost with the connection: sockets still unnamed are identified afresh by the
    // marker on their pair (lvlipd handled every request it received before the close).
    for (int i = 0; i < outstanding_count; i++) {
        struct entry *e = outstanding[i].type == LVLIP_MSG_SOCKET ? waiting_entry(&outstanding[i]) : NULL;
        if (e) e->kind = FD_UNKNOWN;
        if (outstanding[i].sent_fd >= 0) get_close()(outstanding[i].sent_fd);
    }
    outstanding_count = 0;
}

// Connects to lvlipd and sends HELLO without waiting for the reply (read by ctl_greet).
// The descriptor is kept high, out of the way of dup2 targets. Returns it, or -1 with errno.
//
// Holding this connection is what lets a process use lvlip: it is opened when the shim loads
// and, for each fork child, by the parent just before the fork, so a program that drops its
// privileges afterwards (nginx workers, memcached -u) keeps it, as a kernel socket opened
// before setuid keeps working. lvlipd reads the sender's credentials with every request
// (SO_PASSCRED), so what a request may do depends on who makes it now (docs/shim.md).
//
// `waiting`: whether to wait while lvlipd's accept queue is full. At load and at fork the
// shim does not (a stopped or swamped lvlipd must not hang every program that starts); the
// first socket call then connects again, waiting.
static int ctl_connect(int waiting) {
    const char *path = socket_path();
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(addr.sun_path, path);
    int fd = get_socket()(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (waiting ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0) return -1;
    if (get_connect()(fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        (!waiting && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)) {
        int e = errno;
        get_close()(fd);
        errno = e;
        return -1;
    }
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 768);
    if (high >= 0) {
        get_close()(fd);
        fd = high;
    }
    struct lvlip_hello_msg hello = {
        .header = {.length = sizeof hello.body, .type = LVLIP_MSG_HELLO},
        .body = {.magic = LVLIP_IPC_MAGIC, .version = LVLIP_IPC_VERSION, .pid = (int32_t)getpid()},
    };
    if (write_all(fd, &hello, sizeof hello, -1) < 0) {
        int e = errno;
        get_close()(fd);
        errno = e;
        return -1;
    }
    return fd;
}

// The connection `fd` becomes ours, its HELLO reply still to be read.
static void ctl_adopt(int fd) {
    ctl_fd = fd;
    ctl_inode = inode_of(fd);
    ctl_greeted = 0;
}

// With ctl_lock held: reads the HELLO reply, which comes before any other. -1: dropped.
static int ctl_greet(void) {
    struct lvlip_hello_reply reply;
    if (read_all(ctl_fd, &reply.header, sizeof reply.header) < 0) {
        int e = errno;
        ctl_drop();
        warn_unreachable(e == ECONNRESET ? "lvlipd closed the connection (see its log)" : "handshake failed: ", e == ECONNRESET ? 0 : e);
        return -1;
    }
    // Another version answers ERROR (shorter) and closes: the header says enough.
    if (reply.header.type != LVLIP_MSG_HELLO_REPLY || reply.header.length != sizeof reply.body ||
        read_all(ctl_fd, &reply.body, sizeof reply.body) < 0 || reply.body.version != LVLIP_IPC_VERSION) {
        ctl_drop();
        warn_unreachable("the daemon speaks another protocol version", 0);
        return -1;
    }
    ctl_greeted = 1;
    stack_address = reply.body.address;
    stack_netmask = reply.body.netmask;
    stack_gateway = reply.body.gateway;
    return 0;
}

// With ctl_lock held: a greeted connection, opened now if there is none. -1 with errno
// ENETDOWN if lvlipd cannot be reached.
static int ctl_ready(void) {
    if (ctl_fd >= 0 && inode_of(ctl_fd) != ctl_inode) {
        // The program closed our descriptor behind our back (a raw close_range syscall):
        // a different file under the number means it is gone.
        ctl_fd = -1;
        ctl_drop();
        ctl_lost = 1;
    }
    if (ctl_fd < 0) {
        int fd = ctl_connect(1);
        if (fd < 0) {
            int e = errno;
            char why[160] = "";
            // Started as, or exec'd after becoming, a user the socket does not admit; or the
            // program closed the connection it had.
            if (e == EACCES || e == EPERM)
                snprintf(why, sizeof why, "%suid %u may not open it%s: ", ctl_lost ? "the program closed lvlip's connection, and " : "",
                         (unsigned)geteuid(), ctl_lost ? " again" : " (see lvlipd --group)");
            warn_unreachable(why, e);
            errno = ENETDOWN;
            return -1;
        }
        ctl_adopt(fd);
    }
    if (!ctl_greeted && ctl_greet() < 0) {
        errno = ENETDOWN;
        return -1;
    }
    return 0;
}

// With ctl_lock held: writes one request. `about` is the socket it concerns: its name
// goes over the body's first 16 bytes here, under the lock (a SOCKET reply read by
// another thread may just have filled it in).
static int send_request(uint16_t type, const struct entry *about, const void *body, uint32_t length,
                        const void *extra, uint32_t extra_length, int pass_fd, uint32_t *tag) {
    if (ctl_ready() < 0) return -1;
    struct lvlip_msg_header header = {length + extra_length, type, pass_fd >= 0 ? LVLIP_FLAG_FD : 0, ++ctl_tag};
    char out[sizeof header + 64 + 1024];
    if (length > 64 || extra_length > 1024) {
        errno = EINVAL;
        return -1;
    }
    memcpy(out, &header, sizeof header);
    memcpy(out + sizeof header, body, length);
    if (about && length >= sizeof about->ref) memcpy(out + sizeof header, &about->ref, sizeof about->ref);
    if (extra_length) memcpy(out + sizeof header + length, extra, extra_length);
    if (write_all(ctl_fd, out, sizeof header + length + extra_length, pass_fd) < 0) {
        ctl_drop();
        warn_unreachable("the connection broke: ", errno);
        errno = ENETDOWN;
        return -1;
    }
    *tag = header.tag;
    return 0;
}

// Bytes read from the control connection and not yet taken: replies to requests sent
// without waiting arrive back to back, and one read may bring several.
static char ctl_in[4096];

// With ctl_lock held: reads the reply to request `tag`. Returns its body length, or -1
// (the connection is dropped).
static ssize_t read_reply(uint16_t type, uint32_t tag, void *reply, size_t room) {
    struct lvlip_msg_header in;
    while (ctl_in_length < sizeof in) {
        ssize_t n = read_some(ctl_fd, ctl_in + ctl_in_length, sizeof ctl_in - ctl_in_length, 1);
        if (n < 0) goto broken;
        ctl_in_length += (size_t)n;
    }
    memcpy(&in, ctl_in, sizeof in);
    if (in.type != type + 1 || in.tag != tag || in.length > room || in.length > sizeof ctl_in - sizeof in) goto broken;
    while (ctl_in_length < sizeof in + in.length) {
        ssize_t n = read_some(ctl_fd, ctl_in + ctl_in_length, sizeof ctl_in - ctl_in_length, 1);
        if (n < 0) goto broken;
        ctl_in_length += (size_t)n;
    }
    memcpy(reply, ctl_in + sizeof in, in.length);
    ctl_in_length -= sizeof in + in.length;
    memmove(ctl_in, ctl_in + sizeof in + in.length, ctl_in_length);
    return in.length;
broken:
    ctl_drop();
    warn_unreachable("the connection broke: ", errno);
    errno = ENETDOWN;
    return -1;
}

// A SOCKET reply: the socket's name into its entry, or the error that every request on it
// will meet. The copy of lvlipd's end is closed only now: closing an AF_UNIX socket while
// descriptors are in flight (ours, until lvlipd reads the request) makes the kernel run
// its garbage collector.
static void socket_named(const struct outstanding *o, const struct lvlip_socket_rep *rep, ssize_t n) {
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

// With ctl_lock held: reads the replies to the requests sent without waiting.
static int settle(void) {
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

// One request and its reply. Returns the reply's body length, or -1 with errno ENETDOWN
// when lvlipd cannot be reached. For a socket lvlipd refused to make, the reply's result
// is that refusal.
static ssize_t request(uint16_t type, struct entry *about, const void *body, uint32_t length, const void *extra,
                       uint32_t extra_length, int pass_fd, void *reply, size_t room) {
    pthread_mutex_lock(&ctl_lock);
    uint32_t tag;
    ssize_t n = -1;
    if (send_request(type, about, body, length, extra, extra_length, pass_fd, &tag) == 0 && settle() == 0)
        n = read_reply(type, tag, reply, room);
    if (n >= (ssize_t)sizeof(int32_t) && about && about->error) {
        int32_t refused = -about->error;
        memcpy(reply, &refused, sizeof refused);
    }
    pthread_mutex_unlock(&ctl_lock);
    if (n < 0) errno = ENETDOWN;
    return n;
}

// A request whose reply is read later, by the next request or before a fork. With
// ctl_lock held. For SOCKET, `fd` and `inode` name the socket it makes and `pass_fd` is
// lvlipd's end (ours to close once the reply comes).
static int request_later(uint16_t type, const struct entry *about, const void *body, uint32_t length,
                         const void *extra, uint32_t extra_length, int pass_fd, int fd, uint64_t inode, uint32_t *tag) {
    if (outstanding_count == MAX_OUTSTANDING && settle() < 0) return -1;
    if (send_request(type, about, body, length, extra, extra_length, pass_fd, tag) < 0) return -1;
    outstanding[outstanding_count++] = (struct outstanding){*tag, type, fd, inode, pass_fd};
    return 0;
}

static void before_fork(void) {
    // The child gets its own connection, opened now by the parent (whose credentials may be
    // the ones that can open it: the child may drop them before its first socket call).
    // Every reply to what was sent is read first, so that the sockets both will hold are named.
    pthread_mutex_lock(&ctl_lock);
    if (outstanding_count > 0 && settle() < 0) ctl_drop();
    child_ctl_fd = ctl_connect(0);
}

static void after_fork_parent(void) {
    if (child_ctl_fd >= 0) get_close()(child_ctl_fd);
    child_ctl_fd = -1;
    pthread_mutex_unlock(&ctl_lock);
}

static void after_fork_child(void) {
    pthread_mutex_init(&ctl_lock, NULL);
    pthread_mutex_init(&table_lock, NULL);
    pthread_mutex_init(&error_queue_lock, NULL);
    ctl_drop();  // our copy of the parent's connection
    ctl_lost = 0;
    if (child_ctl_fd >= 0) ctl_adopt(child_ctl_fd);
    child_ctl_fd = -1;
}

__attribute__((constructor)) static void shim_init(void) {
    load_socket_path();
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    // The connection is opened now, with the credentials the program starts with; if lvlipd
    // cannot be reached yet, the first socket call tries again (and says why it failed).
    int fd = ctl_connect(0);
    if (fd >= 0) ctl_adopt(fd);
}

// MARK: - Which descriptors are stack sockets

// Fills the entry of a descriptor the table does not know (inherited across exec, passed
// with SCM_RIGHTS): a stack socket's peer is lvlipd's end, named "lvlip-..." in the
// abstract namespace.
static struct entry *identify(int fd, uint64_t inode) {
    struct entry *e = slot(fd, 1);
    if (!e) return NULL;
    struct sockaddr_un peer;
    socklen_t len = sizeof peer;
    if (inode == 0 || get_getpeername()(fd, (struct sockaddr *)&peer, &len) < 0 || peer.sun_family != AF_UNIX ||
        len < offsetof(struct sockaddr_un, sun_path) + 1 + strlen(MARKER) || peer.sun_path[0] != 0 ||
        memcmp(peer.sun_path + 1, MARKER, strlen(MARKER)) != 0) {
        e->kind = FD_OTHER;
        e->inode = inode;
        return NULL;
    }
    struct lvlip_socket_rep rep;
    ssize_t n = request(LVLIP_MSG_IDENTIFY, NULL, NULL, 0, NULL, 0, fd, &rep, sizeof rep);
    if (n != (ssize_t)sizeof rep || rep.result < 0) {
        e->kind = FD_OTHER;
        e->inode = inode;
        return NULL;
    }
    e->kind = FD_STACK;
    e->family = (uint16_t)rep.family;
    e->inode = inode;
    e->ref = rep.ref;
    e->error = 0;
    e->flags = 0;
    if (rep.state == LVLIP_STATE_CONNECTING || rep.state == LVLIP_STATE_CONNECTED || rep.state == LVLIP_STATE_CLOSED)
        e->flags |= F_STARTED;
    if (rep.state == LVLIP_STATE_LISTENING) e->flags |= F_LISTENING;
    e->icmp = rep.protocol == IPPROTO_ICMP;
    if (rep.type == SOCK_DGRAM || rep.type == SOCK_RAW) {
        e->flags |= F_DGRAM;
        if (rep.state != LVLIP_STATE_CONNECTED) e->flags &= ~F_STARTED;
    }
    return e;
}

// For socket calls: the descriptor's entry if it is a stack socket, checked against the
// file now under the number.
static struct entry *stack_socket(int fd) {
    uint64_t inode = inode_of(fd);
    if (inode == 0) return NULL;
    struct entry *e = slot(fd, 0);
    if (e && e->kind != FD_UNKNOWN && e->inode == inode) return e->kind == FD_STACK ? e : NULL;
    return identify(fd, inode);
}

// For the data path: the table, and for a descriptor it has not seen (inherited across exec,
// received with SCM_RIGHTS) one look at what it is, remembered until it is closed.
static inline struct entry *known_stack(int fd) {
    struct entry *e = slot(fd, 0);
    if (__builtin_expect(e && e->kind != FD_UNKNOWN, 1)) return e->kind == FD_STACK ? e : NULL;
    if (fd < 0) return NULL;
    uint64_t inode = inode_of(fd);
    if (inode == 0) {
        e = slot(fd, 1);
        if (e) {
            e->kind = FD_OTHER;
            e->inode = 0;
        }
        return NULL;
    }
    return identify(fd, inode);
}

static inline int is_dgram(const struct entry *e) { return e && (e->flags & F_DGRAM); }

// MARK: - Addresses

// Reads a caller's address into the wire form, checking the family against the socket's.
static int parse_address(const struct entry *e, const struct sockaddr *sa, socklen_t len, struct lvlip_addr *out) {
    memset(out, 0, sizeof *out);
    if (!sa || len < sizeof(sa_family_t)) return -EINVAL;
    if (sa->sa_family == AF_INET) {
        if (len < sizeof(struct sockaddr_in)) return -EINVAL;
        if (e->family == AF_INET6) return -EAFNOSUPPORT;
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        out->addr = ntohl(in->sin_addr.s_addr);
        out->port = ntohs(in->sin_port);
        out->kind = LVLIP_ADDR_V4;
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        if (e->family != AF_INET6) return -EAFNOSUPPORT;
        if (len < sizeof(struct sockaddr_in6)) return -EINVAL;
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        out->port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            memcpy(&out->addr, &in6->sin6_addr.s6_addr[12], 4);
            out->addr = ntohl(out->addr);
            out->kind = LVLIP_ADDR_V4;
        } else if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) {
            out->kind = LVLIP_ADDR_V6_ANY;
        } else {
            out->kind = LVLIP_ADDR_V6_OTHER;
        }
        return 0;
    }
    return -EAFNOSUPPORT;
}

// Writes an address in the socket's family (IPv4 peers of AF_INET6 sockets as ::ffff:a.b.c.d).
static void format_address(const struct entry *e, const struct lvlip_addr *a, struct sockaddr *sa, socklen_t *len) {
    if (!sa || !len) return;
    union {
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } u;
    memset(&u, 0, sizeof u);
    socklen_t full;
    if (e->family == AF_INET6) {
        u.in6.sin6_family = AF_INET6;
        u.in6.sin6_port = htons(a->port);
        // Any address: "::" for an AF_INET6 socket (bound to [::], or not bound).
        if (a->kind != LVLIP_ADDR_V6_ANY && a->addr != 0) {
            u.in6.sin6_addr.s6_addr[10] = 0xff;
            u.in6.sin6_addr.s6_addr[11] = 0xff;
            uint32_t v4 = htonl(a->addr);
            memcpy(&u.in6.sin6_addr.s6_addr[12], &v4, 4);
        }
        full = sizeof u.in6;
    } else {
        u.in.sin_family = AF_INET;
        u.in.sin_port = htons(a->port);
        u.in.sin_addr.s_addr = htonl(a->addr);
        full = sizeof u.in;
    }
    memcpy(sa, &u, *len < full ? *len : full);
    *len = full;
}

static int fail(int err) {
    errno = err;
    return -1;
}

static int simple(uint16_t type, struct entry *e, int32_t value) {
    struct lvlip_int_req req = {.ref = e->ref, .value = value};
    struct lvlip_result rep;
    ssize_t n = request(type, e, &req, sizeof req, NULL, 0, -1, &rep, sizeof rep);
    if (n != (ssize_t)sizeof rep) return -ENETDOWN;
    return rep.result;
}

// MARK: - Socket calls

// The shim makes the pair and hands lvlipd its end with SOCKET. While the user is far from
// its socket limit, socket() does not wait for the reply: the socket's first request names
// it by the SOCKET request's tag (lvlipd handles requests in order), and the reply is read
// with that request's.
EXPORT int socket(int domain, int type, int protocol) {
    int base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
    int stream = base == SOCK_STREAM && (protocol == 0 || protocol == IPPROTO_TCP);
    // ICMP: ping sockets (SOCK_DGRAM) and raw ICMP sockets, IPv4; served as datagram sockets.
    int icmp = domain == AF_INET && protocol == IPPROTO_ICMP && (base == SOCK_DGRAM || base == SOCK_RAW);
    int dgram = (base == SOCK_DGRAM && (protocol == 0 || protocol == IPPROTO_UDP)) || icmp;
    if (!((domain == AF_INET || domain == AF_INET6) && (stream || dgram))) {
        if (domain == AF_INET || domain == AF_INET6 || domain == AF_PACKET) warn_unserved(domain, base, protocol);
        return get_socket()(domain, type, protocol);
    }
    // fds[0] is the program's end, fds[1] lvlipd's: close-on-exec until it has gone, so
    // that no child started meanwhile keeps a copy.
    int fds[2];
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
    uint64_t inode = inode_of(fds[0]);
    struct entry *e = slot(fds[0], 1);
    if (!e || !inode) {
        get_close()(fds[0]);
        get_close()(fds[1]);
        return fail(ENOMEM);
    }
    memset(e, 0, sizeof *e);
    e->kind = FD_STACK;
    e->family = (uint16_t)domain;
    e->inode = inode;
    e->flags = F_PENDING | (dgram ? F_DGRAM : 0);
    e->icmp = (uint8_t)icmp;
    struct lvlip_socket_req req = {.family = domain, .type = base, .protocol = protocol};
    uint32_t tag;
    pthread_mutex_lock(&ctl_lock);
    int r;
    // An ICMP socket waits for its reply: lvlipd decides who may have one (EACCES, EPERM),
    // and programs fall back on that answer (ping tries a ping socket, then a raw one).
    if (!icmp && socket_headroom > ASYNC_SOCKET_HEADROOM + (uint32_t)outstanding_count) {
        r = request_later(LVLIP_MSG_SOCKET, NULL, &req, sizeof req, NULL, 0, fds[1], fds[0], inode, &tag);
        if (r == 0) {
            e->ref = (struct lvlip_ref){.index = LVLIP_REF_PENDING, .generation = tag};
        } else {
            get_close()(fds[1]);
        }
    } else {
        struct lvlip_socket_rep rep;
        r = send_request(LVLIP_MSG_SOCKET, NULL, &req, sizeof req, NULL, 0, fds[1], &tag);
        ssize_t n = r == 0 && settle() == 0 ? read_reply(LVLIP_MSG_SOCKET, tag, &rep, sizeof rep) : -1;
        if (n < 0) {
            r = -1;
        } else {
            e->ref = (struct lvlip_ref){.index = LVLIP_REF_PENDING, .generation = tag};
            socket_named(&(struct outstanding){tag, LVLIP_MSG_SOCKET, fds[0], inode, -1}, &rep, n);
            if (e->error) r = -1;
        }
        get_close()(fds[1]);
    }
    pthread_mutex_unlock(&ctl_lock);
    if (r < 0) {
        int err = e->error ? e->error : ENETDOWN;
        memset(e, 0, sizeof *e);
        get_close()(fds[0]);
        return fail(err);
    }
    return fds[0];
}

EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    struct entry *e = stack_socket(fd);
    if (!e) return get_bind()(fd, addr, len);
    struct lvlip_addr_req req = {.ref = e->ref};
    int r = parse_address(e, addr, len, &req.addr);
    if (r < 0) return fail(-r);
    struct lvlip_result rep;
    if (request(LVLIP_MSG_BIND, e, &req, sizeof req, NULL, 0, -1, &rep, sizeof rep) != (ssize_t)sizeof rep)
        return fail(ENETDOWN);
    if (rep.result < 0) return fail(-rep.result);
    if (req.addr.kind == LVLIP_ADDR_V4 && (req.addr.addr >> 24) == 127) e->flags |= F_LOOPBACK_SOURCE;
    return 0;
}

EXPORT int listen(int fd, int backlog) {
    struct entry *e = stack_socket(fd);
    if (!e) return get_listen()(fd, backlog);
    int r = simple(LVLIP_MSG_LISTEN, e, backlog);
    if (r < 0) return fail(-r);
    e->flags |= F_LISTENING;
    return 0;
}

// Makes the application's end unwritable until the handshake completes: a tiny send buffer
// holding a little unread data. The daemon reads the filler and restores the buffer then.
static uint32_t add_filler(int fd, struct entry *e) {
    // 2 KB in one skb is ~2.8 KB of write memory against the minimum send buffer of
    // 4.6 KB: more than the quarter above which an AF_UNIX socket stops being writable.
    static const char filler[2048];
    e->send_buffer = LVLIP_APP_SEND_BUFFER;
    e->flags |= F_SMALL_BUFFER;
    int small = 1;
    get_setsockopt()(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    ssize_t n = get_send()(fd, filler, sizeof filler, MSG_DONTWAIT | MSG_NOSIGNAL);
    return n > 0 ? (uint32_t)n : 0;
}

// Waits for the end of a blocking connect; returns the poll events, or -errno.
static int wait_writable(int fd) {
    struct timeval tv = {0, 0};
    socklen_t len = sizeof tv;
    int timeout = -1;
    if (get_getsockopt()(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) == 0 && (tv.tv_sec || tv.tv_usec))
        timeout = (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r = poll(&p, 1, timeout);
    if (r < 0) return -errno;  // EINTR: the connect goes on, as in the kernel
    if (r == 0) return -EINPROGRESS;
    return p.revents;
}

// Whether a connection's stream is open both ways with nothing wrong: lvlipd ends a failed
// connection by closing its end (POLLHUP here), so an end without POLLHUP or POLLERR has
// no error to tell, and SO_ERROR or the result of a connect that became writable is 0
// without asking.
static int stream_healthy(int fd, int revents) {
    if (revents < 0) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, 0) < 0) return 0;
        revents = p.revents;
    }
    return !(revents & (POLLHUP | POLLERR | POLLNVAL));
}

static int connect_request(struct entry *e, const struct lvlip_addr *addr, uint32_t filler) {
    struct lvlip_addr_req req = {.ref = e->ref, .filler = filler};
    if (addr) req.addr = *addr;
    struct lvlip_name_rep rep;
    if (request(LVLIP_MSG_CONNECT, e, &req, sizeof req, NULL, 0, -1, &rep, sizeof rep) != (ssize_t)sizeof rep)
        return -ENETDOWN;
    return rep.result;
}

// The end's send buffer back to its size once the handshake is over (the first write, or
// the end of a blocking connect). Root may keep lvlipd's larger size; others get wmem_max.
static void restore_send_buffer(int fd, struct entry *e) {
    if (!(e->flags & F_SMALL_BUFFER)) return;
    e->flags &= ~F_SMALL_BUFFER;
    int size = (int)e->send_buffer;
    if (get_setsockopt()(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
        get_setsockopt()(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    struct entry *e = stack_socket(fd);
    if (!e) return get_connect()(fd, addr, len);
    if (is_dgram(e)) {
        // A datagram socket only records (or with AF_UNSPEC forgets) its peer.
        struct lvlip_addr wire = {.kind = LVLIP_ADDR_UNSPEC};
        if (!addr || len < sizeof(sa_family_t)) return fail(EINVAL);
        if (addr->sa_family != AF_UNSPEC) {
            int r = parse_address(e, addr, len, &wire);
            if (r < 0) return fail(-r);
        }
        int r = connect_request(e, &wire, 0);
        if (r < 0) return fail(-r);
        if (wire.kind == LVLIP_ADDR_UNSPEC) {
            e->flags &= ~F_STARTED;
        } else {
            e->flags |= F_STARTED;
        }
        return 0;
    }
    struct lvlip_addr wire;
    int r = parse_address(e, addr, len, &wire);
    if (r < 0) return fail(-r);
    uint32_t filler = (e->flags & (F_STARTED | F_LISTENING)) ? 0 : add_filler(fd, e);
    r = connect_request(e, &wire, filler);
    if (r == -EINPROGRESS) {
        e->flags |= F_STARTED;
        if (fcntl(fd, F_GETFL) & O_NONBLOCK) return fail(EINPROGRESS);
        r = wait_writable(fd);
        if (r < 0) return fail(-r);
        // Writable and not hung up: established (lvlipd took the filler then).
        r = (r & POLLOUT) && stream_healthy(fd, r) ? 0 : connect_request(e, &wire, 0);
        restore_send_buffer(fd, e);
    } else if (filler) {
        restore_send_buffer(fd, e);  // it did not start: lvlipd took the filler back
    }
    if (r == 0) e->flags |= F_STARTED;
    return r < 0 ? fail(-r) : 0;
}

static int take_connection(int fd, struct entry *listener, struct sockaddr *addr, socklen_t *len, int flags) {
    if (is_dgram(listener)) return fail(EOPNOTSUPP);
    if (!(listener->flags & F_LISTENING)) return fail(EINVAL);
    struct lvlip_accept_record record;
    struct iovec iov = {.iov_base = &record, .iov_len = sizeof record};
    union {
        char space[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                         .msg_controllen = sizeof control.space};
    ssize_t n = get_recvmsg()(fd, &msg, (flags & SOCK_CLOEXEC) ? MSG_CMSG_CLOEXEC : 0);
    if (n < 0) return -1;
    int conn = -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(&conn, CMSG_DATA(c), sizeof conn);
    if (n == 0) return fail(EINVAL);  // lvlipd closed the listener (it stopped)
    if (n != (ssize_t)sizeof record || conn < 0 || record.magic != LVLIP_ACCEPT_MAGIC) {
        if (conn >= 0) get_close()(conn);
        return fail(ECONNABORTED);
    }
    if (flags & SOCK_NONBLOCK) fcntl(conn, F_SETFL, fcntl(conn, F_GETFL) | O_NONBLOCK);
    struct entry *e = slot(conn, 1);
    if (e) {
        memset(e, 0, sizeof *e);
        e->kind = FD_STACK;
        e->family = listener->family;
        e->inode = inode_of(conn);
        e->ref = record.ref;
        e->flags = F_STARTED;
        format_address(e, &record.peer, addr, len);
    }
    return conn;
}

EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    struct entry *e = stack_socket(fd);
    if (!e) return get_accept4()(fd, addr, len, flags);
    if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) return fail(EINVAL);
    return take_connection(fd, e, addr, len, flags);
}

EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    struct entry *e = stack_socket(fd);
    if (!e) return get_accept()(fd, addr, len);
    return take_connection(fd, e, addr, len, 0);
}

EXPORT int shutdown(int fd, int how) {
    struct entry *e = stack_socket(fd);
    if (!e) return get_shutdown()(fd, how);
    int r = simple(LVLIP_MSG_SHUTDOWN, e, how);
    if (r < 0) return fail(-r);
    if (how == SHUT_WR || how == SHUT_RDWR) e->flags |= F_WR_SHUT;
    if (how == SHUT_RD || how == SHUT_RDWR) e->flags |= F_RD_SHUT;
    return 0;
}

static int get_name(int fd, struct sockaddr *addr, socklen_t *len, int peer) {
    struct entry *e = stack_socket(fd);
    if (!e) return peer ? get_getpeername()(fd, addr, len) : get_getsockname()(fd, addr, len);
    if (!addr || !len) return fail(EFAULT);
    if ((int)*len < 0) return fail(EINVAL);
    struct lvlip_int_req req = {.ref = e->ref, .value = peer};
    struct lvlip_name_rep rep;
    if (request(LVLIP_MSG_NAME, e, &req, sizeof req, NULL, 0, -1, &rep, sizeof rep) != (ssize_t)sizeof rep)
        return fail(ENETDOWN);
    if (rep.result < 0) return fail(-rep.result);
    format_address(e, &rep.addr, addr, len);
    return 0;
}

EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len) { return get_name(fd, addr, len, 0); }
EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len) { return get_name(fd, addr, len, 1); }

// Timeouts are the pair's own: blocking reads and writes happen on it, and an AF_UNIX socket
// answers them as a TCP or UDP socket does (the same sock_setsockopt code, socket(7)). Every
// other option goes to lvlipd, whose table answers as the socket's protocol would: the pair
// would answer SO_TYPE, SO_DOMAIN, SO_PROTOCOL, SO_PEERCRED, SO_SNDBUF... for AF_UNIX.
static int native_option(int level, int name) {
    return level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO
#ifdef SO_RCVTIMEO_NEW
                                   || name == SO_RCVTIMEO_NEW || name == SO_SNDTIMEO_NEW
#endif
                                  );
}

// Options lvlipd accepts on any stream socket once the value is an int: set without
// waiting for the answer (the next request reads it; lvlipd applies requests in order).
static int option_cannot_fail(const struct entry *e, int level, int name, socklen_t len) {
    if (is_dgram(e) || len < sizeof(int) || e->error) return 0;
    if (level == IPPROTO_TCP) return name == TCP_NODELAY;
    return level == SOL_SOCKET && (name == SO_KEEPALIVE || name == SO_REUSEADDR || name == SO_REUSEPORT);
}

static void note_control_option(struct entry *e, int level, int name, const void *value, socklen_t len);

EXPORT int setsockopt(int fd, int level, int name, const void *value, socklen_t len) {
    struct entry *e = stack_socket(fd);
    if (!e || native_option(level, name)) return get_setsockopt()(fd, level, name, value, len);
    if ((int)len < 0) return fail(EINVAL);
    if (len > 0 && !value) return fail(EFAULT);
    // No TCP, UDP or IP option reads past its struct, the largest (a group_source_req) 264
    // bytes; the kernel ignores the rest of a longer value (an int in 8 bytes is an int), so
    // only its start travels (SETOPT carries at most 1024).
    if (len > 1024) len = 1024;
    struct lvlip_opt_req req = {.ref = e->ref, .level = level, .name = name, .length = len};
    if (option_cannot_fail(e, level, name, len)) {
        uint32_t tag;
        req.length = sizeof(int);
        pthread_mutex_lock(&ctl_lock);
        int r = request_later(LVLIP_MSG_SETOPT, e, &req, sizeof req, value, sizeof(int), -1, -1, 0, &tag);
        pthread_mutex_unlock(&ctl_lock);
        return r < 0 ? fail(ENETDOWN) : 0;
    }
    struct lvlip_result rep;
    if (request(LVLIP_MSG_SETOPT, e, &req, sizeof req, value, len, -1, &rep, sizeof rep) != (ssize_t)sizeof rep)
        return fail(ENETDOWN);
    if (rep.result < 0) return fail(-rep.result);
    if (level == SOL_SOCKET && name == SO_BROADCAST && len >= sizeof(int)) {
        int on;
        memcpy(&on, value, sizeof on);
        if (on) e->flags |= F_BROADCAST; else e->flags &= ~F_BROADCAST;
    }
    if (is_dgram(e)) note_control_option(e, level, name, value, len);
    return 0;
}

EXPORT int getsockopt(int fd, int level, int name, void *value, socklen_t *len) {
    struct entry *e = stack_socket(fd);
    if (!e || native_option(level, name)) return get_getsockopt()(fd, level, name, value, len);
    if (!len || (!value && *len > 0)) return fail(EFAULT);
    if ((int)*len < 0) return fail(EINVAL);
    if (level == SOL_SOCKET && name == SO_ERROR && !is_dgram(e) && *len >= sizeof(int) &&
        stream_healthy(fd, -1)) {
        // The common check after a non-blocking connect, answered without a round trip.
        int zero = 0;
        memcpy(value, &zero, sizeof zero);
        *len = sizeof zero;
        return 0;
    }
    struct lvlip_opt_req req = {.ref = e->ref, .level = level, .name = name, .length = *len > 1024 ? 1024 : *len};
    struct {
        struct lvlip_opt_rep head;
        char value[1024];
    } rep;
    ssize_t n = request(LVLIP_MSG_GETOPT, e, &req, sizeof req, NULL, 0, -1, &rep, sizeof rep);
    if (n < (ssize_t)sizeof rep.head) return fail(ENETDOWN);
    if (rep.head.result < 0) return fail(-rep.head.result);
    uint32_t got = rep.head.length;
    if (got > (uint32_t)n - sizeof rep.head) got = (uint32_t)n - sizeof rep.head;
    if (got > *len) got = *len;
    memcpy(value, rep.value, got);
    *len = got;
    return 0;
}

// MARK: - Data path: the pair's own calls, with the kernel's errors at the ends

// A read on a stack socket found end of stream (or the pair's ECONNRESET): what the socket's
// own error is.
static ssize_t read_ended(struct entry *e, ssize_t result, int err) {
    if (e->flags & F_RD_SHUT) return 0;
    int r = simple(LVLIP_MSG_STATUS, e, LVLIP_STATUS_READ_END);
    if (r == -EBADF) r = 0;                      // forgotten long ago: a plain end
    if (r == -ENETDOWN) r = -ECONNRESET;         // lvlipd is gone: the connection with it
    if (r < 0) return fail(-r);
    if (result < 0 && err == ECONNRESET) return 0;
    errno = err;
    return result;
}

static inline int read_needs_check(ssize_t r, size_t asked) {
    return (r == 0 && asked > 0) || (r < 0 && errno == ECONNRESET);
}

// A write found the stream closed: the socket's error, SIGPIPE as the kernel sends it.
static ssize_t write_ended(struct entry *e, int flags) {
    int r = simple(LVLIP_MSG_STATUS, e, LVLIP_STATUS_WRITE_END);
    if (r == -EBADF || r == -ENETDOWN || r >= 0) r = -EPIPE;
    if (r == -EPIPE && !(flags & MSG_NOSIGNAL)) raise(SIGPIPE);
    return fail(-r);
}

static void restore_send_buffer(int fd, struct entry *e);

// Whether a write may go to the stream, or fails as the kernel's would.
static inline int write_refused(int fd, struct entry *e, int flags) {
    if (!(e->flags & F_STARTED) || (e->flags & F_WR_SHUT)) {
        if (!(flags & MSG_NOSIGNAL)) raise(SIGPIPE);
        return 1;
    }
    if (__builtin_expect(e->flags & F_SMALL_BUFFER, 0)) restore_send_buffer(fd, e);
    return 0;
}


// MARK: - Datagram sockets: one header + payload message per datagram on a SOCK_SEQPACKET pair

#define DGRAM_HEADER ((ssize_t)sizeof(struct lvlip_dgram_header))
#define MAX_UDP_PAYLOAD 65507
#define MAX_ICMP_MESSAGE 65515

// An error waiting at the head of a connected socket's pair fails the next send, as Linux's
// pending sk_err does.
static int take_queued_error(int fd) {
    struct lvlip_dgram_header h;
    ssize_t n = get_recv()(fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
    if (n != DGRAM_HEADER || !(h.flags & LVLIP_DGRAM_ERROR) || (h.flags & LVLIP_DGRAM_ERRQUEUE)) return 0;
    (void)get_recv()(fd, &h, sizeof h, MSG_DONTWAIT);
    return h.error > 0 ? h.error : EIO;
}

static ssize_t dgram_send(int fd, struct entry *e, const struct iovec *iov, size_t count, int flags,
                          const struct sockaddr *to, socklen_t tolen) {
    if (e->flags & F_WR_SHUT) {
        if (!(flags & MSG_NOSIGNAL)) raise(SIGPIPE);
        return fail(EPIPE);
    }
    if (count > 1023) return fail(EMSGSIZE);
    size_t total = 0;
    for (size_t i = 0; i < count; i++) total += iov[i].iov_len;
    if (total > (e->icmp ? MAX_ICMP_MESSAGE : MAX_UDP_PAYLOAD)) return fail(EMSGSIZE);
    struct lvlip_dgram_header h = {.magic = LVLIP_DGRAM_MAGIC};
    if (to) {
        struct lvlip_addr wire;
        int r = parse_address(e, to, tolen, &wire);
        if (r < 0) return fail(-r);
        if (wire.kind != LVLIP_ADDR_V4) return fail(ENETUNREACH);
        if (wire.port == 0 && !e->icmp) return fail(EINVAL);
        h.flags |= LVLIP_DGRAM_ADDRESSED;
        // What the kernel refuses at once, refused at once (lvlipd would only drop it).
        uint32_t a = wire.addr;
        uint32_t subnet_broadcast = stack_address | ~stack_netmask;
        if ((a == 0xffffffffu || (stack_netmask && a == subnet_broadcast)) && !(e->flags & F_BROADCAST))
            return fail(EACCES);
        // 127.0.0.0/8 is the stack's loopback (served by lvlipd, never the kernel's).
        if (a == 0 || (a >> 28) == 0xe) return fail(ENETUNREACH);
        if (stack_netmask && (a & stack_netmask) != (stack_address & stack_netmask) && a != 0xffffffffu &&
            (a >> 24) != 127 && stack_gateway == 0)
            return fail(ENETUNREACH);
        // A loopback source may reach only this host (Linux's route lookup: EINVAL).
        if ((e->flags & F_LOOPBACK_SOURCE) && (a >> 24) != 127 && a != stack_address) return fail(EINVAL);
        h.addr = wire.addr;
        h.port = wire.port;
    } else if (!(e->flags & F_STARTED)) {
        return fail(EDESTADDRREQ);
    }
    if (e->flags & F_STARTED) {
        int err = take_queued_error(fd);
        if (err) return fail(err);
    }
    struct iovec parts[1024];
    parts[0].iov_base = &h;
    parts[0].iov_len = sizeof h;
    for (size_t i = 0; i < count; i++) parts[i + 1] = iov[i];
    struct msghdr msg = {.msg_iov = parts, .msg_iovlen = count + 1};
    ssize_t n = get_sendmsg()(fd, &msg, MSG_NOSIGNAL | (flags & MSG_DONTWAIT));
    if (n < 0) {
        if (errno == EPIPE) return write_ended(e, flags);
        return -1;
    }
    return n >= DGRAM_HEADER ? n - DGRAM_HEADER : 0;
}

// MARK: - Receive control messages (ip(7), ipv6(7), socket(7) SO_TIMESTAMP)

// Which control messages a datagram socket asked for, kept as setsockopt succeeds.
static void note_control_option(struct entry *e, int level, int name, const void *value, socklen_t len) {
    int bit = 0;
    if (level == IPPROTO_IP) bit = name == IP_PKTINFO ? W_PKTINFO : name == IP_RECVTTL ? W_TTL : name == IP_RECVTOS ? W_TOS : 0;
    if (level == SOL_SOCKET) bit = name == SO_TIMESTAMP_OLD ? W_TIMESTAMP : name == SO_TIMESTAMPNS_OLD ? W_TIMESTAMPNS : 0;
    if (level == IPPROTO_IPV6 && e->family == AF_INET6)
        bit = name == IPV6_RECVPKTINFO ? W6_PKTINFO : 0;
    if (!bit || !value || len < 1) return;
    int on = 0;
    if (len >= sizeof on) memcpy(&on, value, sizeof on); else on = *(const unsigned char *)value;
    if (on) e->wants |= (uint8_t)bit; else e->wants &= (uint8_t)~bit;
}

// Appends one control message if it fits; 0 when it did not (MSG_CTRUNC).
static int add_control(struct msghdr *msg, size_t *used, int level, int type, const void *data, size_t length) {
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

// The control messages of one received datagram, in the order Linux puts them.
static void fill_control(const struct entry *e, struct msghdr *msg, const struct lvlip_dgram_header *h) {
    size_t used = 0;
    int fitted = 1;
    if (e->wants & W_TIMESTAMP) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        fitted &= add_control(msg, &used, SOL_SOCKET, SO_TIMESTAMP_OLD, &tv, sizeof tv);
    }
    if (e->wants & W_TIMESTAMPNS) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        fitted &= add_control(msg, &used, SOL_SOCKET, SO_TIMESTAMPNS_OLD, &ts, sizeof ts);
    }
    if (e->wants & W_PKTINFO) {
        struct in_pktinfo info = {.ipi_ifindex = h->ifindex};
        info.ipi_spec_dst.s_addr = htonl(h->local);
        info.ipi_addr.s_addr = htonl(h->local);
        fitted &= add_control(msg, &used, IPPROTO_IP, IP_PKTINFO, &info, sizeof info);
    }
    if (e->wants & W_TTL) {
        int ttl = h->ttl;
        fitted &= add_control(msg, &used, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl);
    }
    if (e->wants & W_TOS) fitted &= add_control(msg, &used, IPPROTO_IP, IP_TOS, &h->tos, 1);
    if (e->wants & W6_PKTINFO) {
        struct in6_pktinfo info = {.ipi6_ifindex = h->ifindex};
        info.ipi6_addr.s6_addr[10] = 0xff;
        info.ipi6_addr.s6_addr[11] = 0xff;
        uint32_t v4 = htonl(h->local);
        memcpy(&info.ipi6_addr.s6_addr[12], &v4, 4);
        fitted &= add_control(msg, &used, IPPROTO_IPV6, IPV6_PKTINFO, &info, sizeof info);
    }
    // IPV6_HOPLIMIT and IPV6_TCLASS come only with IPv6 datagrams (ip6_datagram_recv_
    // specific_ctl): an IPv4 one on an AF_INET6 socket, all lvlip has, carries neither.
    msg->msg_controllen = used;
    if (!fitted) msg->msg_flags |= MSG_CTRUNC;
}

// MARK: - The error queue (IP_RECVERR, MSG_ERRQUEUE)

// lvlipd writes an ICMP error about a datagram of a socket with IP_RECVERR as two records: a
// plain error (Linux's pending sk_err: the next read or send fails with it) and an error
// queue record with the details (struct lvlip_dgram_error, then the quoted payload). The
// latter keeps the pair readable, as the error queue keeps a kernel socket in POLLERR, until
// recvmsg(MSG_ERRQUEUE) takes it; a plain read that meets it moves it aside, here.
#define ERROR_QUOTE 576
#define ERROR_SLOTS 32
struct queued_error {
    int fd;
    uint64_t inode;
    int32_t error;
    size_t length;  // of data: struct lvlip_dgram_error and the quote
    char data[sizeof(struct lvlip_dgram_error) + ERROR_QUOTE];
};
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

// Moves the error queue record at the head of the pair aside.
static void take_errqueue_record(int fd, const struct entry *e) {
    struct {
        struct lvlip_dgram_header h;
        char data[sizeof(struct lvlip_dgram_error) + ERROR_QUOTE];
    } record;
    ssize_t n = get_recv()(fd, &record, sizeof record, MSG_DONTWAIT);
    if (n > DGRAM_HEADER) keep_error(fd, e, record.h.error, record.data, (size_t)(n - DGRAM_HEADER));
}

// recvmsg(MSG_ERRQUEUE): the oldest ICMP error, as ip(7) describes: the quoted payload as
// data, the datagram's destination as the name, and an IP_RECVERR (IPV6_RECVERR) control
// message holding struct sock_extended_err and the offender's address.
static ssize_t dgram_recv_errqueue(int fd, struct entry *e, struct msghdr *msg) {
    struct queued_error q;
    if (!take_kept_error(fd, e, &q)) {
        // Taking the error queue's entry clears the pending error (Linux's
        // sock_dequeue_err_skb): a plain error record before it goes too.
        struct lvlip_dgram_header h;
        ssize_t n = get_recv()(fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
        if (n == DGRAM_HEADER && (h.flags & LVLIP_DGRAM_ERROR) && !(h.flags & LVLIP_DGRAM_ERRQUEUE)) {
            (void)get_recv()(fd, &h, sizeof h, MSG_DONTWAIT);
            n = get_recv()(fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
        }
        if (n != DGRAM_HEADER || !(h.flags & LVLIP_DGRAM_ERRQUEUE)) return fail(EAGAIN);
        take_errqueue_record(fd, e);
        if (!take_kept_error(fd, e, &q)) return fail(EAGAIN);
    }
    struct lvlip_dgram_error d;
    memcpy(&d, q.data, sizeof d);
    const char *quote = q.data + sizeof d;
    size_t quoted = q.length - sizeof d, copied = 0;
    for (size_t i = 0; i < msg->msg_iovlen && copied < quoted; i++) {
        size_t take = msg->msg_iov[i].iov_len < quoted - copied ? msg->msg_iov[i].iov_len : quoted - copied;
        memcpy(msg->msg_iov[i].iov_base, quote + copied, take);
        copied += take;
    }
    msg->msg_flags = MSG_ERRQUEUE | (copied < quoted ? MSG_TRUNC : 0);
    if (msg->msg_name) {
        struct lvlip_addr to = {.addr = d.destination, .port = d.port, .kind = LVLIP_ADDR_V4};
        format_address(e, &to, msg->msg_name, &msg->msg_namelen);
    }
    struct {
        struct sock_extended_err ee;
        union {
            struct sockaddr_in in;
            struct sockaddr_in6 in6;
        } offender;
    } payload;
    memset(&payload, 0, sizeof payload);
    payload.ee.ee_errno = (uint32_t)q.error;
    payload.ee.ee_origin = SO_EE_ORIGIN_ICMP;
    payload.ee.ee_type = d.type;
    payload.ee.ee_code = d.code;
    payload.ee.ee_info = d.info;
    struct lvlip_addr offender = {.addr = d.offender, .kind = LVLIP_ADDR_V4};
    socklen_t offender_length = sizeof payload.offender;
    format_address(e, &offender, (struct sockaddr *)&payload.offender, &offender_length);
    size_t length = sizeof payload.ee + offender_length;
    struct cmsghdr *c = msg->msg_controllen >= CMSG_SPACE(length) ? CMSG_FIRSTHDR(msg) : NULL;
    if (c) {
        c->cmsg_level = e->family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP;
        c->cmsg_type = e->family == AF_INET6 ? IPV6_RECVERR : IP_RECVERR;
        c->cmsg_len = CMSG_LEN(length);
        memcpy(CMSG_DATA(c), &payload, length);
        msg->msg_controllen = CMSG_SPACE(length);
    } else {
        msg->msg_controllen = 0;
        msg->msg_flags |= MSG_CTRUNC;
    }
    return (ssize_t)copied;
}

static ssize_t dgram_recv(int fd, struct entry *e, const struct iovec *iov, size_t count, int flags,
                          struct sockaddr *from, socklen_t *fromlen, int *msg_flags, struct lvlip_dgram_header *got) {
    if (count > 1023) return fail(EMSGSIZE);
    for (;;) {
        struct lvlip_dgram_header h;
        struct iovec parts[1024];
        parts[0].iov_base = &h;
        parts[0].iov_len = sizeof h;
        for (size_t i = 0; i < count; i++) parts[i + 1] = iov[i];
        struct msghdr msg = {.msg_iov = parts, .msg_iovlen = count + 1};
        ssize_t n = get_recvmsg()(fd, &msg, flags & (MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC));
        if (n < 0) return -1;
        if (n == 0) {
            if (msg_flags) *msg_flags = 0;
            return 0;  // shut down for reading (or lvlipd is gone)
        }
        if (n < DGRAM_HEADER) continue;  // cannot happen: lvlipd writes whole headers
        if (h.flags & LVLIP_DGRAM_ERRQUEUE) {
            // Not for this read: moved aside for MSG_ERRQUEUE; the next datagram is read.
            if (flags & MSG_PEEK) {
                take_errqueue_record(fd, e);
            } else {
                char details[sizeof(struct lvlip_dgram_error) + ERROR_QUOTE];
                size_t want = (size_t)n - DGRAM_HEADER, have = 0;
                for (size_t i = 0; i < count && have < want && have < sizeof details; i++) {
                    size_t take = iov[i].iov_len;
                    if (take > want - have) take = want - have;
                    if (take > sizeof details - have) take = sizeof details - have;
                    memcpy(details + have, iov[i].iov_base, take);
                    have += take;
                }
                keep_error(fd, e, h.error, details, have);
            }
            continue;
        }
        if (h.flags & LVLIP_DGRAM_ERROR) {
            if (flags & MSG_PEEK) (void)get_recv()(fd, &h, sizeof h, MSG_DONTWAIT);
            return fail(h.error > 0 ? h.error : EIO);
        }
        if (from && fromlen) {
            struct lvlip_addr a = {.addr = h.addr, .port = h.port, .kind = LVLIP_ADDR_V4};
            format_address(e, &a, from, fromlen);
        }
        if (msg_flags) *msg_flags = msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC);
        if (got) *got = h;
        return n - DGRAM_HEADER;
    }
}

static ssize_t dgram_recv_buffer(int fd, struct entry *e, void *buf, size_t n, int flags, struct sockaddr *from,
                                 socklen_t *fromlen) {
    struct iovec iov = {.iov_base = buf, .iov_len = n};
    return dgram_recv(fd, e, &iov, 1, flags, from, fromlen, NULL, NULL);
}

static ssize_t dgram_send_buffer(int fd, struct entry *e, const void *buf, size_t n, int flags,
                                 const struct sockaddr *to, socklen_t tolen) {
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = n};
    return dgram_send(fd, e, &iov, 1, flags, to, tolen);
}

// A table entry can outlive its descriptor when the program closed it behind our back
// (closefrom, a raw syscall) and the number now holds something else: the socket calls then
// fail with ENOTSOCK, and the call goes to libc as for any descriptor.
static inline int stale(struct entry *e, int fd) {
    if (errno != ENOTSOCK) return 0;
    (void)e;
    forget(fd);
    return 1;
}

EXPORT ssize_t read(int fd, void *buf, size_t n) {
    struct entry *e = known_stack(fd);
    if (__builtin_expect(is_dgram(e), 0)) {
        ssize_t r = dgram_recv_buffer(fd, e, buf, n, 0, NULL, NULL);
        if (r >= 0 || !stale(e, fd)) return r;
    }
    ssize_t r = get_read()(fd, buf, n);
    if (__builtin_expect(e && read_needs_check(r, n), 0)) return read_ended(e, r, errno);
    return r;
}

EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t room) {
    if (n > room) abort();
    return read(fd, buf, n);
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int count) {
    struct entry *e = known_stack(fd);
    if (__builtin_expect(is_dgram(e), 0)) {
        if (count < 0) return fail(EINVAL);
        ssize_t r = dgram_recv(fd, e, iov, (size_t)count, 0, NULL, NULL, NULL, NULL);
        if (r >= 0 || !stale(e, fd)) return r;
    }
    ssize_t r = get_readv()(fd, iov, count);
    if (__builtin_expect(e && r <= 0, 0)) {
        size_t asked = 0;
        for (int i = 0; i < count && iov; i++) asked += iov[i].iov_len;
        if (read_needs_check(r, asked)) return read_ended(e, r, errno);
    }
    return r;
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags) {
    struct entry *e = known_stack(fd);
    if (__builtin_expect(is_dgram(e), 0)) return dgram_recv_buffer(fd, e, buf, n, flags, NULL, NULL);
    ssize_t r = get_recv()(fd, buf, n, flags);
    if (__builtin_expect(e && read_needs_check(r, n), 0)) return read_ended(e, r, errno);
    return r;
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t room, int flags) {
    if (n > room) abort();
    return recv(fd, buf, n, flags);
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr, socklen_t *len) {
    struct entry *e = known_stack(fd);
    if (!e) return get_recvfrom()(fd, buf, n, flags, addr, len);
    if (is_dgram(e)) return dgram_recv_buffer(fd, e, buf, n, flags, addr, len);
    // A stream socket reports no source address (the pair's would name lvlipd's end).
    ssize_t r = get_recvfrom()(fd, buf, n, flags, NULL, NULL);
    if (read_needs_check(r, n)) r = read_ended(e, r, errno);
    if (r >= 0 && addr && len) *len = 0;
    return r;
}

EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t room, int flags, struct sockaddr *addr,
                              socklen_t *len) {
    if (n > room) abort();
    return recvfrom(fd, buf, n, flags, addr, len);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
    struct entry *e = known_stack(fd);
    if (!e || !msg) return get_recvmsg()(fd, msg, flags);
    if (is_dgram(e) && (flags & MSG_ERRQUEUE)) return dgram_recv_errqueue(fd, e, msg);
    if (is_dgram(e)) {
        socklen_t len = msg->msg_name ? msg->msg_namelen : 0;
        int out_flags = 0;
        struct lvlip_dgram_header h;
        ssize_t r = dgram_recv(fd, e, msg->msg_iov, msg->msg_iovlen, flags, msg->msg_name ? msg->msg_name : NULL,
                               msg->msg_name ? &len : NULL, &out_flags, &h);
        if (r >= 0) {
            if (msg->msg_name) msg->msg_namelen = len;
            msg->msg_flags = out_flags;
            fill_control(e, msg, &h);
        }
        return r;
    }
    void *name = msg->msg_name;
    msg->msg_name = NULL;
    ssize_t r = get_recvmsg()(fd, msg, flags);
    int err = errno;
    msg->msg_name = name;
    msg->msg_namelen = 0;
    errno = err;
    if (__builtin_expect(r <= 0, 0)) {
        size_t asked = 0;
        for (size_t i = 0; i < msg->msg_iovlen && msg->msg_iov; i++) asked += msg->msg_iov[i].iov_len;
        if (read_needs_check(r, asked)) return read_ended(e, r, errno);
    }
    return r;
}

EXPORT int recvmmsg(int fd, struct mmsghdr *vec, unsigned int count, int flags, struct timespec *timeout) {
    struct entry *e = known_stack(fd);
    if (!is_dgram(e)) return get_recvmmsg()(fd, vec, count, flags, timeout);
    // One datagram per entry; after the first, only what is already there (MSG_WAITFORONE
    // and the timeout come down to this for a socket that blocks only for the first).
    unsigned int got = 0;
    for (; got < count; got++) {
        int f = flags & ~MSG_WAITFORONE;
        if (got > 0) f |= MSG_DONTWAIT;
        ssize_t r = recvmsg(fd, &vec[got].msg_hdr, f);
        if (r < 0) {
            if (got > 0) break;
            return -1;
        }
        vec[got].msg_len = (unsigned int)r;
    }
    return (int)got;
}

EXPORT ssize_t write(int fd, const void *buf, size_t n) {
    struct entry *e = known_stack(fd);
    // known_stack has looked at every descriptor: without an entry it is no stack socket.
    if (!e) return get_write()(fd, buf, n);
    if (is_dgram(e)) return dgram_send_buffer(fd, e, buf, n, 0, NULL, 0);
    if (write_refused(fd, e, 0)) return fail(EPIPE);
    ssize_t r = get_send()(fd, buf, n, MSG_NOSIGNAL);
    if (__builtin_expect(r < 0, 0)) {
        if (errno == EPIPE) return write_ended(e, 0);
        if (stale(e, fd)) return get_write()(fd, buf, n);
    }
    return r;
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int count) {
    struct entry *e = known_stack(fd);
    // known_stack has looked at every descriptor: without an entry it is no stack socket.
    if (!e) return get_writev()(fd, iov, count);
    if (count < 0) return fail(EINVAL);
    if (is_dgram(e)) return dgram_send(fd, e, iov, (size_t)count, 0, NULL, 0);
    if (write_refused(fd, e, 0)) return fail(EPIPE);
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)count};
    ssize_t r = get_sendmsg()(fd, &msg, MSG_NOSIGNAL);
    if (__builtin_expect(r < 0, 0)) {
        if (errno == EPIPE) return write_ended(e, 0);
        if (stale(e, fd)) return get_writev()(fd, iov, count);
    }
    return r;
}

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags) {
    struct entry *e = known_stack(fd);
    // known_stack has looked at every descriptor: without an entry it is no stack socket.
    if (!e) return get_send()(fd, buf, n, flags);
    if (is_dgram(e)) return dgram_send_buffer(fd, e, buf, n, flags, NULL, 0);
    if (write_refused(fd, e, flags)) return fail(EPIPE);
    ssize_t r = get_send()(fd, buf, n, flags | MSG_NOSIGNAL);
    if (__builtin_expect(r < 0 && errno == EPIPE, 0)) return write_ended(e, flags);
    return r;
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr, socklen_t len) {
    struct entry *e = known_stack(fd);
    // known_stack has looked at every descriptor: without an entry it is no stack socket.
    if (!e) return get_sendto()(fd, buf, n, flags, addr, len);
    if (is_dgram(e)) return dgram_send_buffer(fd, e, buf, n, flags, addr, len);
    // A connected stream socket ignores the address, as Linux's TCP does.
    return send(fd, buf, n, flags);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
    struct entry *e = known_stack(fd);
    // known_stack has looked at every descriptor: without an entry it is no stack socket.
    if (!e || !msg) return get_sendmsg()(fd, msg, flags);
    if (is_dgram(e))
        return dgram_send(fd, e, msg->msg_iov, msg->msg_iovlen, flags, msg->msg_name, msg->msg_name ? msg->msg_namelen : 0);
    if (write_refused(fd, e, flags)) return fail(EPIPE);
    struct msghdr copy = *msg;
    copy.msg_name = NULL;
    copy.msg_namelen = 0;
    ssize_t r = get_sendmsg()(fd, &copy, flags | MSG_NOSIGNAL);
    if (__builtin_expect(r < 0 && errno == EPIPE, 0)) return write_ended(e, flags);
    return r;
}

EXPORT int sendmmsg(int fd, struct mmsghdr *vec, unsigned int count, int flags) {
    struct entry *e = known_stack(fd);
    if (!is_dgram(e)) return get_sendmmsg()(fd, vec, count, flags);
    unsigned int sent = 0;
    for (; sent < count; sent++) {
        ssize_t r = sendmsg(fd, &vec[sent].msg_hdr, flags);
        if (r < 0) {
            if (sent > 0) break;
            return -1;
        }
        vec[sent].msg_len = (unsigned int)r;
    }
    return (int)sent;
}

EXPORT ssize_t sendfile(int out, int in, off_t *offset, size_t count) {
    struct entry *e = known_stack(out);
    if (is_dgram(e)) return fail(EINVAL);
    if (e && write_refused(out, e, 0)) return fail(EPIPE);
    ssize_t r = get_sendfile()(out, in, offset, count);
    if (__builtin_expect(r < 0 && errno == EPIPE, 0) && e) return write_ended(e, MSG_NOSIGNAL);
    return r;
}

EXPORT ssize_t sendfile64(int out, int in, off64_t *offset, size_t count) {
    struct entry *e = known_stack(out);
    if (is_dgram(e)) return fail(EINVAL);
    if (e && write_refused(out, e, 0)) return fail(EPIPE);
    ssize_t r = get_sendfile64()(out, in, offset, count);
    if (__builtin_expect(r < 0 && errno == EPIPE, 0) && e) return write_ended(e, MSG_NOSIGNAL);
    return r;
}

// FIONREAD of a datagram socket is the size of the next datagram (the pair would count the
// headers and every queued message). Everything else is the pair's own ioctl.
EXPORT int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (request == FIONREAD) {
        struct entry *e = known_stack(fd);
        if (is_dgram(e)) {
            if (!arg) return fail(EFAULT);
            struct lvlip_dgram_header h;
            ssize_t n = get_recv()(fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC);
            int size = 0;
            if (n >= DGRAM_HEADER && !(h.flags & LVLIP_DGRAM_ERROR)) size = (int)(n - DGRAM_HEADER);
            *(int *)arg = size;
            return 0;
        }
    }
    return get_ioctl()(fd, request, arg);
}

// MARK: - Descriptor bookkeeping

// Our control connection must not be closed or replaced by the program's own calls.
static void protect_control(int fd) {
    pthread_mutex_lock(&ctl_lock);
    if (fd == ctl_fd) {
        int moved = fcntl(ctl_fd, F_DUPFD_CLOEXEC, fd + 1);
        if (moved >= 0) {
            get_close()(ctl_fd);
            ctl_fd = moved;
        } else {
            ctl_drop();
        }
    }
    pthread_mutex_unlock(&ctl_lock);
}

EXPORT int close(int fd) {
    if (fd >= 0 && fd == ctl_fd) {
        // Not the program's descriptor: it never opened it (closefrom-style loops).
        return fail(EBADF);
    }
    forget(fd);
    return get_close()(fd);
}

static void forget_range(unsigned int first, unsigned int last) {
    for (unsigned page = first >> PAGE_BITS; page < PAGES && page <= (last >> PAGE_BITS); page++) {
        struct entry *p = atomic_load_explicit(&pages[page], memory_order_acquire);
        if (!p) continue;
        for (unsigned i = 0; i < PAGE_SIZE_ENTRIES; i++) {
            unsigned fd = (page << PAGE_BITS) | i;
            if (fd >= first && fd <= last) memset(&p[i], 0, sizeof p[i]);
        }
    }
}

// The control connection is not the program's: a range that covers it is closed around it
// (daemons close every descriptor at start-up, then drop privileges and open sockets).
EXPORT int close_range(unsigned int first, unsigned int last, int flags) {
    if (flags & CLOSE_RANGE_CLOEXEC) return get_close_range()(first, last, flags);
    int ctl = ctl_fd;
    if (ctl < 0 || (unsigned)ctl < first || (unsigned)ctl > last) {
        forget_range(first, last);
        return get_close_range()(first, last, flags);
    }
    int r = 0;
    if ((unsigned)ctl > first) {
        forget_range(first, (unsigned)ctl - 1);
        r = get_close_range()(first, (unsigned)ctl - 1, flags);
    }
    if (r == 0 && (unsigned)ctl < last) {
        forget_range((unsigned)ctl + 1, last);
        r = get_close_range()((unsigned)ctl + 1, last, flags);
    }
    return r;
}

EXPORT void closefrom(int lowfd) {
    if (lowfd < 0) lowfd = 0;
    if (close_range((unsigned)lowfd, ~0u, 0) == 0) return;
    // No close_range (an old kernel): one close per open descriptor, ours kept.
    int max = (int)sysconf(_SC_OPEN_MAX);
    for (int fd = lowfd; fd < max; fd++) close(fd);
}

static void copy_entry(int from, int to) {
    struct entry *src = slot(from, 0);
    struct entry *dst = slot(to, 1);
    if (!dst) return;
    if (src && src->kind == FD_STACK) {
        if (src->flags & F_PENDING) {
            // Named now: the reply fills in only the entry it was made for.
            pthread_mutex_lock(&ctl_lock);
            if (settle() < 0) ctl_drop();
            pthread_mutex_unlock(&ctl_lock);
        }
        *dst = *src;
    } else {
        memset(dst, 0, sizeof *dst);
    }
}

EXPORT int dup2(int old, int new) {
    if (old == new) return get_dup2()(old, new);
    protect_control(new);
    int r = get_dup2()(old, new);
    if (r >= 0) copy_entry(old, r);
    return r;
}

EXPORT int dup3(int old, int new, int flags) {
    if (old != new) protect_control(new);
    int r = get_dup3()(old, new, flags);
    if (r >= 0) copy_entry(old, r);
    return r;
}

// MARK: - syscall(2)

// Some libraries call the socket system calls through syscall(2) (libuv's sendmmsg and
// recvmmsg, as in dig): those on stack sockets are routed to the functions above.
EXPORT long syscall(long number, ...) {
    va_list ap;
    va_start(ap, number);
    long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
    long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
    va_end(ap);
    switch (number) {
    case SYS_sendmmsg:
        return sendmmsg((int)a1, (struct mmsghdr *)a2, (unsigned int)a3, (int)a4);
    case SYS_recvmmsg:
        return recvmmsg((int)a1, (struct mmsghdr *)a2, (unsigned int)a3, (int)a4, (struct timespec *)a5);
    case SYS_sendmsg:
        return sendmsg((int)a1, (const struct msghdr *)a2, (int)a3);
    case SYS_recvmsg:
        return recvmsg((int)a1, (struct msghdr *)a2, (int)a3);
    case SYS_sendto:
        return sendto((int)a1, (const void *)a2, (size_t)a3, (int)a4, (const struct sockaddr *)a5, (socklen_t)a6);
    case SYS_recvfrom:
        return recvfrom((int)a1, (void *)a2, (size_t)a3, (int)a4, (struct sockaddr *)a5, (socklen_t *)a6);
    case SYS_socket:
        return socket((int)a1, (int)a2, (int)a3);
    case SYS_connect:
        return connect((int)a1, (const struct sockaddr *)a2, (socklen_t)a3);
    case SYS_close:
        return close((int)a1);
    case SYS_close_range:
        return close_range((unsigned int)a1, (unsigned int)a2, (int)a3);
    default:
        return get_syscall()(number, a1, a2, a3, a4, a5, a6);
    }
}
