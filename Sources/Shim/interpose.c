// liblvlip.so's interface: the socket calls it interposes (LD_PRELOAD). Each looks the
// descriptor up in the table and hands a stack socket to the stream, datagram, socket or
// option code; any other descriptor goes to libc untouched (docs/shim.md).
//
// A stack socket is a real descriptor: one end of an AF_UNIX pair whose other end lvlipd
// holds (docs/ipc.md, "Socket service"). Payload is plain bytes in the pair, so
// read/write/poll/select/epoll, fork, dup and exec work on it through the kernel; the shim
// turns the socket calls into requests on a per-process control connection, and keeps the
// kernel's errno where a pair would answer differently (end of stream after a reset, EPIPE,
// SIGPIPE). Readiness calls, fcntl and most of ioctl are not interposed.
//
// Needs only libc: built with `cc -shared -fPIC` (scripts/build).
#include "shim.h"

#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

// MARK: - Socket calls

EXPORT int socket(int domain, int type, int protocol) {
    if (!socket_served(domain, type, protocol)) return kernel_socket(domain, type, protocol);
    return make_socket(domain, type, protocol);
}

EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    struct entry *e = stack_socket(fd);
    return e ? socket_bind(e, addr, len) : get_bind()(fd, addr, len);
}

EXPORT int listen(int fd, int backlog) {
    struct entry *e = stack_socket(fd);
    return e ? socket_listen(e, backlog) : get_listen()(fd, backlog);
}

EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    struct entry *e = stack_socket(fd);
    if (!e) return get_connect()(fd, addr, len);
    return is_dgram(e) ? dgram_connect(e, addr, len) : stream_connect(fd, e, addr, len);
}

EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    struct entry *e = stack_socket(fd);
    if (!e) return get_accept4()(fd, addr, len, flags);
    if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) return fail(EINVAL);
    return stream_accept(fd, e, addr, len, flags);
}

EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    struct entry *e = stack_socket(fd);
    return e ? stream_accept(fd, e, addr, len, 0) : get_accept()(fd, addr, len);
}

EXPORT int shutdown(int fd, int how) {
    struct entry *e = stack_socket(fd);
    return e ? socket_shutdown(e, how) : get_shutdown()(fd, how);
}

EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len) {
    struct entry *e = stack_socket(fd);
    return e ? socket_name(e, addr, len, 0) : get_getsockname()(fd, addr, len);
}

EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len) {
    struct entry *e = stack_socket(fd);
    return e ? socket_name(e, addr, len, 1) : get_getpeername()(fd, addr, len);
}

EXPORT int setsockopt(int fd, int level, int name, const void *value, socklen_t len) {
    struct entry *e = stack_socket(fd);
    if (!e) return get_setsockopt()(fd, level, name, value, len);
    if (native_option(level, name)) return set_native_option(fd, e, level, name, value, len);
    return set_option(e, level, name, value, len);
}

EXPORT int getsockopt(int fd, int level, int name, void *value, socklen_t *len) {
    struct entry *e = stack_socket(fd);
    if (!e || native_option(level, name)) return get_getsockopt()(fd, level, name, value, len);
    return get_option(fd, e, level, name, value, len);
}

// MARK: - Reads: the pair's own calls, with the socket's error at end of stream

EXPORT ssize_t read(int fd, void *buf, size_t n) {
    struct entry *e = known_stack(fd);
    if (__builtin_expect(is_dgram(e), 0)) {
        ssize_t r = dgram_recvfrom(fd, e, buf, n, 0, NULL, NULL);
        return r >= 0 || !forget_if_stale(fd) ? r : get_read()(fd, buf, n);
    }
    if (!e) return get_read()(fd, buf, n);
    ssize_t r = stream_receive_buffer(fd, e, buf, n, 0);
    if (__builtin_expect(r < 0, 0) && forget_if_stale(fd)) return get_read()(fd, buf, n);
    if (__builtin_expect(read_needs_check(r, n), 0)) return read_ended(e, r, errno);
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
        struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)count};
        ssize_t r = dgram_recv(fd, e, &msg, 0, NULL);
        return r >= 0 || !forget_if_stale(fd) ? r : get_readv()(fd, iov, count);
    }
    if (!e || count < 0 || count > IOV_MAX) return get_readv()(fd, iov, count);
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)count};
    ssize_t r = stream_receive(fd, e, &msg, 0);
    if (__builtin_expect(r < 0, 0) && forget_if_stale(fd)) return get_readv()(fd, iov, count);
    if (__builtin_expect(r <= 0, 0) && read_needs_check(r, iov_length(iov, (size_t)count))) return read_ended(e, r, errno);
    return r;
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags) {
    struct entry *e = known_stack(fd);
    if (!e) return get_recv()(fd, buf, n, flags);
    if (__builtin_expect(is_dgram(e), 0)) return dgram_recvfrom(fd, e, buf, n, flags, NULL, NULL);
    ssize_t r = stream_receive_buffer(fd, e, buf, n, flags);
    if (__builtin_expect(read_needs_check(r, n), 0)) return read_ended(e, r, errno);
    return r;
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t room, int flags) {
    if (n > room) abort();
    return recv(fd, buf, n, flags);
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr, socklen_t *len) {
    struct entry *e = known_stack(fd);
    if (!e) return get_recvfrom()(fd, buf, n, flags, addr, len);
    if (is_dgram(e)) return dgram_recvfrom(fd, e, buf, n, flags, addr, len);
    // A stream socket reports no source address (the pair's would name lvlipd's end).
    ssize_t r = stream_receive_buffer(fd, e, buf, n, flags);
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
    return is_dgram(e) ? dgram_recvmsg(fd, e, msg, flags) : stream_recvmsg(fd, e, msg, flags);
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

// MARK: - Writes: the pair's own calls with MSG_NOSIGNAL, with the socket's error when closed
//
// known_stack has looked at every descriptor: without an entry it is no stack socket.

EXPORT ssize_t write(int fd, const void *buf, size_t n) {
    struct entry *e = known_stack(fd);
    if (!e) return get_write()(fd, buf, n);
    if (is_dgram(e)) return dgram_sendto(fd, e, buf, n, 0, NULL, 0);
    if (write_refused(fd, e, 0, &(struct iovec){(void *)buf, n}, 1)) return fail(EPIPE);
    ssize_t r = get_send()(fd, buf, n, MSG_NOSIGNAL);
    if (__builtin_expect(r < 0, 0)) {
        if (errno == EPIPE) return write_ended(e, 0);
        if (forget_if_stale(fd)) return get_write()(fd, buf, n);
    }
    return r;
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int count) {
    struct entry *e = known_stack(fd);
    if (!e) return get_writev()(fd, iov, count);
    if (count < 0) return fail(EINVAL);
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)count};
    if (is_dgram(e)) return dgram_send(fd, e, &msg, 0);
    if (write_refused(fd, e, 0, iov, (size_t)count)) return fail(EPIPE);
    ssize_t r = get_sendmsg()(fd, &msg, MSG_NOSIGNAL);
    if (__builtin_expect(r < 0, 0)) {
        if (errno == EPIPE) return write_ended(e, 0);
        if (forget_if_stale(fd)) return get_writev()(fd, iov, count);
    }
    return r;
}

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags) {
    struct entry *e = known_stack(fd);
    if (!e) return get_send()(fd, buf, n, flags);
    if (is_dgram(e)) return dgram_sendto(fd, e, buf, n, flags, NULL, 0);
    if (write_refused(fd, e, flags, &(struct iovec){(void *)buf, n}, 1)) return fail(EPIPE);
    ssize_t r = get_send()(fd, buf, n, flags | MSG_NOSIGNAL);
    if (__builtin_expect(r < 0 && errno == EPIPE, 0)) return write_ended(e, flags);
    return r;
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr, socklen_t len) {
    struct entry *e = known_stack(fd);
    if (!e) return get_sendto()(fd, buf, n, flags, addr, len);
    if (is_dgram(e)) return dgram_sendto(fd, e, buf, n, flags, addr, len);
    // A connected stream socket ignores the address, as Linux's TCP does.
    return send(fd, buf, n, flags);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
    struct entry *e = known_stack(fd);
    if (!e || !msg) {
        // A descriptor passed to another process may be a stack socket it will identify:
        // lvlipd must know it first.
        if (msg && msg->msg_controllen && requests_held()) send_and_settle(0);
        return get_sendmsg()(fd, msg, flags);
    }
    if (is_dgram(e)) return dgram_send(fd, e, msg, flags);
    if (write_refused(fd, e, flags, msg->msg_iov, msg->msg_iovlen)) return fail(EPIPE);
    struct msghdr copy = *msg;
    copy.msg_name = NULL;
    copy.msg_namelen = 0;
    ssize_t r = get_sendmsg()(fd, &copy, flags | MSG_NOSIGNAL);
    if (__builtin_expect(r < 0 && errno == EPIPE, 0)) return write_ended(e, flags);
    return r;
}

// A stack socket's messages go one by one through sendmsg above, as Linux's sendmmsg does:
// a stream's checks (not connected, shut down: EPIPE) and its ignored addresses included.
EXPORT int sendmmsg(int fd, struct mmsghdr *vec, unsigned int count, int flags) {
    struct entry *e = known_stack(fd);
    if (!e) {
        if (requests_held()) send_and_settle(0);  // as sendmsg
        return get_sendmmsg()(fd, vec, count, flags);
    }
    if (!is_dgram(e) && (e->flags & F_OPTION_HELD)) send_held_option(e);  // several writes at once
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
    if (e && write_refused(out, e, 0, &(struct iovec){NULL, count}, 1)) return fail(EPIPE);
    ssize_t r = get_sendfile()(out, in, offset, count);
    if (__builtin_expect(r < 0 && errno == EPIPE, 0) && e) return write_ended(e, MSG_NOSIGNAL);
    return r;
}

EXPORT ssize_t sendfile64(int out, int in, off64_t *offset, size_t count) {
    struct entry *e = known_stack(out);
    if (is_dgram(e)) return fail(EINVAL);
    if (e && write_refused(out, e, 0, &(struct iovec){NULL, count}, 1)) return fail(EPIPE);
    ssize_t r = get_sendfile64()(out, in, offset, count);
    if (__builtin_expect(r < 0 && errno == EPIPE, 0) && e) return write_ended(e, MSG_NOSIGNAL);
    return r;
}

// FIONREAD of a datagram socket is the size of the next datagram. Everything else is the
// pair's own ioctl.
EXPORT int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (request == FIONREAD && is_dgram(known_stack(fd))) {
        if (!arg) return fail(EFAULT);
        *(int *)arg = dgram_next_size(fd);
        return 0;
    }
    return get_ioctl()(fd, request, arg);
}

// MARK: - Descriptors: the table follows close and dup; the control connection stays ours

EXPORT int close(int fd) {
    if (fd >= 0 && fd == ctl_fd) {
        // Not the program's descriptor: it never opened it (closefrom-style loops).
        return fail(EBADF);
    }
    forget(fd);
    return get_close()(fd);
}

static int close_range_forgetting(unsigned int first, unsigned int last, int flags) {
    forget_range(first, last);
    return get_close_range()(first, last, flags);
}

// The control connection is not the program's: a range that covers it is closed around it
// (daemons close every descriptor at start-up, then drop privileges and open sockets).
EXPORT int close_range(unsigned int first, unsigned int last, int flags) {
    if (flags & CLOSE_RANGE_CLOEXEC) return get_close_range()(first, last, flags);
    int ctl = ctl_fd;
    if (ctl < 0 || (unsigned)ctl < first || (unsigned)ctl > last) return close_range_forgetting(first, last, flags);
    int r = 0;
    if ((unsigned)ctl > first) r = close_range_forgetting(first, (unsigned)ctl - 1, flags);
    if (r == 0 && (unsigned)ctl < last) r = close_range_forgetting((unsigned)ctl + 1, last, flags);
    return r;
}

EXPORT void closefrom(int lowfd) {
    if (lowfd < 0) lowfd = 0;
    if (close_range((unsigned)lowfd, ~0u, 0) == 0) return;
    // No close_range (an old kernel): one close per open descriptor, ours kept.
    int max = (int)sysconf(_SC_OPEN_MAX);
    for (int fd = lowfd; fd < max; fd++) close(fd);
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

// MARK: - exec and posix_spawn: the new program may identify the sockets it inherits
//
// What is held goes to lvlipd, and every reply is read, before a program is started: the new
// program identifies each stack socket it inherits with lvlipd (docs/shim.md, "Descriptors").
// (fork does the same in its handler; system() and popen() start their program with libc's
// own spawn, which is not interposable, so they do it themselves.) The exec calls may come
// from a signal handler: they do not wait for the control connection's lock
// (send_and_settle).

EXPORT int execve(const char *path, char *const argv[], char *const envp[]) {
    send_and_settle(0);
    return get_execve()(path, argv, envp);
}

EXPORT int execv(const char *path, char *const argv[]) {
    send_and_settle(0);
    return get_execv()(path, argv);
}

EXPORT int execvp(const char *file, char *const argv[]) {
    send_and_settle(0);
    return get_execvp()(file, argv);
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[]) {
    send_and_settle(0);
    return get_execvpe()(file, argv, envp);
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[]) {
    send_and_settle(0);
    return get_fexecve()(fd, argv, envp);
}

EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
                       const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    send_and_settle(1);
    return get_posix_spawn()(pid, path, actions, attr, argv, envp);
}

EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
                        const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    send_and_settle(1);
    return get_posix_spawnp()(pid, file, actions, attr, argv, envp);
}

EXPORT int system(const char *command) {
    send_and_settle(1);
    return get_system()(command);
}

EXPORT FILE *popen(const char *command, const char *type) {
    send_and_settle(1);
    return get_popen()(command, type);
}

// execl, execlp, execle: the arguments after `arg` (to the NULL, then execle's environment)
// as the vector the v forms take, on the stack.
enum exec_form { EXEC_PATH, EXEC_SEARCH, EXEC_ENVIRONMENT };

static int exec_listed(enum exec_form form, const char *path, const char *arg, va_list args) {
    size_t count = 1;
    va_list counting;
    va_copy(counting, args);
    while (va_arg(counting, char *)) count++;
    va_end(counting);
    char *argv[count + 1];
    argv[0] = (char *)arg;
    for (size_t i = 1; i <= count; i++) argv[i] = va_arg(args, char *);
    if (form == EXEC_ENVIRONMENT) return execve(path, argv, va_arg(args, char *const *));
    return form == EXEC_SEARCH ? execvp(path, argv) : execv(path, argv);
}

EXPORT int execl(const char *path, const char *arg, ...) {
    va_list args;
    va_start(args, arg);
    int r = exec_listed(EXEC_PATH, path, arg, args);
    va_end(args);
    return r;
}

EXPORT int execlp(const char *file, const char *arg, ...) {
    va_list args;
    va_start(args, arg);
    int r = exec_listed(EXEC_SEARCH, file, arg, args);
    va_end(args);
    return r;
}

EXPORT int execle(const char *path, const char *arg, ...) {
    va_list args;
    va_start(args, arg);
    int r = exec_listed(EXEC_ENVIRONMENT, path, arg, args);
    va_end(args);
    return r;
}

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
