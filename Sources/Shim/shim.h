// What liblvlip.so's files share (docs/shim.md, "Files"): libc's own definitions of the
// interposed functions, the descriptor table, the control connection and its requests, and
// the stream, datagram and address code the interposed functions dispatch to.
//
// Everything declared here is internal to the library (hidden visibility): only the
// interposed functions, marked EXPORT in interpose.c, are its interface. Each .c file
// includes this header first, so that _GNU_SOURCE comes before any system header.
#ifndef LVLIP_SHIM_H
#define LVLIP_SHIM_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include "lvlip_ipc.h"

#define EXPORT __attribute__((visibility("default")))

#pragma GCC visibility push(hidden)

// MARK: - libc's functions (real.c)

// Every function the shim interposes, as libc defines it: get_NAME() finds it with
// dlsym(RTLD_NEXT) on first use, since a call may come before any constructor has run.
#define SHIM_REAL_FUNCTIONS(X)                                                    \
    X(socket, int, int, int, int)                                                 \
    X(connect, int, int, const struct sockaddr *, socklen_t)                      \
    X(bind, int, int, const struct sockaddr *, socklen_t)                         \
    X(listen, int, int, int)                                                      \
    X(accept, int, int, struct sockaddr *, socklen_t *)                           \
    X(accept4, int, int, struct sockaddr *, socklen_t *, int)                     \
    X(shutdown, int, int, int)                                                    \
    X(close, int, int)                                                            \
    X(close_range, int, unsigned int, unsigned int, int)                          \
    X(dup2, int, int, int)                                                        \
    X(dup3, int, int, int, int)                                                   \
    X(getsockname, int, int, struct sockaddr *, socklen_t *)                      \
    X(getpeername, int, int, struct sockaddr *, socklen_t *)                      \
    X(setsockopt, int, int, int, int, const void *, socklen_t)                    \
    X(getsockopt, int, int, int, int, void *, socklen_t *)                        \
    X(read, ssize_t, int, void *, size_t)                                         \
    X(readv, ssize_t, int, const struct iovec *, int)                             \
    X(recv, ssize_t, int, void *, size_t, int)                                    \
    X(recvfrom, ssize_t, int, void *, size_t, int, struct sockaddr *, socklen_t *) \
    X(recvmsg, ssize_t, int, struct msghdr *, int)                                \
    X(write, ssize_t, int, const void *, size_t)                                  \
    X(writev, ssize_t, int, const struct iovec *, int)                            \
    X(send, ssize_t, int, const void *, size_t, int)                              \
    X(sendto, ssize_t, int, const void *, size_t, int, const struct sockaddr *, socklen_t) \
    X(sendmsg, ssize_t, int, const struct msghdr *, int)                          \
    X(sendfile, ssize_t, int, int, off_t *, size_t)                               \
    X(sendfile64, ssize_t, int, int, off64_t *, size_t)                           \
    X(recvmmsg, int, int, struct mmsghdr *, unsigned int, int, struct timespec *) \
    X(sendmmsg, int, int, struct mmsghdr *, unsigned int, int)                    \
    X(ioctl, int, int, unsigned long, void *)                                     \
    X(execve, int, const char *, char *const *, char *const *)                    \
    X(execv, int, const char *, char *const *)                                    \
    X(execvp, int, const char *, char *const *)                                   \
    X(execvpe, int, const char *, char *const *, char *const *)                   \
    X(fexecve, int, int, char *const *, char *const *)                            \
    X(posix_spawn, int, pid_t *, const char *, const posix_spawn_file_actions_t *, \
      const posix_spawnattr_t *, char *const *, char *const *)                    \
    X(posix_spawnp, int, pid_t *, const char *, const posix_spawn_file_actions_t *, \
      const posix_spawnattr_t *, char *const *, char *const *)                    \
    X(system, int, const char *)                                                  \
    X(popen, FILE *, const char *, const char *)                                  \
    X(syscall, long, long, ...)

#define SHIM_DECLARE_REAL(name, ret, ...)                                         \
    extern ret (*real_##name)(__VA_ARGS__);                                       \
    static inline ret (*get_##name(void))(__VA_ARGS__) {                          \
        if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name);                  \
        return real_##name;                                                       \
    }
SHIM_REAL_FUNCTIONS(SHIM_DECLARE_REAL)

static inline int fail(int err) {
    errno = err;
    return -1;
}

// MARK: - The descriptor table (fdtable.c)

enum { FD_UNKNOWN = 0, FD_OTHER = 1, FD_STACK = 2 };
enum {
    F_STARTED = 1,      // connect started, or accepted: writes go to the stream
    F_LISTENING = 2,
    F_WR_SHUT = 4,
    F_RD_SHUT = 8,
    F_DGRAM = 16,       // a UDP socket: SOCK_SEQPACKET pair, a header before each datagram
    F_SMALL_BUFFER = 32,  // the send buffer is not the stream's yet (the connect's minimum, or
                          // the default after a connect without filler): set before writing
    F_BROADCAST = 64,   // SO_BROADCAST set on a datagram socket
    F_PENDING = 128,    // SOCKET's reply not read yet: `ref` is the pending form (the tag)
    F_LOOPBACK_SOURCE = 256,  // a datagram socket bound to a 127/8 address: it cannot reach the link
    F_V6ONLY = 512,     // IPV6_V6ONLY set: a datagram socket sends to no AF_INET address
    F_TIMED_READ = 1024,  // SO_RCVTIMEO may be set on the pair: blocking reads are its own (stream.c)
    F_WRITTEN = 2048,   // a stream the program has written to through the shim
    F_OPTION_HELD = 4096,  // a connected stream's TCP_NODELAY may be held back (options.c)
};

// Receive control messages a datagram socket asked for (setsockopt), built from what lvlipd
// tells of each datagram (struct lvlip_dgram_header; ancillary.c).
enum {
    W_PKTINFO = 1,          // IP_PKTINFO
    W_TTL = 2,              // IP_RECVTTL
    W_TOS = 4,              // IP_RECVTOS
    W_TIMESTAMP = 8,        // SO_TIMESTAMP_OLD: struct timeval
    W_TIMESTAMPNS = 16,     // SO_TIMESTAMPNS_OLD: struct timespec
    W6_PKTINFO = 32,        // IPV6_RECVPKTINFO
    W6_HOPLIMIT = 64,       // IPV6_RECVHOPLIMIT
    W6_TCLASS = 128,        // IPV6_RECVTCLASS
};

struct entry {
    uint8_t kind;
    uint8_t wants;         // W_* above
    uint16_t family;
    uint64_t inode;
    struct lvlip_ref ref;
    int32_t error;         // lvlipd refused to make the socket: every request fails with this
    uint16_t flags;
    uint8_t icmp;          // an ICMP socket (ping or raw): datagrams are ICMP messages, no ports
    uint8_t reserved;
};

// Entries in pages of 1024 made on first use, for up to 4M descriptors.
#define PAGE_BITS 10
#define PAGE_SIZE_ENTRIES (1u << PAGE_BITS)
#define PAGES 4096
extern _Atomic(struct entry *) fd_pages[PAGES];

// The descriptor's entry, or NULL if its page was never made.
static inline struct entry *slot(int fd) {
    if (fd < 0) return NULL;
    unsigned page = (unsigned)fd >> PAGE_BITS;
    if (page >= PAGES) return NULL;
    struct entry *p = atomic_load_explicit(&fd_pages[page], memory_order_acquire);
    return p ? &p[(unsigned)fd & (PAGE_SIZE_ENTRIES - 1)] : NULL;
}

// The descriptor's entry, its page made if need be; NULL out of range or memory.
struct entry *slot_create(int fd);
void forget(int fd);
void forget_range(unsigned int first, unsigned int last);
// A socket's inode, 0 for anything else.
uint64_t inode_of(int fd);
// For socket calls: the descriptor's entry if it is a stack socket, checked against the
// file now under the number.
struct entry *stack_socket(int fd);
// A descriptor the table has not seen: one look at what it is, remembered until it is closed.
struct entry *classify(int fd);

// For the data path: the table, and classify() for a descriptor it has not seen.
static inline struct entry *known_stack(int fd) {
    struct entry *e = slot(fd);
    if (__builtin_expect(e && e->kind != FD_UNKNOWN, 1)) return e->kind == FD_STACK ? e : NULL;
    return classify(fd);
}

static inline int is_dgram(const struct entry *e) { return e && (e->flags & F_DGRAM); }

// After a socket call on a known descriptor failed: whether the entry outlived the
// descriptor (ENOTSOCK) and is now forgotten, so the call goes to libc.
int forget_if_stale(int fd);
// dup2/dup3: the new descriptor is what the old one is.
void copy_entry(int from, int to);
void fdtable_after_fork_child(void);

// MARK: - The control connection (control.c)

// Held for one request and its reply (never across a blocking call of the program's).
extern pthread_mutex_t ctl_lock;
extern int ctl_fd;
// The stack's interface, from HELLO_REPLY (host byte order; gateway 0: none).
extern uint32_t stack_address, stack_netmask, stack_gateway;

void warn_unreachable(const char *why, int err);
// One line (printf-style, at most 511 bytes) to stderr, through libc's own write.
void say(const char *format, ...) __attribute__((format(printf, 1, 2)));
// With ctl_lock held: a greeted connection, opened now if there is none. -1 with errno
// ENETDOWN if lvlipd cannot be reached.
int ctl_ready(void);
// With ctl_lock held: closes the connection; replies still due are lost with it.
void ctl_drop(void);
// dup2/dup3 onto the control connection's number move the connection first.
void protect_control(int fd);

// MARK: - Busy polling (busypoll.c)

struct pollfd;
// LVLIP_BUSY_POLL (microseconds, default 50, 0 to 100000) in nanoseconds, read at the first
// blocking wait; 0 when off, and when the process may run on one CPU only.
long busy_poll_window(void);
// Polls `p` (one descriptor) without sleeping, under `mask` as ppoll takes it (NULL: the
// thread's own), yielding the CPU between polls, until it has an event or the window has
// passed. >0: p->revents is set; 0: nothing within the window (or busy polling is off);
// -1 with errno (EINTR: a signal was delivered).
int busy_poll(struct pollfd *p, const sigset_t *mask);

// MARK: - Requests (request.c)

// One request on the control connection.
struct request {
    uint16_t type;              // enum lvlip_msg_type
    uint16_t flags;             // LVLIP_FLAG_FD: `fd` goes with it (SCM_RIGHTS)
    int fd;
    // The socket it concerns: its name goes over the body's first 16 bytes when the request
    // is written, under ctl_lock (a SOCKET reply read by another thread may just have
    // filled it in).
    const struct entry *about;
    const void *body;
    uint32_t length;
    const void *value;          // SETOPT's option value, after the body
    uint32_t value_length;
};

// A request sent without waiting for its reply: SOCKET (the reply names the socket) and
// SETOPT of an option lvlipd cannot refuse (the reply says nothing new).
struct outstanding {
    uint32_t tag;
    uint16_t type;
    int fd;          // SOCKET: the descriptor whose entry waits for the name
    uint64_t inode;
    int sent_fd;     // SOCKET: our copy of the descriptor sent, closed once lvlipd has it
};

// One request and its reply. Returns the reply's body length, or -1 with errno ENETDOWN
// when lvlipd cannot be reached. For a socket lvlipd refused to make, the reply's result
// is that refusal.
ssize_t request(const struct request *q, void *reply, size_t room);
// With ctl_lock held: sends a request whose reply is read later, by the next request or
// before a fork. For SOCKET, `fd` and `inode` name the socket it makes. `held_back`: not
// even sent yet, but held for the next request that is (hold_request).
int request_later(const struct request *q, int fd, uint64_t inode, uint32_t *tag, int held_back);
// With ctl_lock held: writes one request, with any held before it; its reply is read with
// read_reply.
int send_request(const struct request *q, uint32_t *tag);
// With ctl_lock held: holds a request back, to go with the next one sent (or when
// send_held_requests is called). Nothing is sent or read now unless what is already held
// cannot go with it. 0, or -1 with errno (EINVAL, or ENETDOWN: lvlipd cannot be reached).
int hold_request(const struct request *q, uint32_t *tag);
// Takes ctl_lock and sends what is held (a broken connection is dropped).
void send_held_requests(void);
// Whether anything is held (read without the lock: a hint, checked again under it).
int requests_held(void);
// With ctl_lock held: sends what is held and reads every reply due, if there is any.
void settle_due(void);
// Sends what is held and reads every reply still due, so that lvlipd knows each socket
// this process made: before exec, before a descriptor is passed or identified. With `wait`
// 0 it does nothing and returns -1 if the control connection's lock is taken: from calls a
// signal handler may make (execve, sendmsg), whose thread may hold it, and where waiting
// could deadlock a program that plays lvlipd itself (the shim fuzzer's harness). A thread
// that holds the lock is sending a request, and every request sends what is held first.
int send_and_settle(int wait);
// A descriptor the table does not know with this inode may be a copy (dup, F_DUPFD) of a
// socket whose SOCKET is held: if so, sends what is held and reads the replies due (1);
// 0 if none is; -1 if the control connection's lock is taken (nothing done).
int settle_socket_made_here(uint64_t inode);
// With ctl_lock held: reads the reply to request `tag`. Returns its body length, or -1
// (the connection is dropped).
ssize_t read_reply(uint16_t type, uint32_t tag, void *reply, size_t room);
// With ctl_lock held: reads the replies to the requests sent without waiting.
int settle(void);
// With ctl_lock held: settle(), or drop the connection if it broke.
void settle_or_drop(void);
int requests_outstanding(void);
// ctl_drop: the replies still due will not come.
void requests_lost(void);
// Requests by body: the reply's result (0 or -errno; -ENETDOWN without lvlipd).
int int_request(uint16_t type, const struct entry *e, int32_t value);
int connect_request(const struct entry *e, const struct lvlip_addr *addr, uint32_t filler, uint32_t flags);

// MARK: - Stack sockets and their common calls (socket.c)

int socket_served(int domain, int type, int protocol);
// A socket lvlip does not serve: the kernel's, with a word on stderr for IP families.
int kernel_socket(int domain, int type, int protocol);
int make_socket(int domain, int type, int protocol);
// A SOCKET reply (`n` bytes of it) for the socket it names.
void socket_named(const struct outstanding *o, const struct lvlip_socket_rep *rep, ssize_t n);
// A SOCKET reply lost with the connection: the socket is identified afresh on next use, or,
// if the request never went (`held`), fails every call with ENETDOWN.
void socket_reply_lost(const struct outstanding *o, int held);
int socket_bind(struct entry *e, const struct sockaddr *addr, socklen_t len);
int socket_listen(struct entry *e, int backlog);
int socket_shutdown(struct entry *e, int how);
int socket_name(struct entry *e, struct sockaddr *addr, socklen_t *len, int peer);

// MARK: - Socket options (options.c)

// Options the pair answers itself (timeouts), which go to libc.
int native_option(int level, int name);
int set_native_option(int fd, struct entry *e, int level, int name, const void *value, socklen_t len);
int set_option(struct entry *e, int level, int name, const void *value, socklen_t len);
// Before a stream's write of the bytes `iov` describes, once F_WRITTEN is not set or
// F_SMALL_BUFFER or F_OPTION_HELD is: its send buffer restored, a TCP_NODELAY held back
// sent if Nagle's algorithm could hold back some of the write.
void before_write(int fd, struct entry *e, const struct iovec *iov, size_t count);
// Sends the TCP_NODELAY held for the socket (F_OPTION_HELD), with whatever else is held.
void send_held_option(struct entry *e);
int get_option(int fd, struct entry *e, int level, int name, void *value, socklen_t *len);

// MARK: - Addresses (address.c)

// A caller's address in the wire form, checked against the socket's family: 0 or -errno.
int parse_address(int family, const struct sockaddr *sa, socklen_t len, struct lvlip_addr *out);
// A datagram socket's peer (connect, or sendto when `sending`): as parse_address, but an
// AF_INET6 socket takes AF_INET addresses too.
int parse_peer(const struct entry *e, const struct sockaddr *sa, socklen_t len, int sending, struct lvlip_addr *out);
// An address in the socket's family (IPv4 peers of AF_INET6 sockets as ::ffff:a.b.c.d).
// An AF_INET socket's addresses are all IPv4.
void format_address(int family, const struct lvlip_addr *a, struct sockaddr *sa, socklen_t *len);
// ::ffff:a.b.c.d for an IPv4 address in host byte order.
void v4_mapped(struct in6_addr *out, uint32_t v4);
// Whether a wire address is IPv4 (v4-mapped), and that IPv4 address in host byte order.
int wire_is_v4(const struct lvlip_addr *a);
uint32_t wire_v4(const struct lvlip_addr *a);

// MARK: - Streams (stream.c)

int stream_connect(int fd, struct entry *e, const struct sockaddr *addr, socklen_t len);
int stream_accept(int fd, struct entry *listener, struct sockaddr *addr, socklen_t *len, int flags);
ssize_t stream_recvmsg(int fd, struct entry *e, struct msghdr *msg, int flags);
// One read of a stream socket's pair, as recvmsg(2) with `flags`; a blocking one waits in
// poll rather than in the read (stream.c, "Blocking reads"). No end-of-stream check.
ssize_t stream_receive(int fd, struct entry *e, struct msghdr *msg, int flags);
// The same into one buffer (read, recv, recvfrom).
ssize_t stream_receive_buffer(int fd, struct entry *e, void *buf, size_t n, int flags);
// Whether a connection's stream is open both ways with nothing wrong (`revents` from a
// poll just made, or -1 to poll now).
int stream_healthy(int fd, int revents);
// A read found end of stream (or the pair's ECONNRESET): what the socket's own error is.
ssize_t read_ended(struct entry *e, ssize_t result, int err);
// A write found the stream closed: the socket's error, SIGPIPE as the kernel sends it.
ssize_t write_ended(struct entry *e, int flags);
void restore_send_buffer(int fd, struct entry *e);

static inline int read_needs_check(ssize_t r, size_t asked) {
    return (r == 0 && asked > 0) || (r < 0 && errno == ECONNRESET);
}

// Whether a write may go to the stream, or fails as the kernel's would (EPIPE).
// Before a stream write of the bytes `iov` describes (only looked at on a first write or
// with an option held): 1 if the stream is not writable (EPIPE, SIGPIPE unless MSG_NOSIGNAL).
static inline int write_refused(int fd, struct entry *e, int flags, const struct iovec *iov, size_t count) {
    if (!(e->flags & F_STARTED) || (e->flags & F_WR_SHUT)) {
        if (!(flags & MSG_NOSIGNAL)) raise(SIGPIPE);
        return 1;
    }
    if (__builtin_expect((e->flags & (F_WRITTEN | F_SMALL_BUFFER | F_OPTION_HELD)) != F_WRITTEN, 0))
        before_write(fd, e, iov, count);
    return 0;
}

static inline size_t iov_length(const struct iovec *iov, size_t count) {
    size_t total = 0;
    for (size_t i = 0; i < count && iov; i++) total += iov[i].iov_len;
    return total;
}

// MARK: - Datagrams (datagram.c)

#define DGRAM_HEADER ((ssize_t)sizeof(struct lvlip_dgram_header))

int dgram_connect(struct entry *e, const struct sockaddr *addr, socklen_t len);
// Sends msg's payload to msg_name, or without a name to the connected peer.
ssize_t dgram_send(int fd, struct entry *e, const struct msghdr *msg, int flags);
ssize_t dgram_sendto(int fd, struct entry *e, const void *buf, size_t n, int flags, const struct sockaddr *to,
                     socklen_t tolen);
// Receives one datagram into msg's buffers: its source into msg_name (if any), MSG_TRUNC
// into msg_flags, and its header into `got` (if given).
ssize_t dgram_recv(int fd, struct entry *e, struct msghdr *msg, int flags, struct lvlip_dgram_header *got);
ssize_t dgram_recvfrom(int fd, struct entry *e, void *buf, size_t n, int flags, struct sockaddr *from,
                       socklen_t *fromlen);
ssize_t dgram_recvmsg(int fd, struct entry *e, struct msghdr *msg, int flags);
// FIONREAD: the size of the next datagram.
int dgram_next_size(int fd);

// MARK: - The error queue (errqueue.c)

// A plain read met an error queue record: the record, read with MSG_PEEK, is taken from the
// pair and kept for MSG_ERRQUEUE.
void errqueue_take_record(int fd, const struct entry *e);
// ... or, read for good, its `length` bytes of details in msg's buffers are kept.
void errqueue_keep_read(int fd, const struct entry *e, int32_t error, const struct msghdr *msg, size_t length);
ssize_t errqueue_recvmsg(int fd, struct entry *e, struct msghdr *msg);
void errqueue_after_fork_child(void);

// MARK: - Receive control messages (ancillary.c)

// setsockopt accepted an option on a datagram socket: which control messages it wants.
void note_control_option(struct entry *e, int level, int name, const void *value, socklen_t len);
// The control messages of one received datagram, in the order Linux puts them.
void fill_control(const struct entry *e, struct msghdr *msg, const struct lvlip_dgram_header *h);
// Appends one control message if it fits; 0 when it did not (MSG_CTRUNC).
int add_control(struct msghdr *msg, size_t *used, int level, int type, const void *data, size_t length);

#pragma GCC visibility pop

#endif
