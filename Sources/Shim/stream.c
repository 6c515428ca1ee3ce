// TCP sockets: connect (the pair made unwritable with filler bytes until the handshake ends),
// accept (one record and the connection's descriptor from the listener's pair), and the
// kernel's errors where the pair's own would differ: end of stream after a reset, EPIPE and
// SIGPIPE (docs/ipc.md, "Socket service: the data path").
#include "shim.h"
#include "rights.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/time.h>

// Makes the application's end unwritable until the handshake completes: a tiny send buffer
// holding a little unread data. The daemon reads the filler and restores the buffer then.
static uint32_t add_filler(int fd, struct entry *e) {
    // 2 KB in one skb is ~2.8 KB of write memory against the minimum send buffer of
    // 4.6 KB: more than the quarter above which an AF_UNIX socket stops being writable.
    static const char filler[2048];
    e->flags |= F_SMALL_BUFFER;
    int small = 1;
    get_setsockopt()(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    ssize_t n = get_send()(fd, filler, sizeof filler, MSG_DONTWAIT | MSG_NOSIGNAL);
    return n > 0 ? (uint32_t)n : 0;
}

// The end's send buffer back to its size once the handshake is over (the first write, or
// the end of a blocking connect). Root may keep lvlipd's larger size; others get wmem_max.
void restore_send_buffer(int fd, struct entry *e) {
    if (!(e->flags & F_SMALL_BUFFER)) return;
    e->flags &= ~F_SMALL_BUFFER;
    int size = LVLIP_APP_SEND_BUFFER;
    if (get_setsockopt()(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
        get_setsockopt()(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

static int is_blocking(int fd) { return !(fcntl(fd, F_GETFL) & O_NONBLOCK); }

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

// lvlipd ends a failed connection by closing its end (POLLHUP here), so an end without
// POLLHUP or POLLERR has no error to tell, and SO_ERROR or the result of a connect that
// became writable is 0 without asking.
int stream_healthy(int fd, int revents) {
    if (revents < 0) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, 0) < 0) return 0;
        revents = p.revents;
    }
    return !(revents & (POLLHUP | POLLERR | POLLNVAL));
}

// The rest of a connect lvlipd has started: EINPROGRESS for a non-blocking socket, else the
// handshake's end (writable and not hung up: established; lvlipd took the filler then).
// Returns 0 or -errno.
static int connect_in_progress(int fd, struct entry *e, const struct lvlip_addr *wire, int blocking) {
    e->flags |= F_STARTED;
    if (blocking < 0) blocking = is_blocking(fd);
    if (!blocking) return -EINPROGRESS;
    int r = wait_writable(fd);
    if (r < 0) return r;
    r = (r & POLLOUT) && stream_healthy(fd, r) ? 0 : connect_request(e, wire, 0, 0);
    restore_send_buffer(fd, e);
    return r;
}

int stream_connect(int fd, struct entry *e, const struct sockaddr *addr, socklen_t len) {
    struct lvlip_addr wire;
    int r = parse_address(e->family, addr, len, &wire);
    if (r < 0) return fail(-r);
    // A connect that starts one (-1: not asked). A blocking caller waits for the handshake:
    // lvlipd answers 0 at once when it completed within the wake-up that started it (a peer on
    // the host), with nothing to wait for, so the filler is written only if it did not: lvlipd
    // leaves the pair unread until told how much (LVLIP_CONNECT_FILLER). A non-blocking one
    // returns at once, and the filler goes first.
    int starts = !(e->flags & (F_STARTED | F_LISTENING));
    int blocking = starts ? is_blocking(fd) : -1;
    uint32_t filler = starts && !blocking ? add_filler(fd, e) : 0;
    r = connect_request(e, &wire, filler, blocking > 0 ? LVLIP_CONNECT_WAITS : 0);
    if (r == -EINPROGRESS && blocking > 0) {
        filler = add_filler(fd, e);
        r = connect_request(e, &wire, filler, LVLIP_CONNECT_FILLER);
    }
    if (r == 0 && !filler && starts) {
        // Connected without filler: the end still has the kernel's default send buffer,
        // sized as after a filler at the first write (a bulk sender needs the larger one).
        e->flags |= F_SMALL_BUFFER;
    }
    if (r == -EINPROGRESS) {
        r = connect_in_progress(fd, e, &wire, blocking);
    } else if (filler) {
        // It did not start (lvlipd took the filler back), or it is already established
        // (lvlipd took the filler when the handshake completed).
        restore_send_buffer(fd, e);
    }
    if (r == 0) e->flags |= F_STARTED;
    return r < 0 ? fail(-r) : 0;
}

// One accept record and the connection's descriptor from a listener's pair (blocking or not
// as the listener is). Returns the descriptor, or -1 with errno.
static int receive_connection(int fd, struct lvlip_accept_record *record, int flags) {
    struct iovec iov = {.iov_base = record, .iov_len = sizeof *record};
    union rights_space control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                         .msg_controllen = sizeof control.space};
    ssize_t n = get_recvmsg()(fd, &msg, (flags & SOCK_CLOEXEC) ? MSG_CMSG_CLOEXEC : 0);
    if (n < 0) return -1;
    int conn = rights_received(&msg);
    if (n == 0) return fail(EINVAL);  // lvlipd closed the listener (it stopped)
    if (n != (ssize_t)sizeof *record || conn < 0 || record->magic != LVLIP_ACCEPT_MAGIC) {
        if (conn >= 0) get_close()(conn);
        return fail(ECONNABORTED);
    }
    return conn;
}

int stream_accept(int fd, struct entry *listener, struct sockaddr *addr, socklen_t *len, int flags) {
    if (is_dgram(listener)) return fail(EOPNOTSUPP);
    if (!(listener->flags & F_LISTENING)) return fail(EINVAL);
    struct lvlip_accept_record record;
    int conn = receive_connection(fd, &record, flags);
    if (conn < 0) return -1;
    if (flags & SOCK_NONBLOCK) fcntl(conn, F_SETFL, fcntl(conn, F_GETFL) | O_NONBLOCK);
    struct entry *e = slot_create(conn);
    if (e) {
        memset(e, 0, sizeof *e);
        e->kind = FD_STACK;
        e->family = listener->family;
        e->inode = inode_of(conn);
        e->ref = record.ref;
        e->flags = F_STARTED;
        format_address(e->family, &record.peer, addr, len);
    }
    return conn;
}

// MARK: - Blocking reads
//
// A reader blocked in read on an AF_UNIX stream socket is woken whenever data it sent is
// taken off the other end (unix_write_space wakes the socket's whole wait queue, readers
// included), and goes back to sleep. A program that writes a request and blocks for the
// answer would be woken for nothing as soon as lvlipd takes the request: a context switch
// more per exchange than through the kernel's TCP, whose readers wake for data only. So a
// blocking read first reads without waiting and, if there is nothing, waits in poll for
// POLLIN (poll's wake-ups are filtered by event), then reads as it was asked to.
//
// The same answers as the pair's own blocking read, except one case: poll is never
// restarted after a signal handler, so when a handler interrupts the wait, the wait goes on
// if every handler the program has set restarts calls (SA_RESTART), as the read would, and
// fails with EINTR otherwise; with some handlers that restart and some that do not, a
// restarting one's signal gives EINTR where the read would have gone on. Reads that wait
// otherwise take the pair's own call: a receive timeout (F_TIMED_READ), MSG_WAITALL.

// Whether every handled signal restarts the call it interrupts. Asked only after a handler
// has interrupted a wait; glibc's own signals (which sigaction refuses) are not the program's.
static int handlers_restart(void) {
    for (int s = 1; s < NSIG; s++) {
        struct sigaction sa;
        if (sigaction(s, NULL, &sa) < 0) continue;
        int handled = (sa.sa_flags & SA_SIGINFO) || (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN);
        if (handled && !(sa.sa_flags & SA_RESTART)) return 0;
    }
    return 1;
}

// After a read without waiting found nothing: waits until the pair has something to read
// (data, its end, an error), busy polling first (busypoll.c). 0, or -1 with errno: EAGAIN
// (a non-blocking descriptor), EINTR.
//
// While it polls, the thread's signals are blocked and let through only inside ppoll: a
// signal that comes while it polls interrupts the wait as it would interrupt the sleep,
// rather than running its handler between two polls and leaving the thread to sleep on.
static int wait_readable(int fd) {
    if (!is_blocking(fd)) return fail(EAGAIN);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    sigset_t all, own;
    const sigset_t *mask = NULL;
    if (busy_poll_window() > 0) {
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &own);
        mask = &own;
    }
    // >0: readable; 0: the window passed (or no polling), sleep; -1: interrupted or failed.
    int r = mask ? busy_poll(&p, mask) : 0;
    for (; r <= 0; r = ppoll(&p, 1, NULL, mask)) {
        if (r == 0) continue;
        if (errno != EINTR) {  // the read itself fails or waits
            r = 0;
            break;
        }
        if (!handlers_restart()) break;
    }
    if (mask) {
        int err = errno;
        pthread_sigmask(SIG_SETMASK, &own, NULL);
        errno = err;
    }
    return r < 0 ? -1 : 0;
}

ssize_t stream_receive(int fd, struct entry *e, struct msghdr *msg, int flags) {
    // Never connected (or listening): nothing will come, and Linux says so at once. (The error
    // queue answers in any state.)
    if (__builtin_expect(!(e->flags & F_STARTED) && !(flags & MSG_ERRQUEUE), 0)) return fail(ENOTCONN);
    if ((flags & (MSG_DONTWAIT | MSG_WAITALL | MSG_OOB | MSG_ERRQUEUE)) || (e->flags & F_TIMED_READ))
        return get_recvmsg()(fd, msg, flags);
    size_t control = msg->msg_controllen;
    ssize_t r = get_recvmsg()(fd, msg, flags | MSG_DONTWAIT);
    if (r >= 0 || errno != EAGAIN) return r;
    if (wait_readable(fd) < 0) return -1;
    msg->msg_controllen = control;
    return get_recvmsg()(fd, msg, flags);
}

ssize_t stream_receive_buffer(int fd, struct entry *e, void *buf, size_t n, int flags) {
    struct iovec iov = {.iov_base = buf, .iov_len = n};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    return stream_receive(fd, e, &msg, flags);
}

// A stream socket reports no source address (the pair's would name lvlipd's end).
ssize_t stream_recvmsg(int fd, struct entry *e, struct msghdr *msg, int flags) {
    void *name = msg->msg_name;
    msg->msg_name = NULL;
    ssize_t r = stream_receive(fd, e, msg, flags);
    int err = errno;
    msg->msg_name = name;
    msg->msg_namelen = 0;
    errno = err;
    if (__builtin_expect(r <= 0, 0) && read_needs_check(r, iov_length(msg->msg_iov, msg->msg_iovlen)))
        return read_ended(e, r, errno);
    return r;
}

ssize_t read_ended(struct entry *e, ssize_t result, int err) {
    if (e->flags & F_RD_SHUT) return 0;
    int r = int_request(LVLIP_MSG_STATUS, e, LVLIP_STATUS_READ_END);
    if (r == -EBADF) r = 0;                      // forgotten long ago: a plain end
    if (r == -ENETDOWN) r = -ECONNRESET;         // lvlipd is gone: the connection with it
    if (r < 0) return fail(-r);
    if (result < 0 && err == ECONNRESET) return 0;
    errno = err;
    return result;
}

ssize_t write_ended(struct entry *e, int flags) {
    int r = int_request(LVLIP_MSG_STATUS, e, LVLIP_STATUS_WRITE_END);
    if (r == -EBADF || r == -ENETDOWN || r >= 0) r = -EPIPE;
    if (r == -EPIPE && !(flags & MSG_NOSIGNAL)) raise(SIGPIPE);
    return fail(-r);
}
